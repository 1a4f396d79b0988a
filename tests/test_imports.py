"""Static checks of every package's imports (issue 19, items 6-7), read from the source with ``ast``:

* no import cycle inside a package, counting function-local imports (a local import hides a cycle from the
  interpreter, not from the reader: the modules still cannot be understood or tested apart), and none between
  packages;
* every third-party distribution a package imports is declared in its ``pyproject.toml``;
* ``requires-python`` admits only the versions the code runs on.
"""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = [ROOT, *sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml")),
            *sorted(p.parent for p in ROOT.glob("contrib/*/pyproject.toml"))]
#: Import names whose distribution is named differently (the rest: the import name, ``_`` read as ``-``).
DISTRIBUTIONS = {"sklearn": "scikit-learn", "ot": "pot", "PIL": "pillow", "yaml": "pyyaml", "attr": "attrs"}
#: The oldest Python the code runs on: ``diffflow_core.config`` reads TOML with ``tomllib`` (3.11).
MIN_PYTHON = (3, 11)


def _pyproject(project: Path) -> dict:
    return tomllib.loads((project / "pyproject.toml").read_text())


def _packages(project: Path) -> list[str]:
    """The top-level import packages a project ships (its ``packages.find`` includes, ``name*`` patterns)."""
    includes = _pyproject(project)["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*").rstrip(".") for pattern in includes})


def _modules(project: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` by dotted name (a package's ``__init__`` under the package's name)."""
    out = {}
    for path in sorted((project / package).rglob("*.py")):
        parts = path.relative_to(project).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


ALL_MODULES = {name: path for project in PROJECTS for package in _packages(project)
               for name, path in _modules(project, package).items()}


def _imports(name: str, path: Path) -> list[tuple[ast.AST, str]]:
    """Each import statement anywhere in the module (functions and ``try`` blocks included) with each module
    it names, relative imports resolved. ``from a import b`` names ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[:len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node, sub if sub in ALL_MODULES else base))
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (parents of a dotted import are not edges: the
    interpreter initialises a package before its submodules, which is no cycle)."""
    return {name: {target for _, target in _imports(name, path) if target in ALL_MODULES and target != name}
            for name, path in ALL_MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    """The edges inside one cycle, ``a -> b`` per line, so a failure says which import to move."""
    members = set(cycle)
    return "\n".join(f"  {a} -> {b}" for a in cycle for b in sorted(graph[a] & members))


def _package_of(module: str) -> str:
    return module.split(".")[0]


def test_the_scan_finds_every_package_and_resolves_imports(tmp_path):
    """The scan itself: it sees each project's package, resolves relative imports, reads function-local ones
    and finds a cycle."""
    packages = {_package_of(m) for m in ALL_MODULES}
    assert {"diffflow_core", "diffflow_solvers", "diffflow_example"} <= packages
    assert len(packages) == len(PROJECTS)
    module = tmp_path / "fake.py"
    module.write_text("from ..errors import ConfigError\n\n\ndef f():\n    from . import mixture\n"
                      "    import diffflow_core.tensors\n")
    assert {target for _, target in _imports("diffflow_core.metrics.fake", module)} == {
        "diffflow_core.errors", "diffflow_core.metrics.mixture", "diffflow_core.tensors"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", sorted({_package_of(m) for m in ALL_MODULES}))
def test_no_import_cycle_inside_a_package(package):
    graph = {m: {t for t in targets if _package_of(t) == package}
             for m, targets in _graph().items() if _package_of(m) == package}
    cycles = _cycles(graph)
    assert not cycles, "import cycles (function-local imports count):\n" + "\n\n".join(
        _describe(c, graph) for c in cycles)


def test_no_import_cycle_between_packages():
    """Plugins build on the kernel and on each other; none is imported back by what it imports."""
    graph: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        graph.setdefault(_package_of(module), set()).update(
            _package_of(t) for t in targets if _package_of(t) != _package_of(module))
    cycles = _cycles(graph)
    assert not cycles, f"packages importing each other: {cycles}"


def _distribution(import_name: str) -> str:
    return DISTRIBUTIONS.get(import_name, import_name).replace("_", "-").lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].replace("_", "-").lower() for r in requirements}


def _guarded(tree: ast.AST) -> set[int]:
    """The ids of import statements inside a ``try`` whose handlers catch ``ImportError`` (optional imports)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                "ImportError" in ast.unparse(h.type or ast.Name("BaseException")) for h in node.handlers):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)
                        if isinstance(n, (ast.Import, ast.ImportFrom))}
    return guarded


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name if p != ROOT else "diffflow-core")
def test_every_imported_distribution_is_declared(project):
    """A third-party import (stdlib and the package itself aside) is a ``dependencies`` entry; one inside
    ``try: ... except ImportError``, or in a pytest plugin (entry point ``pytest11``: only pytest loads it), may
    instead be an ``optional-dependencies`` entry."""
    meta = _pyproject(project)["project"]
    pytest_plugins = set(meta.get("entry-points", {}).get("pytest11", {}).values())
    required = _requirement_names(meta.get("dependencies", []))
    optional = _requirement_names([r for extra in meta.get("optional-dependencies", {}).values() for r in extra])
    own = set(_packages(project))
    missing = set()
    for package in own:
        for name, path in _modules(project, package).items():
            tree = ast.parse(path.read_text())
            guarded = _guarded(tree)
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or getattr(node, "level", 0):
                    continue
                for top in {a.name.split(".")[0] for a in node.names} if isinstance(node, ast.Import) \
                        else {(node.module or "").split(".")[0]}:
                    if top in sys.stdlib_module_names or top in own or top == "__future__":
                        continue
                    dist = _distribution(top)
                    optional_here = id(node) in guarded or name in pytest_plugins
                    if dist not in required and not (optional_here and dist in optional):
                        missing.add(f"{dist} (import {top} in {name})")
    assert not missing, f"{project.name}/pyproject.toml does not declare: {sorted(missing)}"


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name if p != ROOT else "diffflow-core")
def test_requires_python_matches_the_code(project):
    spec = _pyproject(project)["project"]["requires-python"]
    assert spec == ">=" + ".".join(map(str, MIN_PYTHON)), f"{project.name}: requires-python {spec!r}"
