"""Propositional formulas over the atoms of a preference pair, parsed from text.

Example: ``f = parse("w & !l"); f.holds({"w": True, "l": False})  # True``

Atoms: ``w`` (M_w: the chosen completion is a good output), ``l`` (M_l: the rejected one is),
and, for losses that read a reference model's own probabilities, ``ref_w`` and ``ref_l``
(``M_w``, ``M_l``, ``Mref_w``, ``Mref_l`` are accepted too). Constants ``true``/``false``.
Operators, loosest last: ``!`` (also ``~``, ``¬``), ``&`` (``∧``), ``^`` (xor, ``⊕``),
``|`` (``∨``), ``->`` (``→``, right-associative), ``<->`` (``↔``); parentheses group.
A mistake is a :class:`FormulaError` that shows the text with a caret under the offending place.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from alignlab.errors import ConfigError

ATOMS = ("w", "l", "ref_w", "ref_l")
"""Atom names in their canonical order (truth tables list assignments over them in this order)."""
ALIASES = {"w": "w", "l": "l", "m_w": "w", "m_l": "l", "ref_w": "ref_w", "ref_l": "ref_l",
           "mref_w": "ref_w", "mref_l": "ref_l"}
SYMBOLS = {"¬": "!", "~": "!", "∧": "&", "∨": "|", "⊕": "^", "→": "->", "↔": "<->"}
BINARY = {"&": (3, "left"), "^": (2, "left"), "|": (1, "left"), "->": (0, "right"), "<->": (-1, "left")}
"""Operator: (precedence, associativity); higher binds tighter."""


class FormulaError(ConfigError):
    """A formula that does not parse, or names an unknown atom."""


@dataclass(frozen=True)
class Formula:
    """A node: ``op`` is "atom", "const", "!", or a binary operator of :data:`BINARY`."""

    op: str
    args: tuple[Formula, ...] = ()
    name: str = ""
    value: bool = False

    def holds(self, world: Mapping[str, bool]) -> bool:
        if self.op == "atom":
            return world[self.name]
        if self.op == "const":
            return self.value
        if self.op == "!":
            return not self.args[0].holds(world)
        a, b = (arg.holds(world) for arg in self.args)
        return _APPLY[self.op](a, b)

    def atoms(self) -> set[str]:
        if self.op == "atom":
            return {self.name}
        return set().union(*(arg.atoms() for arg in self.args)) if self.args else set()

    def __str__(self) -> str:
        if self.op == "atom":
            return self.name
        if self.op == "const":
            return "true" if self.value else "false"
        if self.op == "!":
            inner = str(self.args[0])
            return f"!{inner}"  # a binary operand prints its own parentheses
        return f"({self.args[0]} {self.op} {self.args[1]})"


_APPLY: dict[str, Callable[[bool, bool], bool]] = {
    "&": lambda a, b: a and b, "|": lambda a, b: a or b, "^": lambda a, b: a != b,
    "->": lambda a, b: (not a) or b, "<->": lambda a, b: a == b,
}


def conjoin(*formulas: Formula) -> Formula:
    out = formulas[0]
    for f in formulas[1:]:
        out = Formula("&", (out, f))
    return out


def worlds(atoms: tuple[str, ...]) -> list[dict[str, bool]]:
    """Every truth assignment over ``atoms`` (2^n), the first atom the slowest-changing, True first."""
    return [dict(zip(atoms, values, strict=True)) for values in itertools.product((True, False), repeat=len(atoms))]


def truth_table(formula: Formula, atoms: tuple[str, ...]) -> tuple[bool, ...]:
    """Whether ``formula`` holds in each world of :func:`worlds` over ``atoms``."""
    missing = formula.atoms() - set(atoms)
    if missing:
        raise FormulaError(f"formula {formula} uses atoms {sorted(missing)} outside {list(atoms)}")
    return tuple(formula.holds(world) for world in worlds(atoms))


def parse(text: str) -> Formula:
    """The formula written in ``text`` (syntax in the module docstring)."""
    tokens = _tokens(text)
    parser = _Parser(text, tokens)
    formula = parser.expression(-2)
    if parser.at < len(tokens):
        token, position = tokens[parser.at]
        raise _error(text, position, f"unexpected {token!r} after a complete formula")
    return formula


def _error(text: str, position: int, message: str) -> FormulaError:
    caret = " " * position + "^"
    return FormulaError(f"{message} at character {position + 1}:\n    {text}\n    {caret}\n"
                        f"  hint: atoms {', '.join(ATOMS)}; operators ! & ^ | -> <-> and parentheses, "
                        "e.g. \"w & !l\" or \"l -> w\"")


def _tokens(text: str) -> list[tuple[str, int]]:
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif text.startswith("<->", i):
            out.append(("<->", i))
            i += 3
        elif text.startswith("->", i):
            out.append(("->", i))
            i += 2
        elif char in SYMBOLS:
            out.append((SYMBOLS[char], i))
            i += 1
        elif char in "!&|^()":
            out.append((char, i))
            i += 1
        elif char.isalpha() or char == "_":
            start = i
            while i < len(text) and (text[i].isalnum() or text[i] == "_"):
                i += 1
            out.append((text[start:i], start))
        else:
            raise _error(text, i, f"unexpected character {char!r}")
    return out


class _Parser:
    """Precedence climbing over the token list."""

    def __init__(self, text: str, tokens: list[tuple[str, int]]) -> None:
        self.text, self.tokens, self.at = text, tokens, 0

    def expression(self, floor: int) -> Formula:
        left = self.unary()
        while self.at < len(self.tokens):
            op, _ = self.tokens[self.at]
            if op not in BINARY or BINARY[op][0] < floor:
                break
            precedence, side = BINARY[op]
            self.at += 1
            right = self.expression(precedence if side == "right" else precedence + 1)
            left = Formula(op, (left, right))
        return left

    def unary(self) -> Formula:
        if self.at >= len(self.tokens):
            raise _error(self.text, len(self.text), "the formula ends where an atom or '(' is expected")
        token, position = self.tokens[self.at]
        self.at += 1
        if token == "!":
            return Formula("!", (self.unary(),))
        if token == "(":
            inner = self.expression(-2)
            if self.at >= len(self.tokens) or self.tokens[self.at][0] != ")":
                where = self.tokens[self.at][1] if self.at < len(self.tokens) else len(self.text)
                raise _error(self.text, where, f"expected ')' to close the '(' of character {position + 1}")
            self.at += 1
            return inner
        if token.lower() in ("true", "false"):
            return Formula("const", value=token.lower() == "true")
        if token.lower() in ALIASES:
            return Formula("atom", name=ALIASES[token.lower()])
        if token in BINARY or token == ")":
            raise _error(self.text, position, f"{token!r} where an atom or '(' is expected")
        raise _error(self.text, position, f"unknown atom {token!r}")
