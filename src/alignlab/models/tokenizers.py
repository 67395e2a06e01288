"""Build a byte-level BPE tokenizer locally (no download), with a ChatML chat template.

Example: ``tok = train_bpe_tokenizer(texts, vocab_size=8192); tok.save_pretrained("tok")``

Used by the demo, the tests and the benchmarks, which must run offline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

BOS, EOS, PAD = "<|bos|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, "<|im_start|>")
CHATML_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML; the end of an assistant turn is the EOS token, as in Qwen/SmolLM chat models."""


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> Any:
    """A GPT-2-style byte-level BPE tokenizer trained on ``texts``, wrapped for transformers.

    The fast tokenizer adds BOS to every encoding (like Llama), so that BOS handling is exercised.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    bos_id = core.token_to_id(BOS)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
