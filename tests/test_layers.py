"""The house rules of the package layout, read from the sources.

* No import circle between rooms. A room is a subpackage (``controller.fleet``)
  or a top-level package's public module (``controller.http``); private
  modules and subpackages (``_name``) and the CLI's modules belong to their
  package. Imports made only for type
  checking count too: a circle that mypy sees is still a circle.
* Only the top floor reads application state: ``controller.appkeys`` is
  imported by ``controller.app``, the REST handlers and the dashboard, never
  by a subsystem (they get their dependencies through constructors).
* The CLI is a REST client: it imports neither daemon.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("controller", "agent", "shared", "cli")
TOP_FLOOR = ("controller.app", "controller.api", "controller.web")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """Every module of ours that ``path`` imports, type-checking imports included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in names if name in MODULES)


def room(module: str) -> str:
    parts = module.split(".")
    private = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
    if private:
        return room(".".join(parts[:private]))  # private modules belong to their package
    if len(parts) == 1 or (ROOT / Path(*parts)).is_dir() or (parts[0] != "cli" and len(parts) == 2):
        return module  # a package, or a public module of a top-level package
    return ".".join(parts[:-1])  # a module inside a subpackage (or of the cli)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        for imported in _imports(path):
            if room(imported) != room(module):
                graph.setdefault(room(module), set()).add(room(imported))
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one room (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circle_between_rooms() -> None:
    graph = _graph()
    assert graph["controller.app"]  # the graph was read at all
    assert _circles(graph) == []


def test_a_circle_is_found_when_there_is_one() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_top_floor_reads_app_state() -> None:
    readers = {
        module
        for module, path in MODULES.items()
        if "controller.appkeys" in set(_imports(path)) and module != "controller.appkeys"
    }
    assert readers, "nothing reads app state: the check reads nothing"
    assert {m for m in readers if not m.startswith(TOP_FLOOR)} == set()


def test_the_cli_imports_neither_daemon() -> None:
    imported = {
        name
        for module, path in MODULES.items()
        if module.startswith("cli")
        for name in _imports(path)
    }
    assert {name for name in imported if name.startswith(("controller", "agent"))} == set()
