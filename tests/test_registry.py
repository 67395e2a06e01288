"""Tests of the one registry: registration, lookup with suggestions, hyperparameter checks."""

from __future__ import annotations

import pytest

from alignlab.errors import AlignlabError, ConfigError
from alignlab.registry import (
    DECODERS,
    FORMATS,
    LOSSES,
    METRICS,
    REWARDS,
    Entry,
    Registry,
    suggest,
)


def toy_loss(chosen_logps, rejected_logps, *, beta: float = 0.1, label_smoothing: float = 0.0):
    return chosen_logps - rejected_logps


def open_loss(chosen_logps, rejected_logps, **hyper):
    return chosen_logps - rejected_logps


@pytest.fixture
def losses() -> Registry:
    registry = Registry("loss")
    registry.register("toy", needs_ref=True, logps="sum", data="paired")(toy_loss)
    registry.register("open", needs_ref=False)(open_loss)
    return registry


def test_register_returns_the_object_unchanged_and_stores_its_contract(losses: Registry) -> None:
    entry = losses.get("toy")
    assert isinstance(entry, Entry)
    assert entry.name == "toy"
    assert entry.obj is toy_loss
    assert dict(entry.contract) == {"needs_ref": True, "logps": "sum", "data": "paired"}


def test_decorator_form_returns_the_function() -> None:
    registry = Registry("reward")

    @registry.register("length")
    def length(prompts, completions):
        return [len(c) for c in completions]

    assert length(["p"], ["abc"]) == [3]
    assert registry.get("length").obj is length
    assert dict(registry.get("length").contract) == {}


def test_contract_and_entry_are_read_only(losses: Registry) -> None:
    entry = losses.get("toy")
    with pytest.raises(TypeError):
        entry.contract["needs_ref"] = False  # type: ignore[index]
    with pytest.raises(AttributeError):
        entry.name = "other"  # type: ignore[misc]


def test_contract_is_a_copy_of_what_was_passed() -> None:
    registry = Registry("metric")
    contract = {"higher_is_better": True}
    registry.register("acc", **contract)(len)
    contract["higher_is_better"] = False
    assert registry.get("acc").contract["higher_is_better"] is True


def test_duplicate_name_is_a_config_error(losses: Registry) -> None:
    with pytest.raises(ConfigError, match="loss 'toy' is already registered") as info:
        losses.register("toy")(open_loss)
    assert isinstance(info.value, AlignlabError)
    assert losses.get("toy").obj is toy_loss  # the first registration is kept


def test_empty_name_is_rejected() -> None:
    with pytest.raises(ConfigError, match="non-empty string"):
        Registry("loss").register("")


def test_unknown_name_suggests_the_closest_and_lists_known_names(losses: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        losses.get("tyo")
    message = str(info.value)
    assert message.startswith("unknown loss 'tyo'. Did you mean 'toy'?")
    assert message.endswith("Known loss names: open, toy")


def test_unknown_name_without_close_match_has_no_suggestion(losses: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        losses.get("zzz")
    assert "Did you mean" not in str(info.value)
    assert "Known loss names: open, toy" in str(info.value)


def test_unknown_name_in_empty_registry() -> None:
    with pytest.raises(ConfigError, match="No decoder is registered yet"):
        Registry("decoder").get("bon")


def test_names_entries_contains_len_iter(losses: Registry) -> None:
    assert losses.names() == ["open", "toy"]
    assert [e.name for e in losses.entries()] == ["open", "toy"]
    assert [e.name for e in losses] == ["open", "toy"]
    assert len(losses) == 2
    assert "toy" in losses
    assert "dpo" not in losses
    assert len(Registry("loss")) == 0


def test_check_kwargs_accepts_known_hyperparameters(losses: Registry) -> None:
    losses.check_kwargs("toy", {})
    losses.check_kwargs("toy", {"beta": 0.5, "label_smoothing": 0.1})


def test_check_kwargs_typo_names_the_key_and_suggests(losses: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        losses.check_kwargs("toy", {"betta": 0.5})
    message = str(info.value)
    assert "unknown hyperparameter 'betta' for loss 'toy'." in message
    assert "Did you mean 'beta'?" in message
    assert "label_smoothing" in message  # the accepted names are listed


def test_check_kwargs_accepts_anything_with_var_keyword(losses: Registry) -> None:
    losses.check_kwargs("open", {"anything": 1, "at_all": 2})


def test_check_kwargs_rejects_positional_only_and_var_positional() -> None:
    registry = Registry("loss")

    @registry.register("pos")
    def pos(logps, /, *rest, gamma: float = 1.0):
        return logps

    registry.check_kwargs("pos", {"gamma": 2.0})
    for key in ("logps", "rest"):
        with pytest.raises(ConfigError, match=f"unknown hyperparameter '{key}'"):
            registry.check_kwargs("pos", {key: 1})


def test_check_kwargs_on_unknown_name_and_non_mapping(losses: Registry) -> None:
    with pytest.raises(ConfigError, match="unknown loss 'nope'"):
        losses.check_kwargs("nope", {})
    with pytest.raises(ConfigError, match="must be a mapping, got list"):
        losses.check_kwargs("toy", ["beta"])  # type: ignore[arg-type]


def test_check_kwargs_on_a_class_reads_its_init() -> None:
    registry = Registry("reward")

    @registry.register("scaled")
    class Scaled:
        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale

    registry.check_kwargs("scaled", {"scale": 2.0})
    with pytest.raises(ConfigError, match="Did you mean 'scale'"):
        registry.check_kwargs("scaled", {"sacle": 2.0})


def test_suggest() -> None:
    assert suggest("lrr", ["lr", "seed"]) == " Did you mean 'lr'?"
    assert suggest("lrr", ["lr", "seed"], prefix="train.") == " Did you mean 'train.lr'?"
    assert suggest("zzz", ["lr", "seed"]) == ""
    assert suggest("x", []) == ""


def test_module_level_registries_have_their_kinds() -> None:
    kinds = [r.kind for r in (LOSSES, REWARDS, DECODERS, METRICS, FORMATS)]
    assert kinds == ["loss", "reward", "decoder", "metric", "data format"]
