"""The skbpath trace file: a versioned stream of checksummed records.

Layout::

    magic    8 bytes  b"SKBPATH\\x00"
    version  u16      FORMAT_VERSION (little endian), then u16 reserved; versions
                      1 and 2 are read, 2 is written
    record*  type u8, flags u8, reserved u16, length u32, crc32 u32, payload

Record types:

    HEADER  JSON  format version, tool version, kernel, host, attach mode,
                  the function table with ids, skipped probes, filters
    EVENTS  raw   packed 40-byte events (tracer/traces/events.py); flag 1 = zlib
    STACKS  JSON  {"stacks": {stack id: [frame, ...]}}: symbolised kernel stacks
    TASKS   JSON  {"tasks": {tgid: comm}}
    STATS   JSON  lost-event counts so far; the last one wins
    END     JSON  written on a clean stop: final counts and duration
    SOURCES JSON  source lines from DWARF (``--vmlinux``), appended after the
                  fact: {"functions": {name: {"file", "line", "layer"}},
                  "frames": {frame: [[function, file, line, inlined], ...]}};
                  records merge, later ones win
    AGGREGATE JSON  ``--aggregate`` traces only: the call paths the kernel
                  counted, {"seconds": s, "paths": [{"id", "parent", "func",
                  "calls", "no_return", "total_ns", "self_ns", "min_ns",
                  "max_ns", "hist": {bucket: n}}, ...]}; cumulative, the
                  last one wins (tracer/model/aggregate.py reads it)

Everything is written as it happens, so a killed tracer leaves a file that
reads up to its last whole record; the reader reports the cut (a trace with
no END record is reported too, even when cut on a record boundary).  JSON
and packed integers only: no pickle, no eval.

A trace is untrusted input.  The reader streams the file (a record at a
time), reads only regular files (or stdin as ``-``), decompresses an EVENTS
record only up to DECOMPRESS_RATIO times its length (tracer/traces/stream.py),
and checks every JSON record against tracer/traces/schema.py before anything
uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from skbpath.tracer.errors import TraceFormatError
from skbpath.tracer.traces import schema
from skbpath.tracer.traces.events import unpack_calls, unpack_events
from skbpath.tracer.traces.stream import CHUNK as _CHUNK
from skbpath.tracer.traces.stream import DECOMPRESS_RATIO as DECOMPRESS_RATIO
from skbpath.tracer.traces.stream import MAX_RECORD, inflate, open_trace

MAGIC = b"SKBPATH\x00"
FORMAT_VERSION = 2
# The versions this reader decodes (schema.VERSIONS lists those it can check).
SUPPORTED_VERSIONS = (1, 2)
_PREAMBLE = struct.Struct("<8sHH")
_RECORD = struct.Struct("<BBHII")

HEADER = 1
EVENTS = 2
STACKS = 3
TASKS = 4
STATS = 5
END = 6
SOURCES = 7
AGGREGATE = 8
RECORD_NAMES = {HEADER: "header", EVENTS: "events", STACKS: "stacks", TASKS: "tasks",
                STATS: "stats", END: "end", SOURCES: "sources", AGGREGATE: "aggregate"}
FLAG_ZLIB = 1


class TraceWriter:
    """Writes a trace as a stream; every record is flushed when written.

    ``version`` 1 is for tests and tools that make version 1 traces (the
    tracer writes version 2, the header's "version" says the same).
    """

    def __init__(self, fh: IO[bytes], header: dict[str, Any], compress: bool = True,
                 version: int = FORMAT_VERSION) -> None:
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"no trace format version {version}")
        self.version = version
        self.record_size = schema.record_size(version)
        self.fh = fh
        self.compress = compress
        self.events_written = 0
        self.bytes_written = 0
        self._write(_PREAMBLE.pack(MAGIC, version, 0))
        self.write_json(HEADER, {**header, "version": version})

    def _write(self, data: bytes) -> None:
        self.fh.write(data)
        self.bytes_written += len(data)

    def _record(self, rtype: int, payload: bytes, flags: int = 0) -> None:
        self._write(_RECORD.pack(rtype, flags, 0, len(payload), zlib.crc32(payload)))
        self._write(payload)
        self.fh.flush()

    def write_json(self, rtype: int, obj: dict[str, Any]) -> None:
        """Write a JSON record (sorted keys, so files are reproducible)."""
        self._record(rtype, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())

    def write_events(self, blob: bytes) -> None:
        """Write a batch of packed records as is (v2 calls, v1 events: the writer's version)."""
        if not blob:
            return
        if len(blob) % self.record_size:
            raise ValueError("event batch is not a whole number of records")
        self.events_written += len(blob) // self.record_size
        if self.compress:
            self._record(EVENTS, zlib.compress(blob, 1), FLAG_ZLIB)
        else:
            self._record(EVENTS, blob)

    def close(self) -> None:
        """Flush and sync the file (the caller closes it)."""
        self.fh.flush()
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.fsync(self.fh.fileno())  # fails when not a real file (BytesIO, pipe)


@dataclass
class TraceContents:
    """The metadata of a trace, gathered while its events are read (all of it checked by schema)."""

    header: dict[str, Any]
    stacks: dict[int, list[str]] = field(default_factory=dict)
    tasks: dict[int, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    # {"functions": {...}, "frames": {...}} merged from SOURCES records.
    sources: dict[str, Any] = field(default_factory=dict)
    # The last AGGREGATE record (--aggregate traces), None in an events trace.
    aggregate: dict[str, Any] | None = None
    events: int = 0
    # False when EVENTS records were skipped unread (``read_all(count_events=False)``).
    events_counted: bool = True
    records: int = 0
    truncated: str | None = None
    # True when the tail is damaged (not just missing its END record).
    damaged: bool = False
    # Bad records skipped under ``lenient``, one line each.
    skipped: list[str] = field(default_factory=list)


class TraceReader:
    """Reads a trace file record by record, streaming (never the whole file at once).

    Iterate :meth:`event_batches` to decode events; metadata records met on
    the way update :attr:`contents`, each checked by :mod:`schema` first.  A
    damaged or cut tail ends the stream and is described in
    ``contents.truncated``.  A record whose checksum is right but whose
    content is not (a crafted file) raises TraceFormatError naming the
    record, its offset and the field; with ``lenient`` it is skipped and
    described in ``contents.skipped``.  ``path`` ``-`` reads stdin.
    """

    def __init__(self, path: str, *, lenient: bool = False) -> None:
        self.path = path
        self.lenient = lenient
        self.fh, self.size = open_trace(path)
        self.pos = 0
        try:
            self._start(path)
        except BaseException:
            self.close()
            raise

    def _start(self, path: str) -> None:
        """Read the preamble and the header (TraceFormatError if they are not a trace's)."""
        pre = self._read(_PREAMBLE.size)
        if len(pre) < _PREAMBLE.size:
            raise TraceFormatError(f"{path}: not an skbpath trace (file is too short)")
        magic, version, _ = _PREAMBLE.unpack(pre)
        if magic != MAGIC:
            raise TraceFormatError(f"{path}: not an skbpath trace (bad magic)")
        if version not in SUPPORTED_VERSIONS:
            raise TraceFormatError(
                f"{path}: trace format version {version} is not supported "
                f"(this skbpath reads version {', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        self.version = version
        self._tail: tuple[int, str] | None = None
        first = self._next_record()
        if first is None or first[0] != HEADER:
            raise TraceFormatError(f"{path}: not an skbpath trace (no header record)")
        try:
            obj = schema.decode_json(first[2] or b"")
            if not isinstance(obj, dict) or obj.get("format") != "skbpath-trace":
                raise TraceFormatError(f"{path}: not an skbpath trace (header has no format tag)")
            header = schema.check_record("header", obj, version)
        except schema.SchemaError as exc:
            raise TraceFormatError(self._bad("header", first[3], exc)) from exc
        self.contents = TraceContents(header=header)
        self.contents.records = 1
        if self._tail is not None:
            self._cut(*self._tail)

    def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes, in chunks (a short read is the end of the stream)."""
        parts: list[bytes] = []
        while n > 0:
            part = self.fh.read(min(n, _CHUNK))
            if not part:
                break
            parts.append(part)
            n -= len(part)
        data = b"".join(parts)
        self.pos += len(data)
        return data

    def _skip(self, n: int) -> tuple[int, int]:
        """Read past ``n`` bytes without keeping them: (bytes read, their crc32)."""
        crc = got = 0
        while got < n:
            part = self.fh.read(min(n - got, _CHUNK))
            if not part:
                break
            crc = zlib.crc32(part, crc)
            got += len(part)
        self.pos += got
        return got, crc

    def _bad(self, name: str, offset: int, exc: Exception) -> str:
        return f"{self.path}: bad {name} record at byte {offset}: {exc}"

    def _next_record(self, keep_events: bool = True
                     ) -> tuple[int, int, bytes | None, int] | None:
        """The next whole record (type, flags, payload, offset), or None at the end or a cut.

        An EVENTS payload is checked and dropped unread (None) unless ``keep_events``.
        """
        start = self.pos
        head = self._read(_RECORD.size)
        if not head:
            return None
        if len(head) < _RECORD.size:
            self._end_at(start, "an incomplete record header")
            return None
        rtype, flags, _, length, crc = _RECORD.unpack(head)
        if rtype not in RECORD_NAMES or length > MAX_RECORD:
            self._end_at(start, "a damaged record")
            return None
        name = RECORD_NAMES[rtype]
        if self.size is not None and self.pos + length > self.size:
            # Known before reading: a cut record is not read at all.
            self._end_at(start, f"an incomplete {name} record")
            return None
        payload: bytes | None
        if rtype == EVENTS and not keep_events:
            got, got_crc = self._skip(length)
            payload = None
        else:
            payload = self._read(length)
            got, got_crc = len(payload), zlib.crc32(payload)
        if got < length:
            self._end_at(start, f"an incomplete {name} record")
            return None
        if got_crc != crc:
            article = "an" if name[0] in "aeiou" else "a"
            self._end_at(start, f"{article} {name} record with a bad checksum")
            return None
        return rtype, flags, payload, start

    def _end_at(self, offset: int, what: str) -> None:
        if hasattr(self, "contents"):
            self._cut(offset, what)
        else:
            self._tail = (offset, what)

    def _cut(self, offset: int, what: str) -> None:
        size = f" of {self.size}" if self.size is not None else ""
        self.contents.damaged = True
        self.contents.truncated = (
            f"trace ends with {what} at byte {offset}{size}; everything before it was read"
        )

    def _events(self, flags: int, payload: bytes, keep: bool = True) -> tuple[bytes, int]:
        """An EVENTS payload, decompressed within its cap, and its length in bytes.

        Without ``keep`` it is only counted (b"" is returned).  Raises
        SchemaError for a bomb, bad zlib data or a partial record.
        """
        if flags & FLAG_ZLIB:
            blob, total = inflate(payload, keep)
        else:
            blob, total = (payload if keep else b""), len(payload)
        size = schema.record_size(self.version)
        if total % size:
            raise schema.SchemaError("", f"{total:,d} bytes is not a whole number "
                                         f"of {size}-byte records")
        return blob, total

    def _reject(self, message: str) -> None:
        """A bad record: an error, or under ``lenient`` a line in ``contents.skipped``."""
        if not self.lenient:
            raise TraceFormatError(message)
        self.contents.skipped.append(message)

    def event_batches(self, decode: bool = True, count: bool = True
                      ) -> Iterator[Iterator[tuple[int, ...]]]:
        """Yield decoded event batches in file order, reading metadata on the way.

        With ``decode`` False nothing is yielded: EVENTS records are only
        counted, or with ``count`` False too only checksummed, never
        decompressed (``contents.events_counted`` is then False).
        """
        c = self.contents
        if not decode and not count:
            c.events_counted = False
        try:
            while True:
                rec = self._next_record(keep_events=decode or count)
                if rec is None:
                    break
                rtype, flags, payload, offset = rec
                name = RECORD_NAMES[rtype]
                c.records += 1
                if rtype == HEADER:
                    self._cut(offset, "a second header")
                    break
                if payload is None:
                    continue
                try:
                    if rtype == EVENTS:
                        blob, size = self._events(flags, payload, keep=decode)
                        c.events += size // schema.record_size(self.version)
                        if decode:
                            yield (unpack_calls if self.version == 2 else unpack_events)(blob)
                    else:
                        self._metadata(rtype, schema.load_record(name, payload, self.version))
                except schema.SchemaError as exc:
                    self._reject(self._bad(name, offset, exc))
            if c.end is None and c.truncated is None:
                c.truncated = (f"trace has no end record after byte {self.pos}: the tracer "
                               "did not stop cleanly or the file was cut on a record "
                               "boundary; everything before it was read")
        finally:
            self.close()

    def _metadata(self, rtype: int, obj: dict[str, Any]) -> None:
        c = self.contents
        if rtype == STACKS:
            c.stacks.update(obj.get("stacks", {}))
        elif rtype == TASKS:
            c.tasks.update(obj.get("tasks", {}))
        elif rtype == STATS:
            c.stats = obj
        elif rtype == END:
            c.end = obj
        elif rtype == AGGREGATE:
            c.aggregate = obj
        elif rtype == SOURCES:
            for part, entries in obj.items():
                c.sources.setdefault(part, {}).update(entries)

    def read_all(self, count_events: bool = True) -> TraceContents:
        """Read every record (discarding events) and return the metadata.

        Events are counted a chunk at a time, never unpacked; ``count_events``
        False skips EVENTS records after their checksum, so ``contents.events``
        stays 0 (``skbpath info`` takes the count from END).
        """
        for _batch in self.event_batches(decode=False, count=count_events):
            pass  # nothing is yielded without decode
        return self.contents

    def close(self) -> None:
        """Close the file (not stdin)."""
        if self.fh is not sys.stdin.buffer:
            self.fh.close()


def append_sources(path: str, sources: dict[str, Any]) -> None:
    """Append a SOURCES record to the trace at ``path``.

    The format is append-only, so the record goes at the end; the file must
    read as a whole trace first (a cut tail would hide the new record).
    """
    if path == "-":
        raise TraceFormatError("cannot add source lines to stdin")
    reader = TraceReader(path)
    reader.read_all(count_events=False)
    if reader.contents.damaged and reader.contents.truncated:
        raise TraceFormatError(f"{path}: cannot add source lines: {reader.contents.truncated}")
    payload = json.dumps(sources, sort_keys=True, separators=(",", ":")).encode()
    try:
        with open(path, "ab") as fh:
            fh.write(_RECORD.pack(SOURCES, 0, 0, len(payload), zlib.crc32(payload)) + payload)
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot add source lines ({exc.strerror})") from exc
