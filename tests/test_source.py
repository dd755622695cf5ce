"""The source itself: no module defines a top-level name twice (the later one silently wins), the package's
modules import each other without a cycle (at module level, and through imports inside functions), and the
library (tfq_noise) never imports the experiments built on it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tfq_noise", "experiments")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _defined_twice(source: str) -> list[str]:
    seen, twice = set(), []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in seen:
                twice.append(f"{node.name} (line {node.lineno})")
            seen.add(node.name)
    return twice


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_top_level_name_is_defined_twice(name):
    twice = _defined_twice(MODULES[name].read_text())
    assert not twice, f"{name} defines again: {', '.join(twice)}"


def _imported(name: str, source: str, is_package: bool = False, lazy: bool = False) -> set[str]:
    """Every name ``name``'s source imports, resolved (``from . import x`` in ``a.b`` is ``a.x``): at module level
    (``if TYPE_CHECKING`` / ``try`` blocks included), or anywhere, inside functions too, with ``lazy``."""
    targets = set()
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    if lazy:
        nodes = list(ast.walk(tree))
    else:
        nodes = [n for node in tree.body
                 for n in [node] + (list(ast.walk(node)) if isinstance(node, (ast.If, ast.Try)) else [])]
    for n in nodes:
        if isinstance(n, ast.Import):
            targets |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - n.level + 1] + ([base] if base else []))
            targets.add(base)
            targets |= {f"{base}.{a.name}" for a in n.names}
    return targets


def _imports(name: str, path: Path, lazy: bool = False) -> set[str]:
    """Project modules that ``name`` imports at module level, or anywhere with ``lazy``."""
    targets = _imported(name, path.read_text(), path.name == "__init__.py", lazy)
    return {t for t in targets if t in MODULES and t != name}


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # A package's __init__ importing its own submodules is how a registry fills itself, not a cycle of concepts.
    return [c for c in cycles if not _package_self_import(c)]


def test_no_import_cycle_between_modules():
    cycles = _cycles({name: _imports(name, path) for name, path in MODULES.items()})
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_no_import_cycle_through_imports_inside_functions():
    """An import deferred into a function breaks no cycle of concepts, it only hides it (the report once
    imported the remedies table, whose command imported the report back): imports inside functions count."""
    cycles = _cycles({name: _imports(name, path, lazy=True) for name, path in MODULES.items()})
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_library_never_imports_the_experiments():
    """tfq_noise is the library; experiments/ (installed as tfq_noise.experiments) are its commands, built
    on it. The console entry point finds them by name when a command is run (tfq_noise/cli.py)."""
    offending = {name: sorted(t for t in _imported(name, path.read_text(), path.name == "__init__.py", lazy=True)
                              if t.split(".")[0] == "experiments" or t.startswith("tfq_noise.experiments"))
                 for name, path in MODULES.items() if name.split(".")[0] == "tfq_noise"}
    offending = {name: targets for name, targets in offending.items() if targets}
    assert not offending, offending


def _package_self_import(cycle: str) -> bool:
    names = cycle.split(" → ")
    return any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(names, names[1:]))


def test_the_checks_bite():
    assert _defined_twice("def f():\n    pass\n\n\nclass C:\n    pass\n\n\ndef f(x):\n    pass\n") == ["f (line 9)"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a → b → c → a"]
    assert _cycles({"p": {"p.m"}, "p.m": {"p"}}) == []
    assert "experiments.tables" in _imports("experiments.remedies", MODULES["experiments.remedies"])
    lazy = "from . import tables\n\n\ndef main():\n    from . import report\n    from experiments import blocks\n"
    assert _imported("experiments.remedies", lazy) == {"experiments", "experiments.tables"}
    assert _imported("experiments.remedies", lazy, lazy=True) == {
        "experiments", "experiments.tables", "experiments.report", "experiments.blocks"}
    assert _imported("tfq_noise", "from .quantization import scheme\n", is_package=True) == {
        "tfq_noise.quantization", "tfq_noise.quantization.scheme"}
    assert _package_self_import("tfq_noise.methods → tfq_noise.methods.quantization → tfq_noise.methods")
    assert not _package_self_import("experiments.report → experiments.remedies → experiments.report")
