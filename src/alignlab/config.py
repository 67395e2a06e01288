"""Typed, frozen run configs: YAML files plus dotted command-line overrides; unknown keys are errors.

Example: ``load_config("run.yaml", ["train.lr=1e-6", "data.mapping.chosen=response_a"])``
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import math
import re
import textwrap
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from alignlab.data.load import LoadOptions
from alignlab.data.tokenize import TokenizeOptions
from alignlab.errors import ConfigError, ConfigValueError, require
from alignlab.registry import suggest

C = TypeVar("C")

# PyYAML implements YAML 1.1, where a float needs a dot: `lr: 1e-6` would load as the string
# "1e-6". Both classes add the YAML 1.2 exponent forms (the dumper so that a *string* "1e5" gets
# quoted and survives a round trip). They derive from the Safe classes: plain data only.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Plain PyYAML keeps the last of two equal keys silently; a repeated `train:` section
        # would discard half a config without a word.
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    pass


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: as safe as safe_load


@dataclass(frozen=True)
class DataConfig(LoadOptions):
    """Where the training data comes from; how it is read is :class:`LoadOptions`, inherited."""

    path: str | None = None
    """Training data: a file (.jsonl, .json, .parquet, .csv), a directory, or a hub dataset id."""
    eval_path: str | None = None
    """Held-out evaluation data in the same format as `path`; none means no evaluation set."""


TokenizeConfig = TokenizeOptions
"""The ``tokenize`` section is the tokenizer's own options class: one definition, one set of checks."""


@dataclass(frozen=True)
class ModelConfig:
    """Which model and tokenizer to load, and how."""

    name_or_path: str | None = None
    """The policy model: a Hugging Face hub id or a local directory."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; none uses the model's own."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint; only for sources you trust."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Weight dtype; "auto" keeps the dtype stored in the checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    """The objective and the optimization schedule."""

    loss: str = "dpo"
    """Name of a registered loss, e.g. dpo."""
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    """Hyperparameters of the loss by name, e.g. {beta: 0.1}; unset ones keep the paper defaults."""
    lr: float = 5e-7
    """Peak learning rate."""
    batch_size: int = 8
    """Examples per forward pass on each device; a step sees batch_size x grad_accum x devices."""
    grad_accum: int = 1
    """Batches whose gradients are accumulated into one optimizer step."""
    epochs: float = 1.0
    """Passes over the training data; a fraction stops partway. max_steps takes precedence."""
    max_steps: int | None = None
    """Optimizer steps to run; when set it replaces epochs."""
    warmup_ratio: float = 0.0
    """Share of all steps spent raising the learning rate linearly from 0 to lr."""
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    """Learning rate after warmup: constant, or a linear or cosine decay to 0."""
    seed: int = 0
    """Random seed for data order, dropout and initialization."""
    output_dir: str = "runs/latest"
    """Run directory: resolved config, metrics, checkpoints and the final model."""

    def __post_init__(self) -> None:
        for key in ("lr", "epochs"):
            value = getattr(self, key)
            require(math.isfinite(value) and value > 0, key, f"must be positive, got {value}")
        for key in ("batch_size", "grad_accum", "max_steps"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be at least 1, got {value}")
        ratio = self.warmup_ratio
        require(0 <= ratio < 1, "warmup_ratio", f"must be in [0, 1), got {ratio}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one `alignlab train` run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    """Training and evaluation data."""
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    """Tokenization limits and chat template."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model and tokenizer to load."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Objective and optimization schedule."""


def check_run_config(config: RunConfig) -> None:
    """Checks that need the registries: the loss exists and its hyperparameters are its own.

    Run before any training starts, so a typo fails in a second, not after the model loads.
    """
    from alignlab.losses.contract import check_loss_kwargs, get_loss

    try:
        get_loss(config.train.loss)
        check_loss_kwargs(config.train.loss, config.train.loss_kwargs)
    except ConfigError as error:
        raise ConfigError(f"train.loss / train.loss_kwargs: {error}") from None


def from_dict(cls: type[C], data: Mapping[str, Any], path: str = "") -> C:
    """Build the (nested) frozen dataclass ``cls`` from plain data, checking every key and type.

    ``path`` is the dotted location of ``data`` in the whole config, used in error messages.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        where = f"section '{path}'" if path else "the top level"
        raise ConfigError(f"config {where} must be a mapping of keys to values, got {_show(data)}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}'.{suggest(str(key), names, prefix)} "
                f"Keys of {f'{path!r}' if path else 'the config'}: {', '.join(names)}"
            )
    values = {key: _convert(hints[key], value, prefix + key) for key, value in data.items()}
    try:
        return cls(**values)
    except ConfigValueError as error:  # __post_init__ knows the field, not where its section sits
        raise ConfigError(f"config key '{prefix}{error.key}' {error.problem}") from None


def _convert(tp: Any, value: Any, key: str) -> Any:
    """``value`` checked against the type ``tp``, in canonical form (lists -> tuples, int -> float)."""
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        # `train:` with every key commented out loads as null: it means "all defaults".
        return from_dict(tp, {} if value is None else value, key)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) != 1:  # `int | str` would need a rule for which reading wins
            raise TypeError(f"config field '{key}': only `X | None` unions are supported")
        if options[0] in (bool, int, float, str):  # say "int | null": null is a valid answer
            try:
                return _convert(options[0], value, key)
            except ConfigError:
                raise _type_error(tp, value, key) from None
        return _convert(options[0], value, key)
    if origin is Literal:
        # `type(...) is` so that True does not pass for 1, nor 1 for 1.0
        if any(value == arg and type(value) is type(arg) for arg in args):
            return value
        hint = suggest(str(value), [str(arg) for arg in args])
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {_show(value)}.{hint}")
    if origin is tuple:  # only `tuple[T, ...]`; YAML gives a list
        if not isinstance(value, (list, tuple)) or len(args) != 2 or args[1] is not Ellipsis:
            raise _type_error(tp, value, key)
        return tuple(_convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(tp, value, key)
        key_type, value_type = args or (Any, Any)
        return {
            _convert(key_type, k, f"{key}.{k}"): _convert(value_type, v, f"{key}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        ok = isinstance(value, bool)  # strictly: 0 and 1 are too easily a different mistake
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"config field type {tp!r} of '{key}' is not supported by from_dict")
    if not ok:
        raise _type_error(tp, value, key)
    return value


def _type_error(tp: Any, value: Any, key: str) -> ConfigError:
    expects_bool = tp is bool or bool in get_args(tp)
    hint = " (write true or false)" if expects_bool and isinstance(value, int) else ""
    return ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {_show(value)}{hint}")


def _type_name(tp: Any) -> str:
    """A reader's name for a type: ``int | None``, ``one of 'a', 'b'``, ``list of str``."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list of {_type_name(args[0])}"
    if origin in (dict, Mapping):
        return (
            f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "a mapping"
        )
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``key.sub=value`` set; values are YAML (``1e-6`` is a float).

    Keys are not checked here: :func:`from_dict` rejects unknown ones with a suggestion.
    """
    result = copy.deepcopy(dict(data))
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(
                f"override {override!r} is not key=value with a dotted key; "
                "example: train.lr=1e-6 or data.mapping.chosen=response_a"
            )
        try:
            value = _parse_yaml(text)
        except yaml.YAMLError as error:
            raise ConfigError(
                f"override {override!r}: the value is not valid YAML ({error}); quote it"
            ) from None
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, Mapping):
                above = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"override {override!r}: '{above}' is a value ({_show(child)}), not a section"
                )
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return result


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), cls: type[C] = RunConfig
) -> C:
    """The config in the YAML file ``path`` (none: all defaults) with ``overrides`` applied."""
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
        try:
            data = _parse_yaml(text)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML: {error.problem}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from None
        if data is None:  # an empty file
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{path}: the top level must be a mapping of sections (data:, train: ...), "
                f"got {_show(data)}"
            )
    return from_dict(cls, apply_overrides(data, overrides))


def to_dict(config: Any) -> dict[str, Any]:
    """Plain data for a config: nested dicts, tuples as lists; :func:`from_dict` inverts it."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dump_yaml(config: Any) -> str:
    """The config as YAML, in field order; :func:`load_config` reads it back to an equal config."""
    return yaml.dump(
        to_dict(config),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )


def help_text(cls: type) -> dict[str, str]:
    """Help of every key by dotted name (``"train.lr"``), read from the attribute docstrings."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_attribute_docstrings(klass))
    hints = get_type_hints(cls)
    result: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if f.name in docs:
            result[f.name] = docs[f.name]
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            result.update({f"{f.name}.{k}": text for k, text in help_text(tp).items()})
    return result


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` for the string literals right under annotated fields of ``cls``."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined in a REPL or a compiled module: no source to read
        return {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs
