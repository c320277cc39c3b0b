"""The import graph of mfapr_ros/ and training/ (mfapr_training) has no circles, and core/ is the ground floor.

Why: a circle means neither module can be understood, tested or moved without the other, and the import order
decides which half sees the other half-initialised. The graph is built statically from the AST of every module so a
circle is found even when it only closes at run time: absolute and relative imports, imports inside functions and
under ``TYPE_CHECKING`` (a type-only import is still a dependency a reader must follow), and *string* imports — a
string constant naming one of our modules, as in cli.py's lazy subcommand table (``importlib.import_module``). A
module named after ``-m`` in a command list is a child process, not an import (training/demo.py runs ``mfapr`` that
way), so it is not an edge. Importing a submodule of one's own package (``from . import x``) is not an edge to the
package ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: import name → source folder
PACKAGES = {"mfapr_ros": ROOT / "mfapr_ros", "mfapr_training": ROOT / "training"}

#: circles allowed, each as the set of its modules (a found circle passes only when all its modules are in one entry):
#: none
KNOWN_CIRCLES: list[set[str]] = []
#: core modules allowed to import upward: none
CORE_EXCEPTIONS: set[str] = set()

#: core/ imports none of these layers (docs/architecture.md)
ABOVE_CORE = ("mfapr_ros.models", "mfapr_ros.inference", "mfapr_ros.evaluation", "mfapr_ros.ros", "mfapr_ros.bag",
              "mfapr_training")


def module_files() -> dict[str, Path]:
    """Module name → file, for every module of both packages."""
    out: dict[str, Path] = {}
    for pkg, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = module_files()


def _resolve(name: str) -> str | None:
    """The module a dotted name lives in (``a.b.func`` → ``a.b``), or None when it is not one of ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _process_targets(tree: ast.AST) -> set[int]:
    """ids of string constants that follow ``"-m"`` in a list/tuple literal: child processes, not imports."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            for a, b in zip(node.elts, node.elts[1:], strict=False):
                if isinstance(a, ast.Constant) and a.value == "-m" and isinstance(b, ast.Constant):
                    out.add(id(b))
    return out


def imports_of(module: str) -> set[str]:
    """The modules of ours that ``module`` imports anywhere in its file (see the module docstring)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    skip = _process_targets(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            for a in node.names:  # `from pkg import sub` imports pkg.sub when that is a module, else a name of pkg
                names.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
              and node.value in MODULES):
            names.add(node.value)
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    return {m for n in names if (m := _resolve(n)) and m != module and m not in ancestors}


def import_graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(comp)
    return found


def _path_in(graph: dict[str, set[str]], comp: set[str]) -> str:
    """One closed walk through a circle, for the failure message."""
    start = min(comp)
    seen, walk, v = set(), [start], start
    while True:
        v = min(w for w in graph[v] if w in comp)
        walk.append(v)
        if v in seen or v == start:
            return " → ".join(walk)
        seen.add(v)


def test_graph_sees_every_kind_of_import() -> None:
    """The walk must see the edges a circle can hide in, or the circle test below could not fail."""
    g = import_graph()
    assert len(g) > 100
    assert "mfapr_training.train" in g["mfapr_ros.cli"]  # string import (the lazy subcommand table)
    assert "mfapr_ros.core.errors" in g["mfapr_ros.core.sync"]  # relative import
    assert "mfapr_ros.cli" not in g["mfapr_training.demo"]  # `python -m mfapr_ros.cli` is a child process
    # a function-level import: the node imports the Localizer lazily
    assert any(m.endswith("localizer") for m in g["mfapr_ros.ros.localize_node"])
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_circles() -> None:
    g = import_graph()
    bad = [c for c in circles(g) if not any(c <= known for known in KNOWN_CIRCLES)]
    assert not bad, "import circles:\n" + "\n".join(_path_in(g, c) for c in bad)


def test_core_is_the_ground_floor() -> None:
    """core/ imports nothing from models, inference, evaluation, bag, ros or training."""
    g = import_graph()
    bad = {m: sorted(e for e in g[m] if e.startswith(ABOVE_CORE)) for m in g
           if m.startswith("mfapr_ros.core") and m not in CORE_EXCEPTIONS}
    bad = {m: e for m, e in bad.items() if e}
    assert not bad, f"core imports upward: {bad}"


def test_training_is_above_the_package() -> None:
    """mfapr_ros never imports mfapr_training, except cli.py's lazy subcommand table (the one entry point)."""
    g = import_graph()
    bad = {m: sorted(e for e in g[m] if e.startswith("mfapr_training"))
           for m in g if m.startswith("mfapr_ros") and m != "mfapr_ros.cli"}
    assert not {m: e for m, e in bad.items() if e}
