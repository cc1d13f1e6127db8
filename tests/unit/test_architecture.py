"""The package's shape, checked by reading its source with ``ast``: no import cycles (type-only imports count),
small modules, and evaluation that never imports a question writer."""
from __future__ import annotations

import ast
from pathlib import Path

import dmhelpers

PACKAGE = Path(dmhelpers.__file__).parent
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """The package modules ``path`` imports anywhere (top level, inside functions, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in MODULES}
    return found - {module_name(path)}


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_module_imports_itself_through_others():
    # A package __init__ that re-exports its submodules is allowed to be reached back from them.
    cycles = sorted(m for m in MODULES if m in reachable(m) and not MODULES[m].name == "__init__.py")
    assert not cycles, f"import cycles through {cycles}"


def test_modules_are_small():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert max(sizes.values()) <= MAX_LINES, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_evaluation_imports_no_question_writer():
    writers = {"dmhelpers.questions.generate", "dmhelpers.questions.llm", "dmhelpers.questions.simulate"}
    for name in ("dmhelpers.evaluation.cost", "dmhelpers.evaluation.context_recall", "dmhelpers.evaluation.evaluate"):
        assert not reachable(name) & writers, name


def test_deep_memory_needs_no_store_class():
    assert not any(m.startswith("dmhelpers.store") for m in reachable("dmhelpers.deep_memory.jobs"))


def test_the_checks_see_the_package():
    assert {"dmhelpers.store.vector_store", "dmhelpers.deep_memory.jobs", "dmhelpers.deep_memory.adapter"} <= set(GRAPH)
    assert "dmhelpers.deep_memory.jobs" in GRAPH["dmhelpers.store.vector_store"]


def test_the_store_front_imports_no_backend():
    """``VectorStore`` finds its backends as subclasses; it never imports them (no cycle, and a backend is added
    without touching the front)."""
    backends = {"dmhelpers.store.hnsw_store", "dmhelpers.store.milvus_store"}
    assert not reachable("dmhelpers.store.vector_store") & backends
    assert all("dmhelpers.store.vector_store" in GRAPH[b] for b in backends)
    assert "dmhelpers.store.hnsw_store" not in reachable("dmhelpers.store.milvus_store")
