"""A bulk reader of a BPF ring buffer map: records copied out in batches with numpy.

bcc's ``ring_buffer_poll`` calls back into Python once per record, which
costs more than the kernel's probe itself.  This reader maps the ring buffer
the way libbpf's ringbuf.c does and parses everything committed so far in
one pass:

* the consumer page, read-write, at offset 0 of the map fd (we own the
  consumer position);
* the producer page and then the data pages, read-only, at offset one
  page; the kernel maps the data pages twice in a row, so a record that
  wraps around the end is contiguous in the mapping;
* every record starts with an 8-byte header whose first u32 is the length,
  with ``BUSY_BIT`` set while the producer still writes it and
  ``DISCARD_BIT`` when it was discarded; records are 8-byte aligned.

All records of one ring buffer have the same size here (the BPF program
emits one fixed layout), so the committed region is a 2-D array of
``stride`` bytes per row: the headers are one column, the bodies a slice.
The reader stops at the first busy record, skips discarded ones and moves
the consumer position past what it copied.  The loads are ordered as x86's
TSO orders them (header before body); that is what libbpf's acquire loads
amount to there.
"""

from __future__ import annotations

import mmap
import select

import numpy as np
import numpy.typing as npt

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
LEN_MASK = DISCARD_BIT - 1


class RingbufError(Exception):
    """The ring buffer holds something this reader cannot parse (a record of another size)."""


def record_stride(size: int) -> int:
    """Bytes a record of ``size`` bytes takes in the ring: header plus body, 8-aligned."""
    return (size + HEADER_SIZE + 7) // 8 * 8


class RingReader:
    """Copies committed fixed-size records out of a ring buffer's memory, in bulk.

    ``consumer`` and ``producer`` are one-element u64 arrays on the two
    position pages; ``data`` is the data area mapped twice (``2 * size``
    bytes).  :meth:`from_map_fd` maps a real map; tests pass arrays.
    """

    def __init__(self, consumer: npt.NDArray[np.uint64], producer: npt.NDArray[np.uint64],
                 data: npt.NDArray[np.uint8], size: int, record_size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        if len(data) < 2 * size:
            raise ValueError("the data area must be mapped twice (2 * size bytes)")
        self.consumer = consumer
        self.producer = producer
        self.data = data
        self.size = size
        self.mask = size - 1
        self.record_size = record_size
        self.stride = record_stride(record_size)
        self.records = 0  # records copied out so far
        self.discarded = 0
        self._maps: list[mmap.mmap] = []
        self._epoll: select.epoll | None = None

    @classmethod
    def from_map_fd(cls, fd: int, size: int, record_size: int) -> RingReader:
        """Map the ring buffer map ``fd`` of ``size`` data bytes, as libbpf does; wake on epoll."""
        page = mmap.PAGESIZE
        cons_map = mmap.mmap(fd, page, flags=mmap.MAP_SHARED,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            data_map = mmap.mmap(fd, page + 2 * size, flags=mmap.MAP_SHARED,
                                 prot=mmap.PROT_READ, offset=page)
        except OSError:
            cons_map.close()
            raise
        consumer = np.frombuffer(cons_map, dtype="<u8", count=1)
        producer = np.frombuffer(data_map, dtype="<u8", count=1)
        data = np.frombuffer(data_map, dtype=np.uint8, offset=page)
        reader = cls(consumer, producer, data, size, record_size)
        reader._maps = [cons_map, data_map]
        reader._epoll = select.epoll()
        reader._epoll.register(fd, select.EPOLLIN)
        return reader

    def pending(self) -> int:
        """Bytes between the consumer and the producer position."""
        return int(self.producer[0]) - int(self.consumer[0])

    def wait(self, timeout: float) -> bool:
        """Sleep until the kernel signals data or ``timeout`` seconds pass; True if signalled."""
        if self._epoll is None:
            return self.pending() > 0
        try:
            return bool(self._epoll.poll(timeout))
        except InterruptedError:
            return False

    def read(self, limit: int | None = None) -> npt.NDArray[np.uint8]:
        """Copy out the committed records (at most ``limit``): one row of ``record_size`` each.

        Stops at a busy record; discarded records are skipped (counted in
        :attr:`discarded`); the consumer position moves past both.
        """
        cons = int(self.consumer[0])
        avail = int(self.producer[0]) - cons
        count = avail // self.stride
        if limit is not None:
            count = min(count, limit)
        if count <= 0:
            return np.empty((0, self.record_size), dtype=np.uint8)
        start = cons & self.mask
        rows = self.data[start : start + count * self.stride].reshape(count, self.stride)
        # The headers first (a copy), then the bodies: a header read as
        # committed guarantees its body is written.
        headers = np.ascontiguousarray(rows[:, :4]).view("<u4").ravel()
        busy = (headers & BUSY_BIT) != 0
        if busy.any():
            count = int(np.argmax(busy))
            rows, headers = rows[:count], headers[:count]
            if count == 0:
                return np.empty((0, self.record_size), dtype=np.uint8)
        lengths = headers & LEN_MASK
        if (lengths != self.record_size).any():
            bad = int(lengths[lengths != self.record_size][0])
            raise RingbufError(f"a ring buffer record of {bad} bytes; this reader expects "
                               f"{self.record_size}")
        keep = (headers & DISCARD_BIT) == 0
        body = rows[:, HEADER_SIZE : HEADER_SIZE + self.record_size]
        if keep.all():
            out = np.array(body, copy=True)
        else:
            out = body[keep]  # fancy indexing copies
            self.discarded += count - len(out)
        # Only now may the producer reuse the space.
        self.consumer[0] = cons + count * self.stride
        self.records += len(out)
        return out

    def read_all(self) -> npt.NDArray[np.uint8]:
        """Everything committed now, in one array (used at the end, after detaching)."""
        parts = []
        while True:
            part = self.read()
            if not len(part):
                break
            parts.append(part)
        if not parts:
            return np.empty((0, self.record_size), dtype=np.uint8)
        return np.concatenate(parts)

    def close(self) -> None:
        """Unmap and stop polling; the reader is unusable afterwards."""
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        # numpy views keep the maps exported: drop them before closing.
        del self.consumer, self.producer, self.data
        for m in self._maps:
            m.close()
        self._maps = []


def map_fd_size(fd: int) -> int:
    """The data size of ring buffer map ``fd``, from /proc/self/fdinfo (its max_entries)."""
    with open(f"/proc/self/fdinfo/{fd}") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.strip() == "max_entries":
                return int(value)
    raise RingbufError(f"fd {fd} has no max_entries in /proc/self/fdinfo: not a BPF map")
