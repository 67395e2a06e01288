"""Typed, frozen dataclasses from YAML and dotted command-line overrides; unknown keys are errors.

Example: ``from_dict(MyConfig, yaml_data)``; ``apply_overrides(data, ["train.lr=1e-6"])``
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import re
import textwrap
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from alignlab.errors import ConfigError, ConfigValueError
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
    path: str | Path | None, overrides: Sequence[str], cls: type[C]
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
