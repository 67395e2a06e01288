"""The import graph of ``src/alignlab`` against the layer order declared in docs/design.md.

Example: ``.venv/bin/pytest tests/test_layers.py``

Every import of an alignlab module, at the top of a file or inside a function (a lazy import is
still a dependency), must point to the same or a lower layer; and no module may import another
that imports it back, directly or around a cycle (type-checking imports included). The order is
written once, in docs/design.md, in the block that starts with ``# layers: lowest first``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "alignlab"
DESIGN = ROOT / "docs" / "design.md"

Graph = dict[str, list[tuple[str, int]]]
"""module → (alignlab module it imports, line)."""


def declared_layers(text: str) -> list[list[str]]:
    """The layers, lowest first: one line each, the names of one layer separated by spaces."""
    block = re.search(r"```text\n# layers: lowest first\n(.*?)```", text, re.S)
    assert block, "docs/design.md lost its layer block (```text, then '# layers: lowest first')"
    lines = (line.split("#")[0].split() for line in block.group(1).splitlines())
    return [names for names in lines if names]


def unit_of(module: str) -> str:
    """``alignlab.models.ref_cache`` → ``models``: the top-level package or module it belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_graph(source: Path) -> Graph:
    """Every ``import`` and ``from ... import`` of every module under ``source``, at any depth."""
    root = source.parent
    graph: Graph = {}
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        package = module if is_package else module.rpartition(".")[0]
        found = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                found += [(alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: up from this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:  # "from pkg import mod" imports the module pkg.mod
                    candidate = f"{base}.{alias.name}"
                    found.append((candidate if _is_module(root, candidate) else base, node.lineno))
        graph[module] = [(name, line) for name, line in found if name.split(".")[0] == source.name]
    return graph


def _is_module(root: Path, name: str) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_violations(graph: Graph, layers: list[list[str]]) -> list[str]:
    """Imports of a higher layer, or of another unit of the same layer."""
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    problems = []
    for module, imports in graph.items():
        source = unit_of(module)
        for target_module, line in imports:
            target = unit_of(target_module)
            if target == source or "." not in target_module:  # itself, or the root package
                continue
            if source in rank and target in rank and rank[target] >= rank[source]:
                problems.append(f"{module}:{line} imports {target_module} "
                                f"({source} is layer {rank[source]}, {target} layer {rank[target]})")
    return problems


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle of module imports, if any. A package's ``__init__`` importing its own submodules
    (to register them) does not count: importing a submodule runs its package first anyway."""
    edges = {m: sorted({t for t, _ in imports if t != m and not t.startswith(m + ".")})
             for m, imports in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt in edges and not state.get(nxt) and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(edges):
        if not state.get(module) and (cycle := visit(module)):
            return cycle
    return None


def test_every_unit_of_the_package_has_a_layer() -> None:
    layered = {name for layer in declared_layers(DESIGN.read_text(encoding="utf-8")) for name in layer}
    units = {unit_of(module) for module in import_graph(SOURCE)} - {"alignlab"}
    assert units <= layered, f"not in the layer order of docs/design.md: {sorted(units - layered)}"


def test_imports_point_down_the_declared_layers() -> None:
    layers = declared_layers(DESIGN.read_text(encoding="utf-8"))
    problems = layer_violations(import_graph(SOURCE), layers)
    assert not problems, "imports against the layer order of docs/design.md:\n" + "\n".join(problems)


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(SOURCE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_catch_a_lazy_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """A fake package: data imports train inside a function, and two models modules import each
    other (one only for type checking); both checks must see it."""
    package = tmp_path / "fake"
    for folder in ("data", "train", "models"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("", encoding="utf-8")
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "data" / "load.py").write_text(
        "def f():\n    from fake.train.run import go\n    return go\n", encoding="utf-8")
    (package / "train" / "run.py").write_text("from .. import data\n\ndef go():\n    pass\n",
                                              encoding="utf-8")
    (package / "models" / "a.py").write_text("from fake.models import b\n", encoding="utf-8")
    (package / "models" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fake.models.a import x\n", encoding="utf-8")
    graph = import_graph(package)
    assert ("fake.data", 1) in graph["fake.train.run"]  # the relative import, resolved
    problems = layer_violations(graph, [["data"], ["models"], ["train"]])
    assert problems == ["fake.data.load:2 imports fake.train.run (data is layer 0, train layer 2)"]
    # models and data may share a layer: they do not import each other
    assert layer_violations(graph, [["data", "models"], ["train"]]) == [
        "fake.data.load:2 imports fake.train.run (data is layer 0, train layer 1)"]
    assert layer_violations(graph, [["data", "train"], ["models"]]) == [
        "fake.data.load:2 imports fake.train.run (data is layer 0, train layer 0)",
        "fake.train.run:1 imports fake.data (train is layer 0, data layer 0)"]
    assert find_cycle(graph) == ["fake.models.a", "fake.models.b", "fake.models.a"]
