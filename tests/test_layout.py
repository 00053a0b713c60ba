"""The code's shape, asserted over the whole tree: the process boundary drawn as packages.

Rooms (harness/<room>/ or a top-level module):
- shared, torch-free, read by both sides: record, optuna_parts, config/, data/, metrics/
- the driver (never imports torch): cli/, study/, runners/
- the trial (inside the trial process): trial/, tasks/, and train (its entry point)
- entry points, free to import any room: __main__, export
Rules: the trial never imports the driver; the driver never imports the trial; the shared rooms import
neither; torch and its family are imported only by the trial rooms and entry points (plus the two named
functions below, which ask the installed libraries themselves); and no module imports one that imports
it back. Function-level (lazy) imports count, so a lazy import cannot cross the boundary unseen.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"
SHARED = {"record", "optuna_parts", "config", "data", "metrics"}
DRIVER = {"cli", "study", "runners"}
TRIAL = {"trial", "tasks", "train"}
ENTRY = {"__main__", "export", "__init__"}
TORCH = {"torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl", "lm_eval"}
# (module, function) that may import TORCH outside the trial: each asks the library a fact, on demand
TORCH_ASKERS = {("harness.config.devices", "cuda_devices"),   # how many GPUs (hardware=auto / cuda only)
                ("harness.config.lora", "generate")}           # regenerates peft_lora.json (a maintainer's step)


def module_name(path: Path) -> str:
    rel = path.relative_to(HARNESS.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(tree: ast.AST, module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, enclosing function or None, line) for every import, lazy ones included;
    `from harness.<pkg> import <mod>` counts as importing that module when it is one."""
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and func is None else func
            if isinstance(child, ast.Import):
                out.extend((a.name, f, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module, f, child.lineno))
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    if sub.startswith("harness.") and _exists(sub):
                        out.append((sub, f, child.lineno))
            visit(child, f)

    visit(tree, None)
    return out


def _exists(dotted: str) -> bool:
    p = HARNESS.parent / Path(*dotted.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def tree_imports() -> dict[str, list[tuple[str, str | None, int]]]:
    return {module_name(p): imports(ast.parse(p.read_text()), module_name(p))
            for p in HARNESS.rglob("*.py") if "evaluate_modules" not in p.parts}


def violations(graph: dict[str, list[tuple[str, str | None, int]]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        here = room(mod)
        for dep, func, line in deps:
            top = dep.split(".")[0]
            where = f"{mod}:{line} imports {dep}"
            if top in TORCH:
                if here not in TRIAL | ENTRY and (mod, func) not in TORCH_ASKERS:
                    bad.append(f"{where}: torch's family outside the trial")
                continue
            if top != "harness" or dep == "harness":
                continue
            there = room(dep)
            if here in TRIAL and there in DRIVER | {"__main__"}:
                bad.append(f"{where}: the trial imports the driver")
            elif here in DRIVER and there in TRIAL | {"export"}:
                bad.append(f"{where}: the driver imports the trial")
            elif here in SHARED and there in DRIVER | TRIAL | {"__main__", "export"}:
                bad.append(f"{where}: a shared room imports a side")
    return bad


def test_the_boundary_holds():
    assert not violations(tree_imports())


def test_no_import_cycle_among_harness_modules():
    graph = {m: {d for d, _, _ in deps if d.startswith("harness.") and d != m and d in _MODS}
             for m, deps in tree_imports().items()}
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


_MODS = {module_name(p) for p in HARNESS.rglob("*.py")}


@pytest.mark.parametrize("planted, rule", [  # (module, planted import), the rule it breaks
    (("harness.trial.loop", "from harness.study import driver"), "the trial imports the driver"),
    (("harness.tasks.sft", "from harness.runners.process import write_config"), "the trial imports the driver"),
    (("harness.study.summary", "from harness.trial import cost"), "the driver imports the trial"),
    (("harness.cli.preflight", "import harness.train"), "the driver imports the trial"),
    (("harness.runners.warm", "import torch"), "torch's family outside the trial"),
    (("harness.config.schema", "from harness.study import space"), "a shared room imports a side"),
    (("harness.data.load", "from harness.tasks import classify"), "a shared room imports a side"),
])
def test_a_planted_violation_fails(planted, rule):
    """Each rule catches a planted import, lazy inside a function as the six arrows once were."""
    mod, line = planted
    graph = tree_imports()
    lazy = ast.parse(f"def f():\n    {line}\n")
    graph[mod] = graph[mod] + imports(lazy, mod)
    assert any(rule in v and v.startswith(mod) for v in violations(graph)), violations(graph)
