"""The house as its imports draw it: no import circle, and the floors only look down (docs/architecture.md).

Every ``import autolora...`` statement counts, at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autolora"


def _imports() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autolora"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges[name].add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name in modules)
        edges[name].discard(name)
    return edges


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def _floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_circle() -> None:
    assert _circles(_imports()) == []


def test_the_circle_finder_finds_one() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


FORBIDDEN = {
    "core": {"tune", "fuse", "cli", "jobs", "flags", "report"},  # the jobs write the report (report.html.run_report)
    "tune": {"fuse", "cli"},
    "fuse": {"tune", "cli"},
    "explain": {"tune", "fuse", "cli"},  # tune's report and fuse's block prior use explain, never the other way
    "loras": {"tune", "fuse", "explain", "core", "report", "cli"},  # loaded LoRAs: shared by fuse and explain
    "scoring": {"tune", "fuse", "core", "cli"},
    "models": {"tune", "fuse", "core", "scoring", "miniworld", "cli"},  # models assembles the shipped build
    "miniworld": {"tune", "fuse", "core", "cli"},
    "report": {"tune", "fuse", "cli"},  # it reaches a job only through autolora.jobs (by the study's kind)
    "formats": {"tune", "fuse", "core", "report", "scoring", "miniworld", "cli"},  # files, whoever made the adapter
}


def test_floors_only_look_down() -> None:
    edges = _imports()
    assert any(_floor(m) == "core" for m in edges) and any(_floor(m) == "fuse" for m in edges)
    wrong = sorted(
        (m, w) for m, targets in edges.items() for w in targets if _floor(w) in FORBIDDEN.get(_floor(m), set())
    )
    assert wrong == []


def test_help_imports_no_heavy_library() -> None:
    """``autolora --help`` stays instant: the command line's modules import their internal dependencies at the top
    (a file's header says what it depends on) and keep only the heavy libraries inside functions."""
    import subprocess
    import sys

    heavy = ("torch", "diffusers", "transformers", "peft", "optuna", "mlflow", "open_clip", "numpy", "PIL", "yaml")
    code = f"import sys; import autolora.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
