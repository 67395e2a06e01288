"""Exact prompt/completion ids from alignlab.data.tokenize, on tokenizers trained inside the tests.

Run: ``PYTHONPATH=src .venv/bin/pytest tests/data/test_tokenize.py``
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from alignlab.data.records import Feedback, Judged, PreferencePair, RankedResponses, SFTExample
from alignlab.data.tokenize import (
    Encoded,
    RecordTokenizer,
    TokenizedCompletion,
    TokenizedJudged,
    TokenizedPair,
    TokenizedRanked,
    TokenizeOptions,
)
from alignlab.errors import ConfigError, TokenizationError

SPECIAL = ["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>", "<|pad|>", "<|eot|>", "<unk>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
EOT_TEMPLATE = CHATML.replace("<|im_end|>", "<|eot|>")
CORPUS = [
    "Answer: Paris is the capital of France.",
    "Question: what is two plus two? Answer: four.",
    "The capital of Italy is Rome, the capital of Spain is Madrid.",
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "user assistant system: be helpful and honest.\n\n",
]
CHAT_PROMPT = ({"role": "user", "content": "What is the capital of France?"},)


def train(pre_tokenizer: object, decoder: object) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIAL, initial_alphabet=alphabet)
    tok.train_from_iterator(CORPUS * 20, trainer)
    return tok


def wrap(
    raw: Tokenizer, post: str | None = None, eos: str | None = "<|im_end|>",
    template: str | None = CHATML,
) -> PreTrainedTokenizerFast:
    tok = Tokenizer.from_str(raw.to_str())
    if post is not None:
        special = [(t, tok.token_to_id(t)) for t in ("<|bos|>", "<|im_end|>", "<|eos|>")]
        tok.post_processor = processors.TemplateProcessing(single=post, special_tokens=special)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token=eos, pad_token="<|pad|>",
        unk_token="<unk>",
    )
    hf.chat_template = template
    return hf


@pytest.fixture(scope="module")
def byte_bpe() -> Tokenizer:
    return train(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel())


@pytest.fixture(scope="module")
def bpe(byte_bpe: Tokenizer) -> PreTrainedTokenizerFast:
    """Byte-level BPE, ChatML, eos = <|im_end|>, no BOS added (Qwen-like)."""
    return wrap(byte_bpe)


@pytest.fixture(scope="module")
def bpe_bos(byte_bpe: Tokenizer) -> PreTrainedTokenizerFast:
    """Its post-processor adds BOS (Llama-3-like)."""
    return wrap(byte_bpe, post="<|bos|> $A")


@pytest.fixture(scope="module")
def bpe_bos_eos(byte_bpe: Tokenizer) -> PreTrainedTokenizerFast:
    """Its post-processor adds BOS and EOS: that EOS must never reach a prompt."""
    return wrap(byte_bpe, post="<|bos|> $A <|im_end|>")


@pytest.fixture(scope="module")
def bpe_eot(byte_bpe: Tokenizer) -> PreTrainedTokenizerFast:
    """The template ends turns with <|eot|>, but eos is <|eos|>."""
    return wrap(byte_bpe, eos="<|eos|>", template=EOT_TEMPLATE)


@pytest.fixture(scope="module")
def spm(byte_bpe: Tokenizer) -> PreTrainedTokenizerFast:
    """Sentencepiece-style: Metaspace (prepend "first"), adds BOS, template emits BOS (Llama-2)."""
    raw = train(
        pre_tokenizers.Metaspace(prepend_scheme="first"), decoders.Metaspace(prepend_scheme="first")
    )
    return wrap(raw, post="<|bos|> $A", eos="<|eos|>", template="{{ bos_token }}" + CHATML)


def ids(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_bos_detected_from_what_the_tokenizer_adds(bpe, bpe_bos, bpe_bos_eos, spm):
    assert [RecordTokenizer(t).adds_bos for t in (bpe, bpe_bos, bpe_bos_eos, spm)] == [
        False, True, True, True
    ]


@pytest.mark.parametrize("name", ["bpe", "bpe_bos", "bpe_bos_eos"])
def test_string_prompt_ids_exact_and_eos_once(name, request):
    tok = request.getfixturevalue(name)
    prompt, completion = "Question: what is two plus two?", " Answer: four."
    enc = RecordTokenizer(tok).encode(prompt, completion)
    bos = [tok.bos_token_id] if name != "bpe" else []
    assert list(enc.prompt_ids) == bos + ids(tok, prompt)
    assert list(enc.completion_ids) == ids(tok, completion) + [tok.eos_token_id]
    assert enc.completion_ids.count(tok.eos_token_id) == 1
    assert tok.eos_token_id not in enc.prompt_ids  # not even with a BOS+EOS post-processor
    assert not enc.truncated
    text = tok.decode(enc.prompt_ids + enc.completion_ids)
    assert text == ("<|bos|>" if bos else "") + prompt + completion + "<|im_end|>"


def test_bos_in_text_is_not_doubled(bpe_bos):
    rt = RecordTokenizer(bpe_bos)
    enc = rt.encode("<|bos|>Hello world", " four")
    assert list(enc.prompt_ids) == ids(bpe_bos, "<|bos|>Hello world")
    assert enc.prompt_ids.count(bpe_bos.bos_token_id) == 1
    assert rt.stats["bos_in_text"] == 1


def test_merge_across_boundary_keeps_prompt_ids(bpe):
    rt = RecordTokenizer(bpe)
    joint = bpe.convert_ids_to_tokens(ids(bpe, "Answer: Paris"))
    assert "ĠParis" in joint  # the space of the prompt and the completion merge into one token
    enc = rt.encode("Answer: ", "Paris")
    assert list(enc.prompt_ids) == ids(bpe, "Answer: ")
    assert list(enc.completion_ids) == ids(bpe, "Paris") + [bpe.eos_token_id]
    assert bpe.decode(enc.prompt_ids + enc.completion_ids) == "Answer: Paris<|im_end|>"
    assert rt.stats["boundary_merges"] == 1


def test_merge_inside_a_word(bpe):
    prompt, completion = "The capi", "tal of Italy is Rome"
    joint = ids(bpe, prompt + completion)
    k = bpe.convert_ids_to_tokens(joint).index("Ġcapital")
    enc = RecordTokenizer(bpe).encode(prompt, completion)
    assert list(enc.prompt_ids) == ids(bpe, prompt)
    assert list(enc.completion_ids) == ids(bpe, "tal") + joint[k + 1:] + [bpe.eos_token_id]
    assert bpe.decode(enc.prompt_ids + enc.completion_ids) == prompt + completion + "<|im_end|>"


def test_merge_without_offsets_uses_decoding(bpe, monkeypatch):
    """Slow tokenizers have no offsets; the decode search must find the same ids."""
    monkeypatch.setattr(type(bpe), "is_fast", property(lambda self: False))
    enc = RecordTokenizer(bpe).encode("Answer: ", "Paris")
    assert list(enc.completion_ids) == ids(bpe, "Paris") + [bpe.eos_token_id]


def test_metaspace_boundary_roundtrip(spm):
    rt = RecordTokenizer(spm)
    # Encoded alone, "Paris" gets a word-start marker, which would decode as a second space.
    assert spm.decode(ids(spm, "Answer: ") + ids(spm, "Paris")) != "Answer: Paris"
    for prompt, completion in [("Answer: ", "Paris"), ("Answer:", " Paris"), ("The capi", "tal")]:
        enc = rt.encode(prompt, completion)
        assert list(enc.prompt_ids) == [spm.bos_token_id] + ids(spm, prompt)
        assert enc.completion_ids[-1] == spm.eos_token_id
        text = spm.decode(enc.prompt_ids + enc.completion_ids, skip_special_tokens=True)
        assert text == prompt + completion
    assert rt.stats["boundary_merges"] >= 1


@pytest.mark.parametrize(
    "completion", ["four", "four<|im_end|>", "four<|im_end|><|im_end|>", "four<|im_end|>\n"]
)
def test_string_eos_exactly_once(bpe, completion):
    rt = RecordTokenizer(bpe)
    enc = rt.encode("Question: what is two plus two?", completion)
    assert list(enc.completion_ids) == ids(bpe, "four") + [bpe.eos_token_id]
    assert rt.stats["eos_in_text"] == ("<|im_end|>" in completion)
    assert rt.stats["text_after_eos_cut"] == 0


def test_text_after_last_eos_is_cut_and_counted(bpe):
    rt = RecordTokenizer(bpe)
    enc = rt.encode("Question:", " four<|im_end|> Rome")
    assert list(enc.completion_ids) == ids(bpe, " four<|im_end|>")
    assert rt.stats["text_after_eos_cut"] == 1


def test_chat_ids_and_eos_once(bpe):
    rt = RecordTokenizer(bpe)
    out = rt(SFTExample(CHAT_PROMPT, "Paris"))
    assert isinstance(out, TokenizedCompletion)
    prompt_text = (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert list(out.prompt_ids) == ids(bpe, prompt_text)
    # The template's "\n" after <|im_end|> is cut and no second EOS is appended (TRL #4481).
    assert list(out.completion_ids) == ids(bpe, "Paris<|im_end|>")
    assert out.completion_ids.count(bpe.eos_token_id) == 1
    assert out.prompt_ids.count(bpe.eos_token_id) == len(CHAT_PROMPT)  # one per prompt turn only
    content_with_eos = rt(SFTExample(CHAT_PROMPT, "Paris<|im_end|>"))
    assert content_with_eos.completion_ids == out.completion_ids
    assert rt.stats["eos_in_text"] == 1


@pytest.mark.parametrize("fixture", ["bpe", "bpe_bos", "bpe_bos_eos"])
def test_a_prompt_alone_encodes_as_in_a_pair(fixture: str, request: pytest.FixtureRequest) -> None:
    """What generation continues from is the prompt of training: same BOS, template, truncation."""
    tokenizer = request.getfixturevalue(fixture)
    for options in (TokenizeOptions(), TokenizeOptions(max_prompt_length=4)):
        rt = RecordTokenizer(tokenizer, options)
        for prompt in ("Question: what is two plus two?", CHAT_PROMPT):
            assert rt.encode_prompt(prompt) == rt.encode(prompt, "four").prompt_ids


def test_template_bos_not_doubled(byte_bpe):
    tok = wrap(byte_bpe, post="<|bos|> $A", template="{{ bos_token }}" + CHATML)
    rt = RecordTokenizer(tok)
    enc = rt.encode(CHAT_PROMPT, ({"role": "assistant", "content": "Paris"},))
    assert enc.prompt_ids[0] == tok.bos_token_id
    assert enc.prompt_ids.count(tok.bos_token_id) == 1
    assert rt.stats["bos_in_text"] == 0  # a template writing BOS is normal, not a finding


def test_bos_in_the_users_text_is_kept_once_and_counted(byte_bpe):
    tok = wrap(byte_bpe, post="<|bos|> $A", template="{{ bos_token }}" + CHATML)
    rt = RecordTokenizer(tok)
    plain = rt.encode("What is two plus two?", " four")
    text_bos = rt.encode("<|bos|>What is two plus two?", " four")
    assert text_bos.prompt_ids == plain.prompt_ids
    assert text_bos.prompt_ids.count(tok.bos_token_id) == 1
    assert rt.stats["bos_in_text"] == 1
    # Text that already doubles BOS (a pipeline that added it twice): collapsed, counted.
    doubled = rt.encode("<|bos|><|bos|>What is two plus two?", " four")
    assert doubled.prompt_ids == plain.prompt_ids
    assert rt.stats["bos_in_text"] == 2


def test_end_of_turn_token_other_than_eos(bpe_eot):
    rt = RecordTokenizer(bpe_eot)
    enc = rt.encode(CHAT_PROMPT, "Paris")
    assert list(enc.completion_ids) == ids(bpe_eot, "Paris<|eot|>")  # as rendered, no EOS added
    assert bpe_eot.eos_token_id not in enc.completion_ids
    plain = rt.encode("Question: what is two plus two?", " four")
    assert list(plain.completion_ids) == ids(bpe_eot, " four") + [bpe_eot.eos_token_id]


def test_template_rendering_prompt_differently_raises(byte_bpe):
    template = CHATML.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>bot\n{% endif %}")
    with pytest.raises(TokenizationError, match="renders the prompt differently"):
        RecordTokenizer(wrap(byte_bpe, template=template)).encode(CHAT_PROMPT, "Paris")


def test_missing_chat_template_raises_and_option_fixes_it(byte_bpe):
    tok = wrap(byte_bpe, template=None)
    with pytest.raises(TokenizationError, match="chat_template"):
        RecordTokenizer(tok).encode(CHAT_PROMPT, "Paris")
    enc = RecordTokenizer(tok, TokenizeOptions(chat_template=CHATML)).encode(CHAT_PROMPT, "Paris")
    assert list(enc.completion_ids) == ids(tok, "Paris<|im_end|>")


def test_tokenizer_without_eos_raises(byte_bpe):
    with pytest.raises(TokenizationError, match="eos_token"):
        RecordTokenizer(wrap(byte_bpe, eos=None))


def test_bad_options():
    with pytest.raises(ConfigError, match="max_length"):
        TokenizeOptions(max_length=0)
    with pytest.raises(ConfigError, match="completion_overflow"):
        TokenizeOptions(completion_overflow="wrap")  # type: ignore[arg-type]


def test_prompt_truncation_keeps_end_and_bos(bpe, bpe_bos):
    prompt = "Hello world! The quick brown fox jumps over the lazy dog."
    rt = RecordTokenizer(bpe_bos, TokenizeOptions(max_prompt_length=4))
    enc = rt.encode(prompt, " four")
    assert list(enc.prompt_ids) == [bpe_bos.bos_token_id] + ids(bpe_bos, prompt)[-3:]
    assert rt.stats["prompts_truncated"] == 1
    enc = RecordTokenizer(bpe, TokenizeOptions(max_prompt_length=4)).encode(prompt, " four")
    assert list(enc.prompt_ids) == ids(bpe, prompt)[-4:]


def test_completion_truncation_and_drop(bpe):
    prompt, completion = "Question:", " The quick brown fox jumps over the lazy dog."
    full = ids(bpe, completion) + [bpe.eos_token_id]
    rt = RecordTokenizer(bpe, TokenizeOptions(max_completion_length=3))
    enc = rt.encode(prompt, completion)
    assert enc == Encoded(tuple(ids(bpe, prompt)), tuple(full[:3]), True)
    assert rt.stats["completions_truncated"] == 1
    n_prompt = len(ids(bpe, prompt))
    rt = RecordTokenizer(bpe, TokenizeOptions(max_length=n_prompt + 2))
    assert list(rt.encode(prompt, completion).completion_ids) == full[:2]
    rt = RecordTokenizer(bpe, TokenizeOptions(max_length=n_prompt + 2, completion_overflow="drop"))
    assert rt.encode(prompt, completion) is None
    assert rt.encode(prompt, " dog") is not None  # fits: 1 token + EOS
    assert rt.stats["dropped_overlong"] == 1
    rt = RecordTokenizer(bpe, TokenizeOptions(max_length=n_prompt))
    assert rt.encode(prompt, completion) is None
    assert rt.stats["dropped_prompt_too_long"] == 1


def test_pair_shares_prompt_and_is_dropped_whole(bpe):
    pair = PreferencePair("Question:", " four", " The quick brown fox jumps over the lazy dog.")
    n_prompt = len(ids(bpe, "Question:"))
    out = RecordTokenizer(bpe, TokenizeOptions(max_length=n_prompt + 3))(pair)
    assert isinstance(out, TokenizedPair)
    assert list(out.chosen_ids) == ids(bpe, " four") + [bpe.eos_token_id]
    assert list(out.rejected_ids) == ids(bpe, pair.rejected)[:3]
    rt = RecordTokenizer(bpe, TokenizeOptions(max_length=n_prompt + 3, completion_overflow="drop"))
    result = rt.map([pair, PreferencePair("Question:", " four", " Rome")], progress=False)
    assert [item.record.rejected for item in result.items] == [" Rome"]
    assert result.stats == {"records": 2, "kept": 1, "dropped_overlong": 1}


def test_pair_token_weights(bpe):
    n = len(ids(bpe, " four"))  # tokens without EOS
    pair = PreferencePair("Question:", " four", " five", chosen_token_weights=[0.5] * n)
    out = RecordTokenizer(bpe)(pair)
    assert out.chosen_weights == (0.5,) * n + (1.0,)
    assert out.rejected_weights is None
    with_eos = PreferencePair("Question:", " four", " five", chosen_token_weights=[0.5] * (n + 1))
    assert RecordTokenizer(bpe)(with_eos).chosen_weights == (0.5,) * (n + 1)
    long = " The quick brown fox jumps over the lazy dog."
    weights = [float(i) for i in range(len(ids(bpe, long)))]
    cut = PreferencePair("Question:", long, " five", chosen_token_weights=weights)
    out = RecordTokenizer(bpe, TokenizeOptions(max_completion_length=2))(cut)
    assert out.chosen_weights == (0.0, 1.0)
    bad = PreferencePair("Question:", " four", " five", rejected_token_weights=[1.0] * 7)
    m = len(ids(bpe, " five")) + 1
    with pytest.raises(TokenizationError, match=rf"rejected_token_weights has 7 weights .* {m} "):
        RecordTokenizer(bpe)(bad)


def test_other_record_kinds(bpe):
    rt = RecordTokenizer(bpe)
    feedback = rt(Feedback("Question:", " four", True))
    assert isinstance(feedback, TokenizedCompletion) and feedback.record.label is True
    ranked = rt(RankedResponses("Question:", (" four", " five", " six"), scores=(1, 0, 0)))
    assert isinstance(ranked, TokenizedRanked) and len(ranked.responses_ids) == 3
    assert ranked.responses_ids[1] == tuple(ids(bpe, " five") + [bpe.eos_token_id])
    judged = rt(Judged("Question:", " five", judgment="wrong"))
    assert isinstance(judged, TokenizedJudged) and judged.prompt_ids == tuple(ids(bpe, "Question:"))


def test_map_progress_and_error_location(bpe):
    rt = RecordTokenizer(bpe)
    result = rt.map([SFTExample("Question:", f" {i}") for i in range(1200)], progress=True)
    assert len(result.items) == 1200 and result.stats["kept"] == 1200
    bad = PreferencePair("Question:", " four", " five", chosen_token_weights=[1.0] * 3, id="r7")
    with pytest.raises(TokenizationError, match=r"record #1 \(id 'r7'\): chosen_token_weights"):
        rt.map([SFTExample("Question:", " four"), bad], progress=False)


TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\t "), min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(prompt=TEXT, completion=TEXT)
def test_property_byte_level_roundtrip_exact(bpe, prompt, completion):
    # Literal special-token strings in the text are data findings with their own tests
    # (Hypothesis mines string constants from the source, so it does try them).
    assume(not any(token in prompt + completion for token in SPECIAL))
    enc = RecordTokenizer(bpe, TokenizeOptions(max_length=None)).encode(prompt, completion)
    assert list(enc.prompt_ids) == ids(bpe, prompt)
    assert bpe.decode(enc.prompt_ids + enc.completion_ids) == prompt + completion + "<|im_end|>"
    assert enc.completion_ids.count(bpe.eos_token_id) == 1
    assert enc.completion_ids[-1] == bpe.eos_token_id
    assert bpe.eos_token_id not in enc.prompt_ids


@settings(max_examples=200, deadline=None)
@given(prompt=TEXT, completion=TEXT)
def test_property_metaspace_boundary(spm, prompt, completion):
    assume(not any(token in prompt + completion for token in SPECIAL))
    enc = RecordTokenizer(spm, TokenizeOptions(max_length=None)).encode(prompt, completion)
    joint = spm.decode(ids(spm, prompt + completion))
    added = 0 if ids(spm, prompt)[:1] == [spm.bos_token_id] else 1  # text already starting with BOS
    assert spm.decode(enc.prompt_ids[added:] + enc.completion_ids[:-1]) == joint
