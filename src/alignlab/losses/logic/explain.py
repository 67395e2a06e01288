"""What a derived loss is, in words and numbers: its WMC terms, closed form, and relatives.

Example: ``d = describe(Structure.parse("w & !l given w ^ l"), "ref"); d.closed_form``

Backs ``alignlab losses derive`` and ``alignlab losses lattice`` (the HTML drawing included).
"""

from __future__ import annotations

import html
import inspect
from dataclasses import dataclass, field

import torch

from alignlab.losses.contract import get_loss
from alignlab.losses.logic.derived import NAMED, canonical_name, compile_loss
from alignlab.losses.logic.formula import worlds
from alignlab.losses.logic.lattice import ATOMS2, LossClass, class_stronger, distinct_losses
from alignlab.losses.logic.semantic import SEMANTICS, Structure
from alignlab.registry import LOSSES

ATOM_TEXT = {
    "ratio": "σ(β·(log πθ(y|x) − log πref(y|x)))",
    "sum": {"prob": "πθ(y|x)", "logit": "σ(β·log πθ(y|x))"},
    "mean": {"prob": "πθ(y|x)^(1/|y|)", "logit": "σ(β·A(y)), A the token-mean log-prob"},
}
PAIRED_INPUTS = {"policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected"}


@dataclass
class Description:
    name: str
    structure: Structure
    semantics: str
    atoms: str
    for_worlds: list[str]
    """WMC(✓) terms: the worlds for the preference."""
    against_worlds: list[str]
    """WMC(✗) terms: the worlds against it."""
    closed_form: str
    equal_to: list[str] = field(default_factory=list)
    stronger_than: list[str] = field(default_factory=list)
    weaker_than: list[str] = field(default_factory=list)


def _term(world: dict[str, bool], atoms: tuple[str, ...]) -> str:
    return "·".join(f"p_{a}" if world[a] else f"(1−p_{a})" for a in atoms)


def describe(structure: Structure, semantics: str) -> Description:
    """Everything ``alignlab losses derive`` prints about ``structure`` under ``semantics``."""
    compile_loss(structure, semantics)  # refuses an undefined, infinite or constant loss
    atoms = structure.atoms
    yes_table, no_table = structure.sides()
    yes = [_term(w, atoms) for w, n in zip(worlds(atoms), yes_table, strict=True) if n]
    no = [_term(w, atoms) for w, d in zip(worlds(atoms), no_table, strict=True) if d]
    score, form = SEMANTICS[semantics]
    atom_text = ATOM_TEXT[score] if score == "ratio" else ATOM_TEXT[score][form]
    description = Description(canonical_name(structure, semantics), structure, semantics,
                              f"p = {atom_text} (y = y_w for p_w, y_l for p_l)", yes, no,
                              _closed_form(structure, yes, no, form))
    _relatives(description)
    return description


def _closed_form(structure: Structure, yes: list[str], no: list[str], form: str) -> str:
    atoms = structure.atoms
    unconditioned = structure.plain and len(yes) + len(no) == len(worlds(atoms))
    if unconditioned:  # WMC(✓) + WMC(✗) = 1
        return f"−log [{' + '.join(yes)}]"
    ratio = f"−log [{' + '.join(yes)}] / ([{' + '.join(yes)}] + [{' + '.join(no)}])"
    yes_table, no_table = structure.sides()
    wins = [w for w, n in zip(worlds(atoms), yes_table, strict=True) if n]
    losses = [w for w, n in zip(worlds(atoms), no_table, strict=True) if n]
    if len(wins) == 1 and len(losses) == 1 and form == "logit":
        # One world against one: log of their ratio is a signed sum of logits (log p − log(1 − p) = s).
        differ = [a for a in atoms if wins[0][a] != losses[0][a]]
        terms = " ".join(f"{'+' if wins[0][a] else '−'} s_{a}" for a in differ).removeprefix("+ ").strip()
        return f"{ratio} = −log σ({terms}), s_a the logit of p_a"
    return f"{ratio} = −log σ(log WMC(✓) − log WMC(✗))"


def _relatives(description: Description) -> None:
    """Registered losses it equals (numerically, at random inputs), and the named structures of the
    same semantics it is stronger or weaker than by entailment."""
    fn, needs_ref, logps = compile_loss(description.structure, description.semantics)
    g = torch.Generator().manual_seed(0)
    inputs = {"policy_chosen": -torch.rand(32, generator=g, dtype=torch.float64) * 3 - 1e-3,
              "policy_rejected": -torch.rand(32, generator=g, dtype=torch.float64) * 3 - 1e-3,
              "ref_chosen": -torch.rand(32, generator=g, dtype=torch.float64) * 3 - 1e-3,
              "ref_rejected": -torch.rand(32, generator=g, dtype=torch.float64) * 3 - 1e-3}
    own_params = inspect.signature(fn).parameters
    for entry in LOSSES.entries():
        c = entry.contract
        if c.data != "paired" or not set(c.inputs) <= PAIRED_INPUTS or c.logps != logps or c.needs_ref != needs_ref:
            continue
        if entry.name.startswith("derived:"):
            continue
        beta = {h.name: h.default for h in c.hyperparameters}.get("beta")
        kwargs = {"beta": beta} if beta is not None and "beta" in own_params else {}
        mine, _ = fn(*(inputs[i] for i in own_params if i in inputs), **kwargs)
        theirs, _ = entry.obj(*(inputs[i] for i in c.inputs))
        if torch.allclose(mine, theirs.to(mine.dtype), atol=1e-9, rtol=1e-9):
            description.equal_to.append(entry.name + (f" (β={beta})" if kwargs else ""))
    if set(description.structure.atoms) != set(ATOMS2) or not description.structure.plain:
        return
    mine_class = _class_of(description.structure)
    for name, named in NAMED.items():
        other_structure = Structure.parse(named.structure)
        if named.semantics != description.semantics or not other_structure.plain:
            continue
        other = _class_of(other_structure)
        if other.key == mine_class.key:
            description.equal_to.append(f"derived:{name}")
        elif class_stronger(mine_class, other):
            description.stronger_than.append(f"derived:{name}")
        elif class_stronger(other, mine_class):
            description.weaker_than.append(f"derived:{name}")


def _class_of(structure: Structure) -> LossClass:
    key = structure.tables()
    for loss_class in distinct_losses():
        if key in loss_class.members:
            return loss_class
    raise ValueError(f"{structure} trains nothing")  # check() refused these already


def lattice_rows(reference: str = "w & !l given w ^ l") -> list[tuple[str, int, int, int, str]]:
    """Per distinct two-atom loss: structure, equivalent (N, D) pairs, classes it is stronger and
    weaker than, and its relation to ``reference`` (DPO's structure by default)."""
    classes = distinct_losses()
    ref_key = Structure.parse(reference).tables()
    rows = []
    for c in classes:
        stronger = sum(class_stronger(c, o) for o in classes if o is not c)
        weaker = sum(class_stronger(o, c) for o in classes if o is not c)
        ref = next(o for o in classes if ref_key in o.members)
        relation = ("equal" if c is ref else "stronger" if class_stronger(c, ref)
                    else "weaker" if class_stronger(ref, c) else "")
        rows.append((str(c.structure), len(c.members), stronger, weaker, relation))
    return rows


def lattice_html(reference: str = "w & !l given w ^ l") -> str:
    """A page with the lattice drawn as its Hasse diagram (an edge for each covering entailment,
    stronger losses higher) and the table of :func:`lattice_rows`."""
    classes = distinct_losses()
    index = {id(c): i for i, c in enumerate(classes)}
    above = {i: [index[id(o)] for o in classes if o is not c and class_stronger(o, c)] for i, c in enumerate(classes)}
    covers = [(i, j) for i, ups in above.items() for j in ups
              if not any(j in above[k] for k in ups if k != j)]  # j above i with nothing in between
    level: dict[int, int] = {}

    def depth(i: int) -> int:  # longest chain of weaker classes below
        if i not in level:
            below = [k for k, ups in above.items() if i in ups]
            level[i] = 1 + max((depth(k) for k in below), default=-1)
        return level[i]

    for i in range(len(classes)):
        depth(i)
    rows: dict[int, list[int]] = {}
    for i, d in level.items():
        rows.setdefault(d, []).append(i)
    width, row_height = 1100, 90
    height = row_height * (max(rows) + 2)
    place = {}
    for d, members in rows.items():
        for k, i in enumerate(sorted(members, key=lambda i: str(classes[i].structure))):
            place[i] = (width * (k + 1) / (len(members) + 1), height - row_height * (d + 1))
    ref_key = Structure.parse(reference).tables()
    lines = [f'<line x1="{place[a][0]:.0f}" y1="{place[a][1]:.0f}" x2="{place[b][0]:.0f}" y2="{place[b][1]:.0f}" '
             'stroke="#999"/>' for a, b in covers]
    nodes = []
    for i, c in enumerate(classes):
        x, y = place[i]
        color = "#c0392b" if ref_key in c.members else "#2c3e50"
        nodes.append(f'<text x="{x:.0f}" y="{y:.0f}" font-size="11" text-anchor="middle" fill="{color}">'
                     f'{html.escape(str(c.structure))}</text>')
    table = "".join(f"<tr><td>{html.escape(s)}</td><td>{m}</td><td>{a}</td><td>{b}</td><td>{r}</td></tr>"
                    for s, m, a, b, r in lattice_rows(reference))
    return (f"<!doctype html><meta charset='utf-8'><title>alignlab losses lattice</title>"
            f"<h1>The {len(classes)} distinct semantic losses over two atoms</h1>"
            f"<p>Higher is stronger (a larger loss at every point); a line joins a loss to one it directly "
            f"entails. Red: {html.escape(reference)} (DPO under the ref semantics). After Richardson, "
            f"Srikumar &amp; Sabharwal 2025, arXiv 2412.17696.</p>"
            f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>{''.join(lines)}"
            f"{''.join(nodes)}</svg><table border='1' cellpadding='3'><tr><th>structure</th><th>equivalent forms"
            f"</th><th>stronger than</th><th>weaker than</th><th>vs DPO</th></tr>{table}</table>")


def registered(name: str) -> str:
    """Compile and register a derived loss name; its canonical name."""
    return get_loss(name).name
