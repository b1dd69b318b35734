"""The bulk ring-buffer reader on a ring buffer laid out in memory as the kernel lays it out."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from skbpath.tracer.record.bpf.ringbuf import (
    BUSY_BIT,
    DISCARD_BIT,
    RingbufError,
    RingReader,
    record_stride,
)


class FakeRing:
    """A kernel-style ring: positions on their own pages, the data area mirrored (mapped twice)."""

    def __init__(self, size: int, record_size: int) -> None:
        self.size = size
        self.record_size = record_size
        self.consumer = np.zeros(1, dtype="<u8")
        self.producer = np.zeros(1, dtype="<u8")
        self.data = np.zeros(2 * size, dtype=np.uint8)
        self.reader = RingReader(self.consumer, self.producer, self.data, size, record_size)

    def _put(self, pos: int, raw: bytes) -> None:
        # What the second mapping of the data pages shows: one write, two places.
        for i, b in enumerate(raw):
            off = (pos + i) % self.size
            self.data[off] = b
            self.data[off + self.size] = b

    def reserve(self, body: bytes, flags: int = BUSY_BIT) -> int:
        """Reserve a record as bpf_ringbuf_reserve does (busy), write its body; return its place."""
        assert len(body) == self.record_size
        pos = int(self.producer[0])
        free = self.size - (pos - int(self.consumer[0]))
        stride = record_stride(self.record_size)
        assert stride <= free, "the fake ring is full"
        self._put(pos, struct.pack("<II", self.record_size | flags, 0) + body)
        self.producer[0] = pos + stride
        return pos

    def commit(self, pos: int, discard: bool = False) -> None:
        """bpf_ringbuf_submit / _discard: clear the busy bit (maybe set discard)."""
        self._put(pos, struct.pack("<I", self.record_size | (DISCARD_BIT if discard else 0)))

    def submit(self, body: bytes) -> None:
        self.commit(self.reserve(body))


def body(i: int, size: int = 40) -> bytes:
    return struct.pack("<Q", i) + bytes([i % 251]) * (size - 8)


def test_reads_committed_records_in_order_and_advances_the_consumer() -> None:
    ring = FakeRing(4096, 40)
    for i in range(10):
        ring.submit(body(i))
    out = ring.reader.read()
    assert out.shape == (10, 40)
    assert [struct.unpack_from("<Q", row)[0] for row in out] == list(range(10))
    assert out.tobytes() == b"".join(body(i) for i in range(10))
    assert int(ring.consumer[0]) == 10 * 48 == int(ring.producer[0])
    assert ring.reader.read().shape == (0, 40)
    assert ring.reader.records == 10


def test_stops_at_a_busy_record_and_resumes_once_committed() -> None:
    ring = FakeRing(4096, 40)
    ring.submit(body(0))
    busy = ring.reserve(body(1))
    ring.submit(body(2))  # committed, but behind a busy one: must wait
    out = ring.reader.read()
    assert [struct.unpack_from("<Q", r)[0] for r in out] == [0]
    assert int(ring.consumer[0]) == 48
    ring.commit(busy)
    out = ring.reader.read()
    assert [struct.unpack_from("<Q", r)[0] for r in out] == [1, 2]
    assert int(ring.consumer[0]) == 3 * 48


def test_a_busy_first_record_yields_nothing_and_keeps_the_position() -> None:
    ring = FakeRing(4096, 40)
    ring.reserve(body(0))
    assert len(ring.reader.read()) == 0
    assert int(ring.consumer[0]) == 0


def test_skips_discarded_records_but_consumes_them() -> None:
    ring = FakeRing(4096, 40)
    for i in range(5):
        pos = ring.reserve(body(i))
        ring.commit(pos, discard=i in (1, 3))
    out = ring.reader.read()
    assert [struct.unpack_from("<Q", r)[0] for r in out] == [0, 2, 4]
    assert ring.reader.discarded == 2
    assert int(ring.consumer[0]) == 5 * 48


def test_records_that_wrap_around_the_end_read_whole() -> None:
    # 56-byte records (v2) take 64 bytes: 1024 / 64 = 16 per lap; stride 88 (80-byte
    # records, a v1 tracepoint hit) does not divide the size, so records straddle the end.
    for record_size in (56, 80):
        ring = FakeRing(1024, record_size)
        seen: list[int] = []
        for lap in range(40):
            for i in range(5):
                ring.submit(body(lap * 5 + i, record_size))
            rows = ring.reader.read()
            assert all(r.tobytes() == body(int(struct.unpack_from("<Q", r)[0]), record_size)
                       for r in rows)
            seen.extend(int(struct.unpack_from("<Q", r)[0]) for r in rows)
        assert seen == list(range(200))
        assert int(ring.consumer[0]) > 4 * ring.size  # went around several times


def test_limit_and_read_all() -> None:
    ring = FakeRing(4096, 40)
    for i in range(20):
        ring.submit(body(i))
    assert len(ring.reader.read(limit=7)) == 7
    rest = ring.reader.read_all()
    assert [struct.unpack_from("<Q", r)[0] for r in rest] == list(range(7, 20))


def test_a_record_of_another_size_is_an_error_not_garbage() -> None:
    ring = FakeRing(4096, 40)
    ring.submit(body(0))
    ring._put(int(ring.producer[0]), struct.pack("<II", 32, 0))
    ring.producer[0] += 48
    with pytest.raises(RingbufError, match="record of 32 bytes"):
        ring.reader.read()


def test_sizes_must_be_a_doubly_mapped_power_of_two() -> None:
    pos = np.zeros(1, dtype="<u8")
    with pytest.raises(ValueError, match="power of two"):
        RingReader(pos, pos, np.zeros(2000, dtype=np.uint8), 1000, 40)
    with pytest.raises(ValueError, match="mapped twice"):
        RingReader(pos, pos, np.zeros(1024, dtype=np.uint8), 1024, 40)
    assert record_stride(40) == 48 and record_stride(56) == 64 and record_stride(44) == 56
