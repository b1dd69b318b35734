"""Fuzzing crafted traces: whatever a trace holds, skbpath exits 0 or 2, never a traceback.

Property-based (hypothesis) with a fixed seed: it mutates the JSON of each
record of a complete trace (any JSON value anywhere: markup, control
characters, huge integers, NaN, deep nesting), flips and cuts payload bytes,
crafts EVENTS records of random events (compressed or not), reorders and
repeats records.  Every record keeps a valid CRC, so only the schema and the
reader's limits stand in the way.  Each example runs the CLI in process
(replay, info, render, replay --json --events, --skb, --drops) and checks:
exit 0 or 2, no traceback, and the process's peak RSS stays bounded.

The run lasts about SKBPATH_FUZZ_SECONDS (default 60): batches of examples,
each batch with its own fixed seed, until the time is spent.
"""

from __future__ import annotations

import json
import os
import resource
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from skbpath.tracer.cli import main as cli
from skbpath.tracer.traces.events import EVENT_STRUCT
from skbpath.tracer.traces.tracefile import EVENTS, FLAG_ZLIB, HEADER

from tests.crafted import Crafted, complete, json_payload

pytestmark = pytest.mark.fuzz

BUDGET_S = float(os.environ.get("SKBPATH_FUZZ_SECONDS", "60"))
BASE_SEED = 20261201
BATCH = 25
RSS_GROWTH_MB = 300  # small crafted files: anything near this is a blow-up

HOSTILE_TEXT = ["[/]", "[bold]", "\x1b]0;t\x07", "\x1b[2J", "\x00", "\ud800", "\ufffe",
                ":smile:", "]]>", "<svg>", "&amp;", "\n", ";", "%s", "{}", "\u202e"]

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([0, 1, -1, 0xFFFF, 0x10000, 10**7, 10**9, (1 << 63), (1 << 64)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_TEXT),
    st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE_TEXT), st.text(max_size=8)),
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.one_of(st.text(max_size=6),
                                                      st.sampled_from(["1", "-1", "abc", "0x1",
                                                                       "1" * 30])),
                                            inner, max_size=5)),
    max_leaves=12,
)


def _events_payload(draw: Any) -> tuple[bytes, int]:
    n = draw(st.integers(0, 60))
    fields = st.tuples(
        st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1),
        st.sampled_from([0, 1, 7, 100, (1 << 32) - 1]), st.sampled_from([0, 7, 100]),
        st.one_of(st.integers(0, 20), st.integers(0, 0xFFFF)), st.integers(0, 255),
        st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
        st.integers(-(1 << 31), (1 << 31) - 1), st.integers(0, (1 << 32) - 1),
    )
    blob = b"".join(EVENT_STRUCT.pack(*draw(fields)) for _ in range(n))
    if draw(st.booleans()):
        blob += draw(st.binary(max_size=40))  # maybe a partial event
    if draw(st.booleans()):
        return zlib.compress(blob, 1), FLAG_ZLIB
    return blob, 0


def _mutate_json(draw: Any, obj: Any) -> Any:
    """obj with one value somewhere replaced, removed or added."""
    if not isinstance(obj, dict | list) or not obj or draw(st.integers(0, 3)) == 0:
        return draw(json_values)
    if isinstance(obj, dict):
        key = draw(st.sampled_from(sorted(obj)))
        action = draw(st.integers(0, 4))
        out = dict(obj)
        if action == 0:
            del out[key]
        elif action == 1:
            out[draw(st.text(max_size=8))] = draw(json_values)
        else:
            out[key] = _mutate_json(draw, obj[key])
        return out
    i = draw(st.integers(0, len(obj) - 1))
    out_list = list(obj)
    out_list[i] = _mutate_json(draw, obj[i])
    return out_list


@st.composite
def crafted_traces(draw: Any) -> bytes:
    c = complete(packets=draw(st.integers(1, 6)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 5))
        if kind == 0:  # the header's JSON
            c.header = _mutate_json(draw, c.header)
        elif kind == 1 and c.records:  # another JSON record's content
            i = draw(st.integers(0, len(c.records) - 1))
            rtype, flags, payload = c.records[i]
            try:  # an earlier step may have left it no JSON at all
                obj = json.loads(payload) if rtype != EVENTS else None
            except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                obj = None
            if obj is not None:
                obj = _mutate_json(draw, obj)
                c.records[i] = (rtype, flags, json.dumps(obj).encode())
        elif kind == 2:  # crafted events
            payload, flags = _events_payload(draw)
            c.records.insert(draw(st.integers(0, len(c.records))), (EVENTS, flags, payload))
        elif kind == 3 and c.records:  # bytes of a payload flipped, cut or grown
            i = draw(st.integers(0, len(c.records) - 1))
            rtype, flags, payload = c.records[i]
            data = bytearray(payload)
            if data:
                pos = draw(st.integers(0, len(data) - 1))
                op = draw(st.integers(0, 2))
                if op == 0:
                    data[pos] ^= draw(st.integers(1, 255))
                elif op == 1:
                    del data[pos:]
                else:
                    data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            c.records[i] = (rtype, flags, bytes(data))
        elif kind == 4 and c.records:  # records reordered, repeated, retyped
            i = draw(st.integers(0, len(c.records) - 1))
            rtype, flags, payload = c.records[i]
            op = draw(st.integers(0, 2))
            if op == 0:
                c.records.append(c.records[i])
            elif op == 1:
                c.records[i] = (draw(st.integers(1, 8)), draw(st.integers(0, 255)), payload)
            else:
                c.records.insert(0, c.records.pop(i))
        elif kind == 5:  # raw header bytes
            raw = bytearray(json_payload(c.header))
            if raw:
                raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
            c.header_bytes = bytes(raw)
    if draw(st.integers(0, 9)) == 0:
        c.records.append((HEADER, 0, json_payload(c.header)))
    return Crafted.to_bytes(c)


COMMANDS = [["replay"], ["info", "--skipped"], ["render", "--format", "folded", "-o", "-"],
            ["replay", "--json", "--events"], ["replay", "--skb", "1"], ["replay", "--drops"],
            ["replay", "--lenient"], ["render", "--format", "dot", "-o", "-"]]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_fuzz_crafted_traces(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.skbtrace"
    runner = CliRunner()
    start_rss = _rss_mb()
    seen = {"examples": 0, "exit0": 0, "exit2": 0}

    def check(data: bytes, command: list[str]) -> None:
        path.write_bytes(data)
        result = runner.invoke(cli.main, [command[0], str(path), *command[1:]],
                               env={"COLUMNS": "200"})
        assert result.exit_code in (0, 2), (command, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            command, repr(result.exception))
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            # Bad input is one line (click's usage errors aside: none here).
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert _rss_mb() - start_rss < RSS_GROWTH_MB, _rss_mb()
        seen["examples"] += 1
        seen["exit0" if result.exit_code == 0 else "exit2"] += 1

    deadline = time.monotonic() + BUDGET_S
    batch = 0
    while time.monotonic() < deadline:
        run = seed(BASE_SEED + batch)(
            settings(max_examples=BATCH, deadline=None, database=None, derandomize=False,
                     suppress_health_check=list(HealthCheck))(
                given(crafted_traces(), st.sampled_from(COMMANDS))(check)))
        run()
        batch += 1
    # Both outcomes happened: the fuzzer made valid traces and bad ones.
    assert seen["exit0"] > 0 and seen["exit2"] > 0, seen
    print(f"fuzz: {seen['examples']} examples in {batch} batches, {seen}")
