"""The package's shape: no import cycles between headdb modules (function-level imports included),
and every import follows the layering rules of docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

import headdb

PACKAGE = Path(headdb.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: no import at run time
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("headdb"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                # `from pkg import submodule` depends on the submodule; any other name on pkg itself
                if len(subs) < len(node.names) and node.module in modules:
                    found.add(node.module)
                found |= subs
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# The layering rules of docs/architecture.md ("Layers"): which sub-packages each may import.
# Foundation modules are shared by all; a layer may also import the layers listed for it.
FOUNDATION = {"errors", "settings", "provenance", "resources"}
MAY_IMPORT = {
    "errors": set(),
    "settings": {"errors"},
    "provenance": set(),
    "resources": set(),
    # engines: pure computation on models and data, no storage, no orchestration
    "checkpoints": FOUNDATION,
    "evals": FOUNDATION,
    "attribution": FOUNDATION | {"evals"},
    "training": FOUNDATION,  # a trainer callback: it starts `headdb ingest run` as a process
    # storage
    "warehouse": FOUNDATION,
    # readers and writers of files in other tools' formats
    "interop": FOUNDATION | {"attribution", "warehouse"},
    # named queries rendered
    "reports": FOUNDATION | {"evals", "warehouse"},
    # orchestration: plans, jobs, executors, studies
    "jobs": FOUNDATION | {"checkpoints", "evals", "attribution", "warehouse", "interop", "reports"},
    # interfaces: nothing imports them but other interfaces
    "progress": FOUNDATION | {"jobs"},
    "demo": FOUNDATION
    | {"checkpoints", "evals", "attribution", "warehouse", "reports", "jobs", "training", "progress"},
    "cli": FOUNDATION
    | {
        "checkpoints",
        "evals",
        "attribution",
        "warehouse",
        "interop",
        "reports",
        "jobs",
        "training",
        "progress",
        "demo",
        "headdb",
    },
    "__main__": {"cli"},
    "headdb": FOUNDATION | {"warehouse"},  # the package root: connect() and the version
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "headdb"


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for name, deps in sorted(graph.items()):
        allowed = MAY_IMPORT.get(_part(name))
        if allowed is None:
            out.append(
                f"{name}: its sub-package {_part(name)!r} has no layering rule (add it to MAY_IMPORT and the doc)"
            )
            continue
        out += [
            f"{name} imports {dep}" for dep in sorted(deps) if _part(dep) != _part(name) and _part(dep) not in allowed
        ]
    return out


def test_every_import_follows_the_layering_rules():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert layering_violations(graph) == []


def test_the_layering_check_finds_a_violation():
    assert layering_violations({"headdb.warehouse.store": {"headdb.jobs.plan"}}) == [
        "headdb.warehouse.store imports headdb.jobs.plan"
    ]
    assert layering_violations({"headdb.newthing.x": set()})[0].startswith("headdb.newthing.x: its sub-package")
    assert layering_violations({"headdb.jobs.plan": {"headdb.warehouse.store", "headdb.errors"}}) == []


_SQL = __import__("re").compile(r"\b(SELECT\b[\s\S]*\bFROM\b|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|COPY\s*\()")


def test_no_sql_outside_the_warehouse_package():
    """SQL lives in .sql files and in headdb/warehouse/ (which also builds the few statements
    whose table names vary); every other package calls warehouse functions."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "warehouse"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and _SQL.search(node.value)
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value[:60]!r}")
    assert found == []


def test_scoring_and_interventions_import_no_warehouse():
    """Importing the scoring and intervention modules loads no DuckDB, polars or transformer_lens
    (`headdb` loads its warehouse on first use, the bridge loads when a model is): a GPU image
    without DuckDB ran gpu_check so. A subprocess, so this test's own imports do not count."""
    import subprocess
    import sys

    code = (
        "import sys, headdb, headdb.attribution, headdb.checkpoints.loading, headdb.evals.interventions; "
        "print(sorted(m for m in ('duckdb', 'polars', 'transformer_lens') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert headdb.connect is not None and headdb.Warehouse is not None  # loaded on first use
