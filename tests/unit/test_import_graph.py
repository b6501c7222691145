"""The house in data-flow order: imports run only from a later folder to an earlier one, and no
module imports itself back through others. Function-level imports count: they hide arrows,
they do not remove them. Read from the source with `ast`, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

from paths import REPO

PACKAGE = REPO / "platform" / "earmark"
# The folders in the order data flows; a module may import from its own floor or below.
FLOORS = [
    {"__init__", "contracts"},  # pydantic and Arrow only
    {"storage"},  # a URL with its filesystem
    {"source", "audio", "sink"},  # listing / bytes → windows / the output folder
    {"models"},  # one adapter per family: the only place importing model libraries
    {"annotate"},  # the Annotator, merge, prompts, the failure policy
    {"testing"},  # stand-ins, built from models; imported by tests and `earmark bench` only
    {"compute"},  # Ray resources and plan checks, shared by batch and Serve
    {"batch", "serve", "evaluation", "report"},
    {"cluster"},  # Ray Jobs client and a submitted job's entrypoint
    {"bench"},
    {"cli"},  # Typer only: parse → call → print
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}
TESTING_MAY_BE_IMPORTED_BY = {"testing", "bench"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    """The top folder (or top module) of earmark a module lives in."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(module: str) -> set[str]:
    """Every earmark module `module` imports, at any depth of its code."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pkg import sub` takes the submodule when there is one, else a name of pkg
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("earmark") and name != module:
                found.add(name)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_folder_has_a_floor():
    assert {room(m) for m in MODULES} <= set(FLOOR), {room(m) for m in MODULES} - set(FLOOR)


def test_imports_run_only_down_the_data_flow():
    upward = [
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if FLOOR[room(t)] > FLOOR[room(m)] and room(t) != "__init__"
    ]
    assert not upward, "imports against the data flow:\n" + "\n".join(sorted(upward))


def test_no_runtime_module_imports_the_test_stand_ins():
    bad = [
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        for t in targets
        if room(t) == "testing" and room(m) not in TESTING_MAY_BE_IMPORTED_BY
    ]
    assert not bad, bad


def test_no_import_cycles():
    """Tarjan's strongly connected components over modules; a package's face (its
    __init__ re-exporting its modules) is an edge like any other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_graph_reader_sees_function_level_imports():
    """The test would be blind without this: the Annotator imports the shard writer inside a
    method (a function-level import is still an arrow)."""
    assert any(
        "earmark.sink" in t or "earmark.batch" in t for t in GRAPH["earmark.annotate.annotator"]
    )
