"""The package's shape: no import cycles, and dependencies point one way (lab -> train -> evaluation -> infer ->
html -> shared, and infer -> dicom -> shared; html holds the HTML pages that infer and evaluation both make;
serve, GC's delivery adapter, -> infer).

Imports are read from the source (function-level ones included), so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pdac"
# Which rooms each room may import from (besides itself).
ALLOWED = {
    "shared": set(),  # config, labels, errors
    "html": {"shared"},  # page skeleton and case viewer: below both of its users, speaks images and numbers
    "dicom": {"shared"},  # DICOM out (SEG, SR, C-STORE): speaks DICOM, knows nothing of the pipeline
    "infer": {"shared", "html", "dicom"},
    "train": {"shared", "html", "infer", "evaluation"},  # checkpoint selection scores with the challenge metric
    "evaluation": {"shared", "html", "infer"},
    "serve": {"shared", "infer"},  # GC's exec and invoke adapters over the pipeline; nothing below imports them
    "lab": {"shared", "html", "infer", "train", "evaluation"},
    "cli": {"shared", "html", "infer", "train", "evaluation", "lab", "dicom", "serve"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "cli" if parts[-1] in ("cli", "__main__", "pdac") else "shared"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {m: imports_of(p, modules) - {m} for m, p in paths.items()}
    # importing a.b.c also imports the packages a.b and a: those edges are implied, not drawn
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycle(graph):
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_dependencies_point_one_way(graph):
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                   if room(d) != room(m) and room(d) not in ALLOWED[room(m)] and d != "pdac")
    assert not wrong, "\n".join(wrong)


def test_every_pdac_import_names_a_module_or_a_name_in_one():
    """A lazy import of a module that was moved or split fails only when that code path runs: catch it here."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    missing = []
    for m, path in paths.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("pdac"):
                if node.module not in paths:
                    missing.append(f"{m}: from {node.module} import ...")
                    continue
                defined = {n.id for n in ast.walk(ast.parse(paths[node.module].read_text())) if isinstance(n, ast.Name)}
                defined |= {n.name for n in ast.walk(ast.parse(paths[node.module].read_text()))
                            if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.alias)}
                defined |= {n.asname for n in ast.walk(ast.parse(paths[node.module].read_text()))
                            if isinstance(n, ast.alias) and n.asname}
                submodules = {k.rsplit(".", 1)[-1] for k in paths if k.startswith(node.module + ".")}
                missing += [f"{m}: from {node.module} import {a.name}" for a in node.names
                            if a.name not in defined | submodules]
            elif isinstance(node, ast.Import):
                missing += [f"{m}: import {a.name}" for a in node.names
                            if a.name.startswith("pdac") and a.name not in paths]
    assert not missing, "\n".join(missing)


def test_the_graph_is_real(graph):
    """Guards the two tests above against reading nothing."""
    assert "pdac.infer.models" in graph["pdac.infer.pipeline"]
    assert room("pdac.infer.pipeline") == "infer" and room("pdac.config") == "shared"
    assert room("pdac.cli") == "cli" and room("pdac.lab.study") == "lab"
    assert room("pdac.html.viewer") == "html" and "pdac.html.viewer" in graph["pdac.infer.case_viewer"]
    assert "pdac.html.page" in graph["pdac.evaluation.html_report"]
    assert room("pdac.dicom.seg") == "dicom" and "pdac.dicom.seg" in graph["pdac.dicom.outputs"]
    assert "pdac.serve.gc_case" in graph["pdac.serve.server"] and room("pdac.serve.server") == "serve"


def test_the_exec_path_stays_free_of_the_server():
    """process.py (exec) imports the shared case module, never the HTTP server or its libraries."""
    case = ast.parse((PACKAGE / "serve" / "gc_case.py").read_text())
    imported = {a.name for n in ast.walk(case) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(case) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.split(".")[0] in ("fastapi", "uvicorn", "starlette")}
    assert "pdac.serve.server" not in imported
