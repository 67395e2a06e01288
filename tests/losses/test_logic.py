"""Losses from logic (alignlab.losses.logic): formulas, WMC, compiled losses, lattice, decompilation.

Identities in float64 to 1e-12 (DPO is the semantic loss of w ∧ ¬l given w ⊕ l; unconditioned w
is SFT); the log-space WMC against a brute-force product-space one on random formulas of up to
four atoms; monotonicity under entailment at random points; the library's DPO, ORPO odds term,
CPO preference term and SimPO reproduced to 1e-6 (values and gradients) and found by the
decompiler; parser errors point at the character; a run trains from a formula written in the config.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re

import pytest
import torch
from rich.console import Console

from alignlab.losses import get_loss
from alignlab.losses.logic import FormulaError, Structure, atom_log_probs, log_wmc, parse
from alignlab.losses.logic.formula import ATOMS, truth_table, worlds
from alignlab.losses.logic.lattice import class_stronger, decompile, distinct_losses, pair_loss
from alignlab.losses.logic.semantic import AtomLogProbs

DPO = "w & !l given w ^ l"


def random_logps(n: int = 64, seed: int = 0, grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(-torch.rand(n, generator=g, dtype=torch.float64) * 4 - 1e-3).requires_grad_(grad) for _ in range(4)]


# ---- identities ---------------------------------------------------------------------------------


def test_dpo_is_the_semantic_loss_of_w_and_not_l_given_w_xor_l() -> None:
    pc, pr, rc, rr = random_logps()
    for beta in (0.1, 1.0, 7.0):
        derived, _ = get_loss(f"derived:ref:{DPO}").obj(pc, pr, rc, rr, beta=beta)
        closed = -torch.nn.functional.logsigmoid(beta * ((pc - rc) - (pr - rr)))
        torch.testing.assert_close(derived, closed, atol=1e-12, rtol=0)
        library, _ = get_loss("dpo").obj(pc, pr, rc, rr, beta=beta)
        torch.testing.assert_close(derived, library, atol=1e-12, rtol=0)
    # the implication l -> w has the same single world under the xor condition
    same, _ = get_loss("derived:ref:l -> w given w ^ l").obj(pc, pr, rc, rr, beta=0.1)
    torch.testing.assert_close(same, get_loss("dpo").obj(pc, pr, rc, rr, beta=0.1)[0], atol=1e-12, rtol=0)


def test_unconditioned_w_is_sft_and_w_and_not_l_is_unlikelihood() -> None:
    pc, pr, _, _ = random_logps()
    sft, _ = get_loss("derived:single:w").obj(pc, pr)
    torch.testing.assert_close(sft, -pc, atol=1e-12, rtol=0)  # token-mean NLL of the chosen completion
    unlikely, _ = get_loss("derived:single:w & !l").obj(pc, pr)
    torch.testing.assert_close(unlikely, -pc - torch.log1p(-torch.exp(pr)), atol=1e-12, rtol=0)


def brute_wmc(formula, atoms, probs: dict[str, float]) -> float:
    """Σ over satisfying worlds of Π p or (1 − p), in plain probability space."""
    total = 0.0
    for world in worlds(atoms):
        if formula.holds(world):
            total += math.prod(probs[a] if world[a] else 1 - probs[a] for a in atoms)
    return total


def random_formula(rng: random.Random, atoms: tuple[str, ...], depth: int = 3) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(atoms)
    if rng.random() < 0.2:
        return f"!({random_formula(rng, atoms, depth - 1)})"
    op = rng.choice(["&", "|", "^", "->", "<->"])
    return f"({random_formula(rng, atoms, depth - 1)} {op} {random_formula(rng, atoms, depth - 1)})"


@pytest.mark.parametrize("seed", range(20))
def test_log_space_wmc_equals_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    atoms = ATOMS[:rng.randint(2, 4)]
    formula = parse(random_formula(rng, atoms))
    logits = {a: torch.tensor([rng.uniform(-6, 6)], dtype=torch.float64) for a in atoms}
    probs = {a: AtomLogProbs.from_logit(v) for a, v in logits.items()}
    expected = brute_wmc(formula, atoms, {a: float(torch.sigmoid(v)) for a, v in logits.items()})
    got = log_wmc(truth_table(formula, atoms), atoms, probs).exp().item()
    assert got == pytest.approx(expected, abs=1e-12, rel=1e-12)


def test_entailment_orders_wmc_and_losses() -> None:
    rng = random.Random(3)
    atoms = ("w", "l", "ref_w")
    formulas = [parse(random_formula(rng, atoms)) for _ in range(60)]
    probs = {a: AtomLogProbs.from_logit(torch.randn(32, dtype=torch.float64) * 3) for a in atoms}
    pairs = 0
    for p, q in itertools.permutations(formulas, 2):
        tp, tq = truth_table(p, atoms), truth_table(q, atoms)
        if all(b or not a for a, b in zip(tp, tq, strict=True)) and any(tp):  # p ⊨ q
            pairs += 1
            assert bool((log_wmc(tp, atoms, probs) <= log_wmc(tq, atoms, probs) + 1e-12).all())
    assert pairs > 20
    classes = distinct_losses()
    probes = {a: AtomLogProbs.from_logit(torch.randn(256, dtype=torch.float64) * 4) for a in ("w", "l")}
    ordered = 0
    for a, b in itertools.permutations(classes, 2):
        if class_stronger(a, b):
            ordered += 1
            assert bool((pair_loss(*a.key, probes) >= pair_loss(*b.key, probes) - 1e-12).all())
    assert ordered > 50


def test_the_two_atom_lattice() -> None:
    classes = distinct_losses()
    assert len(classes) == 42  # of the 65 pairs ∅ ≠ N ⊊ D over four worlds
    assert sum(len(c.members) for c in classes) == 65 - 15
    probes = {a: AtomLogProbs.from_logit(torch.randn(64, dtype=torch.float64) * 3) for a in ("w", "l")}
    for c in classes:  # equivalent members are the same function; the named structure is one of them
        first = pair_loss(*c.members[0], probes)
        for member in c.members[1:]:
            torch.testing.assert_close(pair_loss(*member, probes), first, atol=1e-12, rtol=0)
        assert c.structure.tables() in c.members
    dpo = next(c for c in classes if Structure.parse(DPO).tables() in c.members)
    assert str(dpo.structure) == "w given w ^ l"
    weaker = [c for c in classes if class_stronger(dpo, c) and c is not dpo]
    stronger = {c.key for c in classes if class_stronger(c, dpo) and c is not dpo}
    # N₁ ⊆ {w¬l} and D₁ ⊇ {w¬l, ¬wl}: the same core under a weaker condition, or none
    expected = {Structure.parse(f"w & !l given {c}").tables() for c in ("w | l", "!(w & l)", "true")}
    assert {next(o.key for o in classes if k in o.members) for k in expected} == stronger
    assert weaker == []  # nothing below DPO but the trivial loss: its condition admits no smaller one


# ---- the library's losses as structures ---------------------------------------------------------


def _both(derived_name: str, library, kwargs: dict, library_kwargs: dict, ref: bool) -> None:
    inputs = random_logps(grad=True)
    args = inputs if ref else inputs[:2]
    mine, _ = get_loss(derived_name).obj(*args, **kwargs)
    theirs = library(*args, **library_kwargs)
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    grads_mine = torch.autograd.grad(mine.sum(), args)
    grads_theirs = torch.autograd.grad(theirs.sum(), args, allow_unused=True)
    for a, b in zip(grads_mine, grads_theirs, strict=True):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, atol=1e-6, rtol=0)


def test_the_library_losses_are_structures_to_1e6_values_and_gradients() -> None:
    _both("derived:dpo", lambda *a, beta: get_loss("dpo").obj(*a, beta=beta)[0], {"beta": 0.3}, {"beta": 0.3}, True)

    def orpo_odds(pc, pr):  # ORPO = NLL − λ·log σ(log odds ratio): its odds term alone, λ = 1
        loss, metrics = get_loss("orpo").obj(pc, pr, lambda_=1.0)
        return loss - (-pc)

    _both("derived:orpo_odds", orpo_odds, {}, {}, False)
    lengths = torch.full((64,), 5.0, dtype=torch.float64)
    _both("derived:cpo_prefer", lambda pc, pr, beta: get_loss("cpo").obj(pc, pr, lengths, beta=beta, alpha=0.0)[0],
          {"beta": 0.2}, {"beta": 0.2}, False)
    _both("derived:simpo", lambda pc, pr, beta, gamma: get_loss("simpo").obj(pc, pr, beta=beta, gamma=gamma)[0],
          {"beta": 2.5, "gamma": 0.7}, {"beta": 2.5, "gamma": 0.7}, False)


def test_decompile_finds_the_structure_of_log_sigmoid_losses() -> None:
    dpo = decompile(get_loss("dpo").obj, "ref", beta=0.1)
    assert [s.tables() for s in dpo] == [Structure.parse(DPO).tables()]
    simpo = decompile(get_loss("simpo").obj, "logit-mean", beta=2.0, gamma=0.5)
    assert [s.tables() for s in simpo] == [Structure.parse(DPO).tables()]

    def orpo_odds(pc, pr):
        loss, metrics = get_loss("orpo").obj(pc, pr, lambda_=1.0)
        return loss + pc, metrics

    assert [str(s) for s in decompile(orpo_odds, "single")] == ["w given w ^ l"]
    assert decompile(get_loss("orpo").obj, "single") == []  # with its NLL term it is a sum of two structures
    assert decompile(get_loss("ipo").obj, "ref") == []  # squared, not log-sigmoid


def test_extreme_logits_give_finite_losses_and_gradients() -> None:
    for name in ("derived:dpo", "derived:ref:l -> w given w | l", "derived:ref:w ^ l"):
        pc = torch.tensor([5e3, -5e3, 0.0], dtype=torch.float64, requires_grad=True)
        zeros = torch.zeros(3, dtype=torch.float64)
        loss, _ = get_loss(name).obj(pc, -pc.detach(), zeros, zeros, beta=1.0)
        loss.sum().backward()
        assert torch.isfinite(loss).all() and torch.isfinite(pc.grad).all(), name
    a = torch.tensor([-1e-12, -50.0, -1e-3], dtype=torch.float64, requires_grad=True)
    loss, _ = get_loss("derived:orpo_odds").obj(a, a.detach() - 1)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(a.grad).all()


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message", "column"), [
    ("w & !x", "unknown atom 'x'", 6),
    ("w & (!l", "expected ')'", 8),
    ("w &", "ends where an atom", 4),
    ("w l", "unexpected 'l' after a complete formula", 3),
    ("w $ l", "unexpected character '$'", 3),
    ("& w", "'&' where an atom", 1),
])
def test_parse_errors_point_at_the_character(text: str, message: str, column: int) -> None:
    with pytest.raises(FormulaError, match=re.escape(message)) as error:
        parse(text)
    assert f"at character {column}:" in str(error.value)
    lines = str(error.value).splitlines()
    caret_line = next(line for line in lines if line.strip() == "^")
    assert caret_line.index("^") - 4 == column - 1


def test_structures_that_train_nothing_and_bad_names_are_refused() -> None:
    with pytest.raises(FormulaError, match="never true"):
        get_loss("derived:ref:w given w & !w")
    with pytest.raises(FormulaError, match="always 0"):
        get_loss("derived:ref:w | l given w ^ l")
    with pytest.raises(FormulaError, match="infinite"):
        get_loss("derived:ref:w & l given w ^ l")
    with pytest.raises(FormulaError, match="unknown semantics 'refs'"):
        get_loss("derived:refs:w")
    with pytest.raises(FormulaError, match="neither a named structure"):
        get_loss("derived:dpoo")
    with pytest.raises(FormulaError, match="ref semantics already divides"):
        get_loss("derived:ref:w & ref_w given w ^ l")


def test_operators_precedence_and_unicode() -> None:
    assert truth_table(parse("w ∧ ¬l ∨ (w ⊕ l)"), ("w", "l")) == truth_table(parse("(w & !l) | (w ^ l)"), ("w", "l"))
    assert truth_table(parse("w -> l -> w"), ("w", "l")) == truth_table(parse("w -> (l -> w)"), ("w", "l"))
    assert truth_table(parse("!w & l"), ("w", "l")) == (False, False, True, False)
    assert truth_table(parse("M_w <-> M_l"), ("w", "l")) == (True, False, False, True)


def test_reference_atoms_make_a_four_atom_loss_that_needs_a_reference() -> None:
    entry = get_loss("derived:single:w & !l given (w ^ l) & (ref_w | ref_l)")
    assert entry.contract.needs_ref and entry.contract.logps == "mean"
    pc, pr, rc, rr = random_logps()
    loss, _ = entry.obj(pc, pr, rc, rr)
    probs = atom_log_probs("single", pc, pr, rc, rr)
    p = {a: v.log_p.exp() for a, v in probs.items()}
    # ref atoms are independent of the policy's: the condition factorises, the loss is ORPO's odds term
    expected = -torch.log(p["w"] * (1 - p["l"]) / (p["w"] * (1 - p["l"]) + p["l"] * (1 - p["w"])))
    torch.testing.assert_close(loss, expected, atol=1e-10, rtol=0)


# ---- CLI and a run -------------------------------------------------------------------------------


def test_cli_derive_and_lattice(tmp_path, capsys) -> None:
    from alignlab.cli import main

    assert main(["losses", "derive", "w & !l", "--given", "w ^ l"]) == 0
    out = capsys.readouterr().out
    assert "−log σ(s_w − s_l)" in out and "dpo (β=0.1)" in out and "derived:ref:w & !l given w ^ l" in out
    assert main(["losses", "derive", "l -> w", "--given", "w | l", "--semantics", "single"]) == 0
    assert "weaker than (entailed by): derived:sft" in capsys.readouterr().out
    assert main(["losses", "derive", "w & (!l"]) != 0
    assert "expected ')'" in capsys.readouterr().err
    html = tmp_path / "lattice.html"
    assert main(["losses", "lattice", "--html", str(html)]) == 0
    assert "42 distinct semantic losses" in capsys.readouterr().out
    page = html.read_text()
    assert page.count("<line") > 40 and "w given w ^ l" in page


def test_a_run_trains_a_derived_loss_from_the_config(tmp_path) -> None:
    import alignlab
    from alignlab.models.tiny import init_tiny_model

    tiny = init_tiny_model(tmp_path / "tiny", hidden_size=32, layers=2, heads=4, intermediate=64)
    pairs = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "data" / "pairs.jsonl"
    config = {"data": {"path": str(pairs)}, "model": {"name_or_path": str(tiny)},
              "train": {"loss": "derived:ref:l -> w given w ^ l", "loss_kwargs": {"beta": 0.1}, "max_steps": 2,
                        "batch_size": 4, "reference": "copy", "precision": "fp32", "device": "cpu",
                        "output_dir": str(tmp_path / "run")}}
    run = alignlab.train(config, console=Console(quiet=True))
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)  # at init every ρ = 0: DPO's log 2


def test_the_papers_single_model_losses() -> None:
    """Under p = πθ(y|x): CPO's truth table (the world where both are good on both sides) is CPO's
    preference term at β = 1, and ℓ_unCPO is −log WMC(M_l → M_w) = −log(p_l·p_w + 1 − p_l)."""
    pc, pr, _, _ = random_logps()
    cpo_single, _ = get_loss("derived:cpo_single").obj(pc, pr)
    lengths = torch.ones(64, dtype=torch.float64)
    torch.testing.assert_close(cpo_single, get_loss("cpo").obj(pc, pr, lengths, beta=1.0, alpha=0.0)[0],
                               atol=1e-6, rtol=0)
    uncpo, _ = get_loss("derived:uncpo").obj(pc, pr)
    pw, pl = pc.clamp(max=-1e-6).exp(), pr.clamp(max=-1e-6).exp()
    torch.testing.assert_close(uncpo, -torch.log(pl * pw + 1 - pl), atol=1e-12, rtol=0)
    structure = Structure.parse("l -> w given w | l both w & l")
    assert not structure.plain and str(structure) == "l -> w given w | l both w & l"
    with pytest.raises(FormulaError, match="no \\(P ∧ C, C\\) form"):
        structure.tables()


def test_only_plain_structures_are_marked_verified() -> None:
    assert get_loss("derived:dpo").contract.verified
    assert not get_loss("derived:cpo_single").contract.verified
