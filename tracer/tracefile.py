"""The skbpath trace file: a versioned stream of checksummed records.

Layout::

    magic    8 bytes  b"SKBPATH\\x00"
    version  u16      FORMAT_VERSION (little endian), then u16 reserved
    record*  type u8, flags u8, reserved u16, length u32, crc32 u32, payload

Record types:

    HEADER  JSON  format version, tool version, kernel, host, attach mode,
                  the function table with ids, skipped probes, filters
    EVENTS  raw   packed 40-byte events (tracer/events.py); flag 1 = zlib
    STACKS  JSON  {"stacks": {stack id: [frame, ...]}}: symbolised kernel stacks
    TASKS   JSON  {"tasks": {tgid: comm}}
    STATS   JSON  lost-event counts so far; the last one wins
    END     JSON  written on a clean stop: final counts and duration
    SOURCES JSON  source lines from DWARF (``--vmlinux``), appended after the
                  fact: {"functions": {name: {"file", "line", "layer"}},
                  "frames": {frame: [[function, file, line, inlined], ...]}};
                  records merge, later ones win

Everything is written as it happens, so a killed tracer leaves a file that
reads up to its last whole record; the reader reports the cut.  JSON and
packed integers only: no pickle, no eval.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import TraceFormatError
from .events import EVENT_SIZE, unpack_events

MAGIC = b"SKBPATH\x00"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sHH")
_RECORD = struct.Struct("<BBHII")
MAX_RECORD = 256 << 20

HEADER = 1
EVENTS = 2
STACKS = 3
TASKS = 4
STATS = 5
END = 6
SOURCES = 7
RECORD_NAMES = {HEADER: "header", EVENTS: "events", STACKS: "stacks", TASKS: "tasks",
                STATS: "stats", END: "end", SOURCES: "sources"}
FLAG_ZLIB = 1


class TraceWriter:
    """Writes a trace as a stream; every record is flushed when written."""

    def __init__(self, fh: IO[bytes], header: dict[str, Any], compress: bool = True) -> None:
        self.fh = fh
        self.compress = compress
        self.events_written = 0
        self.bytes_written = 0
        self._write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0))
        self.write_json(HEADER, header)

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
        """Write a batch of packed events (a multiple of 40 bytes)."""
        if not blob:
            return
        if len(blob) % EVENT_SIZE:
            raise ValueError("event batch is not a whole number of events")
        self.events_written += len(blob) // EVENT_SIZE
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
    """The metadata of a trace, gathered while its events are read."""

    header: dict[str, Any]
    stacks: dict[int, list[str]] = field(default_factory=dict)
    tasks: dict[int, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    # {"functions": {...}, "frames": {...}} merged from SOURCES records.
    sources: dict[str, Any] = field(default_factory=dict)
    events: int = 0
    records: int = 0
    truncated: str | None = None


def _open_error(path: str) -> TraceFormatError:
    if not os.path.exists(path):
        return TraceFormatError(f"{path}: no such file")
    if os.path.isdir(path):
        return TraceFormatError(f"{path}: is a directory, not a trace file")
    return TraceFormatError(f"{path}: cannot be read")


class TraceReader:
    """Reads a trace file record by record.

    Iterate :meth:`event_batches` to decode events; metadata records met on
    the way update :attr:`contents`.  A damaged or cut tail ends the stream
    and is described in ``contents.truncated``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as fh:
                self.data = fh.read()
        except OSError as exc:
            raise _open_error(path) from exc
        if len(self.data) < _PREAMBLE.size:
            raise TraceFormatError(f"{path}: not an skbpath trace (file is too short)")
        magic, version, _ = _PREAMBLE.unpack_from(self.data)
        if magic != MAGIC:
            raise TraceFormatError(f"{path}: not an skbpath trace (bad magic)")
        if version != FORMAT_VERSION:
            raise TraceFormatError(
                f"{path}: trace format version {version} is not supported "
                f"(this skbpath reads version {FORMAT_VERSION})"
            )
        self.pos = _PREAMBLE.size
        first = self._next_record()
        if first is None or first[0] != HEADER:
            raise TraceFormatError(f"{path}: not an skbpath trace (no header record)")
        header = self._json(first[2])
        if header.get("format") != "skbpath-trace":
            raise TraceFormatError(f"{path}: not an skbpath trace (header has no format tag)")
        self.contents = TraceContents(header=header)
        self.contents.records = 1

    def _json(self, payload: bytes) -> dict[str, Any]:
        try:
            obj = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TraceFormatError(f"{self.path}: corrupt JSON record") from exc
        if not isinstance(obj, dict):
            raise TraceFormatError(f"{self.path}: corrupt JSON record")
        return obj

    def _next_record(self) -> tuple[int, int, bytes] | None:
        """The next whole record, or None at the end or at a damaged tail."""
        data = self.data
        start = self.pos
        if start == len(data):
            return None
        if start + _RECORD.size > len(data):
            self._cut(start, "an incomplete record header")
            return None
        rtype, flags, _, length, crc = _RECORD.unpack_from(data, start)
        body = start + _RECORD.size
        if rtype not in RECORD_NAMES or length > MAX_RECORD:
            self._cut(start, "a damaged record")
            return None
        if body + length > len(data):
            self._cut(start, f"an incomplete {RECORD_NAMES[rtype]} record")
            return None
        payload = data[body : body + length]
        if zlib.crc32(payload) != crc:
            name = RECORD_NAMES[rtype]
            article = "an" if name[0] in "aeiou" else "a"
            self._cut(start, f"{article} {name} record with a bad checksum")
            return None
        self.pos = body + length
        return rtype, flags, payload

    def _cut(self, offset: int, what: str) -> None:
        msg = (
            f"trace ends with {what} at byte {offset} of {len(self.data)}; "
            "everything before it was read"
        )
        if hasattr(self, "contents"):
            self.contents.truncated = msg
        self.pos = len(self.data)

    def event_batches(self) -> Iterator[Iterator[tuple[int, ...]]]:
        """Yield decoded event batches in file order, reading metadata on the way."""
        c = self.contents
        while True:
            rec = self._next_record()
            if rec is None:
                return
            rtype, flags, payload = rec
            c.records += 1
            if rtype == EVENTS:
                if flags & FLAG_ZLIB:
                    try:
                        payload = zlib.decompress(payload)
                    except zlib.error:
                        self._cut(self.pos, "an undecodable events record")
                        return
                if len(payload) % EVENT_SIZE:
                    self._cut(self.pos, "an events record of a partial event")
                    return
                c.events += len(payload) // EVENT_SIZE
                yield unpack_events(payload)
            elif rtype == STACKS:
                for k, frames in self._json(payload).get("stacks", {}).items():
                    c.stacks[int(k)] = [str(f) for f in frames]
            elif rtype == TASKS:
                for k, comm in self._json(payload).get("tasks", {}).items():
                    c.tasks[int(k)] = str(comm)
            elif rtype == STATS:
                c.stats = self._json(payload)
            elif rtype == END:
                c.end = self._json(payload)
            elif rtype == SOURCES:
                for part, entries in self._json(payload).items():
                    if isinstance(entries, dict):
                        c.sources.setdefault(part, {}).update(entries)
            elif rtype == HEADER:
                self._cut(self.pos, "a second header")
                return

    def read_all(self) -> TraceContents:
        """Read every record (discarding events) and return the metadata."""
        for _batch in self.event_batches():
            pass  # events are counted from the record length; no need to decode
        return self.contents


def append_sources(path: str, sources: dict[str, Any]) -> None:
    """Append a SOURCES record to the trace at ``path``.

    The format is append-only, so the record goes at the end; the file must
    read as a whole trace first (a cut tail would hide the new record).
    """
    reader = TraceReader(path)
    reader.read_all()
    if reader.contents.truncated:
        raise TraceFormatError(f"{path}: cannot add source lines: {reader.contents.truncated}")
    payload = json.dumps(sources, sort_keys=True, separators=(",", ":")).encode()
    try:
        with open(path, "ab") as fh:
            fh.write(_RECORD.pack(SOURCES, 0, 0, len(payload), zlib.crc32(payload)) + payload)
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot add source lines ({exc.strerror})") from exc
