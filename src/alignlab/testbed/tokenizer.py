"""A word-level tokenizer over the testbed world's closed vocabulary, with a chat template.

Example: ``build_tokenizer().apply_chat_template(chat(prompt), add_generation_prompt=True)``

Each word and each punctuation mark is one token; decoding joins tokens with single spaces, so
``decode(encode(text)) == text`` for every normalised world text.
"""

from __future__ import annotations

from typing import Any

from alignlab.testbed.world import world_texts

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
"""Ids 0 to 3, in this order."""
ROLE_WORDS = ("user", "assistant", ":")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if not loop.first %} {% endif %}{{ message['role'] }} : {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %} {{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} assistant :{% endif %}"
)
"""``<bos>user : what is two plus two ? assistant : four . <eos>``; the generation prompt is
exactly the start of a rendered assistant turn, and EOS ends it. Roles other than user and
assistant render as <unk>: the world has no system prompts."""


def vocabulary() -> list[str]:
    """Special tokens, then every word and mark of the world, sorted: the same ids every time."""
    words = {w for text in world_texts() for w in text.split()} | set(ROLE_WORDS)
    return [*SPECIAL_TOKENS, *sorted(words)]


def build_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast``: WordLevel model, words and single marks, chat template.

    It adds no BOS on its own; the chat template puts it in front. Save it with
    ``save_pretrained`` and load it back with ``AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Whitespace alone keeps a run of marks ("?.") whole; Punctuation splits it, one mark a token.
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation("isolated")]
    )
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        clean_up_tokenization_spaces=False,  # keeps "seven ." from becoming "seven."
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
