"""Losses compiled from preference structures, registered like any hand-written loss.

Example: ``get_loss("derived:ref:w & !l given w ^ l")`` (that is DPO), ``get_loss("derived:ccpo")``

A derived loss is named ``derived:SEMANTICS:STRUCTURE`` (the semantics of :data:`SEMANTICS`,
the structure as :meth:`Structure.parse` reads it) or ``derived:NAME`` for a structure of
:data:`NAMED`. The name alone fixes the contract: which log-probs it reads (summed for ``ref``
and the ``-sum`` semantics, token means for the ``-mean`` ones and ``single``), and whether it
needs a reference (the ``ref`` semantics, or a formula with ``ref_w`` / ``ref_l``). Logit
semantics take ``beta`` and ``gamma`` as hyperparameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from alignlab.losses.contract import LossOutput, register_loss
from alignlab.losses.dpo import reward_metrics
from alignlab.losses.logic.formula import FormulaError
from alignlab.losses.logic.semantic import SEMANTICS, Structure, atom_log_probs
from alignlab.registry import LOSSES, Entry

PREFIX = "derived:"
PAPER = ("Richardson, Srikumar & Sabharwal 2025, Understanding the Logic of Direct Preference Alignment "
         "through Logic, arXiv 2412.17696")
EQUATION = "semantic loss of a preference structure, −log WMC(P ∧ C) / WMC(C)"
EQUATION_BOTH = "−log WMC(✓) / (WMC(✓) + WMC(✗)), shared worlds on both sides (alignlab's reading of P_A)"
DEFAULT_BETA = {"ref": 0.1, "logit-sum": 0.1, "logit-mean": 2.0}
"""β defaults: DPO's and CPO's 0.1; SimPO's recommended 2.0 for token means."""


@dataclass(frozen=True)
class Named:
    structure: str
    semantics: str
    about: str


NAMED: dict[str, Named] = {
    "dpo": Named("w & !l given w ^ l", "ref", "DPO (Rafailov et al. 2023): −log σ(β(ρ_w − ρ_l))"),
    "orpo_odds": Named("w & !l given w ^ l", "single", "ORPO's odds-ratio term (Hong et al. 2024)"),
    "cpo_prefer": Named("w & !l given w ^ l", "logit-sum", "CPO's preference term (Xu et al. 2024)"),
    "simpo": Named("w & !l given w ^ l", "logit-mean", "SimPO (Meng et al. 2024), with gamma"),
    "sft": Named("w", "single", "token-mean NLL of the chosen completion"),
    "unlikelihood": Named("w & !l", "single", "NLL of the chosen plus unlikelihood of the rejected"),
    "implication": Named("l -> w given w | l", "ref", "'if the rejected is good, so is the chosen', "
                                                      "given one of them is"),
    # The paper's single-model losses (atom weight p = πθ(y|x)): CPO's truth table, and ℓ_unCPO.
    "cpo_single": Named("l -> w given w | l both w & l", "single-sum",
                        "CPO's preference term with β = 1, as the paper's truth table draws it"),
    "uncpo": Named("l -> w", "single-sum", "ℓ_unCPO (Richardson et al. 2025): −log WMC(M_l → M_w)"),
    "ccpo_reading": Named("l -> w given w | l", "single-sum",
                          "alignlab's reading of ℓ_cCPO (unverified: the paper's definition was not available)"),
}
"""Structures worth a name (each checked against the library's loss in the tests)."""


def spec_of(name: str) -> tuple[Structure, str]:
    """(structure, semantics) of a derived loss name (with or without the prefix)."""
    body = name.removeprefix(PREFIX).strip()
    if body in NAMED:
        named = NAMED[body]
        return Structure.parse(named.structure), named.semantics
    semantics, sep, text = body.partition(":")
    if not sep:
        raise FormulaError(f"{name!r} is neither a named structure nor SEMANTICS:STRUCTURE\n"
                           f"  hint: e.g. 'derived:ref:w & !l given w ^ l', or one of "
                           f"{', '.join(PREFIX + n for n in NAMED)}")
    semantics = semantics.strip()
    if semantics not in SEMANTICS:
        raise FormulaError(f"unknown semantics {semantics!r} in {name!r}\n  hint: one of {', '.join(SEMANTICS)}")
    return Structure.parse(text), semantics


def canonical_name(structure: Structure, semantics: str) -> str:
    return f"{PREFIX}{semantics}:{structure}"


def compile_loss(structure: Structure, semantics: str) -> tuple[Callable[..., LossOutput], bool, str]:
    """The loss function of ``structure`` under ``semantics``, whether it needs a reference, and
    the log-probs it reads ("sum" or "mean")."""
    structure.check()
    if semantics not in SEMANTICS:
        raise FormulaError(f"unknown semantics {semantics!r}\n  hint: one of {', '.join(SEMANTICS)}")
    score, form = SEMANTICS[semantics]
    ref_atoms = any(a.startswith("ref_") for a in structure.atoms)
    if ref_atoms and score == "ratio":
        raise FormulaError(f"{structure}: the atoms ref_w / ref_l read the reference's own probabilities, "
                           "which the ref semantics already divides out\n  hint: use a single-model semantics "
                           "(single, logit-sum, ...) with reference atoms")
    needs_ref = score == "ratio" or ref_atoms
    logps = "mean" if score == "mean" else "sum"
    beta_default = DEFAULT_BETA.get(semantics, 1.0)

    def evaluate(pc, pr, rc, rr, beta: float, gamma: float) -> LossOutput:
        probs = atom_log_probs(semantics, pc, pr, rc, rr, beta=beta, gamma=gamma)
        losses = structure.loss(probs)
        chosen, rejected = (pc - rc, pr - rr) if score == "ratio" else (pc, pr)
        metrics = reward_metrics(beta, chosen, rejected) | {
            "p_chosen": probs["w"].log_p.exp().detach(), "p_rejected": probs["l"].log_p.exp().detach()}
        return losses, metrics

    if form == "logit" and needs_ref:
        def loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                 ref_rejected: torch.Tensor, *, beta: float = beta_default, gamma: float = 0.0) -> LossOutput:
            return evaluate(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, gamma)
    elif form == "logit":
        def loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,  # type: ignore[misc]
                 *, beta: float = beta_default, gamma: float = 0.0) -> LossOutput:
            return evaluate(policy_chosen, policy_rejected, None, None, beta, gamma)
    elif needs_ref:
        def loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,  # type: ignore[misc]
                 ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> LossOutput:
            return evaluate(policy_chosen, policy_rejected, ref_chosen, ref_rejected, 1.0, 0.0)
    else:
        def loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor) -> LossOutput:  # type: ignore[misc]
            return evaluate(policy_chosen, policy_rejected, None, None, 1.0, 0.0)
    loss.__doc__ = (f"Semantic loss of {structure} under the {semantics!r} semantics (Richardson et al. "
                    f"2025, arXiv 2412.17696): −log WMC(P ∧ C) / WMC(C).")
    return loss, needs_ref, logps


def derived_entry(name: str) -> Entry:
    """Compile and register the loss a ``derived:...`` name writes (the registry's resolver)."""
    structure, semantics = spec_of(name)
    fn, needs_ref, logps = compile_loss(structure, semantics)
    fn.__name__ = fn.__qualname__ = "derived_loss"
    # Worlds counted on both sides are alignlab's reading of the paper's P_A: not verified.
    register_loss(name, needs_ref=needs_ref, logps=logps, data="paired", paper=PAPER,  # type: ignore[arg-type]
                  equation=EQUATION if structure.plain else EQUATION_BOTH, verified=structure.plain)(fn)
    return LOSSES.get(name)


LOSSES.add_resolver(PREFIX, derived_entry)
