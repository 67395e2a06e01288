"""Losses from logic: write the preference you mean as a formula, get its semantic loss.

Example: ``get_loss("derived:ref:w & !l given w ^ l")`` is DPO; ``alignlab losses derive "l -> w" --given "w | l"``

After Richardson, Srikumar & Sabharwal 2025 (arXiv 2412.17696): formulas over the atoms of a
pair (:mod:`.formula`), their weighted model counts and semantic losses (:mod:`.semantic`),
losses compiled and registered from a name (:mod:`.derived`), and the lattice of two-atom losses
with entailment and decompilation (:mod:`.lattice`).
"""

from alignlab.losses.logic.derived import NAMED, PREFIX, canonical_name, compile_loss, spec_of
from alignlab.losses.logic.formula import Formula, FormulaError, parse
from alignlab.losses.logic.semantic import (
           SEMANTICS,
           AtomLogProbs,
           Structure,
           atom_log_probs,
           log_wmc,
)

__all__ = ["NAMED", "PREFIX", "SEMANTICS", "AtomLogProbs", "Formula", "FormulaError", "Structure",
           "atom_log_probs", "canonical_name", "compile_loss", "log_wmc", "parse", "spec_of"]
