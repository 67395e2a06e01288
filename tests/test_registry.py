"""Tests of the one registry: registration with a typed contract, lookup with suggestions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from alignlab.errors import AlignlabError, ConfigError
from alignlab.registry import DATA_KINDS, FORMATS, LOSSES, Entry, Registry, suggest


@dataclass(frozen=True)
class ToyContract:
    needs_ref: bool
    logps: str = "sum"


def toy_loss(chosen_logps, rejected_logps, *, beta: float = 0.1, label_smoothing: float = 0.0):
    return chosen_logps - rejected_logps


def open_loss(chosen_logps, rejected_logps, **hyper):
    return chosen_logps - rejected_logps


@pytest.fixture
def losses() -> Registry:
    registry = Registry("loss")
    registry.register("toy", ToyContract(needs_ref=True))(toy_loss)
    registry.register("open", ToyContract(needs_ref=False))(open_loss)
    return registry


def test_register_returns_the_object_unchanged_and_stores_its_contract(losses: Registry) -> None:
    entry = losses.get("toy")
    assert isinstance(entry, Entry)
    assert entry.name == "toy"
    assert entry.obj is toy_loss
    assert entry.contract == ToyContract(needs_ref=True, logps="sum")


def test_decorator_form_returns_the_function() -> None:
    registry = Registry("reward")

    @registry.register("length")
    def length(prompts, completions):
        return [len(c) for c in completions]

    assert length(["p"], ["abc"]) == [3]
    assert registry.get("length").obj is length
    assert registry.get("length").contract is None


def test_contract_and_entry_are_read_only(losses: Registry) -> None:
    entry = losses.get("toy")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.contract.needs_ref = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "other"  # type: ignore[misc]


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


def test_suggest() -> None:
    assert suggest("lrr", ["lr", "seed"]) == " Did you mean 'lr'?"
    assert suggest("lrr", ["lr", "seed"], prefix="train.") == " Did you mean 'train.lr'?"
    assert suggest("zzz", ["lr", "seed"]) == ""
    assert suggest("x", []) == ""


def test_module_level_registries_have_their_kinds_and_members() -> None:
    import alignlab.data.formats  # noqa: F401  (registers the formats)
    import alignlab.kinds  # noqa: F401  (registers the data kinds)
    import alignlab.losses  # noqa: F401  (registers the losses)

    assert [r.kind for r in (LOSSES, FORMATS, DATA_KINDS)] == ["loss", "data format", "data kind"]
    assert len(LOSSES) >= 30 and len(FORMATS) >= 10
    assert DATA_KINDS.names() == ["judged", "paired", "prm", "prompt", "ranked", "reward", "sft", "unpaired"]


def test_import_named_imports_what_the_user_names_and_explains_what_it_cannot() -> None:
    from alignlab.registry import import_named

    assert import_named("os.path:join", "judge") is __import__("os").path.join
    for spec in ("os.path.join", "os:", ":join", "a:b:c", 3, None):
        with pytest.raises(ConfigError, match=r"judge=.*write it as module:function\n  hint: a hint"):
            import_named(spec, "judge", "a hint")
    with pytest.raises(ConfigError, match="cannot import rl.opa.reviser no_such_module_xyz:f"):
        import_named("no_such_module_xyz:f", "rl.opa.reviser")
    with pytest.raises(ConfigError, match="cannot import reward os:no_such_name"):
        import_named("os:no_such_name", "reward")
