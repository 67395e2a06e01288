"""Rewards: one protocol for every scorer of (prompt, completion) pairs, and building one by name.

Example: ``reward = build_reward("length_target(target=20)"); reward(["2+2?"], ["4"])  # [-19.0]``

A reward scores a batch of prompts, completions and extra columns (a reference answer, say) and
returns one float per completion, or None where the completion cannot be scored (no answer to
extract, a verifier that cannot parse it). None is counted by whoever reduces the scores
(:func:`unscorable`), never read as 0. Rewards are registered in ``REWARDS`` under a name with a
:class:`RewardSpec`; a config or the command line names one as ``NAME`` or
``NAME(key=value, ...)``, and a user's own function only explicitly, as ``module:function``.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from alignlab.data.records import Text
from alignlab.errors import ConfigError
from alignlab.registry import REWARDS, import_named, suggest

Scores = list[float | None]
"""One score per completion; None where it cannot be scored."""
Columns = Mapping[str, Sequence[Any]]
"""Extra columns by name, one value per completion (e.g. ``{"answer": ["4", "paris"]}``)."""


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward's contract: what it reads and where it comes from."""

    summary: str
    """One line for `alignlab rewards list`."""
    family: Literal["rule", "verifier", "model", "testbed", "transform", "user"]
    """What kind of scorer it is."""
    columns: tuple[str, ...] = ()
    """Extra columns it needs, one value per completion (e.g. "answer")."""
    source: str = ""
    """The paper (authors, year, arXiv id) or library it follows, when there is one."""


class Reward:
    """Base of the rewards: subclasses implement :meth:`score`; calling checks the batch first."""

    name: str = "reward"
    columns: tuple[str, ...] = ()

    def __call__(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns | None = None) -> Scores:
        columns = dict(columns or {})
        if len(prompts) != len(completions):
            raise ValueError(f"reward {self.name!r}: {len(prompts)} prompts but {len(completions)} completions")
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise ConfigError(f"reward {self.name!r} needs the column(s) {missing} beside prompt and "
                              f"completion; the data has {sorted(columns) or 'none'}\n  hint: add them to "
                              "the prompt file (e.g. an 'answer' field), or choose another reward")
        for name, values in columns.items():
            if len(values) != len(completions):
                raise ValueError(f"reward {self.name!r}: column {name!r} has {len(values)} values for "
                                 f"{len(completions)} completions")
        scores = self.score(prompts, completions, columns)
        if len(scores) != len(completions):
            raise RuntimeError(f"reward {self.name!r} returned {len(scores)} scores for {len(completions)} completions")
        return [None if s is None else float(s) for s in scores]

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FunctionReward(Reward):
    """A plain function ``f(prompt, completion, **columns) -> float | None`` as a reward, one call
    per completion; the columns it names as parameters are required."""

    def __init__(self, fn: Callable[..., float | None], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        parameters = list(inspect.signature(fn).parameters.values())[2:]
        self.columns = tuple(p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD
                             and p.default is inspect.Parameter.empty)
        self._takes = None if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters) \
            else {p.name for p in parameters}

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        keep = {k: v for k, v in columns.items() if self._takes is None or k in self._takes}
        return [self.fn(p, c, **{k: v[i] for k, v in keep.items()})
                for i, (p, c) in enumerate(zip(prompts, completions, strict=True))]


def register_reward(name: str, *, summary: str, family: str, columns: tuple[str, ...] = (),
                    source: str = "") -> Callable[[Any], Any]:
    """Register a reward factory (a :class:`Reward` subclass or a function returning one) under
    ``name``; its keyword parameters are what a spec may set."""
    return REWARDS.register(name, RewardSpec(summary, family, columns, source))  # type: ignore[arg-type]


_SPEC = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:\((.*)\))?\s*$", re.S)
_USER = re.compile(r"^\s*([A-Za-z_][\w.]*):([A-Za-z_]\w*)\s*$")


def build_reward(spec: str | Mapping[str, Any] | Reward) -> Reward:
    """A reward from a spec: ``"length_target(target=20)"``, ``{"name": "length_target",
    "target": 20}`` (YAML), ``"my_module:my_function"`` (a user's function, imported because the
    user named it), or a :class:`Reward` itself."""
    # Importing this module ran the package's __init__, which registered the built-in rewards.
    if isinstance(spec, Reward):
        return spec
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if "name" not in spec:
            raise ConfigError(f"a reward spec needs a 'name', got {sorted(spec)}")
        name = spec.pop("name")
        return _construct(str(name), spec)
    if not isinstance(spec, str):
        raise ConfigError(f"a reward spec is a string or a mapping, got {type(spec).__name__}")
    user = _USER.match(spec)
    if user:
        return user_function(user.group(1), user.group(2))
    match = _SPEC.match(spec)
    if not match:
        raise ConfigError(f"cannot read reward spec {spec!r}\n  hint: write NAME, NAME(key=value, ...) "
                          "or module:function (`alignlab rewards list` names the built-ins)")
    return _construct(match.group(1), _kwargs(spec, match.group(2)))


def user_function(module: str, function: str) -> Reward:
    """The user's ``module:function`` as a reward (a function of prompt, completion and columns, or
    a factory returning a :class:`Reward`); imported only because the user named it."""
    target = import_named(f"{module}:{function}", "reward")
    if isinstance(target, Reward):
        return target
    if isinstance(target, type) and issubclass(target, Reward):
        return target()
    if not callable(target):
        raise ConfigError(f"{module}:{function} is not callable")
    return FunctionReward(target, f"{module}:{function}")


def unscorable(scores: Scores) -> int:
    """How many completions got no score."""
    return sum(s is None for s in scores)


def _construct(name: str, kwargs: dict[str, Any]) -> Reward:
    entry = REWARDS.get(name)
    factory = entry.obj
    parameters = inspect.signature(factory).parameters
    accepted = [p for p, v in parameters.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"unknown option {key!r} for reward {name!r}.{suggest(key, accepted)} "
                              f"Options: {', '.join(accepted) or 'none'}")
    try:
        reward = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"reward {name!r}: {exc}") from None
    reward.name = name if not kwargs else f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    return reward


def _kwargs(spec: str, text: str | None) -> dict[str, Any]:
    """``key=value, ...`` with Python literals as values (strings quoted); no code runs."""
    if not text or not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        call = None
    if not isinstance(call, ast.Call) or call.args:
        raise ConfigError(f"cannot read the options of reward spec {spec!r}\n  hint: key=value pairs, "
                          "e.g. length_target(target=20, scale=0.5)")
    out = {}
    for keyword in call.keywords:
        try:
            out[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise ConfigError(f"reward spec {spec!r}: the value of {keyword.arg!r} is not a literal "
                              "(numbers, quoted strings, lists, True/False/None)") from None
    return out
