"""The space of two-atom preference losses: equivalence, entailment, decompilation.

Example: ``classes = distinct_losses(); decompile(get_loss("dpo").obj, "ref")  # [w given w ^ l]``

A structure (P | C) has the loss −log WMC(P ∧ C) / WMC(C), so it depends only on the set N of
worlds where P ∧ C holds and the set D where C holds (N ⊆ D). Over the atoms w, l there are four
worlds; every pair ∅ ≠ N ⊊ D is a loss that trains (N = ∅ is infinite, N = D is 0). Two pairs
can still be the same function (p_l alone is both (w ∧ l | w) and (l | true)), so equivalence is
decided on the functions, at random points, and each class keeps its simplest structure.

Entailment (Richardson et al. 2025, §4: a stronger formula has the larger loss): (N₁, D₁) is
stronger than (N₂, D₂) when N₁ ⊆ N₂ and D₂ ⊆ D₁ — a smaller numerator and a larger denominator
— so its loss is at least as large at every point, for any atom probabilities (tested).
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from alignlab.losses.logic.formula import Formula, parse
from alignlab.losses.logic.semantic import AtomLogProbs, Structure, atom_log_probs, log_wmc

ATOMS2 = ("w", "l")
WORLDS = 4
Table = tuple[bool, ...]


@functools.cache
def simplest_formulas(atoms: tuple[str, ...] = ATOMS2, size: int = 3) -> dict[Table, str]:
    """The shortest formula text for each truth table over ``atoms`` (breadth-first over formulas
    of up to ``size`` operators; every two-atom table is reached by 3)."""
    from alignlab.losses.logic.formula import truth_table

    best: dict[Table, str] = {}
    layers: list[list[str]] = [[*atoms, "true", "false"]]
    for text in layers[0]:
        best.setdefault(truth_table(parse(text), atoms), text)
    for _ in range(size):
        fresh = []
        pool = [t for layer in layers for t in layer]
        for a in pool:
            fresh.append(f"!{_wrap(a)}")
        for a, b in itertools.product(pool, repeat=2):
            for op in ("&", "|", "^", "->"):
                fresh.append(f"{_wrap(a)} {op} {_wrap(b)}")
        found: dict[Table, str] = {}
        for text in fresh:  # the shortest text of each table new in this layer
            table = truth_table(parse(text), atoms)
            if table not in best and (table not in found or len(text) < len(found[table])):
                found[table] = text
        best.update(found)
        layers.append(list(found.values()))
        if len(best) == 2 ** (2 ** len(atoms)):
            break
    return best


def _wrap(text: str) -> str:
    return text if " " not in text else f"({text})"


@dataclass(frozen=True)
class LossClass:
    """One distinct loss over two atoms: its simplest structure and every (N, D) that gives it."""

    structure: Structure
    members: tuple[tuple[Table, Table], ...]

    @property
    def key(self) -> tuple[Table, Table]:
        return self.members[0]


def structure_of(numerator: Table, denominator: Table, names: dict[Table, str] | None = None) -> Structure:
    """The simplest (P | C) with P ∧ C = ``numerator`` and C = ``denominator``."""
    names = names or simplest_formulas()
    condition = names[denominator]
    cores = [text for table, text in names.items()
             if tuple(a and b for a, b in zip(table, denominator, strict=True)) == numerator]
    core = min(cores, key=lambda t: (len(t), t))
    return Structure(parse(core), parse(condition) if condition != "true" else Formula("const", value=True))


def _probes(count: int = 64, seed: int = 0) -> dict[str, AtomLogProbs]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, count, generator=g, dtype=torch.float64) * 3
    return {"w": AtomLogProbs.from_logit(logits[0]), "l": AtomLogProbs.from_logit(logits[1])}


def pair_loss(numerator: Table, denominator: Table, probs: dict[str, AtomLogProbs]) -> torch.Tensor:
    return log_wmc(denominator, ATOMS2, probs) - log_wmc(numerator, ATOMS2, probs)


@functools.cache
def distinct_losses() -> tuple[LossClass, ...]:
    """Every loss over w, l that trains (∅ ≠ P ∧ C ⊊ C), one class per distinct function, sorted
    by the size of the simplest structure."""
    probes, names = _probes(), simplest_formulas()
    tables = list(itertools.product((True, False), repeat=WORLDS))
    groups: list[tuple[torch.Tensor, list[tuple[Table, Table]]]] = []
    for denominator in tables:
        for numerator in tables:
            inside = all(d or not n for n, d in zip(numerator, denominator, strict=True))
            if not inside or not any(numerator) or numerator == denominator:
                continue
            values = pair_loss(numerator, denominator, probes)
            for known, members in groups:
                if torch.allclose(values, known, atol=1e-12, rtol=1e-12):
                    members.append((numerator, denominator))
                    break
            else:
                groups.append((values, [(numerator, denominator)]))
    classes = []
    for _, members in groups:
        structures = [structure_of(n, d, names) for n, d in members]
        order = sorted(range(len(members)), key=lambda i: (len(str(structures[i])), str(structures[i])))
        classes.append(LossClass(structures[order[0]], tuple(members[i] for i in order)))
    return tuple(sorted(classes, key=lambda c: (len(str(c.structure)), str(c.structure))))


def stronger(a: tuple[Table, Table], b: tuple[Table, Table]) -> bool:
    """Whether the loss of (N₁, D₁) = ``a`` is at least that of ``b`` everywhere, by entailment:
    N₁ ⊨ N₂ and D₂ ⊨ D₁."""
    (n1, d1), (n2, d2) = a, b
    return all(n2_ or not n1_ for n1_, n2_ in zip(n1, n2, strict=True)) and all(
        d1_ or not d2_ for d1_, d2_ in zip(d1, d2, strict=True))


def class_stronger(a: LossClass, b: LossClass) -> bool:
    """Some pair of ``a`` entails some pair of ``b`` (equivalent members give the same function)."""
    return any(stronger(x, y) for x in a.members for y in b.members)


def decompile(loss: Callable[..., tuple[torch.Tensor, dict]], semantics: str, *, beta: float = 1.0,
              gamma: float = 0.0, candidates: Iterable[LossClass] | None = None, atol: float = 1e-6,
              **kwargs) -> list[Structure]:
    """The two-atom structures whose semantic loss under ``semantics`` equals ``loss`` (a paired loss
    of the library, called with ``kwargs``) at random inputs; [] when none does.

    For the log-sigmoid family −log σ(log ρ_top − log ρ_bot) = −log ρ_top / (ρ_top + ρ_bot) this
    finds the core whose WMC is ρ_top, conditioned on the disjunction with ρ_bot's formula."""
    g = torch.Generator().manual_seed(1)
    count = 48
    chosen, rejected = -torch.rand(2, count, generator=g, dtype=torch.float64) * 3 - 1e-3
    ref_c, ref_r = -torch.rand(2, count, generator=g, dtype=torch.float64) * 3 - 1e-3
    needs_ref = "ref_chosen" in inspect.signature(loss).parameters
    target, _ = loss(chosen, rejected, *((ref_c, ref_r) if needs_ref else ()), **kwargs)
    probs = atom_log_probs(semantics, chosen, rejected, ref_c if needs_ref else None,
                           ref_r if needs_ref else None, beta=beta, gamma=gamma)
    found = []
    for loss_class in candidates if candidates is not None else distinct_losses():
        numerator, denominator = loss_class.key
        values = pair_loss(numerator, denominator, {"w": probs["w"], "l": probs["l"]})
        if torch.allclose(values, target.to(values.dtype), atol=atol, rtol=0):
            found.append(loss_class.structure)
    return found
