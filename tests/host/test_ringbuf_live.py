"""The bulk ring-buffer reader on a real BPF ring buffer of this host's kernel.

bench/drain.py's XDP program, run with BPF_PROG_TEST_RUN, writes numbered
records; the reader must get each exactly once and in order, across many
laps of a small ring (so records straddle its end and are read through the
double mapping), and a full ring must lose the overflow, not corrupt what
was kept.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from skbpath.tracer.lab.headers import headers_installed

from bench.drain import Producer
from tests.conftest import lab_unavailable

pytestmark = pytest.mark.host

PAGES = 64  # 256 KiB: 5461 records of 40 bytes (48 with the header) per lap


@pytest.fixture(scope="module")
def producer() -> Iterator[Producer]:
    if os.geteuid() != 0:
        lab_unavailable("loading BPF needs root")
    if not headers_installed():
        lab_unavailable("the lab kernel's headers are not installed (bcc compiles against them)")
    try:
        import bcc  # noqa: F401
    except ImportError:
        lab_unavailable("bcc's Python module is missing")
    p = Producer(PAGES, 40)
    yield p
    p.close()


def seqs(rows: np.ndarray) -> list[int]:
    return [struct.unpack_from("<Q", r.tobytes())[0] for r in rows]


def test_every_record_once_in_order_across_laps(producer: Producer) -> None:
    reader = producer.reader()
    try:
        reader.read_all()  # whatever an earlier test left
        got: list[int] = []
        for _ in range(12):  # 12 x 3000 x 48 bytes: over 6 laps of the ring
            producer.fill(3000)
            rows = reader.read_all()
            assert rows.shape == (3000, 40)
            got.extend(seqs(rows))
        first = got[0]
        assert got == list(range(first, first + 36000))
        assert int(reader.consumer[0]) > 6 * PAGES * 4096
    finally:
        reader.close()


def test_a_full_ring_keeps_a_whole_prefix(producer: Producer) -> None:
    reader = producer.reader()
    try:
        reader.read_all()
        producer.fill(10_000)  # more than one lap: the rest fails to reserve
        rows = reader.read_all()
        kept = seqs(rows)
        assert len(kept) == PAGES * 4096 // 48
        assert kept == list(range(kept[0], kept[0] + len(kept)))
        assert len(reader.read()) == 0 and reader.pending() == 0
    finally:
        reader.close()
