"""bcc is imported lazily, by tracer/live.py only: replay and render work without it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracer", "probes", "render")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py"))
MODULES = sorted(
    f"{p.parent.name}" if p.stem == "__init__" else f"{p.parent.name}.{p.stem}" for p in SOURCES
)


def _imports_bcc(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name == "bcc" or a.name.startswith("bcc.") for a in node.names)
    if isinstance(node, ast.ImportFrom):
        mod = node.module or ""
        return node.level == 0 and (mod == "bcc" or mod.startswith("bcc."))
    return False


def _top_level_statements(tree: ast.Module) -> list[ast.stmt]:
    """Module-level statements, looking inside if/try/with blocks (still module level)."""
    out: list[ast.stmt] = []
    work: list[ast.stmt] = list(tree.body)
    while work:
        stmt = work.pop()
        out.append(stmt)
        if isinstance(stmt, ast.If | ast.Try | ast.With):
            for fld in ("body", "orelse", "finalbody", "handlers"):
                for sub in getattr(stmt, fld, []):
                    if isinstance(sub, ast.ExceptHandler):
                        work.extend(sub.body)
                    else:
                        work.append(sub)
    return out


def test_sources_found() -> None:
    assert ROOT / "tracer" / "live.py" in SOURCES
    assert "tracer.cli" in MODULES and "render.flamegraph" in MODULES
    assert "probes.catalog" in MODULES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_level_bcc_import(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    assert not any(_imports_bcc(s) for s in _top_level_statements(tree))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_the_live_tracer_imports_bcc_at_all(path: Path) -> None:
    if path == ROOT / "tracer" / "live.py":
        return
    tree = ast.parse(path.read_text(), str(path))
    assert not any(_imports_bcc(n) for n in ast.walk(tree)), f"{path} imports bcc"


def test_live_imports_bcc_inside_a_function_only() -> None:
    tree = ast.parse((ROOT / "tracer" / "live.py").read_text())
    inside: list[str] = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            _imports_bcc(n) for n in ast.walk(fn)
        ):
            inside.append(fn.name)
    assert inside, "tracer/live.py no longer imports bcc at all"
    all_bcc = [n for n in ast.walk(tree) if _imports_bcc(n)]
    in_functions = [
        n
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(fn)
        if _imports_bcc(n)
    ]
    assert len(all_bcc) == len({id(n) for n in in_functions})


def test_every_module_imports_with_bcc_blocked() -> None:
    """In a fresh interpreter, so that no earlier import hides a module-level one."""
    script = (
        "import importlib, sys\n"
        "sys.modules['bcc'] = None  # any 'import bcc' now raises ImportError\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "assert sys.modules['bcc'] is None\n"
        "print('imported', len([m for m in sys.modules if m.split('.')[0] in "
        f"{PACKAGES!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("imported ")
    assert int(proc.stdout.split()[1]) >= len(MODULES)


def test_blocking_bcc_really_blocks() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['bcc'] = None; import bcc"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr or "ModuleNotFoundError" in proc.stderr
