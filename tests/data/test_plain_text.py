"""SFT on every token: plain text (`{"text": ...}`, TRL's language-modeling format; no prompt)
and tokenize.train_on_prompt (a prompt-completion example trained on its prompt too).

Exact ids on GPT-2 (no BOS: the first text token is the unpredicted "prompt") and on the session
BPE tokenizer (which adds BOS); an nll run's loss equals the model's own causal-LM loss with
``labels=input_ids``, an implementation alignlab does not share; bad rows are named by file,
line and field.
"""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console

import alignlab
from alignlab.data.formats import detect_format
from alignlab.data.load import load_records
from alignlab.data.records import SFTExample
from alignlab.data.tokenize import RecordTokenizer
from alignlab.errors import AlignlabError

TEXT = "Alignment is the process of steering a model toward what people want."


def llama(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()


def test_a_text_row_is_a_plain_text_sft_example():
    entry = detect_format({"text": TEXT})
    assert entry.name == "text" and entry.contract.kind == "sft"
    [record] = entry.obj({"text": TEXT, "id": "a"}, "test")
    assert record == SFTExample("", TEXT, source="test", id="a")


def test_gpt2_ids_are_the_text_and_eos(gpt2):
    item = RecordTokenizer(gpt2)(SFTExample("", TEXT))
    ids = gpt2(TEXT)["input_ids"] + [gpt2.eos_token_id]
    assert list(item.prompt_ids) == ids[:1] and list(item.completion_ids) == ids[1:]
    assert item.supervised is None  # every token after the first


def test_a_bos_tokenizer_puts_bos_as_the_prompt(bpe_tokenizer):
    item = RecordTokenizer(bpe_tokenizer)(SFTExample("", TEXT))
    text_ids = bpe_tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert list(item.prompt_ids) == [bpe_tokenizer.bos_token_id]
    assert list(item.completion_ids) == [*text_ids, bpe_tokenizer.eos_token_id]


@pytest.mark.parametrize("packing", [{"packing": "off"}, {"packing": "on"}, {"pack_length": 64}],
                         ids=["padded", "shared-bos-prefix", "fixed-rows"])
def test_nll_equals_the_models_own_causal_lm_loss(tmp_path, bpe_llama_dir, packing):
    tokenizer, reference = llama(bpe_llama_dir)
    texts = [TEXT, "A second, shorter text."]
    losses = []
    for text in texts:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"],
                             tokenizer.eos_token_id]])
        with torch.no_grad():
            losses.append(float(reference(ids, labels=ids).loss))  # mean over the predicted tokens
    run = alignlab.train({"model": {"name_or_path": str(bpe_llama_dir)},
                          "train": {"loss": "nll", "max_steps": 1, "batch_size": 2, "lr": 1e-6, "precision": "fp32",
                                    "output_dir": str(tmp_path / "run"), **packing}},
                         train_data=[{"text": t} for t in texts], console=Console(quiet=True))
    loss = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert loss == pytest.approx(sum(losses) / len(losses), abs=1e-5)  # the mean over the step's examples


@pytest.mark.parametrize(("row", "message"), [
    ({"text": "   "}, "field 'text': empty text"),
    ({"text": 3}, "field 'text': expected a string, got int"),
    ({"text": [{"role": "user", "content": "hi"}]}, "field 'text': expected a string"),
], ids=["blank", "number", "chat"])
def test_a_bad_text_row_is_named_by_file_line_and_field(tmp_path, row, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join([json.dumps({"text": TEXT}), json.dumps(row)]) + "\n", encoding="utf-8")
    with pytest.raises(AlignlabError, match=rf"corpus\.jsonl:2.*{message}"):
        load_records(path)


def test_an_empty_prompt_takes_only_plain_text():
    with pytest.raises(AlignlabError, match="plain text .* must be a string"):
        SFTExample("", ({"role": "assistant", "content": "hi"},))


# ---- tokenize.train_on_prompt: a prompt-completion example trained on every token ---------------


def test_train_on_prompt_moves_the_prompt_into_the_loss(gpt2):
    from alignlab.data.tokenize import TokenizeOptions

    record = SFTExample("Question: what is two plus two?\nAnswer:", " four.")
    plain = RecordTokenizer(gpt2)(record)
    whole = RecordTokenizer(gpt2, TokenizeOptions(train_on_prompt=True))(record)
    assert whole.prompt_ids + whole.completion_ids == plain.prompt_ids + plain.completion_ids
    assert len(whole.prompt_ids) == 1 and whole.supervised is None


def test_train_on_prompt_supervises_every_turn_of_a_conversation(gpt2):
    from alignlab.data.formats import sft_messages
    from alignlab.data.tokenize import TokenizeOptions

    chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    [record] = sft_messages({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"},
                                          {"role": "user", "content": "and?"}, {"role": "assistant", "content": "so"}]},
                            "test")
    masked = RecordTokenizer(gpt2, TokenizeOptions(chat_template=chatml))(record)
    whole = RecordTokenizer(gpt2, TokenizeOptions(chat_template=chatml, train_on_prompt=True))(record)
    assert not all(masked.supervised)  # by default the second user turn is input only
    assert whole.prompt_ids + whole.completion_ids == masked.prompt_ids + masked.completion_ids
    assert whole.supervised is None


def test_train_on_prompt_nll_equals_the_models_own_loss_on_the_whole_sequence(tmp_path, bpe_llama_dir):
    tokenizer, reference = llama(bpe_llama_dir)
    record = SFTExample("the question", " and its answer")
    plain = RecordTokenizer(tokenizer)(record)
    ids = torch.tensor([list(plain.prompt_ids + plain.completion_ids)])
    with torch.no_grad():
        expected = float(reference(ids, labels=ids).loss)
    run = alignlab.train({"model": {"name_or_path": str(bpe_llama_dir)}, "tokenize": {"train_on_prompt": True},
                          "train": {"loss": "nll", "max_steps": 1, "batch_size": 1, "lr": 1e-6,
                                    "output_dir": str(tmp_path / "run")}},
                         train_data=[{"prompt": "the question", "completion": " and its answer"}],
                         console=Console(quiet=True))
    loss = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert loss == pytest.approx(expected, abs=1e-5)


def test_train_on_prompt_is_refused_for_a_loss_that_is_not_sft():
    from alignlab.config import check_run_config, load_config
    from alignlab.errors import ConfigError

    with pytest.raises(ConfigError, match="train_on_prompt.*'dpo' does not train on SFT data"):
        check_run_config(load_config(None, ["tokenize.train_on_prompt=true", "train.loss=dpo"]))
