"""The command line, through click's CliRunner: output, exit codes, bad input.

Click >= 8.2 keeps stderr apart: ``result.stdout`` and ``result.stderr`` are
the two streams, ``result.output`` is both as a terminal would show them.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import types
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from skbpath.render.folded import parse_folded
from skbpath.tracer.cli import main as cli
from skbpath.tracer.cli import record as cli_record
from skbpath.tracer.model.replay import POINT_MODES
from skbpath.tracer.model.replay import replay as run_replay
from skbpath.tracer.traces.events import pack_events
from skbpath.tracer.traces.tracefile import TraceReader, TraceWriter

from tests.synth import demo_table
from tests.test_tracefile import write_layout, write_synthetic_trace

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(str(p) for p in ROOT.glob("sample_traces/*.skbtrace"))
TRACES = [*SAMPLES, "synthetic"]
# Wide enough that rich never wraps a line we look for.
ENV = {"COLUMNS": "400"}


def invoke(args: Sequence[str]) -> Result:
    return CliRunner().invoke(cli.main, list(args), env=ENV)


@pytest.fixture(params=TRACES, ids=[Path(t).stem for t in TRACES])
def trace(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A trace file in tmp_path: each sample trace, and a synthetic one."""
    dest = tmp_path / "trace.skbtrace"
    if request.param == "synthetic":
        write_synthetic_trace(dest)
    else:
        shutil.copyfile(request.param, dest)
    return dest


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output


def assert_one_line_error(result: Result, contains: str = "") -> str:
    """Exit 2, exactly one line of output, "skbpath: error: ...", no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("skbpath: error: ")
    assert "Traceback" not in result.output
    assert contains in lines[0]
    return lines[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict)
        out.append(obj)
    return out


def event_count(path: Path) -> int:
    return TraceReader(str(path)).read_all().events


# ---------------------------------------------------------------- replay
def test_replay(trace: Path) -> None:
    result = invoke(["replay", str(trace)])
    assert_ok(result)
    out = result.stdout
    version = TraceReader(str(trace)).version
    assert f"skbpath trace format {version}" in out
    assert f"{event_count(trace):,d} {'calls' if version == 2 else 'events'} in" in out
    assert "model: events=" in out
    names = set(TraceReader(str(trace)).contents.header["functions"][i]["name"] for i in range(3))
    assert any(n in out for n in names)
    assert result.stderr == ""


def test_replay_json(trace: Path) -> None:
    result = invoke(["replay", "--json", str(trace)])
    assert_ok(result)
    objs = json_lines(result.stdout)
    assert objs, "no journeys"
    rep = run_replay(str(trace), keep_journeys=True)
    assert len(objs) == len(rep.model.journey_list)
    for obj in objs:
        assert obj["type"] == "journey"
        assert obj["path"] in ("TX", "RX", "FREE")
        assert obj["steps"], obj
        assert all(isinstance(s["func"], str) and s["entry"] > 0 for s in obj["steps"])
        assert obj["duration_ns"] >= 0


def test_replay_json_events(trace: Path) -> None:
    result = invoke(["replay", "--json", "--events", str(trace)])
    assert_ok(result)
    objs = json_lines(result.stdout)
    events = [o for o in objs if o["type"] in ("event", "call")]
    journeys = [o for o in objs if o["type"] == "journey"]
    assert len(events) == event_count(trace)
    assert journeys
    assert {o["type"] for o in objs} - {"journey"} in ({"event"}, {"call"})
    if events[0]["type"] == "event":  # version 1: entries and returns
        assert {e["kind"] for e in events} == {"entry", "exit"}
        ts = [e["ts"] for e in events]
        assert ts[0] <= ts[-1]
    else:  # version 2: one record per call, written at its return
        assert all(e["duration"] >= 0 and 0 <= e["depth"] < 64 for e in events)
    assert all(e["skb"] is None or e["skb"].startswith("0x") for e in events)


def test_replay_one_journey(trace: Path) -> None:
    rep = run_replay(str(trace), keep_journeys=True)
    first = rep.model.journey_list[0]
    result = invoke(["replay", "--skb", str(first.id), str(trace)])
    assert_ok(result)
    assert f"journey {first.id}" in result.stdout
    for step in first.steps[:5]:
        assert step.func in result.stdout


def test_replay_unknown_journey(trace: Path) -> None:
    result = invoke(["replay", "--skb", "99999", str(trace)])
    assert_one_line_error(result, "no journey 99999")


# ---------------------------------------------------------------- info
def test_info(trace: Path) -> None:
    result = invoke(["info", str(trace)])
    assert_ok(result)
    header = TraceReader(str(trace)).contents.header
    out = result.stdout
    version = TraceReader(str(trace)).version
    assert f"skbpath trace format {version}" in out
    assert f"kernel {header['kernel']} on {header['host']}" in out
    assert f"{len(header['functions'])} functions traced" in out
    assert f"{event_count(trace):,d} {'calls' if version == 2 else 'events'} in" in out
    assert result.stderr == ""


def test_info_skipped(trace: Path) -> None:
    result = invoke(["info", "--skipped", str(trace)])
    assert_ok(result)
    skipped = TraceReader(str(trace)).contents.header["skipped"]
    listed = [ln for ln in result.stdout.splitlines() if ln.startswith("  - ")]
    assert len(listed) == len(skipped)
    for s in skipped:
        assert f"  - {s['name']}: {s['reason']}" in result.stdout


def test_info_skipped_lists_reasons(tmp_path: Path) -> None:
    header = _header()
    header["skipped"] = [{"name": "tcp_foo", "reason": "not in kallsyms"}]
    path = tmp_path / "s.skbtrace"
    with open(path, "wb") as fh:
        TraceWriter(fh, header).close()
    result = invoke(["info", "--skipped", str(path)])
    assert_ok(result)
    assert "  - tcp_foo: not in kallsyms" in result.stdout
    assert "1 skipped" in result.stdout


def test_info_shows_empty_calls_and_every_loss_counter(tmp_path: Path) -> None:
    from skbpath.tracer.traces.events import CallRecord, pack_calls
    from skbpath.tracer.traces.tracefile import END

    path = tmp_path / "v2.skbtrace"
    with open(path, "wb") as fh:
        w = TraceWriter(fh, _header())
        w.write_events(pack_calls([CallRecord(entry=10, duration=5, skb=0xA, tid=3, func=1)]))
        # As the live tracers write it: END counts the records, so info need not decode them.
        w.write_json(END, {"events": 1, "lost": {"ringbuf_lost": 0, "no_return": 2},
                           "empty_calls": {"sock_recvmsg": 1_234_567, "inet_recvmsg": 980}})
        w.close()
    result = invoke(["info", str(path)])
    assert_ok(result)
    out = result.stdout
    assert "skbpath trace format 2" in out
    assert "1 calls in" in out
    assert "lost: no_return=2, ringbuf_lost=0" in out  # a zero shows as zero
    assert "1.2M sock_recvmsg, 980 inet_recvmsg calls with no packet" in out
    assert "bpf_missed:" not in out  # none skipped: no line, no advice


def test_info_names_the_skipped_programs_and_the_remedy(tmp_path: Path) -> None:
    from skbpath.tracer.traces.tracefile import END

    path = tmp_path / "missed.skbtrace"
    with open(path, "wb") as fh:
        w = TraceWriter(fh, _header())
        w.write_json(END, {"events": 0, "lost": {"bpf_missed": 5},
                           "bpf_missed_by": {"ip_output entry": 3, "__ip_finish_output return": 2}})
        w.close()
    result = invoke(["info", str(path)])
    assert_ok(result)
    assert "bpf_missed: ip_output entry 3, __ip_finish_output return 2" in result.stdout
    assert "interrupts off the traffic's CPUs" in " ".join(result.stdout.split())


def _header() -> dict[str, Any]:
    from tests.test_tracefile import synthetic_header

    return synthetic_header()


# ---------------------------------------------------------------- render
def test_render_svg(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(["render", str(trace), "-o", str(out)])
    assert_ok(result)
    assert sorted(p.name for p in out.iterdir()) == ["calltree.svg", "flamegraph.svg"]
    assert result.stdout.splitlines() == [str(out / "calltree.svg"), str(out / "flamegraph.svg")]
    for name in ("calltree.svg", "flamegraph.svg"):
        root = ET.parse(out / name).getroot()
        assert root.tag.endswith("svg"), name
        assert len(list(root.iter())) > 10


def test_render_dot(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(["render", str(trace), "-o", str(out), "--format", "dot"])
    assert_ok(result)
    text = (out / "calltree.dot").read_text()
    assert text.lstrip().startswith("digraph")
    assert text.rstrip().endswith("}")
    stdout = invoke(["render", str(trace), "-o", "-", "--format", "dot"])
    assert_ok(stdout)
    assert stdout.stdout.strip() == text.strip()


FOLDED_LINE = re.compile(r"^[^;\n]+(;[^;\n]+)* \d+$")


def _folded(trace: Path, *extra: str) -> list[tuple[list[str], int]]:
    result = invoke(["render", str(trace), "--format", "folded", "-o", "-", *extra])
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines
    for line in lines:
        assert FOLDED_LINE.match(line), line
    return parse_folded(result.stdout)


def test_render_folded_stdout(trace: Path) -> None:
    stacks = _folded(trace)
    assert all(frames[0] in ("TX", "RX", "FREE") for frames, _ in stacks)
    assert all(v > 0 for _, v in stacks)
    if TraceReader(str(trace)).read_all().header.get("attach") in POINT_MODES:
        # Tracepoint hits have no bodies, so nothing nests: direction;tracepoint.
        assert all(len(frames) == 2 for frames, _ in stacks)
    else:
        assert any(len(frames) > 3 for frames, _ in stacks)


def test_render_weight_count(trace: Path) -> None:
    by_count = _folded(trace, "--weight", "count")
    if TraceReader(str(trace)).read_all().header.get("attach") in POINT_MODES:
        assert _folded(trace) == by_count  # --weight auto: calls, as there is no time
    else:
        assert by_count != _folded(trace, "--weight", "time") == _folded(trace)
    # Each value counts the calls that ended at that path: between one per
    # root call and one per call.
    model = run_replay(str(trace), keep_journeys=False).model
    total = sum(v for _, v in by_count)
    assert sum(r.count for r in model.calltree.roots.values()) <= total
    assert total <= model.summary()["calls"]
    if trace.read_bytes() == _synthetic_bytes(trace.parent):
        # 50 packets: one TX leaf, and three RX leaves (two of them frees).
        assert {";".join(f): v for f, v in by_count} == {
            "RX;net_rx_action;__napi_poll;e1000_clean;napi_consume_skb": 50,
            "RX;net_rx_action;__napi_poll;e1000_clean;napi_gro_receive;ip_rcv;consume_skb": 50,
            "RX;net_rx_action;__napi_poll;e1000_clean;napi_gro_receive;ip_rcv;"
            "ip_local_deliver;tcp_v4_rcv": 50,
            "TX;__sys_sendto;tcp_sendmsg;tcp_write_xmit;__tcp_transmit_skb;ip_queue_xmit;"
            "ip_finish_output2;__dev_queue_xmit;dev_hard_start_xmit;e1000_xmit_frame": 50,
        }


def _synthetic_bytes(tmp: Path) -> bytes:
    path = tmp / "synthetic-ref.skbtrace"
    write_synthetic_trace(path)
    return path.read_bytes()


def test_render_folded_file(trace: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_ok(invoke(["render", str(trace), "-o", str(out), "--format", "folded"]))
    text = (out / "stacks.folded").read_text()
    assert parse_folded(text) == _folded(trace)


def test_render_svg_to_stdout_is_an_error(trace: Path) -> None:
    assert_one_line_error(invoke(["render", str(trace), "-o", "-"]), "--format folded")


# ---------------------------------------------------------------- help
@pytest.mark.parametrize("command",
                         [[], ["trace"], ["lab"], ["replay"], ["render"], ["diff"], ["info"],
                          ["explain"], ["cleanup"]],
                         ids=["main", "trace", "lab", "replay", "render", "diff", "info",
                              "explain", "cleanup"])
def test_help_has_examples(command: list[str]) -> None:
    result = invoke([*command, "--help"])
    assert_ok(result)
    assert "Examples" in result.stdout
    assert "skbpath" in result.stdout


def test_every_command_is_covered() -> None:
    assert isinstance(cli.main, click.Group)
    assert sorted(cli.main.commands) == ["cleanup", "diff", "explain", "info", "lab", "render",
                                         "replay", "trace"]


# ---------------------------------------------------------------- bad input
COMMANDS = ["replay", "render", "info"]


def _args(command: str, path: Path, tmp_path: Path) -> list[str]:
    if command == "render":
        return ["render", str(path), "-o", str(tmp_path / "render-out"), "--format", "folded"]
    if command == "diff":
        return ["diff", str(path), str(path), "-o", str(tmp_path / "diff-out")]
    return [command, str(path)]


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, text the error must contain)."""
    empty = tmp_path / "empty.skbtrace"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.skbtrace"
    noise.write_bytes(random.Random(42).randbytes(4096))
    good = tmp_path / "good.skbtrace"
    write_synthetic_trace(good, packets=3)
    version = tmp_path / "version.skbtrace"
    data = bytearray(good.read_bytes())
    struct.pack_into("<H", data, 8, 7)
    version.write_bytes(bytes(data))
    folder = tmp_path / "folder.skbtrace"
    folder.mkdir()
    return {
        "empty": (empty, "too short"),
        "random": (noise, "not an skbpath trace"),
        "version": (version, "version 7 is not supported"),
        "directory": (folder, "is a directory"),
        "missing": (tmp_path / "missing.skbtrace", "no such file"),
    }


@pytest.mark.parametrize("command", [*COMMANDS, "diff"])
@pytest.mark.parametrize("case", ["empty", "random", "version", "directory", "missing"])
def test_bad_input_is_one_line(command: str, case: str, tmp_path: Path) -> None:
    path, message = _bad_files(tmp_path)[case]
    line = assert_one_line_error(invoke(_args(command, path, tmp_path)), message)
    assert str(path) in line


def _prefix_trace(path: Path, events: list[tuple[int, ...]]) -> None:
    with open(path, "wb") as fh:
        w = TraceWriter(fh, _header(), version=1)
        w.write_events(pack_events(events))
        w.close()


@pytest.mark.parametrize("command", COMMANDS)
def test_truncated_trace(command: str, tmp_path: Path) -> None:
    layout = write_layout()
    ends = {b for b, _ in layout.boundaries} | {layout.header_end}
    rng = random.Random(7)
    offsets = rng.sample([o for o in range(1, len(layout.data)) if o not in ends], 10)
    # Make sure both outcomes are exercised whatever the seed gives.
    offsets[0] = layout.header_end // 2
    offsets[1] = (layout.boundaries[5][0] + layout.boundaries[6][0]) // 2
    for cut in offsets:
        path = tmp_path / f"cut{cut}.skbtrace"
        path.write_bytes(layout.data[:cut])
        result = invoke(_args(command, path, tmp_path))
        assert "Traceback" not in result.output
        if cut < layout.header_end:
            assert_one_line_error(result, str(path))
            continue
        assert_ok(result)
        warnings = result.stderr.splitlines()
        assert len(warnings) == 1, result.stderr
        assert warnings[0].startswith("skbpath: warning: trace ends with an incomplete")
        n = max([e for b, e in layout.boundaries if b <= cut], default=0)
        if command in ("replay", "info"):
            assert f"{n:,d} events in" in result.stdout
        else:
            # The render of the cut trace is the render of the events before the cut.
            got = (tmp_path / "render-out" / "stacks.folded").read_text()
            ref = tmp_path / "ref.skbtrace"
            _prefix_trace(ref, layout.events[:n])
            ref_out = tmp_path / "ref-out"
            assert_ok(invoke(["render", str(ref), "-o", str(ref_out), "--format", "folded"]))
            assert got == (ref_out / "stacks.folded").read_text()


# ---------------------------------------------------------------- trace --ebpf
def test_trace_ebpf_on_this_host() -> None:
    """Resolves against this host's kernel: the program, or one line saying why not."""
    result = invoke(["trace", "--ebpf"])
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert "//   -DSKBPATH_PROBES=P(" in result.stdout
        assert "#define P(id, arg, deref, stack, aux, frees)" in result.stdout
    else:
        assert_one_line_error(result, "could be resolved")


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``trace`` resolve to the synthetic function table, whatever the host."""
    resolution = types.SimpleNamespace(funcs=demo_table(), skipped=[])

    def fake_resolve(iface: str | None, kernel: Any, btf: Any) -> Any:
        return resolution

    monkeypatch.setattr(cli_record, "_resolve", fake_resolve)


@pytest.mark.usefixtures("resolved")
def test_trace_ebpf_prints_cflags_and_source() -> None:
    result = invoke(["trace", "--ebpf", "--proto", "tcp", "--port", "443",
                     "--host", "10.0.0.1", "--pid", "42", "--comm", "iperf3"])
    assert_ok(result)
    out = result.stdout
    assert out.startswith("// cflags:\n//   -DSKBPATH_PROBES=")
    # Function 0 by trampoline where this machine has them (auto: fentry), else by kprobe.
    assert "-DSKBPATH_FENTRY=F(0,__sys_sendto," in out or "-DSKBPATH_PROBES=P(0,0,0,0,0,0)" in out
    for flag in ("-DFILTER_PROTO=6", "-DFILTER_PORT=443", "-DFILTER_HOST=16777226U",
                 "-DFILTER_TGID=42", "-DFILTER_COMM0=", "-DFILTER_COMM1=0ULL"):
        assert f"//   {flag}" in out, flag
    assert "#define P(id, arg, deref, stack, aux, frees)" in out
    assert "SKBPATH_PROBES\n" in out


@pytest.mark.usefixtures("resolved")
def test_trace_list_probes() -> None:
    result = invoke(["trace", "--list-probes"])
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert len(lines) == len(demo_table())
    assert "__sys_sendto" in lines[0]


@pytest.mark.usefixtures("resolved")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "not a port number"),
        (["--host", "not-an-ip"], "not an IPv4 address"),
        (["--iface", "no-such-if0"], "no such interface"),
    ],
)
def test_trace_ebpf_bad_filters(args: list[str], message: str) -> None:
    assert_one_line_error(invoke(["trace", "--ebpf", *args]), message)
