"""Hostile traces and hostile environments: each case of issue 12, one regression test each.

Crafted files have correct checksums (tests/crafted.py), so what stops them
is the schema, the reader's limits and the CLI's error handling.  Bad input
is one line on stderr and exit 2; text from a trace reaches no terminal or
SVG raw; memory stays bounded (measured in child processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import pytest
from skbpath.tracer.traces.tracefile import (
    END,
    EVENTS,
    FLAG_ZLIB,
    SOURCES,
    STACKS,
    STATS,
    TASKS,
)

from tests.crafted import Crafted, complete, json_payload, skbpath_child, zlib_bomb
from tests.test_cli import assert_ok, assert_one_line_error, invoke

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_traces" / "tcp_rr.skbtrace"


def _bad_record(tmp_path: Path, crafted: Crafted, record: str, field: str,
                command: str = "replay") -> str:
    path = crafted.write(tmp_path / "crafted.skbtrace")
    args = [command, str(path)] + (["-o", str(tmp_path / "out")] if command == "render" else [])
    line = assert_one_line_error(invoke(args), f"bad {record} record at byte ")
    assert field in line, line
    return line


def _with_json(rtype: int, obj: Any) -> Crafted:
    """The complete crafted trace with one more JSON record (after END: still read)."""
    return complete().add_json(rtype, obj)


# ---------------------------------------------------------------- crafted records
def test_tasks_key_not_a_number(tmp_path: Path) -> None:
    _bad_record(tmp_path, _with_json(TASKS, {"tasks": {"abc": "x"}}), "tasks", "tasks.abc")


@pytest.mark.parametrize(("stacks", "field"), [
    ({"abc": ["f+0x1 [kernel]"]}, "stacks.abc"),
    ({"1": None}, "stacks.1"),
    ({"1": [None, "f"]}, "stacks.1[0]"),
], ids=["key-abc", "frames-null", "frame-null"])
def test_stacks_bad_key_or_frames(tmp_path: Path, stacks: Any, field: str) -> None:
    _bad_record(tmp_path, _with_json(STACKS, {"stacks": stacks}), "stacks", field)


@pytest.mark.parametrize("value", [b'"5000000000"', b"null", b"NaN", b"1e400", b"-1", b"1.5"],
                         ids=["string", "null", "nan", "1e400", "negative", "float"])
def test_journey_timeout_not_a_positive_integer(tmp_path: Path, value: bytes) -> None:
    c = complete()
    header = json_payload(c.header).replace(b'"journey_timeout_ns":5000000000',
                                            b'"journey_timeout_ns":' + value)
    c.header_bytes = header
    _bad_record(tmp_path, c, "header", "journey_timeout_ns")


def test_json_nested_100000_deep(tmp_path: Path) -> None:
    deep = b'{"stacks":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _bad_record(tmp_path, complete().add_raw(STACKS, deep), "stacks", "nested too deeply")


def test_integer_of_5000_digits(tmp_path: Path) -> None:
    big = b'{"lost":{"ringbuf_lost":' + b"7" * 5000 + b"}}"
    _bad_record(tmp_path, complete().add_raw(STATS, big), "stats", "digits")


@pytest.mark.parametrize(("change", "field"), [
    (lambda h: h["functions"][0].update(name=7), "functions[0].name"),
    (lambda h: h.update(attach=["kprobe"]), "attach"),
    (lambda h: h.update(interfaces="eth0"), "interfaces"),
    (lambda h: h.update(skipped=3), "skipped"),
    (lambda h: h["functions"][0].update(id=10**9), "functions[0].id"),
    (lambda h: h["functions"][0].update(id=10**7), "functions[0].id"),
    (lambda h: h["functions"][1].update(id=0), "functions[1].id"),
    (lambda h: h["functions"][0].update(name="x" * 100_000), "functions[0].name"),
], ids=["name-int", "attach-list", "interfaces-string", "skipped-int", "id-1e9", "id-1e7",
        "id-twice", "name-long"])
def test_header_field_of_wrong_type_or_size(tmp_path: Path, change: Any, field: str) -> None:
    c = complete()
    change(c.header)
    _bad_record(tmp_path, c, "header", field)


def test_end_lost_as_a_list(tmp_path: Path) -> None:
    _bad_record(tmp_path, _with_json(END, {"lost": [1, 2]}), "end", "lost", command="info")


def test_bad_record_names_its_offset(tmp_path: Path) -> None:
    c = _with_json(TASKS, {"tasks": {"abc": "x"}})
    data = c.to_bytes()
    offset = len(data) - (12 + len(json_payload({"tasks": {"abc": "x"}})))
    line = _bad_record(tmp_path, c, "tasks", "tasks.abc")
    assert f"at byte {offset}:" in line


def test_lenient_skips_a_bad_record_with_a_warning(tmp_path: Path) -> None:
    path = _with_json(TASKS, {"tasks": {"abc": "x"}}).write(tmp_path / "t.skbtrace")
    result = invoke(["replay", str(path), "--lenient"])
    assert_ok(result)
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1 and "skipped" in warnings[0] and "tasks.abc" in warnings[0]
    assert "call paths" in result.stdout


# ---------------------------------------------------------------- text is data
MARKUP = "[/] [bold]x[/bold] :smile:"
IN_PATH = "[bold]x[red] :smile:"  # no "/" in a file name


def _markup_trace(tmp_path: Path) -> Path:
    c = complete()
    h = c.header
    h.update(kernel=f"k{MARKUP}", host=f"h{MARKUP}", recorded_with=f"r{MARKUP}")
    h["skipped"] = [{"name": f"s{MARKUP}", "reason": f"why{MARKUP}"}]
    h["drop_reasons"] = {"2": f"NO_SOCKET{MARKUP}"}
    c.add_json(SOURCES, {"functions": {"tcp_v4_rcv": {"file": f"f{MARKUP}.c", "line": 3}}})
    # The trace's own path has markup too.
    return c.write(tmp_path / f"t{IN_PATH}.skbtrace")


@pytest.mark.parametrize("command", [["info", "--skipped"], ["replay"], ["replay", "--drops"]])
def test_rich_markup_in_trace_text_is_shown_as_text(tmp_path: Path, command: list[str]) -> None:
    path = _markup_trace(tmp_path)
    result = invoke([command[0], str(path), *command[1:]])
    assert_ok(result)
    if command[0] == "info":
        for shown in (f"k{MARKUP}", f"h{MARKUP}", f"r{MARKUP}", f"s{MARKUP}", f"f{MARKUP}.c",
                      f"t{IN_PATH}.skbtrace"):
            assert shown in result.stdout, shown


ESC = "\x1b]0;owned\x07\x1b[2J"


def _escape_trace(tmp_path: Path) -> Path:
    c = complete()
    c.header["kernel"] = f"6.1{ESC}"
    c.header["functions"][0]["name"] = f"__sys_sendto{ESC}\ufffe"
    c.header["interfaces"] = {"2": f"eth{ESC}"}
    return c.write(tmp_path / "esc.skbtrace")


@pytest.mark.parametrize("command", [["info"], ["replay"], ["replay", "--skb", "1"],
                                     ["render", "--format", "folded", "-o", "-"]])
def test_terminal_escapes_never_reach_the_terminal(tmp_path: Path, command: list[str]) -> None:
    path = _escape_trace(tmp_path)
    result = invoke([command[0], str(path), *command[1:]])
    assert_ok(result)
    assert "\x1b" not in result.output and "\x07" not in result.output
    if command[0] != "info":
        assert "__sys_sendto\\x1b]0" in result.stdout  # folded turns ';' into ':'
        assert "owned\\x07\\x1b[2J" in result.stdout


def test_svgs_are_valid_xml_with_control_characters_in_names(tmp_path: Path) -> None:
    path = _escape_trace(tmp_path)
    out = tmp_path / "out"
    assert_ok(invoke(["render", str(path), "-o", str(out)]))
    for name in ("calltree.svg", "flamegraph.svg"):
        text = (out / name).read_text()
        assert "\x1b" not in text and "\ufffe" not in text, name
        ET.fromstring(text)  # raises on invalid XML


# ---------------------------------------------------------------- bounded resources
def test_zlib_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    bomb = zlib_bomb(1 << 30)  # ~1 MB that decompresses to 1 GiB
    assert len(bomb) < 2 << 20
    path = complete().add_raw(EVENTS, bomb, FLAG_ZLIB).write(tmp_path / "bomb.skbtrace")
    run = skbpath_child(["replay", str(path)])
    assert run.code == 2, run.stderr
    assert "bad events record at byte" in run.stderr and "refused" in run.stderr
    assert run.peak_mb < 200, run.peak_mb


def test_info_decompresses_no_events(tmp_path: Path) -> None:
    # The bomb stands before END: info must not touch it, replay must refuse it.
    c = complete()
    c.records.insert(0, (EVENTS, FLAG_ZLIB, zlib_bomb(256 << 20)))
    path = c.write(tmp_path / "bomb.skbtrace")
    run = skbpath_child(["info", str(path)])
    assert run.code == 0, run.stderr
    assert "events in" in run.stdout and run.peak_mb < 100, run.peak_mb
    assert_one_line_error(invoke(["replay", str(path)]), "refused")


def test_sparse_6gib_file_is_streamed(tmp_path: Path) -> None:
    path = complete().write(tmp_path / "sparse.skbtrace")
    with open(path, "r+b") as fh:
        fh.truncate(6 << 30)  # zeros after the last record, no disk used
    run = skbpath_child(["info", str(path)])
    assert run.code == 0, run.stderr
    assert "a damaged record at byte" in run.stderr
    assert run.peak_mb < 100, run.peak_mb


def test_large_function_id_in_events_costs_nothing(tmp_path: Path) -> None:
    # Events may name ids the table lacks (0xffff at most: a u16): placeholders, no table growth.
    from skbpath.tracer.traces.events import Event, pack_events

    events = [Event(1000 + i, 0, 7, 7, 0xFFFF, i % 2, 0, 0) for i in range(200)]
    c = complete().add_raw(EVENTS, pack_events(events))
    result = invoke(["replay", str(c.write(tmp_path / "ids.skbtrace"))])
    assert_ok(result)
    assert "func#65535" in result.stdout


def test_fifo_without_writer_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for command in ("replay", "info"):
        run = skbpath_child([command, str(fifo)], timeout=20)
        assert run.code == 2 and "is a FIFO" in run.stderr, run.stderr


def test_dev_zero_is_refused() -> None:
    run = skbpath_child(["info", "/dev/zero"], timeout=20)
    assert run.code == 2 and "not a regular file" in run.stderr, run.stderr


def test_stdin_as_dash_is_read(tmp_path: Path) -> None:
    with open(SAMPLE, "rb") as fh:
        run = skbpath_child(["info", "-"], stdin=fh)
    assert run.code == 0, run.stderr
    by_path = skbpath_child(["info", str(SAMPLE)])
    assert by_path.code == 0, by_path.stderr
    # Same report as reading the file by name, but for the name itself.
    assert run.stdout.replace("-:", "", 1) == by_path.stdout.replace(f"{SAMPLE}:", "", 1)
    assert " calls in " in run.stdout


# ---------------------------------------------------------------- output errors
def test_output_dir_not_writable(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="skbpath-ro-"))
    try:
        os.chmod(base, 0o755)
        trace = base / "t.skbtrace"
        trace.write_bytes(SAMPLE.read_bytes())
        os.chmod(trace, 0o644)
        out = base / "out"
        out.mkdir(mode=0o555)

        def as_nobody() -> None:
            if os.geteuid() == 0:  # root writes anywhere: drop to nobody
                os.setgid(65534)
                os.setuid(65534)

        run = skbpath_child(["render", str(trace), "-o", str(out)], preexec=as_nobody)
        assert run.code == 2, run.stderr
        assert run.stderr.strip().splitlines() == [
            f"skbpath: error: cannot write {out}/calltree.svg: Permission denied"]
    finally:
        for p in sorted(base.rglob("*"), reverse=True):
            os.chmod(p, 0o755)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_calltree_svg_existing_as_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "calltree.svg").mkdir(parents=True)
    assert_one_line_error(invoke(["render", str(SAMPLE), "-o", str(out)]),
                          "calltree.svg: Is a directory")


@pytest.mark.parametrize("args", [["replay", str(SAMPLE)],
                                  ["render", str(SAMPLE), "--format", "folded", "-o", "-"],
                                  ["replay", "--json", str(SAMPLE)]])
def test_stdout_on_a_full_disk(args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        run = skbpath_child(args, stdout=full)
    assert run.code == 2, run.stderr
    assert run.stderr.splitlines() == ["skbpath: error: cannot write output: "
                                       "No space left on device"]


def test_trace_into_a_missing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    out = tmp_path / "missing" / "t.skbtrace"
    assert_one_line_error(invoke(["trace", "-d", "1", "-o", str(out)]), "no such directory")


@pytest.mark.parametrize("args", [["replay", str(SAMPLE)], ["replay", "--json", str(SAMPLE)],
                                  ["render", str(SAMPLE), "--format", "folded", "-o", "-"]])
def test_closed_pipe_is_silence(args: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "skbpath.tracer.cli.entry", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert err == b""


# ---------------------------------------------------------------- Ctrl-C and options
@pytest.mark.parametrize("delay", [0.2, 0.5, 1.0])
def test_ctrl_c_at_any_moment_is_interrupted(delay: float) -> None:
    big = ROOT / "sample_traces" / "tcp_bulk.skbtrace"
    proc = subprocess.Popen([sys.executable, "-m", "skbpath.tracer.cli.entry", "replay",
                             str(big)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("replay finished before the signal")  # a fast machine
    if b"init_import_site" in err:
        pytest.skip("the signal came while Python itself started, before skbpath ran")
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "skbpath: interrupted"
    assert b"Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "abc"])
def test_duration_must_be_finite_and_positive(value: str) -> None:
    result = invoke(["trace", "--duration", value, "--list-probes"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--duration" in result.output and "greater than 0" in result.output or \
        "not a number" in result.output


@pytest.mark.parametrize("args", [["--drops", "--skb", "1"], ["--json", "--drops"],
                                  ["--json", "--skb", "1"], ["--events"],
                                  ["--explain", "--drops"]])
def test_incompatible_replay_options_say_so(args: list[str]) -> None:
    result = invoke(["replay", str(SAMPLE), *args])
    assert result.exit_code == 2, result.output
    assert "cannot be combined" in result.output or "goes with --json" in result.output


# ---------------------------------------------------------------- cut on a boundary
@pytest.mark.parametrize("command", [["info"], ["replay"], ["replay", "--json"]])
def test_cut_on_a_record_boundary_warns(tmp_path: Path, command: list[str]) -> None:
    c = complete()
    c.records = [r for r in c.records if r[0] not in (END, SOURCES)]
    path = c.write(tmp_path / "cut.skbtrace")
    result = invoke([command[0], str(path), *command[1:]])
    assert_ok(result)
    assert result.stderr.splitlines() == [
        f"skbpath: warning: trace has no end record after byte {path.stat().st_size}: the "
        "tracer did not stop cleanly or the file was cut on a record boundary; everything "
        "before it was read"]


def test_schema_accepts_version_2_records() -> None:
    from skbpath.tracer.traces import schema

    header = complete().header | {"version": 2}
    assert schema.check_record("header", header, 2)["version"] == 2
    end = {"lost": {"no_return": 3, "unmatched_returns": 0}, "empty_calls": {"tcp_recvmsg": 9}}
    assert schema.check_record("end", end, 2) == end
    assert schema.record_size(2) == 56 and schema.record_size(1) == 40
    with pytest.raises(schema.SchemaError, match="empty_calls.tcp_recvmsg"):
        schema.check_record("stats", {"empty_calls": {"tcp_recvmsg": -1}}, 2)


def test_events_record_of_partial_records_is_bad(tmp_path: Path) -> None:
    c = complete().add_raw(EVENTS, zlib.compress(b"\0" * 41), FLAG_ZLIB)
    _bad_record(tmp_path, c, "events", "not a whole number of 40-byte records")


def test_sample_traces_pass_the_schema() -> None:
    from skbpath.tracer.traces.tracefile import TraceReader

    paths = sorted((ROOT / "sample_traces").rglob("*.skbtrace"))
    assert any(p.parent.name == "aggregate" for p in paths)
    for path in paths:
        contents = TraceReader(str(path)).read_all()
        assert contents.truncated is None and not contents.skipped, path
        # An --aggregate trace has its calls in AGGREGATE records, not EVENTS.
        assert (contents.events > 0 or contents.aggregate) and json.dumps(contents.header)


def test_live_header_passes_the_schema() -> None:
    # What the live tracers write must read back: recorded_with may be null, etc.
    import types

    from skbpath.tracer.record.cflags import Filters
    from skbpath.tracer.record.resolve import Resolution
    from skbpath.tracer.record.session import TraceOptions, trace_header
    from skbpath.tracer.traces import schema

    from tests.synth import demo_table

    opts = TraceOptions(output="x", duration=None, filters=Filters(iface="lo", port=80))
    kernel: Any = types.SimpleNamespace(release="6.1.0")
    header = trace_header(kernel,
                          Resolution(demo_table(), []), opts, ["-DX=1"], "kprobe",
                          {"kprobe": ["tcp_sendmsg"]})
    header |= {"tracefs_events": ["net:net_dev_xmit"], "trace_clock": "mono"}
    checked = schema.check_record("header", json.loads(json.dumps(header)), header["version"])
    assert set(checked) == set(header) and checked["recorded_with"] is None
    assert checked["filters"] == {"iface": "lo", "port": 80}
    # Integer-keyed maps come back with int keys.
    assert checked["interfaces"] == {int(k): v for k, v in header["interfaces"].items()}


def test_nesting_past_max_depth_is_dropped_and_counted() -> None:
    # 300 nested calls on one thread: the 44 innermost are past MAX_DEPTH (256).
    from skbpath.tracer.model.pairing import MAX_DEPTH, pair_all
    from skbpath.tracer.traces.events import ENTRY, EXIT, Event

    from tests.synth import demo_table

    depth = MAX_DEPTH + 44
    events = [Event(i, 0, 7, 7, i % 5, ENTRY, 0, 0) for i in range(depth)]
    events += [Event(depth + i, 0, 7, 7, (depth - 1 - i) % 5, EXIT, 0, 0) for i in range(depth)]
    roots: list[object] = []
    stats = pair_all(demo_table(), events, roots.append)
    assert len(roots) == 1
    assert stats.calls == MAX_DEPTH and stats.too_deep == 2 * 44
    assert stats.lost_exits == stats.unmatched_exits == stats.open_at_end == 0
