"""The shape of the code: no import cycle among tasks/ and flows/ (function-level imports included), small modules.

The graph is read from the source with ``ast``, not by importing, so an import hidden inside a function counts
as much as one at the top of a module: either way one module depends on the other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).parents[1]
PACKAGES = ("tasks", "flows")
MAX_LINES = 350
# the store's layout lives in one module by design (every key built and parsed in one place): it may be longer
LIMITS = {"tasks.layout": 420}


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``packages`` (a package is its ``__init__``)."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ``ImportFrom`` names, relative imports (``from . import x``) made absolute."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``module`` imports anywhere in its body. ``from tasks.x import y`` is ``tasks.x.y`` when
    that is a module, else ``tasks.x`` (the package's ``__init__`` when ``tasks.x`` is a package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path.name == "__init__.py")
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {name for name in found if name in known and name != module}


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> nx.DiGraph:
    files = module_files(root, packages)
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for module, path in files.items():
        graph.add_edges_from((module, target) for target in imported_modules(module, path, set(files)))
    return graph


def cycles(graph: nx.DiGraph) -> list[str]:
    """One cycle per strongly connected component, written ``a -> b -> a``."""
    found = []
    for component in sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1):
        edges = nx.find_cycle(graph.subgraph(component))
        found.append(" -> ".join([*(a for a, _ in edges), edges[0][0]]))
    return found


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = _package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from pkg.b import g\n",
                               "pkg/b.py": "from pkg import a\n", "pkg/c.py": "import pkg.a\n"})
    assert cycles(import_graph(root, ("pkg",))) == ["pkg.a -> pkg.b -> pkg.a"]


def test_names_resolve_to_modules_packages_to_their_init(tmp_path: Path) -> None:
    root = _package(tmp_path, {"pkg/__init__.py": "from .sub import thing\n", "pkg/sub/__init__.py": "thing = 1\n",
                               "pkg/sub/mod.py": "from pkg.sub import thing\nfrom . import other\n",
                               "pkg/sub/other.py": "", "pkg/top.py": "from pkg.sub import mod, thing\n"})
    graph = import_graph(root, ("pkg",))
    assert set(graph.edges) == {("pkg", "pkg.sub"), ("pkg.sub.mod", "pkg.sub"), ("pkg.sub.mod", "pkg.sub.other"),
                                ("pkg.top", "pkg.sub.mod"), ("pkg.top", "pkg.sub")}
    assert cycles(graph) == []


def test_tasks_and_flows_have_no_import_cycle() -> None:
    graph = import_graph(ROOT)
    assert graph.has_edge("tasks.ingest", "tasks.deletion.blocklist")  # the graph does see our modules
    assert cycles(graph) == []


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in module_files(ROOT).items()}
    assert {m: n for m, n in sizes.items() if n > LIMITS.get(m, MAX_LINES)} == {}


def test_the_cli_stays_thin() -> None:
    assert len((ROOT / "flows" / "cli.py").read_text().splitlines()) <= 300


def test_only_the_cli_tests_import_the_cli() -> None:
    imports_cli = re.compile(r"^\s*(from flows\.cli |from flows import cli|import flows\.cli)", re.M)
    importers = [p.name for p in (ROOT / "tests").rglob("*.py")
                 if p.name != "test_cli.py" and imports_cli.search(p.read_text())]
    assert importers == []
