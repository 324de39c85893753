"""The package's layering (README "Development"): each layer imports only from itself and the layers
before it, nothing imports ``cli``, and module-level imports have no cycles.

Imports are read with ``ast`` from the source (every ``import`` statement, at module level or inside a
function), so a lazy import that breaks the rule is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dpmesh_infer"

#: layer index of each top-level module or sub-package (the order of README "Development").
LAYERS: dict[str, int] = {
    # 0 foundation
    "config": 0, "errors": 0, "atomic": 0, "devices": 0, "images": 0, "inputs": 0, "locks": 0,
    # 1 pure batched maths
    "geometry": 1,
    # 2 results: typed results, camera choice, keypoint files, files and pictures
    "outputs": 2, "focal": 2, "keypoint_files": 2, "export": 2, "writers": 2, "render": 2,
    # 3 networks, 4 weights directories, 5 the pipeline
    "models": 3, "weights": 4, "pipeline": 5,
    # 6 applications of the pipeline
    "batch": 6, "evaluate": 6, "metrics": 6, "doctor": 6, "selftest": 6, "detect": 6, "train": 6, "data": 6,
    "stand_ins": 6, "video": 6, "engines": 6, "demo": 6, "analysis": 6, "refine": 6,
    # 7 the command line: nothing imports it
    "cli": 7,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported dpmesh_infer module, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    top_level = {id(n) for n in tree.body}
    for node in tree.body:  # imports guarded by `if TYPE_CHECKING:` are not executed
        if isinstance(node, ast.If):
            top_level.update(id(n) for n in node.body)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import submodule` imports the submodule
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t == "dpmesh_infer" or t.startswith("dpmesh_infer."):
                found.append((t, node.lineno, id(node) in top_level))
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package root (lazy public API, __version__)
    if parts[1] == "__main__":
        return LAYERS["cli"]
    return LAYERS.get(parts[1])


def test_every_module_has_a_layer():
    unknown = sorted({m.split(".")[1] for m in MODULES if m != "dpmesh_infer" and _layer(m) is None})
    assert not unknown, f"add these to LAYERS (and README 'Development'): {unknown}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "dpmesh_infer"))
def test_layer_rule(module):
    here = _layer(module)
    bad = []
    for target, line, _ in _imports(module, MODULES[module]):
        if target == "dpmesh_infer":
            continue  # `from dpmesh_infer import __version__`
        there = _layer(target)
        if there is None or there > here:
            bad.append(f"line {line}: {target} (layer {there}) from layer {here}")
    assert not bad, f"{module} imports from a later layer:\n  " + "\n  ".join(bad)


def test_nothing_imports_cli():
    offenders = [f"{m} line {line}" for m in MODULES if _layer(m) != LAYERS["cli"]
                 for target, line, _ in _imports(m, MODULES[m]) if target.startswith("dpmesh_infer.cli")]
    assert not offenders, offenders


def test_root_imports_only_lazily():
    """The package root runs nothing at import: its imports sit in functions or under TYPE_CHECKING."""
    tree = ast.parse((PKG / "__init__.py").read_text(encoding="utf-8"))
    eager = [n.lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
             and not (isinstance(n, ast.ImportFrom) and n.module in ("__future__", "typing"))]
    assert not eager, f"dpmesh_infer/__init__.py imports at module level (lines {eager})"


def test_no_module_level_import_cycles():
    graph = {m: {t for t, _, top in _imports(m, p) if top and t in MODULES and t != m}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "module-level import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
