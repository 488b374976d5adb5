"""The apps' import graph follows the layering written in the README, and has no cycle.

Imports are read with `ast`, so an import inside a function counts as much as one at the
top of a module. Migrations are left out: they name other apps' models by string.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("escrow", "reputation", "marketplace", "execution")
MAX_MODULE_LINES = 450

# Which layers each layer may import. The WASM engine lives inside `execution` but is a
# layer of its own: the product uses it, and it uses nothing of the product.
ALLOWED: dict[str, set[str]] = {
    "escrow": set(),
    "reputation": set(),
    "engine": set(),
    "marketplace": {"escrow", "reputation", "engine"},
    "execution": {"escrow", "reputation", "engine", "marketplace"},
}

# Where the apps meet: the URLconf is loaded by Django itself, above every app, and routes to
# views of any of them (`/healthz` reads the workers' heartbeats, so it lives in `execution`).
# Only these files, and only towards these layers, may import past the rules above.
MEETING_POINTS: dict[str, set[str]] = {"marketplace/urls.py": {"execution"}}


def layer_of(module: str) -> str | None:
    if module == "execution.engine" or module.startswith("execution.engine."):
        return "engine"
    top = module.split(".", 1)[0]
    return top if top in APPS else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> list[Path]:
    return sorted(
        path
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.parts
    )


def imported_modules(path: Path) -> list[str]:
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def imports_in(source: str, module: str, *, is_package: bool) -> list[str]:
    """Every module `source` imports, relative imports resolved against its package."""
    tree = ast.parse(source)
    package = module.split(".")
    if not is_package:
        package = package[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from execution import engine` imports the engine, not the executor.
            found.extend(f"{base}.{alias.name}" for alias in node.names)
    return found


def is_meeting_point(path: Path, target: str | None) -> bool:
    return target in MEETING_POINTS.get(path.relative_to(ROOT).as_posix(), set())


def layer_edges() -> Counter[tuple[str, str]]:
    """(importing layer, imported layer) → number of importing files, meeting points aside."""
    edges: Counter[tuple[str, str]] = Counter()
    for path in project_modules():
        source = layer_of(module_name(path))
        assert source is not None
        targets = {layer_of(name) for name in imported_modules(path)}
        for target in targets - {None, source}:
            if not is_meeting_point(path, target):
                edges[(source, target)] += 1  # type: ignore[index]
    return edges


def offending_imports() -> list[str]:
    offences = []
    for path in project_modules():
        source = layer_of(module_name(path))
        assert source is not None
        for name in imported_modules(path):
            target = layer_of(name)
            if target and target != source and target not in ALLOWED[source]:
                if is_meeting_point(path, target):
                    continue
                offences.append(f"{path.relative_to(ROOT)}: {source} imports {name} ({target})")
    return offences


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    found = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_every_import_follows_the_layering():
    assert offending_imports() == []


def test_the_app_graph_has_no_cycle():
    assert cycles(set(layer_edges())) == []


def test_the_allowed_layering_itself_has_no_cycle():
    allowed = {(source, target) for source, targets in ALLOWED.items() for target in targets}
    assert cycles(allowed) == []


def test_the_check_sees_imports_inside_functions_and_relative_ones():
    source = "def f():\n    from marketplace.models import Task\n    from .. import audit\n"
    found = imports_in(source, "escrow.management.sample", is_package=False)
    assert found == ["marketplace.models.Task", "escrow.audit"]
    assert [layer_of(name) for name in found] == ["marketplace", "escrow"]
    assert layer_of("execution.engine.sandbox") == "engine"
    assert layer_of("execution.services") == "execution"


def test_every_meeting_point_is_needed_and_excused_only_there():
    for relative, targets in MEETING_POINTS.items():
        path = ROOT / relative
        used = {layer_of(name) for name in imported_modules(path)}
        assert targets <= used, f"{relative} no longer imports {targets - used}: drop it"
    # The same import anywhere else in the app is still an offence.
    assert not is_meeting_point(ROOT / "marketplace/views/dashboard.py", "execution")
    assert not is_meeting_point(ROOT / "marketplace/urls.py", "reputation")


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({("a", "b"), ("b", "c"), ("c", "a")}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("path", project_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_the_size_limit(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split it by resource"
