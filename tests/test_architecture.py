"""The code's shape: one-way imports, the two halves apart, short functions.

Read from the source with ``ast`` (nothing is imported), so a cycle or a forbidden
import fails here even where no test happens to execute it.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("probe_lab", "activation_cache")
MAX_LINES = 80

# Functions allowed past MAX_LINES, each with the reason.
LONG_ALLOWED: dict[str, str] = {}


def modules(package: str, root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of a package under ``root``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules a module imports, anywhere in it (lazy imports count)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                for a in node.names
            ]
        else:
            continue
        out |= {t for t in targets if t in known}
    out.discard(name)
    return out


def graph(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    return {name: imported(path, name, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way(package):
    """No module of the package imports (directly or not) a module importing it.

    The package ``__init__`` re-exports the public API, so any module importing a
    name from the package itself (``from probe_lab import TrainConfig``) would close
    a cycle through it: modules import from the defining module instead.
    """
    cycle = find_cycle(graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_core_imports_in_the_documented_order():
    edges = graph("probe_lab")
    assert edges["probe_lab.registry"] == set()
    assert edges["probe_lab.config"] <= {"probe_lab.losses", "probe_lab.registry"}
    assert edges["probe_lab.probes"] == {"probe_lab.config"}
    assert "probe_lab.train" not in edges["probe_lab._plan"]
    assert "probe_lab.train" not in edges["probe_lab.lbfgs"]


def top_level_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("probe_lab", {"torch", "transformers", "accelerate"}),
        ("activation_cache", {"jax", "jaxlib", "flax", "optax", "probe_lab"}),
    ],
)
def test_the_two_halves_meet_only_at_the_file(package, forbidden):
    for name, path in modules(package).items():
        bad = top_level_imports(path) & forbidden
        assert not bad, f"{name} imports {sorted(bad)}"


def long_functions(package: str) -> list[tuple[str, int]]:
    out = []
    for name, path in modules(package).items():
        tree = ast.parse(path.read_text())

        def walk(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = child.end_lineno - child.lineno + 1
                    out.append((f"{prefix}{child.name}", lines))
                    walk(child, f"{prefix}{child.name}.")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")

        walk(tree, f"{name}:")
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_functions_stay_short(package):
    too_long = [
        f"{name} ({lines} lines)"
        for name, lines in long_functions(package)
        if lines > MAX_LINES and name not in LONG_ALLOWED
    ]
    assert not too_long, f"functions over {MAX_LINES} lines: {too_long}"


# ------------------------------------------------ the study knows no kind's name


def closure(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or not."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


TRAINER = ("probe_lab.train", "probe_lab._plan", "probe_lab._adam", "probe_lab.lbfgs")


@pytest.mark.parametrize("module", TRAINER)
def test_the_trainer_knows_no_study_and_no_metrics(module):
    reached = closure(graph("probe_lab"), module)
    bad = sorted(
        m
        for m in reached
        if m == "probe_lab.metrics"
        or m.startswith(("probe_lab.study", "probe_lab.supervisors"))
    )
    assert not bad, f"{module} imports {bad}"


def test_the_study_draws_no_figure():
    edges = graph("probe_lab")
    for name in edges:
        if name.startswith(("probe_lab.study", "probe_lab.supervisors")):
            assert "probe_lab.plots" not in closure(edges, name), name


def private_imports(package: str, root: Path = ROOT) -> list[str]:
    """``from module import _name`` of a name that is not a module, where
    ``module`` is another module of the project."""
    mods = modules(package, root)
    out = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level:
                continue
            source = node.module or ""
            if not source.startswith(PACKAGES) or source == name:
                continue
            out += [
                f"{name}: from {source} import {a.name}"
                for a in node.names
                if a.name.startswith("_") and f"{source}.{a.name}" not in mods
            ]
    return out


def test_private_imports_are_found(tmp_path):
    # A copy of the package with one planted module: planting it in the real
    # package raced the test below when the two ran in parallel workers.
    shutil.copytree(ROOT / "probe_lab", tmp_path / "probe_lab")
    planted = tmp_path / "probe_lab" / "_planted_for_test.py"
    planted.write_text("from probe_lab.train import _train_round\n")
    found = private_imports("probe_lab", tmp_path)
    assert found == [
        "probe_lab._planted_for_test: from probe_lab.train import _train_round"
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_another_modules_private_name(package):
    found = private_imports(package)
    assert not found, f"private names imported across modules: {found}"


def kind_modules() -> dict[str, str]:
    """Every supervisor and experiment kind name -> the module that owns it."""
    from probe_lab.experiments.config import KINDS
    from probe_lab.supervisors import SUPERVISORS

    owners = {name: SUPERVISORS.get(name).label.__module__ for name in SUPERVISORS}
    return owners | {kind: f"probe_lab.experiments.{kind}" for kind in KINDS}


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def _is_kind(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "kind") or (
        isinstance(node, ast.Name) and node.id == "kind"
    )


def kind_branches(source: str, module: str, owners: dict[str, str]) -> list[str]:
    """Comparisons of a ``kind`` with a kind's name outside its own module (a
    comparison used as a pandas mask, ``table[table.kind == "probe"]``, selects
    rows of a result and is not a branch)."""
    tree = ast.parse(source)
    masks = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or id(node) in masks:
            continue
        sides = [node.left, *node.comparators]
        if not any(_is_kind(s) for s in sides):
            continue
        names = [s for side in sides for s in _strings(side)]
        out += [
            f"{module}:{node.lineno} compares kind with {n!r}"
            for n in names
            if n in owners and owners[n] != module
        ]
    return out


# Branches on a kind's name that another branch removes, with the reason.
KIND_BRANCHES_ALLOWED: dict[str, str] = {}
"""Modules allowed to compare a kind with a kind's name, each with the reason."""


def test_a_branch_on_a_kind_name_is_found():
    owners = {"probe": "probe_lab.supervisors.probe", "methods": "x.methods"}
    code = (
        "if sup.kind == 'probe': pass\n"
        "ok = kind in ('probe', 'random')\n"
        "rows = table[table.kind == 'probe']\n"
    )
    found = kind_branches(code, "probe_lab.study.pipeline", owners)
    assert len(found) == 2 and all("'probe'" in f for f in found)
    assert kind_branches(code, "probe_lab.supervisors.probe", owners) == []


def test_no_branch_on_a_kind_name_outside_its_module():
    owners = kind_modules()
    found = []
    for name, path in modules("probe_lab").items():
        if name not in KIND_BRANCHES_ALLOWED:
            found += kind_branches(path.read_text(), name, owners)
    assert not found, found
