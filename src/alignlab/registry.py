"""One registry class for everything chosen by name: losses, data formats, data kinds, rewards.

Example: ``@LOSSES.register("dpo", LossContract(...))``, then ``LOSSES.get("dpo").obj``

An entry pairs the object with its contract: a frozen dataclass of the registry's own type
(:class:`~alignlab.losses.contract.LossContract`, :class:`~alignlab.data.formats.FormatSpec`)
that says what callers must provide and where the object comes from.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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


def import_named(spec: Any, what: str, hint: str = "") -> Any:
    """The object a user names as ``"module:attribute"``: imported only because they named it.

    ``what`` says where the name came from (``"judge"``, ``"rl.opa.reviser"``) for the errors; a
    badly written name, a module that does not import or a missing attribute is a ConfigError.
    """
    module, _, name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not module or not name or ":" in name:
        raise ConfigError(f"{what}={spec!r}: write it as module:function" + (f"\n  hint: {hint}" if hint else ""))
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {what} {spec}: {exc}\n  hint: the module must be importable (on "
                          "PYTHONPATH or installed; the working directory is) and define that name") from None


@dataclass(frozen=True)
class Entry:
    """A registered object with its contract (what the caller must provide, where it comes from)."""

    name: str
    obj: Any
    contract: Any
    """A frozen dataclass (or None), of the type the registry's owner defines."""


class Registry:
    """Named objects of one kind (``"loss"``, ``"data format"`` ...), each with its contract."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._resolvers: dict[str, Callable[[str], Entry]] = {}

    def add_resolver(self, prefix: str, resolve: Callable[[str], Entry]) -> None:
        """Names starting with ``prefix`` that are not registered yet are made by ``resolve(name)``
        on first use (a loss derived from a formula written in the name), then kept."""
        self._resolvers[prefix] = resolve

    def register(self, name: str, contract: Any = None) -> Callable[[T], T]:
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
            self._entries[name] = Entry(name, obj, contract)
            return obj

        return decorate

    def get(self, name: str) -> Entry:
        """The entry registered under ``name``; an unknown name lists the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            for prefix, resolve in self._resolvers.items():
                if isinstance(name, str) and name.startswith(prefix):
                    entry = self._entries[name] = resolve(name)
                    return entry
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{suggest(str(name), self._entries)} {self._known()}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted (registration order depends on import order)."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries, sorted by name."""
        return [self._entries[name] for name in self.names()]

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
FORMATS = Registry("data format")
DATA_KINDS = Registry("data kind")
REWARDS = Registry("reward")
ADVANTAGES = Registry("advantage estimator")
