"""Semantic losses of preference structures: weighted model counting in log space.

Example: ``s = Structure.parse("w & !l given w ^ l"); losses = s.loss(atom_log_probs(...))``

Richardson, Srikumar & Sabharwal 2025 ("Understanding the Logic of Direct Preference Alignment
through Logic", arXiv 2412.17696): each model prediction is a Boolean atom with a probability;
the weighted model count of a formula is the sum, over its satisfying assignments, of the product
of the atoms' probabilities (p or 1 − p); its semantic loss is −log WMC. A preference structure
here is a core formula P and a conditioning formula C:

    ℓ(P | C) = −log [ WMC(P ∧ C) / WMC(C) ]   (C = true: the unconditioned −log WMC(P)).

Conditioning on a disjunction is what makes a loss contrastive: DPO is ℓ(M_w ∧ ¬M_l | M_w ⊕ M_l)
with p = σ(β·ρ), ρ = log πθ/πref. The WMC is computed by enumerating the 2^n assignments (n ≤ 4
atoms), each a sum of log p / log(1 − p) terms, combined with logsumexp: stable for any logit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from alignlab.losses.logic.formula import (
    ATOMS,
    Formula,
    FormulaError,
    conjoin,
    parse,
    truth_table,
    worlds,
)

LOG2 = 0.6931471805599453
MAX_LOG_PROB = -1e-6
"""Probability-semantics atoms: log p is clamped to at most this, so log(1 − p) stays finite
(as ORPO's odds, for the same reason)."""

SemanticsName = Literal["ref", "single", "single-sum", "logit-sum", "logit-mean"]
SEMANTICS: dict[str, tuple[str, str]] = {
    # name: (score of a completion, how the atom's probability is read from it)
    "ref": ("ratio", "logit"),         # p = σ(β·(log πθ − log πref)), summed log-probs (DPO)
    "single": ("mean", "prob"),        # p = πθ(y|x)^(1/|y|), the token-mean probability (ORPO's odds)
    "single-sum": ("sum", "prob"),     # p = πθ(y|x)
    "logit-sum": ("sum", "logit"),     # p = σ(β·log πθ(y|x)): odds πθ^β (CPO)
    "logit-mean": ("mean", "logit"),   # p = σ(β·A(y)), A the token mean (SimPO, with γ)
}
"""Atom semantics. "ref" is the reference-based one; the others are single-model (the reference
atoms ref_w / ref_l, where a formula uses them, read the reference's own log-probs the same way)."""


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 − e^x) for x ≤ 0 (Mächler's two branches; each sees only inputs where it is finite,
    so no NaN gradient leaks through torch.where)."""
    near_zero = torch.log(-torch.expm1(log_p.clamp(max=MAX_LOG_PROB)))
    far = torch.log1p(-torch.exp(log_p.clamp(max=-LOG2)))
    return torch.where(log_p > -LOG2, near_zero, far)


@dataclass(frozen=True)
class AtomLogProbs:
    """log p and log(1 − p) of one atom, per example."""

    log_p: torch.Tensor
    log_not_p: torch.Tensor

    @staticmethod
    def from_logit(logit: torch.Tensor) -> AtomLogProbs:
        return AtomLogProbs(F.logsigmoid(logit), F.logsigmoid(-logit))

    @staticmethod
    def from_log_prob(log_p: torch.Tensor) -> AtomLogProbs:
        log_p = log_p.clamp(max=MAX_LOG_PROB)
        return AtomLogProbs(log_p, log1mexp(log_p))


def log_wmc(table: tuple[bool, ...], atoms: tuple[str, ...], probs: dict[str, AtomLogProbs]) -> torch.Tensor:
    """log WMC of the formula whose truth table over ``atoms`` is ``table``: logsumexp over the
    satisfying worlds of Σ_i log p_i or log(1 − p_i). −inf where nothing satisfies it."""
    terms = []
    for holds, world in zip(table, worlds(atoms), strict=True):
        if holds:
            terms.append(sum(probs[a].log_p if world[a] else probs[a].log_not_p for a in atoms))
    if not terms:
        reference = next(iter(probs.values())).log_p
        return torch.full_like(reference, float("-inf"))
    return torch.logsumexp(torch.stack(terms, dim=-1), dim=-1)


@dataclass(frozen=True)
class Structure:
    """A preference structure: core formula P, conditioning C (``true``: unconditioned) and,
    optionally, worlds ``both`` that count on both sides (see :meth:`sides`)."""

    core: Formula
    given: Formula
    both: Formula = Formula("const", value=False)

    @staticmethod
    def parse(text: str, given: str | None = None, both: str | None = None) -> Structure:
        """``"P"``, ``"P given C"``, ``"P given C both A"``, or the parts as arguments."""
        text, both = _split(text, "both", both)
        text, given = _split(text, "given", given)
        core = parse(text)
        condition = parse(given) if given is not None and given.strip() else Formula("const", value=True)
        shared = parse(both) if both is not None and both.strip() else Formula("const", value=False)
        return Structure(core, condition, shared)

    @property
    def atoms(self) -> tuple[str, ...]:
        """The atoms it uses, at least w and l, in canonical order."""
        used = self.core.atoms() | self.given.atoms() | self.both.atoms() | {"w", "l"}
        return tuple(a for a in ATOMS if a in used)

    @property
    def plain(self) -> bool:
        """No world counts on both sides: the loss is the conditioned semantic loss ℓ(P | C)."""
        return self.both.op == "const" and not self.both.value

    def sides(self) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
        """Truth tables of the worlds for (✓) and against (✗) the preference: ✓ = P ∧ C, ✗ = ¬P ∧ C,
        and the worlds of ``both`` ∧ C added to each. The loss is −log WMC(✓) / (WMC(✓) + WMC(✗)).

        ``both`` is alignlab's reading of the paper's additional constraints P_A, *unverified*:
        its slides draw CPO's truth table with the world where both completions are good on both
        sides (CPO = ``l -> w given w | l both w & l`` under single-sum semantics, tested), and
        the text that defines P_A was not available to check."""
        atoms = self.atoms
        condition = truth_table(self.given, atoms)
        core, shared = truth_table(self.core, atoms), truth_table(self.both, atoms)
        yes = tuple(c and (p or s) for c, p, s in zip(condition, core, shared, strict=True))
        no = tuple(c and (not p or s) for c, p, s in zip(condition, core, shared, strict=True))
        return yes, no

    def tables(self) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
        """Truth tables of P ∧ C (the numerator) and of C (the denominator), for a :attr:`plain` structure."""
        if not self.plain:
            raise FormulaError(f"{self}: a world counted on both sides has no (P ∧ C, C) form")
        return (truth_table(conjoin(self.core, self.given), self.atoms), truth_table(self.given, self.atoms))

    def check(self) -> None:
        """A structure whose loss is infinite or constant is refused (it trains nothing)."""
        yes, no = self.sides()
        if not any(yes) and not any(no):
            raise FormulaError(f"the condition {self.given} is never true: the loss is undefined\n"
                               "  hint: condition on a satisfiable formula, e.g. \"w ^ l\"")
        if not any(yes):
            raise FormulaError(f"{self.core} is never true together with {self.given}: the loss is infinite\n"
                               "  hint: the core must be satisfiable under the condition")
        if not any(no):
            raise FormulaError(f"{self.core} holds whenever {self.given} does: the loss is always 0\n"
                               "  hint: a constraint that can be violated gives a loss that trains")

    def loss(self, probs: dict[str, AtomLogProbs]) -> torch.Tensor:
        """−log WMC(✓) / (WMC(✓) + WMC(✗)) per example; ℓ(P | C) for a plain structure."""
        yes, no = self.sides()
        log_yes, log_no = log_wmc(yes, self.atoms, probs), log_wmc(no, self.atoms, probs)
        return torch.logaddexp(log_yes, log_no) - log_yes

    def __str__(self) -> str:
        text = _bare(str(self.core))
        if not (self.given.op == "const" and self.given.value):
            text += f" given {_bare(str(self.given))}"
        if not self.plain:
            text += f" both {_bare(str(self.both))}"
        return text


def _split(text: str, keyword: str, part: str | None) -> tuple[str, str | None]:
    """``text`` cut at `` keyword `` (when ``part`` is not given separately)."""
    padded = f" {text.lower()} "
    if part is not None or f" {keyword} " not in padded:
        return text, part
    at = padded.index(f" {keyword} ")  # the padding's leading space makes this the keyword's index in text
    head, tail = text[:at], text[at + len(keyword) + 1:]
    if not head.strip():
        raise FormulaError(f"nothing before '{keyword}' in {text!r}\n  hint: write \"P given C\"")
    return head, tail


def _bare(text: str) -> str:
    return text[1:-1] if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]) else text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def atom_log_probs(semantics: str, policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                   ref_chosen: torch.Tensor | None = None, ref_rejected: torch.Tensor | None = None,
                   *, beta: float = 1.0, gamma: float = 0.0) -> dict[str, AtomLogProbs]:
    """The atoms' log-probabilities under ``semantics`` (:data:`SEMANTICS`). ``gamma`` lowers the
    chosen atom's logit (SimPO's margin: its odds times e^−γ); logit semantics only."""
    if semantics not in SEMANTICS:
        raise FormulaError(f"unknown semantics {semantics!r}\n  hint: one of {', '.join(SEMANTICS)}")
    score, form = SEMANTICS[semantics]
    if form == "prob" and gamma:
        raise FormulaError("gamma shifts an atom's logit: it needs a logit semantics (ref, logit-sum, logit-mean)")

    def atom(value: torch.Tensor, shift: float = 0.0) -> AtomLogProbs:
        return AtomLogProbs.from_logit(beta * value - shift) if form == "logit" else AtomLogProbs.from_log_prob(value)

    if score == "ratio":
        if ref_chosen is None or ref_rejected is None:
            raise FormulaError("the reference semantics needs the reference's log-probs")
        return {"w": atom(policy_chosen - ref_chosen, gamma), "l": atom(policy_rejected - ref_rejected)}
    probs = {"w": atom(policy_chosen, gamma), "l": atom(policy_rejected)}
    if ref_chosen is not None and ref_rejected is not None:
        probs |= {"ref_w": atom(ref_chosen), "ref_l": atom(ref_rejected)}
    return probs
