"""The import structure docs/architecture.md describes, checked on the source: layers only import downwards.

Every import statement counts, at module level or inside a function, so a lazy import cannot hide a climb.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# harness's packages from the bottom up; a module may import its own package and any lower rank, nothing else
# (two packages of one rank never import each other).
RANKS: dict[str, int] = {
    "harness.errors": 0,
    "harness.version": 0,
    "harness.progress": 0,
    "harness.runtime": 1,
    "harness.machine": 1,
    "harness.receipts": 2,
    "harness.phases": 3,
    "harness.peers": 4,
    "harness.comparison": 4,
    "harness.session": 5,
    "harness.reporting": 5,
    "harness.commands": 6,
    "harness.cli": 7,
    "harness.entry": 8,
}
# Third-party libraries that belong to the command line and the terminal, not to the work below them.
ALLOWED_USERS = {
    "typer": ("harness.commands", "harness.cli", "harness.entry"),
    "rich": ("harness.commands", "harness.reporting", "harness.cli"),
}


def _modules(package: str) -> dict[str, Path]:
    base = ROOT / package
    out = {}
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every module an import statement in the file names (`from a import b` counts as a.b and a)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


HARNESS = _modules("harness")
ENGINE = _modules("engine")


def _unit(module: str) -> str | None:
    """The ranked unit (package or top-level module) a harness module belongs to."""
    for unit in sorted(RANKS, key=len, reverse=True):
        if module == unit or module.startswith(unit + "."):
            return unit
    return None


def _harness_imports(path: Path) -> set[str]:
    return {name for name in _imports(path) if name in HARNESS}


def test_every_harness_module_has_a_layer() -> None:
    unranked = [m for m in HARNESS if m != "harness" and _unit(m) is None]
    assert unranked == [], "add the new package to RANKS and to docs/architecture.md"


@pytest.mark.parametrize("module", sorted(m for m in HARNESS if m != "harness"))
def test_imports_only_go_down(module: str) -> None:
    own = _unit(module)
    assert own is not None
    for target in _harness_imports(HARNESS[module]):
        other = _unit(target)
        if other is None or other == own:
            continue
        assert RANKS[other] < RANKS[own], (
            f"{module} ({own}) imports {target} ({other}), which is not below it"
        )


def test_engine_never_imports_harness() -> None:
    for module, path in ENGINE.items():
        climbing = sorted(name for name in _imports(path) if name == "harness" or name.startswith("harness."))
        assert climbing == [], f"{module} imports {climbing}"


@pytest.mark.parametrize("library", sorted(ALLOWED_USERS))
def test_cli_libraries_stay_in_the_command_line_layers(library: str) -> None:
    users = ALLOWED_USERS[library]
    for module, path in HARNESS.items():
        uses = any(name == library or name.startswith(library + ".") for name in _imports(path))
        if uses:
            assert module.startswith(users), f"{module} imports {library}; only {users} may"


def test_no_import_cycles_between_modules() -> None:
    graph = {m: {t for t in _harness_imports(p) if t != m and t in HARNESS} for m, p in HARNESS.items()}
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError(" -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The import reader sees lazy imports inside functions, the form a climb would hide in."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from harness.commands import run\n    import typer\n")
    assert {"harness.commands", "harness.commands.run", "typer"} <= _imports(sample)


def test_commands_stay_thin() -> None:
    """A command parses, calls and renders; the work lives below it, so no function there grows long."""
    for module, path in HARNESS.items():
        if not module.startswith("harness.commands"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                assert lines <= 60, f"{module}.{node.name} has {lines} lines"
