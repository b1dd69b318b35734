"""Source lines from DWARF: small C programs compiled here stand in for a vmlinux."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from skbpath.tracer.cli import main as cli
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.atlas import layer_from_path
from skbpath.tracer.kernel.dwarf import (
    SourceMap,
    module_name,
    source_details,
)
from skbpath.tracer.kernel.dwarf_cu import SourceLoc
from skbpath.tracer.traces.events import pack_events
from skbpath.tracer.traces.functions import FuncInfo, FuncTable
from skbpath.tracer.traces.tracefile import SOURCES, TraceReader, TraceWriter, append_sources

from tests.synth import Spec, events_for

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

PROG = """\
#include <stdio.h>

static int counter;

static inline __attribute__((always_inline)) int helper(int x)
{
\tint y = x * 3;
\tcounter += y;
\treturn y + 1;
}

__attribute__((noinline)) int caller(int a)
{
\tint r = 0;
\tr += a;
\tr = helper(r);
\treturn r * 2;
}

__attribute__((noinline)) int other(int a)
{
\treturn caller(a) + 7;
}

int main(int argc, char **argv)
{
\tprintf("%d\\n", other(argc));
\treturn 0;
}
"""


def line_of(text: str, needle: str) -> int:
    """1-based line number of the first line containing ``needle``."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def compile_c(tmp: Path, name: str, source: str, *flags: str) -> Path:
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / name
    # Compile in tmp with a relative source name, as a kernel build does.
    subprocess.run(["gcc", *flags, "-o", str(out), src.name], cwd=tmp, check=True)
    return out


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(tmp_path_factory.mktemp("o2"), "prog", PROG, "-g", "-O2")


@pytest.fixture
def smap(prog: Path, tmp_path: Path) -> SourceMap:
    m = SourceMap.open(str(prog), cache_dir=str(tmp_path / "cache"))
    return m


def test_function_line(smap: SourceMap) -> None:
    assert smap.function_line("caller") == SourceLoc(
        "caller", "prog.c", line_of(PROG, "int caller(int a)"))
    assert smap.function_line("other") == SourceLoc(
        "other", "prog.c", line_of(PROG, "int other(int a)"))
    assert smap.function_line("no_such_function") is None


def test_clone_suffixes_are_stripped(smap: SourceMap) -> None:
    want = smap.function_line("caller")
    assert smap.function_line("caller.constprop.0") == want
    assert smap.function_line("caller.isra.0") == want


def test_address_lines_inlined(smap: SourceMap) -> None:
    start = smap.symbol_address("caller")
    assert start is not None
    chains = [smap.address_lines(start + off) for off in range(0, 16)]
    inlined = [c for c in chains if c and c[0].function == "helper"]
    assert inlined, chains
    chain = inlined[0]
    assert chain[0].inlined and chain[0].file == "prog.c"
    assert line_of(PROG, "int y = x * 3") <= chain[0].line <= line_of(PROG, "return y + 1")
    assert chain[1] == SourceLoc("caller", "prog.c", line_of(PROG, "r = helper(r);"), False)
    assert len(chain) == 2


def test_frame_lines(smap: SourceMap) -> None:
    lines = smap.frame_lines("caller+0x4 [kernel]")
    assert lines and lines[-1].function == "caller" and not lines[-1].inlined
    assert smap.frame_lines("caller+0x4") == lines  # the module tag is optional
    assert smap.frame_lines("nonexistent+0x4 [kernel]") == []
    assert smap.frame_lines("garbage") == []


def test_O0_program(tmp_path: Path) -> None:
    src = PROG.replace("static inline __attribute__((always_inline))", "static")
    exe = compile_c(tmp_path, "slow", src, "-g", "-O0")
    with SourceMap.open(str(exe), cache_dir=str(tmp_path / "c")) as m:
        # At -O0, helper is a real function with its own symbol.
        assert m.function_line("helper") == SourceLoc(
            "helper", "slow.c", line_of(src, "int helper(int x)"))
        addr = m.symbol_address("other")
        assert addr is not None
        [first] = m.address_lines(addr)
        decl = line_of(src, "int other(int a)")
        assert first.function == "other" and first.file == "slow.c"
        assert first.line in (decl, decl + 1)  # the name's line or the opening brace


def test_relocatable_object(tmp_path: Path) -> None:
    """A module .ko is an ET_REL object: its DWARF needs relocating."""
    (tmp_path / "mod.c").write_text(PROG)
    subprocess.run(["gcc", "-g", "-O2", "-c", "mod.c", "-o", "mod.ko"], cwd=tmp_path,
                   check=True)
    with SourceMap.open(str(tmp_path / "mod.ko"), cache_dir=str(tmp_path / "c")) as m:
        assert m.function_line("other") == SourceLoc(
            "other", "mod.c", line_of(PROG, "int other(int a)"))
        assert m.frame_lines("other+0x1 [mod]")[-1].function == "other"
    assert module_name("/x/e1000-e.ko") == "e1000_e"


def test_disk_cache_is_written_and_reused(prog: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = SourceMap.open(str(prog), cache_dir=str(cache))
    assert first.index_built
    assert first.cache_file is not None and os.path.exists(first.cache_file)
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].startswith("dwarf-bid-")  # no answers cached yet
    mtime = os.stat(first.cache_file).st_mtime_ns
    index = json.loads(Path(first.cache_file).read_text())
    assert "caller" in index["functions"]
    first.close()
    second = SourceMap.open(str(prog), cache_dir=str(cache))
    assert not second.index_built
    assert os.stat(first.cache_file).st_mtime_ns == mtime
    assert second.function_line("caller") == SourceLoc(
        "caller", "prog.c", line_of(PROG, "int caller(int a)"))
    assert second._cus, "the first answer needs its CU parsed"
    second.close()
    # The answer itself was cached: a third open parses no CU for it.
    third = SourceMap.open(str(prog), cache_dir=str(cache))
    assert third.function_line("caller") == SourceLoc(
        "caller", "prog.c", line_of(PROG, "int caller(int a)"))
    assert not third._cus
    third.close()


def test_corrupt_cache_is_rebuilt(prog: Path, tmp_path: Path) -> None:
    with SourceMap.open(str(prog), cache_dir=str(tmp_path)) as m:
        assert m.cache_file is not None
        Path(m.cache_file).write_text("{not json")
    with SourceMap.open(str(prog), cache_dir=str(tmp_path)) as m:
        assert m.index_built and m.function_line("caller") is not None


def test_xdg_cache_home(prog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with SourceMap.open(str(prog)) as m:
        assert m.cache_file is not None
        assert m.cache_file.startswith(str(tmp_path / "xdg" / "skbpath"))


def test_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SkbpathError, match="no such file") as exc:
        SourceMap.open(str(tmp_path / "missing"))
    assert "\n" not in str(exc.value)
    text = tmp_path / "text"
    text.write_text("hello, not an ELF\n")
    with pytest.raises(SkbpathError, match="not an ELF file"):
        SourceMap.open(str(text))
    stripped = compile_c(tmp_path, "nodebug", PROG, "-O2")
    with pytest.raises(SkbpathError, match="no DWARF debug info"):
        SourceMap.open(str(stripped), cache_dir=str(tmp_path / "c"))
    with pytest.raises(SkbpathError, match="is a directory"):
        SourceMap.open(str(tmp_path))


def test_sources_take_layers_from_the_atlas() -> None:
    cases = {
        "net/ipv4/tcp_output.c": "transport",
        "net/ipv4/ip_output.c": "network",
        "net/core/dev.c": "device",
        "drivers/net/ethernet/intel/e1000/e1000_main.c": "driver",
        "net/sched/sch_generic.c": "qdisc",
        "net/core/neighbour.c": "neighbour",
        "net/socket.c": "socket",
        "mm/slub.c": None,
    }
    for path, layer in cases.items():
        assert layer_from_path(path) == layer, path


def _trace_with(path: Path, names: list[str]) -> FuncTable:
    funcs = [FuncInfo(id=i, name=n, path="tx", layer="transport", symbols=(n,))
             for i, n in enumerate(names)]
    table = FuncTable(funcs)
    header = {"format": "skbpath-trace", "version": 1, "tool_version": "test",
              "kernel": "test", "functions": table.to_json(), "skipped": [], "filters": {}}
    spec = Spec(names[0], 0x1000, 300, [Spec(n, 0x1000, 100) for n in names[1:]])
    events, _ = events_for(table, spec, 1_000)
    with open(path, "wb") as fh:
        w = TraceWriter(fh, header, version=1)
        w.write_events(pack_events(events))
        w.write_json(3, {"stacks": {"1": ["caller+0x4 [kernel]", "other+0x9 [kernel]",
                                          "nic_xmit+0x1 [nic]"]}})
        w.close()
    return table


def test_append_sources(tmp_path: Path) -> None:
    trace = tmp_path / "t.skbtrace"
    _trace_with(trace, ["other", "caller"])
    append_sources(str(trace), {"functions": {"caller": {"file": "a.c", "line": 3}}})
    append_sources(str(trace), {"functions": {"other": {"file": "a.c", "line": 9}},
                                "frames": {}})
    contents = TraceReader(str(trace)).read_all()
    # No END record (warned about), but nothing damaged: sources can be appended.
    assert not contents.damaged and contents.events == 4
    assert source_details(contents.sources) == {"caller": "a.c:3", "other": "a.c:9"}
    # A cut trace cannot be appended to: the record would be unreachable.
    data = trace.read_bytes()
    trace.write_bytes(data[:-3])
    with pytest.raises(SkbpathError, match="cannot add source lines"):
        append_sources(str(trace), {"functions": {}})
    with pytest.raises(SkbpathError, match="no such file"):
        append_sources(str(tmp_path / "missing"), {})


def test_render_with_vmlinux(prog: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    trace = tmp_path / "t.skbtrace"
    _trace_with(trace, ["other", "caller", "not_in_elf"])
    before = len(trace.read_bytes())
    runner = CliRunner()
    result = runner.invoke(cli.main, ["render", str(trace), "-o", str(tmp_path / "out"),
                                      "--vmlinux", str(prog)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, (result.output, result.exception)
    data = trace.read_bytes()
    assert len(data) > before
    assert data[before] == SOURCES  # appended as the last record
    contents = TraceReader(str(trace)).read_all()
    caller_line = line_of(PROG, "int caller(int a)")
    assert contents.sources["functions"]["caller"]["file"] == "prog.c"
    assert contents.sources["functions"]["caller"]["line"] == caller_line
    assert "not_in_elf" not in contents.sources["functions"]
    frames = contents.sources["frames"]
    assert frames["caller+0x4 [kernel]"][-1][0] == "caller"
    assert "nic_xmit+0x1 [nic]" not in frames  # no --module-debug for it
    svg = (tmp_path / "out" / "flamegraph.svg").read_text()
    assert f"prog.c:{caller_line}" in svg
    # Later runs read the stored record: no --vmlinux needed.
    result = runner.invoke(cli.main, ["replay", str(trace)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"prog.c:{caller_line}" in result.output
    result = runner.invoke(cli.main, ["info", str(trace)], env={"COLUMNS": "400"})
    assert "source lines: 2 functions" in result.output


def test_render_with_bad_vmlinux(tmp_path: Path) -> None:
    trace = tmp_path / "t.skbtrace"
    _trace_with(trace, ["other", "caller"])
    result = CliRunner().invoke(cli.main, ["render", str(trace), "-o", str(tmp_path / "o"),
                                           "--vmlinux", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"skbpath: error: {tmp_path / 'nope'}: no such file"]
