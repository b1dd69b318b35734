"""bcc is imported lazily, by the bcc recording back end only: replay and render work without it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tracer", "probes", "render")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
BCC_BACKEND = ROOT / "tracer" / "record" / "bpf" / "backend.py"


def _module(path: Path) -> str:
    """The import name of a source file: every top-level folder installs under skbpath."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["skbpath", *parts])


MODULES = sorted(_module(p) for p in SOURCES)


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
    assert BCC_BACKEND in SOURCES
    assert "skbpath.tracer.cli.main" in MODULES and "skbpath.render.flamegraph" in MODULES
    assert "skbpath.probes.catalog" in MODULES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_level_bcc_import(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    assert not any(_imports_bcc(s) for s in _top_level_statements(tree))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_live_tracer_imports_bcc_at_all(path: Path) -> None:
    if path == BCC_BACKEND:
        return
    tree = ast.parse(path.read_text(), str(path))
    assert not any(_imports_bcc(n) for n in ast.walk(tree)), f"{path} imports bcc"


def test_live_imports_bcc_inside_a_function_only() -> None:
    tree = ast.parse(BCC_BACKEND.read_text())
    inside: list[str] = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            _imports_bcc(n) for n in ast.walk(fn)
        ):
            inside.append(fn.name)
    assert inside, f"{BCC_BACKEND} no longer imports bcc at all"
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
        "print('imported', len([m for m in sys.modules if m.startswith('skbpath.')]))\n"
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


def test_wheel_installs_only_the_skbpath_root(tmp_path: Path) -> None:
    """A wheel built from the tree puts one import name, skbpath, into site-packages."""
    import zipfile

    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("skbpath-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"skbpath"}
    assert "skbpath/tracer/record/bpf/backend.py" in names
    assert "skbpath/probes/skbpath.bpf.c" in names
    assert "skbpath/tracer/lab/guest.sh" in names
    # Data files read through importlib.resources must ship too.
    for data in ("probes/tracepoints.toml", "probes/atlas.toml", "render/flamegraph.js",
                 "render/flamegraph.css", "tracer/lab/firewall.nft"):
        assert f"skbpath/{data}" in names, data


def test_editable_install_is_a_plain_path_entry(tmp_path: Path) -> None:
    """``pip install -e .`` puts src/ (symlinks to tracer/, probes/, render/) on sys.path.

    A plain path entry needs no meta path finder, so setuptools has nothing
    to warn about, and it exposes only skbpath: src/ holds nothing else.
    """
    proc = subprocess.run(
        # --ignore-installed: without it pip would first uninstall this very
        # environment's skbpath to install into the prefix.
        [sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q",
         "--prefix", str(tmp_path), "-e", str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    (pth,) = tmp_path.rglob("__editable__.skbpath-*.pth")
    assert pth.read_text().split() == [str(ROOT / "src")]
    # setuptools writes its skbpath.egg-info beside the package; nothing else may be there.
    assert [p.name for p in (ROOT / "src").iterdir() if p.suffix != ".egg-info"] == ["skbpath"]
    links = {p.name: p.resolve() for p in (ROOT / "src" / "skbpath").iterdir()}
    assert links == {name: ROOT / name for name in PACKAGES}
