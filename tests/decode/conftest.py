"""Fixtures of the decoding tests: a tiny model behind a text sampler."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.decode import SamplingOptions
from alignlab.decode.candidates import TextSampler
from alignlab.models.tiny import init_tiny_model


@pytest.fixture(scope="module")
def sampler(tmp_path_factory: pytest.TempPathFactory) -> TextSampler:
    """The tiny model with its output layer ×8 (fewer near-ties, EOS within reach), 6 new tokens, seed 3."""
    path = init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)
    return TextSampler(model, AutoTokenizer.from_pretrained(path), SamplingOptions(max_new_tokens=6, seed=3))
