"""The trace file format: roundtrip, truncation, corruption and header errors."""

from __future__ import annotations

import io
import os
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from skbpath.tracer.errors import TraceFormatError
from skbpath.tracer.traces.events import EVENT_SIZE, pack_events
from skbpath.tracer.traces.tracefile import (
    END,
    EVENTS,
    FLAG_ZLIB,
    FORMAT_VERSION,
    MAGIC,
    STACKS,
    STATS,
    TASKS,
    TraceReader,
    TraceWriter,
)

from tests.synth import demo_table, tx_rx_stream

_RECORD = struct.Struct("<BBHII")


def synthetic_header() -> dict[str, Any]:
    """The header of a synthetic trace over tests.synth.demo_table()."""
    return {
        "format": "skbpath-trace",
        "version": 1,
        "tool_version": "test",
        "kernel": "synthetic",
        "host": "test",
        "attach": "kprobe",
        "functions": demo_table().to_json(),
        "skipped": [],
        "filters": {},
    }


def write_synthetic_trace(path: Path, packets: int = 50, compress: bool = True) -> None:
    """The simplest synthetic trace: a header, one events record and the end record."""
    with open(path, "wb") as fh:
        w = TraceWriter(fh, synthetic_header(), compress=compress, version=1)
        w.write_events(pack_events(tx_rx_stream(packets)))
        w.write_json(END, {"events": w.events_written, "duration_s": 0.1})
        w.close()


@dataclass
class Layout:
    """A written trace and where its records end."""

    data: bytes
    header_end: int
    # (end offset of a record, events in whole records up to there)
    boundaries: list[tuple[int, int]] = field(default_factory=list)
    events: list[tuple[int, ...]] = field(default_factory=list)


def write_layout(compress: bool = True, batches: int = 6) -> Layout:
    """A trace with several events records interleaved with metadata records."""
    stream = [tuple(e) for e in tx_rx_stream(60)]
    buf = io.BytesIO()
    w = TraceWriter(buf, synthetic_header(), compress=compress, version=1)
    layout = Layout(b"", w.bytes_written, events=stream)
    per = -(-len(stream) // batches)
    done = 0
    for i in range(batches):
        chunk = stream[i * per : (i + 1) * per]
        w.write_events(pack_events(chunk))
        done += len(chunk)
        layout.boundaries.append((w.bytes_written, done))
        w.write_json(STACKS, {"stacks": {str(i): [f"frame{i}_a", f"frame{i}_b"]}})
        layout.boundaries.append((w.bytes_written, done))
        w.write_json(TASKS, {"tasks": {str(100 + i): f"task{i}"}})
        layout.boundaries.append((w.bytes_written, done))
        w.write_json(STATS, {"lost": {"ringbuf_lost": i}})
        layout.boundaries.append((w.bytes_written, done))
    w.write_json(END, {"events": done, "duration_s": 1.5})
    layout.boundaries.append((w.bytes_written, done))
    layout.data = buf.getvalue()
    assert len(layout.data) == w.bytes_written
    return layout


def read_events(path: Path) -> tuple[list[tuple[int, ...]], TraceReader]:
    reader = TraceReader(str(path))
    events = [ev for batch in reader.event_batches() for ev in batch]
    return events, reader


# ---------------------------------------------------------------- roundtrip
@pytest.mark.parametrize("compress", [True, False], ids=["zlib", "raw"])
def test_roundtrip(tmp_path: Path, compress: bool) -> None:
    layout = write_layout(compress=compress)
    path = tmp_path / "t.skbtrace"
    path.write_bytes(layout.data)
    events, reader = read_events(path)
    c = reader.contents
    assert events == layout.events
    assert c.events == len(layout.events)
    assert c.header == synthetic_header()
    assert c.stacks == {i: [f"frame{i}_a", f"frame{i}_b"] for i in range(6)}
    assert c.tasks == {100 + i: f"task{i}" for i in range(6)}
    assert c.stats == {"lost": {"ringbuf_lost": 5}}  # the last STATS record wins
    assert c.end == {"events": len(layout.events), "duration_s": 1.5}
    assert c.records == 1 + 6 * 4 + 1
    assert c.truncated is None


def test_compression_flag_and_size() -> None:
    zipped = write_layout(compress=True)
    raw = write_layout(compress=False)
    assert len(zipped.data) < len(raw.data)
    first = zipped.header_end
    rtype, flags, _, _, _ = _RECORD.unpack_from(zipped.data, first)
    assert (rtype, flags & FLAG_ZLIB) == (EVENTS, FLAG_ZLIB)
    rtype, flags, _, length, _ = _RECORD.unpack_from(raw.data, raw.header_end)
    assert (rtype, flags) == (EVENTS, 0)
    assert length % EVENT_SIZE == 0


def test_read_all_counts_without_decoding(tmp_path: Path) -> None:
    layout = write_layout()
    path = tmp_path / "t.skbtrace"
    path.write_bytes(layout.data)
    c = TraceReader(str(path)).read_all()
    assert c.events == len(layout.events)
    assert c.end is not None
    assert len(c.tasks) == 6


def test_writer_rejects_partial_events_and_skips_empty() -> None:
    buf = io.BytesIO()
    w = TraceWriter(buf, synthetic_header(), version=1)
    size = w.bytes_written
    w.write_events(b"")
    assert w.bytes_written == size
    with pytest.raises(ValueError, match="whole number"):
        w.write_events(b"\0" * (EVENT_SIZE + 1))
    assert w.events_written == 0


def test_preamble_layout() -> None:
    data = write_layout().data  # a version 1 trace
    assert data[:8] == MAGIC
    assert struct.unpack_from("<HH", data, 8) == (1, 0)
    buf = io.BytesIO()
    TraceWriter(buf, synthetic_header())
    assert FORMAT_VERSION == 2
    assert struct.unpack_from("<HH", buf.getvalue(), 8) == (FORMAT_VERSION, 0)


def test_synthetic_trace_helper(tmp_path: Path) -> None:
    path = tmp_path / "s.skbtrace"
    write_synthetic_trace(path, packets=5)
    events, reader = read_events(path)
    assert events == [tuple(e) for e in tx_rx_stream(5)]
    assert reader.contents.truncated is None


# ---------------------------------------------------------------- damage
def _expected_before(layout: Layout, cut: int) -> tuple[int, int]:
    """(offset of the last whole record's end at or before ``cut``, events before it)."""
    end, events = layout.header_end, 0
    for b_end, b_events in layout.boundaries:
        if b_end <= cut:
            end, events = b_end, b_events
    return end, events


@pytest.mark.parametrize("compress", [True, False], ids=["zlib", "raw"])
def test_truncation_at_random_offsets(tmp_path: Path, compress: bool) -> None:
    layout = write_layout(compress=compress)
    ends = {b for b, _ in layout.boundaries}
    rng = random.Random(1234)
    cuts = rng.sample(range(layout.header_end + 1, len(layout.data)), 10)
    for cut in cuts:
        path = tmp_path / f"cut{cut}.skbtrace"
        path.write_bytes(layout.data[:cut])
        events, reader = read_events(path)
        last_end, n = _expected_before(layout, cut)
        assert events == layout.events[:n], cut
        assert reader.contents.events == n
        msg = reader.contents.truncated
        if cut in ends:
            assert msg is None  # a cut on a record boundary is indistinguishable
        else:
            assert msg is not None
            assert msg.startswith("trace ends with an incomplete")
            assert f"at byte {last_end} of {cut}" in msg
            assert "everything before it was read" in msg


def test_truncated_record_header(tmp_path: Path) -> None:
    layout = write_layout()
    cut = layout.boundaries[0][0] + 5  # inside the second record's 12-byte header
    path = tmp_path / "t.skbtrace"
    path.write_bytes(layout.data[:cut])
    events, reader = read_events(path)
    assert len(events) == layout.boundaries[0][1]
    assert reader.contents.truncated is not None
    assert "incomplete record header" in reader.contents.truncated


@pytest.mark.parametrize("compress", [True, False], ids=["zlib", "raw"])
def test_flipped_byte_is_a_checksum_error(tmp_path: Path, compress: bool) -> None:
    layout = write_layout(compress=compress)
    # The third events record: flip a byte in the middle of its payload.
    third = [i for i, (_, n) in enumerate(layout.boundaries) if n][8]
    start = layout.boundaries[third - 1][0]
    end = layout.boundaries[third][0]
    rtype = layout.data[start]
    assert rtype == EVENTS
    data = bytearray(layout.data)
    data[(start + _RECORD.size + end) // 2] ^= 0xFF
    path = tmp_path / "t.skbtrace"
    path.write_bytes(bytes(data))
    events, reader = read_events(path)
    before = layout.boundaries[third - 1][1]
    assert events == layout.events[:before]
    msg = reader.contents.truncated
    assert msg is not None
    assert f"an events record with a bad checksum at byte {start}" in msg
    assert reader.contents.end is None


def test_unknown_record_type_is_a_damaged_record(tmp_path: Path) -> None:
    layout = write_layout()
    data = bytearray(layout.data)
    off = layout.boundaries[3][0]  # start of the second events record
    data[off] = 99
    path = tmp_path / "t.skbtrace"
    path.write_bytes(bytes(data))
    events, reader = read_events(path)
    assert events == layout.events[: layout.boundaries[3][1]]
    assert reader.contents.truncated is not None
    assert f"a damaged record at byte {off}" in reader.contents.truncated


def test_second_header_ends_the_stream(tmp_path: Path) -> None:
    buf = io.BytesIO()
    w = TraceWriter(buf, synthetic_header(), version=1)
    w.write_events(pack_events(tx_rx_stream(2)))
    w.write_json(1, synthetic_header())
    w.write_events(pack_events(tx_rx_stream(2)))
    path = tmp_path / "t.skbtrace"
    path.write_bytes(buf.getvalue())
    events, reader = read_events(path)
    assert len(events) == len(tx_rx_stream(2))
    assert reader.contents.truncated is not None
    assert "a second header" in reader.contents.truncated


# ---------------------------------------------------------------- header errors
def _header_record(payload: bytes, rtype: int = 1) -> bytes:
    import zlib

    return _RECORD.pack(rtype, 0, 0, len(payload), zlib.crc32(payload)) + payload


_PRE = MAGIC + struct.pack("<HH", FORMAT_VERSION, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "file is too short"),
        (MAGIC, "file is too short"),
        (b"NOTATRACE" * 4, "bad magic"),
        (MAGIC + struct.pack("<HH", 3, 0) + b"\0" * 20, "version 3 is not supported"),
        (_PRE, "no header record"),
        (_PRE + _header_record(b'{"a": 1}', rtype=EVENTS), "no header record"),
        (_PRE + _header_record(b'{"format": "other"}'), "header has no format tag"),
        (_PRE + _header_record(b"[1, 2]"), "header has no format tag"),
        (_PRE + _header_record(b"\xff\xfe{"), "bad header record at byte 12: not UTF-8"),
        (_PRE + _header_record(b'{"format": "skbpath-trace"}')[:-3], "no header record"),
    ],
    ids=[
        "empty",
        "magic-only",
        "bad-magic",
        "version",
        "no-records",
        "events-first",
        "no-format-tag",
        "json-not-object",
        "json-undecodable",
        "header-cut",
    ],
)
def test_header_problems_raise(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.skbtrace"
    path.write_bytes(data)
    with pytest.raises(TraceFormatError, match=message) as info:
        TraceReader(str(path))
    assert str(info.value).startswith(str(path))
    assert info.value.exit_code == 2


def test_header_cut_anywhere_raises(tmp_path: Path) -> None:
    data = write_layout().data
    header_end = write_layout().header_end
    for cut in range(0, header_end, max(1, header_end // 25)):
        path = tmp_path / "h.skbtrace"
        path.write_bytes(data[:cut])
        with pytest.raises(TraceFormatError):
            TraceReader(str(path))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="no such file"):
        TraceReader(str(tmp_path / "nope.skbtrace"))
    with pytest.raises(TraceFormatError, match="is a directory"):
        TraceReader(str(tmp_path))
    assert os.path.isdir(tmp_path)


def test_func_table_lookups_of_unknown_ids() -> None:
    table = demo_table()
    known = table.funcs[0]
    assert table.name_of(known.id) == known.name
    assert table.layer_of(known.id) == known.layer
    assert table.path_of(known.id) == known.path
    assert table.colour_of(known.id) == ("drop" if known.drop else known.layer)
    assert [table.frees_at(f.id) for f in table.funcs] == [f.frees for f in table.funcs]
    assert [table.drops_at(f.id) for f in table.funcs] == [f.drop for f in table.funcs]
    assert [table.fresh_at(f.id) for f in table.funcs] == [f.fresh for f in table.funcs]
    # An id the table does not have (a damaged trace) gets placeholders.
    for bad in (len(table.by_id), 65535, -1):
        assert table.name_of(bad) == f"func#{bad}"
        assert table.layer_of(bad) == table.path_of(bad) == table.colour_of(bad) == "?"
        assert not (table.frees_at(bad) or table.drops_at(bad) or table.fresh_at(bad))
