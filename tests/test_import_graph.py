"""Imports between the package's modules: no cycles, and ``import fastsoftmax`` stays light.

The graph is read from the source with ``ast``, not by importing it. Each edge
is one ``import`` of a ``fastsoftmax`` module by another, of one of three kinds:

- ``module``: runs when the importing module is imported (top level, class
  bodies, ``try``/``if`` blocks at the top level);
- ``function``: inside a function body, run when the function is called;
- ``type-checking``: under ``if TYPE_CHECKING:``, never run; listed but never
  counted in a cycle.

An edge goes to the module named (``from fastsoftmax import model`` goes to
``fastsoftmax.model``, ``from fastsoftmax import TrainingError`` to the package
``fastsoftmax``); the parent packages that Python imports first are left out,
or every module would sit in a cycle with its own ``__init__``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import itertools
import json
import subprocess
import sys
import textwrap
from typing import NamedTuple

import pytest
from _package_source import package_modules

KINDS = ("module", "function", "type-checking")


class Edge(NamedTuple):
    source: str
    target: str
    kind: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}-level import, line {self.line})"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The package modules that one import statement names."""
    if isinstance(node, ast.Import):
        # ``import a.b.c`` binds a and imports a.b.c: the edge goes to the deepest known module.
        targets = []
        for alias in node.names:
            parts = alias.name.split(".")
            prefixes = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
            targets += [next((p for p in prefixes if p in known), None)]
        return [t for t in targets if t is not None]
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    targets = []
    for alias in node.names:
        if f"{base}.{alias.name}" in known:
            targets.append(f"{base}.{alias.name}")
        elif base in known:
            targets.append(base)
    return targets


def import_edges(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> list[Edge]:
    """Every import of a module in ``known`` by ``module``, with its kind."""
    edges: list[Edge] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _imported_modules(child, module, is_package, known):
                    if target != module:
                        edges.append(Edge(module, target, kind, child.lineno))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "type-checking" if kind == "type-checking" else "function")
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit(ast.Module(body=[statement], type_ignores=[]), "type-checking")
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), kind)
            else:
                visit(child, kind)

    visit(tree, "module")
    return edges


def package_import_edges() -> list[Edge]:
    modules = package_modules()
    known = set(modules)
    return [edge for m in modules.values() for edge in import_edges(m.tree, m.name, m.is_package, known)]


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One shortest cycle through each strongly connected group of modules (self-imports excluded)."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
        graph.setdefault(edge.target, {})

    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    cycles = []
    for component in components:
        if len(component) < 2:
            continue
        start = min(component)
        # Breadth-first search back to ``start`` inside the component.
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            next_frontier = []
            for node in frontier:
                for child in sorted(graph[node]):
                    if child in component and child not in previous:
                        previous[child] = node
                        next_frontier.append(child)
            frontier = next_frontier
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(previous[path[-1]])
        path.reverse()
        cycles.append([graph[a][b] for a, b in itertools.pairwise(path)])
    return cycles


def _report(cycles: list[list[Edge]]) -> str:
    return "\n\n".join("import cycle:\n  " + "\n  ".join(map(str, cycle)) for cycle in cycles)


# -- the package -----------------------------------------------------------------------------------


def test_no_cycle_among_module_level_imports():
    edges = [e for e in package_import_edges() if e.kind == "module"]
    cycles = find_cycles(edges)
    assert not cycles, _report(cycles)


def test_no_cycle_among_module_and_function_level_imports():
    # An import inside a function is a dependency all the same: data flows down,
    # and an optional back end is reached through an object the lower layer defines.
    edges = [e for e in package_import_edges() if e.kind in ("module", "function")]
    cycles = find_cycles(edges)
    assert not cycles, _report(cycles)


def test_the_graph_holds_the_package_imports():
    # The cycle tests pass on an empty graph: check that the graph is the real one.
    edges = {(e.source, e.target, e.kind) for e in package_import_edges()}
    assert ("fastsoftmax.model", "fastsoftmax._api", "module") in edges
    assert ("fastsoftmax", "fastsoftmax._api", "type-checking") in edges
    assert ("fastsoftmax.kernels.loss_grad", "fastsoftmax.kernels._config", "module") in edges
    assert ("fastsoftmax._api", "fastsoftmax.kernels", "module") in edges
    assert any(kind == "function" for _, _, kind in edges)


# -- the parser and the cycle finder on made-up code ---------------------------------------------

KNOWN = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}

PARSE_CASES = {
    "import-from-package": ("from pkg import a, b\n", "pkg.sub.c", False, {("pkg.a", "module"), ("pkg.b", "module")}),
    "name-from-package": ("from pkg import Thing\n", "pkg.a", False, {("pkg", "module")}),
    "dotted-import": ("import pkg.sub.c\n", "pkg.a", False, {("pkg.sub.c", "module")}),
    "relative": (
        "from . import b\nfrom .sub import c\n",
        "pkg.a",
        False,
        {("pkg.b", "module"), ("pkg.sub.c", "module")},
    ),
    "relative-in-package": ("from .c import x\n", "pkg.sub", True, {("pkg.sub.c", "module")}),
    "parent-relative": ("from ..a import x\n", "pkg.sub.c", False, {("pkg.a", "module")}),
    "in-function": ("def f():\n    from pkg import b\n", "pkg.a", False, {("pkg.b", "function")}),
    "in-method": ("class C:\n    def f(self):\n        import pkg.b\n", "pkg.a", False, {("pkg.b", "function")}),
    "class-body": ("class C:\n    from pkg import b\n", "pkg.a", False, {("pkg.b", "module")}),
    "try-block": (
        "try:\n    from pkg import b\nexcept ImportError:\n    pass\n",
        "pkg.a",
        False,
        {("pkg.b", "module")},
    ),
    "type-checking": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\nelse:\n    from pkg import a\n",
        "pkg.sub.c",
        False,
        {("pkg.b", "type-checking"), ("pkg.a", "module")},
    ),
    "outside-package": ("import numpy\nfrom os import path\n", "pkg.a", False, set()),
}


@pytest.mark.parametrize("case", list(PARSE_CASES))
def test_import_edges_of_made_up_code(case):
    source, module, is_package, expected = PARSE_CASES[case]
    edges = import_edges(ast.parse(source), module, is_package, KNOWN)
    assert {(e.target, e.kind) for e in edges} == expected


def _edges(*pairs: str, kind: str = "module") -> list[Edge]:
    return [Edge(*pair.split(">"), kind, line) for line, pair in enumerate(pairs, start=1)]


def test_find_cycles_reports_the_modules_and_lines_of_a_cycle():
    cycles = find_cycles(_edges("x>y", "y>z", "z>x", "z>w", "w>v"))
    assert len(cycles) == 1
    assert [(e.source, e.target, e.line) for e in cycles[0]] == [("x", "y", 1), ("y", "z", 2), ("z", "x", 3)]
    assert "x -> y (module-level import, line 1)" in _report(cycles)


def test_find_cycles_separates_components_and_passes_a_dag():
    assert find_cycles(_edges("a>b", "b>c", "a>c", "c>d")) == []
    cycles = find_cycles(_edges("a>b", "b>a", "c>d", "d>c", "b>c"))
    assert sorted(tuple(e.source for e in cycle) for cycle in cycles) == [("a", "b"), ("c", "d")]


# -- importing the package ----------------------------------------------------------------------

LIGHT_IMPORT = textwrap.dedent(
    """
    import json
    import sys

    import fastsoftmax

    at_import = [name for name in ("numba", "fastsoftmax.kernels") if name in sys.modules]
    for name in fastsoftmax.__all__:  # every public name but SoftmaxClassifier, imported on first use
        getattr(fastsoftmax, name)

    from numba.core.dispatcher import Dispatcher

    heavy = [name for name in ("dask", "distributed", "sklearn", "scipy.optimize") if name in sys.modules]
    dispatchers = {}
    for name, module in list(sys.modules.items()):
        if name == "fastsoftmax" or name.startswith("fastsoftmax."):
            for obj in vars(module).values():
                if isinstance(obj, Dispatcher):
                    dispatchers[obj.py_func.__module__ + "." + obj.py_func.__name__] = len(obj.signatures)
    print(json.dumps({"at_import": at_import, "heavy": heavy, "dispatchers": dispatchers}))
    """
)


def test_import_fastsoftmax_imports_no_extra_and_compiles_nothing():
    done = subprocess.run([sys.executable, "-c", LIGHT_IMPORT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    # Numba and the kernels wait for the first public name used (``fastsoftmax.__getattr__``).
    assert result["at_import"] == [], f"import fastsoftmax imported {result['at_import']}"
    assert result["heavy"] == [], f"fastsoftmax's public names imported {result['heavy']}; import them inside functions"
    # The check looked at the kernels: the fused kernel's dispatcher is among them.
    assert "fastsoftmax.kernels.loss_grad._loss_grad_parallel" in result["dispatchers"], result["dispatchers"]
    compiled = {name: n for name, n in result["dispatchers"].items() if n}
    assert not compiled, f"fastsoftmax's public names compiled {compiled}; kernels must compile on first call"


def test_the_public_names_are_their_modules_objects():
    import fastsoftmax

    assert set(fastsoftmax.__all__) | {"SoftmaxClassifier"} == set(fastsoftmax._PUBLIC)
    for name, module in fastsoftmax._PUBLIC.items():
        if name != "SoftmaxClassifier" or importlib.util.find_spec("sklearn") is not None:
            assert getattr(fastsoftmax, name) is getattr(importlib.import_module(module), name)
    assert set(fastsoftmax._PUBLIC) <= set(dir(fastsoftmax))
    with pytest.raises(AttributeError, match="module 'fastsoftmax' has no attribute 'SoftmaxRegresion'"):
        fastsoftmax.SoftmaxRegresion  # noqa: B018


SUBMODULES_AS_ATTRIBUTES = textwrap.dedent(
    """
    import fastsoftmax

    # Attributes after the eager import, which the README names (fastsoftmax.exceptions.JitDisabledError).
    print(fastsoftmax.exceptions.JitDisabledError.__name__, fastsoftmax.model.SoftmaxRegression.__name__)
    print(fastsoftmax.kernels.__name__, fastsoftmax.datasets.__name__)
    print([name for name in dir(fastsoftmax) if name in ("annotations", "importlib", "TYPE_CHECKING")])
    """
)


def test_the_public_submodules_are_attributes_of_the_package():
    """After the import became lazy, fastsoftmax.exceptions raised AttributeError until a name had been used."""
    done = subprocess.run([sys.executable, "-c", SUBMODULES_AS_ATTRIBUTES], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "JitDisabledError SoftmaxRegression",
        "fastsoftmax.kernels fastsoftmax.datasets",
        "[]",
    ]


COMMAND_LINE_HELP = textwrap.dedent(
    """
    import contextlib, io, sys
    from fastsoftmax.cli import main

    for argv in (["--help"], ["train", "--help"], ["predict", "--help"]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(argv)
    print("numba" in sys.modules)
    """
)


def test_the_command_lines_help_imports_no_numba():
    """``fastsoftmax --help`` waited about a second for Numba, which it never uses."""
    done = subprocess.run([sys.executable, "-c", COMMAND_LINE_HELP], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
