"""The apps' import graph follows the layering written in the README, and has no cycle:
not between apps, and not between modules, within one app or across. No module is over
MAX_MODULE_LINES lines.

Imports are read with `ast`, so an import inside a function (or under TYPE_CHECKING)
counts as much as one at the top of a module. Migrations are left out: they name other
apps' models by string. The module rules (no cycle, no module over the limit) cover all
product code: the apps, the agents' build tools and the benchmarks, which are code that
people read and change like the rest; tests are left out.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("escrow", "reputation", "marketplace", "execution")
PRODUCT = (*APPS, "agents", "benchmarks")
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


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(root: Path, packages: tuple[str, ...]) -> list[Path]:
    """The packages' modules, migrations and tests left out."""
    return sorted(
        path
        for package in packages
        for path in (root / package).rglob("*.py")
        if "migrations" not in path.relative_to(root).parts
        and "tests" not in path.relative_to(root).parts
    )


def project_modules() -> list[Path]:
    return python_files(ROOT, APPS)


def imported_modules(path: Path, root: Path = ROOT) -> list[str]:
    source = path.read_text()
    return imports_in(source, module_name(path, root), is_package=path.name == "__init__.py")


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


def module_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Each module → the modules of `packages` it imports. `from a.b import c` names the
    module `a.b.c` if there is one, else `a.b`: the longest name that is a module."""
    paths = {module_name(path, root): path for path in python_files(root, packages)}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        graph[module] = set()
        for name in imported_modules(path, root):
            parts = name.split(".")
            while parts and ".".join(parts) not in paths:
                parts.pop()
            target = ".".join(parts)
            if target and target != module:
                graph[module].add(target)
    return graph


def module_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other (a strongly
    connected component of two or more), from its first module back to it, shortest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    found = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:  # breadth first: the shortest way back to the start
            node = queue.pop(0)
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    found.append([*paths[node], start])
                    queue = []
                    break
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    queue.append(nxt)
    return sorted(found)


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


def test_no_module_imports_a_module_that_imports_it_back():
    assert module_cycles(module_graph(ROOT, PRODUCT)) == []


def test_the_module_check_finds_a_planted_cycle(tmp_path):
    modules = {
        # In one package: orders → billing at the top, billing → orders inside a function
        # and relatively.
        "shop/__init__.py": "",
        "shop/orders.py": "from shop.billing import invoice\n",
        "shop/billing.py": "def invoice():\n    from . import orders\n",
        # Across packages, one side only for the type checker, and through a package.
        "shop/catalog.py": "import ledger.post\nfrom shop import orders\n",
        "ledger/__init__.py": "from ledger.post import post\n",
        "ledger/post.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shop import catalog\n"
        ),
        # No cycle: reports imports catalog, nothing imports reports.
        "ledger/reports.py": "from shop.catalog import item\nimport json\n",
    }
    for relative, source in modules.items():
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        (tmp_path / relative).write_text(source)
    graph = module_graph(tmp_path, ("shop", "ledger"))
    assert graph["shop.catalog"] == {"ledger.post", "shop.orders"}
    assert module_cycles(graph) == [
        ["ledger.post", "shop.catalog", "ledger.post"],
        ["shop.billing", "shop.orders", "shop.billing"],
    ]
    # Break both: nothing is left to report.
    (tmp_path / "shop/billing.py").write_text("def invoice():\n    pass\n")
    (tmp_path / "ledger/post.py").write_text("def post():\n    pass\n")
    assert module_cycles(module_graph(tmp_path, ("shop", "ledger"))) == []


@pytest.mark.parametrize(
    "path", python_files(ROOT, PRODUCT), ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_module_is_over_the_size_limit(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split it by resource"
