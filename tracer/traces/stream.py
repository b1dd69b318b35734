"""Reading a trace file as a bounded stream: which files are read, and capped decompression.

A trace is untrusted (tracer/traces/schema.py checks its records): only
regular files are opened (a FIFO with no writer would hang, /dev/zero never
ends), stdin only when named ``-``, and an EVENTS record's zlib data is
decompressed a chunk at a time, up to DECOMPRESS_RATIO times its length.
"""

from __future__ import annotations

import os
import stat
import sys
import zlib
from typing import IO

from skbpath.tracer.errors import TraceFormatError
from skbpath.tracer.traces.schema import SchemaError

MAX_RECORD = 256 << 20  # no record is longer (its header says so, or it is damaged)

# A zlib EVENTS record may grow at most this many times when decompressed,
# the way a zip reader refuses a bomb: real events compress 5-8 times.
DECOMPRESS_RATIO = 32
CHUNK = 1 << 20  # bytes read or decompressed at a time


def open_trace(path: str) -> tuple[IO[bytes], int | None]:
    """The trace's byte stream and its size; only regular files, or stdin as ``-``."""
    if path == "-":
        return sys.stdin.buffer, None
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang before it is refused.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise TraceFormatError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise TraceFormatError(f"{path}: is a directory, not a trace file") from exc
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot be read ({exc.strerror})") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(st.st_mode) else (
            "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file")
        if stat.S_ISDIR(st.st_mode):
            raise TraceFormatError(f"{path}: is a directory, not a trace file")
        raise TraceFormatError(f"{path}: is {what}; to read a stream, give - and "
                               "send it to stdin")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st.st_size


def inflate(payload: bytes, keep: bool = True) -> tuple[bytes, int]:
    """zlib ``payload`` decompressed within its cap: (the data, or b"" without ``keep``; its size).

    Raises SchemaError for a bomb (more than DECOMPRESS_RATIO times the
    payload), undecodable data, or data that does not end with the payload.
    """
    cap = min(DECOMPRESS_RATIO * len(payload) + 4096, MAX_RECORD)
    unz = zlib.decompressobj()
    parts: list[bytes] = []
    total = 0
    data = payload
    try:
        while True:
            out = unz.decompress(data, min(CHUNK, cap + 1 - total))
            total += len(out)
            if keep:
                parts.append(out)
            data = unz.unconsumed_tail
            if total > cap:
                raise SchemaError("", f"decompresses to more than {cap:,d} bytes "
                                      f"({DECOMPRESS_RATIO}x its length): refused")
            if unz.eof or not out:
                break
    except zlib.error as exc:
        raise SchemaError("", "undecodable zlib data") from exc
    if not unz.eof or unz.unused_data:
        raise SchemaError("", "zlib data does not end where the record does")
    return b"".join(parts), total
