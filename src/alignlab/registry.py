"""One registry for everything chosen by name in a config: losses, rewards, decoders, metrics.

Example: ``@LOSSES.register("dpo", needs_ref=True, logps="sum")``, then ``LOSSES.get("dpo").obj``
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from alignlab.errors import ConfigError

T = TypeVar("T")


def suggest(word: str, options: Iterable[str], prefix: str = "") -> str:
    """`` Did you mean 'lr'?`` for the closest option to ``word``, or ``""`` when none is close.

    ``prefix`` is prepended to the suggestion shown (``"train."`` gives ``'train.lr'``); matching
    uses the bare names, since a shared dotted prefix would make unrelated keys look similar.
    """
    matches = difflib.get_close_matches(word, list(options), n=1)
    return f" Did you mean '{prefix}{matches[0]}'?" if matches else ""


@dataclass(frozen=True)
class Entry:
    """A registered object with its contract (what the caller must provide, where it comes from)."""

    name: str
    obj: Any
    contract: Mapping[str, Any]


class Registry:
    """Named objects of one kind (``"loss"``, ``"reward"`` ...), each with a read-only contract."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **contract: Any) -> Callable[[T], T]:
        """Decorator that registers an object under ``name`` and returns it unchanged."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def decorate(obj: T) -> T:
            if name in self._entries:
                previous = _qualname(self._entries[name].obj)
                raise ConfigError(
                    f"{self.kind} '{name}' is already registered (by {previous}); "
                    f"choose another name for {_qualname(obj)}"
                )
            self._entries[name] = Entry(name, obj, MappingProxyType(dict(contract)))
            return obj

        return decorate

    def get(self, name: str) -> Entry:
        """The entry registered under ``name``; an unknown name lists the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{suggest(str(name), self._entries)} {self._known()}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted (registration order depends on import order)."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries, sorted by name."""
        return [self._entries[name] for name in self.names()]

    def check_kwargs(self, name: str, kwargs: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` if a key of ``kwargs`` is not a keyword parameter of ``name``.

        Catches a typo in ``train.loss_kwargs`` at config time instead of as a ``TypeError`` deep
        inside the first training step.
        """
        entry = self.get(name)
        if not isinstance(kwargs, Mapping):
            raise ConfigError(
                f"hyperparameters of {self.kind} '{name}' must be a mapping, "
                f"got {type(kwargs).__name__}"
            )
        try:
            parameters = inspect.signature(entry.obj).parameters.values()
        except (TypeError, ValueError):
            return  # no introspectable signature (a builtin): the call itself will check
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return
        accepted = [
            p.name
            for p in parameters
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        for key in kwargs:
            if key not in accepted:
                listed = ", ".join(accepted) if accepted else "none"
                raise ConfigError(
                    f"unknown hyperparameter {key!r} for {self.kind} '{name}'."
                    f"{suggest(str(key), accepted)} Accepted: {listed}"
                )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"

    def _known(self) -> str:
        if not self._entries:
            return f"No {self.kind} is registered yet."
        return f"Known {self.kind} names: {', '.join(self.names())}"


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}" if module else name


LOSSES = Registry("loss")
REWARDS = Registry("reward")
DECODERS = Registry("decoder")
METRICS = Registry("metric")
FORMATS = Registry("data format")
