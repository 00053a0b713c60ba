"""The code's shape: no harness module imports (directly or through others, lazily included) a module
that imports it back, so each layer can be read, tested and replaced on its own."""
from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def _imports() -> dict[str, set[str]]:
    mods = {p.stem for p in HARNESS.glob("*.py")}
    graph = {}
    for p in HARNESS.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):  # function-level (lazy) imports count too
            if isinstance(node, ast.ImportFrom) and node.module == "harness":
                deps |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("harness.")}
        graph[p.stem] = deps - {p.stem}
    return graph


def test_no_import_cycle_among_harness_modules():
    graph = _imports()
    cycles = []

    def walk(start, node, path):
        for dep in graph.get(node, ()):
            if dep == start:
                cycles.append(" -> ".join([*path, start]))
            elif dep not in path:
                walk(start, dep, [*path, dep])

    for module in graph:
        walk(module, module, [module])
    assert not cycles, cycles[:5]
