"""Tests of the typed configs: YAML loading, dotted overrides, type and key errors, help text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from alignlab.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TokenizeConfig,
    TrainConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    help_text,
    load_config,
    to_dict,
)
from alignlab.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config == RunConfig()
    assert config.train.lr == 5e-7
    assert config.train.loss == "dpo"
    assert config.tokenize.max_length == 1024
    assert config.data.mapping == {}
    assert config.model.dtype == "float32"


def test_yaml_file_is_loaded_into_typed_sections(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "data:\n  path: pairs.jsonl\n  mapping: {chosen: response_a}\n"
        "train:\n  lr: 1e-6\n  epochs: 2\n  loss_kwargs: {beta: 0.1}\n",
    )
    config = load_config(path)
    assert config.data == DataConfig(path="pairs.jsonl", mapping={"chosen": "response_a"})
    assert config.train.lr == 1e-6 and isinstance(config.train.lr, float)
    assert config.train.epochs == 2.0 and isinstance(config.train.epochs, float)  # int accepted
    assert config.train.loss_kwargs == {"beta": 0.1}
    assert config.model == ModelConfig()


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = RunConfig(
        data=DataConfig(
            path="d.jsonl", mapping={"chosen": "a", "rejected": "1e5"}, on_error="skip"
        ),
        tokenize=TokenizeConfig(max_length=None, chat_template="{{ messages }}"),
        model=ModelConfig(name_or_path="gpt2", dtype="bfloat16", trust_remote_code=True),
        train=TrainConfig(lr=1e-6, loss_kwargs={"beta": 1e-2, "note": "1e5"}, max_steps=10),
    )
    text = dump_yaml(config)
    assert load_config(write(tmp_path, text)) == config
    # A string that looks like an exponent float is quoted, so it stays a string.
    assert load_config(write(tmp_path, text)).data.mapping["rejected"] == "1e5"


def test_to_dict_is_plain_data_and_from_dict_inverts_it() -> None:
    data = to_dict(RunConfig())
    assert data["train"]["lr"] == 5e-7
    assert data["tokenize"]["max_prompt_length"] is None
    assert list(data) == ["data", "tokenize", "model", "train", "rl"]
    assert from_dict(RunConfig, data) == RunConfig()


def test_dotted_overrides() -> None:
    config = load_config(
        None, ["train.lr=1e-6", "data.mapping.chosen=response_a", "train.max_steps=5"]
    )
    assert config.train.lr == 1e-06
    assert type(config.train.lr) is float
    assert config.data.mapping == {"chosen": "response_a"}
    assert config.train.max_steps == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-6", 1e-6), ("2E3", 2000.0), ("-1.5e+2", -150.0), ("3.0e5", 3e5), ("1", 1)],
)
def test_override_values_in_exponent_notation_are_floats(text: str, expected: float) -> None:
    value = apply_overrides({}, [f"train.x={text}"])["train"]["x"]
    assert value == expected
    assert type(value) is type(expected)


def test_override_values_are_yaml() -> None:
    data = apply_overrides(
        {},
        ["a.b=true", "a.c=null", "a.d=[1, 2]", "a.e={beta: 0.1}", "a.f='1e-6'", "a.g=x=y"],
    )
    assert data == {
        "a": {"b": True, "c": None, "d": [1, 2], "e": {"beta": 0.1}, "f": "1e-6", "g": "x=y"}
    }


def test_overrides_replace_file_values_and_leave_the_input_alone(tmp_path: Path) -> None:
    original = {"train": {"lr": 1e-5, "seed": 3}}
    data = apply_overrides(original, ["train.lr=2e-6", "train.loss_kwargs.beta=0.5"])
    assert data == {"train": {"lr": 2e-6, "seed": 3, "loss_kwargs": {"beta": 0.5}}}
    assert original == {"train": {"lr": 1e-5, "seed": 3}}
    config = load_config(write(tmp_path, "train:\n  lr: 1.0e-5\n"), ["train.lr=3e-6"])
    assert config.train.lr == 3e-6


@pytest.mark.parametrize("override", ["train.lr", "=3", "train..lr=1", ".lr=1"])
def test_malformed_override_is_an_error_with_an_example(override: str) -> None:
    with pytest.raises(ConfigError, match="example: train.lr=1e-6"):
        apply_overrides({}, [override])


def test_override_below_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'train.lr' is a value"):
        apply_overrides({"train": {"lr": 1e-6}}, ["train.lr.x=1"])


def test_override_with_invalid_yaml_value() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        apply_overrides({}, ["data.path=[unclosed"])


def test_override_of_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.lrr=1e-6"])
    assert str(info.value).startswith("unknown config key 'train.lrr'. Did you mean 'train.lr'?")


def test_nested_unknown_key_in_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tokenize:\n  max_lenght: 512\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "unknown config key 'tokenize.max_lenght'." in message
    assert "Did you mean 'tokenize.max_length'?" in message
    assert "Keys of 'tokenize': max_length, max_prompt_length" in message


def test_unknown_section_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'\. Did you mean 'train'\?"):
        from_dict(RunConfig, {"trian": {}})


def test_unrelated_unknown_key_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, {"train": {"xyz": 1}})
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        ({"train": {"batch_size": "eight"}}, "train.batch_size", "expects int, got 'eight' (str)"),
        ({"train": {"batch_size": 8.0}}, "train.batch_size", "expects int, got 8.0 (float)"),
        ({"train": {"batch_size": True}}, "train.batch_size", "expects int, got True (bool)"),
        ({"model": {"trust_remote_code": 1}}, "model.trust_remote_code", "expects bool, got 1"),
        ({"model": {"trust_remote_code": "yes"}}, "model.trust_remote_code", "expects bool"),
        ({"train": {"lr": "fast"}}, "train.lr", "expects float, got 'fast' (str)"),
        ({"train": {"lr": True}}, "train.lr", "expects float, got True (bool)"),
        ({"data": {"path": 3}}, "data.path", "expects str | null, got 3 (int)"),
        ({"tokenize": {"max_length": "1k"}}, "tokenize.max_length", "expects int | null"),
        ({"data": {"mapping": ["chosen"]}}, "data.mapping", "expects a mapping of str to str"),
        ({"data": {"mapping": {"chosen": 1}}}, "data.mapping.chosen", "expects str, got 1 (int)"),
        ({"train": {"loss_kwargs": 0.1}}, "train.loss_kwargs", "expects a mapping of str to any"),
        ({"train": 3}, "train", "must be a mapping of keys to values, got 3 (int)"),
    ],
)
def test_wrong_types_name_the_key_the_type_and_the_value(
    data: dict[str, Any], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(RunConfig, data)
    assert f"'{key}'" in str(info.value)
    assert expected in str(info.value)


def test_bool_error_says_how_to_write_it() -> None:
    with pytest.raises(ConfigError, match=r"write true or false"):
        load_config(None, ["model.trust_remote_code=1"])


def test_literal_violation_lists_choices_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.schedule=cosin"])
    message = str(info.value)
    assert "config key 'train.schedule' must be one of 'constant', 'linear', 'cosine'" in message
    assert "got 'cosin' (str). Did you mean 'cosine'?" in message


def test_null_section_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "train:\nmodel:\n")) == RunConfig()


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == RunConfig()


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: 1e-6\n  seed: [1, 2\nmodel:\n  dtype: auto\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:4: invalid YAML")


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: 1e-6\n  seed: 1\n  lr: 2e-6\n")
    with pytest.raises(ConfigError, match=r":4: invalid YAML: duplicate key 'lr'"):
        load_config(path)


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    path = write(tmp_path, "train: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=0", "config key 'train.lr' must be positive, got 0.0"),
        ("train.lr=-1e-6", "config key 'train.lr' must be positive"),
        ("train.lr=.inf", "config key 'train.lr' must be positive, got inf"),
        ("train.batch_size=0", "config key 'train.batch_size' must be at least 1, got 0"),
        ("train.grad_accum=0", "config key 'train.grad_accum' must be at least 1"),
        ("train.max_steps=0", "config key 'train.max_steps' must be at least 1"),
        ("train.epochs=0", "config key 'train.epochs' must be positive"),
        ("train.warmup_ratio=1", "config key 'train.warmup_ratio' must be in [0, 1), got 1.0"),
        ("train.warmup_ratio=-0.1", "config key 'train.warmup_ratio' must be in [0, 1)"),
        ("tokenize.max_length=0", "config key 'tokenize.max_length' must be a positive integer or null"),
        (
            "tokenize.max_prompt_length=1024",
            "config key 'tokenize.max_prompt_length' (1024) must be less than max_length (1024)",
        ),
    ],
)
def test_semantic_validation_names_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(message)


def test_semantic_validation_on_direct_construction() -> None:
    with pytest.raises(ConfigError, match="config key 'batch_size' must be at least 1"):
        TrainConfig(batch_size=0)
    TokenizeConfig(max_length=None, max_prompt_length=4096)  # no max_length: nothing to compare


def test_configs_are_frozen() -> None:
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train = TrainConfig()  # type: ignore[misc]
    for cls in (RunConfig, DataConfig, TokenizeConfig, ModelConfig, TrainConfig):
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_help_text_reads_attribute_docstrings() -> None:
    texts = help_text(RunConfig)
    assert texts["train.lr"] == "Peak learning rate."
    assert texts["train"] == "Objective and optimization schedule."
    assert texts["model.tokenizer"] == "Tokenizer hub id or directory; none uses the model's own."
    assert help_text(TrainConfig)["lr"] == "Peak learning rate."


def test_every_config_key_has_help_text() -> None:
    def keys(cls: type, prefix: str = "") -> list[str]:
        out = []
        for f in dataclasses.fields(cls):
            out.append(prefix + f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(default):
                out += keys(type(default), f"{prefix}{f.name}.")
        return out

    texts = help_text(RunConfig)
    assert sorted(texts) == sorted(keys(RunConfig))
    assert all(text.strip() for text in texts.values())


@dataclass(frozen=True)
class Inner:
    """A nested section for the generic tests."""

    tags: tuple[str, ...] = ()
    """Tags."""
    mode: Literal["a", "b", 1] = "a"
    """Mode."""


@dataclass(frozen=True)
class Outer:
    """A config outside alignlab's own, to test from_dict's type support."""

    inner: Inner = field(default_factory=Inner)
    """Inner."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Extra."""
    ratio: float | None = None
    """Ratio."""


def test_from_dict_tuples_literals_and_a_custom_class(tmp_path: Path) -> None:
    config = from_dict(Outer, {"inner": {"tags": ["x", "y"], "mode": 1}, "ratio": 2})
    assert config.inner == Inner(tags=("x", "y"), mode=1)
    assert config.ratio == 2.0 and isinstance(config.ratio, float)
    with pytest.raises(ConfigError, match=r"'inner.tags\[1\]' expects str, got 2 \(int\)"):
        from_dict(Outer, {"inner": {"tags": ["x", 2]}})
    with pytest.raises(ConfigError, match="'inner.tags' expects a list of str"):
        from_dict(Outer, {"inner": {"tags": "x"}})
    with pytest.raises(ConfigError, match="'inner.mode' must be one of 'a', 'b', 1, got True"):
        from_dict(Outer, {"inner": {"mode": True}})
    loaded = load_config(write(tmp_path, yaml.safe_dump(to_dict(config))), cls=Outer)
    assert loaded == config
    assert to_dict(config)["inner"]["tags"] == ["x", "y"]
