"""Reading ``--aggregate``'s call paths out of the kernel (the ``agg_paths`` map).

The BPF program keeps one value per call path (struct agg_path in
probes/skbpath.bpf.c), counted by every CPU with atomic adds.  Each read
copies every value out at once (BPF_MAP_LOOKUP_BATCH into a numpy
structured array): a few hundred paths cost a few milliseconds, so user
space can read once a second while the kernel counts.  The calls still
open when the trace stops join their paths as ``no_return``, as the kernel
would have counted them.
"""

from __future__ import annotations

import ctypes as ct
import dataclasses
import errno
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from skbpath.tracer.model.aggregate import PathRow
from skbpath.tracer.record.bpf.frames import kept_open_frames

AGG_HIST = 512  # buckets in struct agg_path (AGG_HIST in probes/skbpath.bpf.c)
AGG_DTYPE = np.dtype([
    ("parent", "<u8"), ("calls", "<u8"), ("no_return", "<u8"), ("total", "<u8"),
    ("self", "<u8"), ("min", "<u8"), ("max", "<u8"), ("func", "<u4"), ("pad", "<u4"),
    ("hist", "<u4", (AGG_HIST,)),
])


def row_of(path: int, v: np.void) -> PathRow | None:
    """One path's row from its value (an AGG_DTYPE record); None if nothing counted yet.

    A path is inserted before its first call is counted, so a read can see
    it empty for a moment.
    """
    calls, no_return = int(v["calls"]), int(v["no_return"])
    if not calls and not no_return:
        return None
    hist = v["hist"]
    return PathRow(
        id=path, parent=int(v["parent"]), func=int(v["func"]), calls=calls,
        no_return=no_return, total_ns=int(v["total"]), self_ns=int(v["self"]),
        # A path with no returned call still has the kernel's "no minimum yet".
        min_ns=int(v["min"]) if calls else 0, max_ns=int(v["max"]) if calls else 0,
        hist=tuple((int(b), int(hist[b])) for b in np.nonzero(hist)[0]))


def lookup_all(fd: int, max_entries: int, lookup_batch: Callable[..., int]
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """Every key and value of the map, by BPF_MAP_LOOKUP_BATCH straight into numpy arrays.

    ``lookup_batch`` is libbpf's ``bpf_map_lookup_batch`` (bcc's ``lib.bpf_lookup_batch``).
    None where the kernel has no batch lookup (EINVAL: before 5.6).  Not bcc's
    items_lookup_batch: it passes one variable as both the batch token and the
    count, so a read while the kernel adds paths stopped early (4 paths of 131
    were seen once), and it builds a ctypes object per value.
    """
    keys = np.empty(max_entries, dtype="<u8")
    values = np.empty(max_entries, dtype=AGG_DTYPE)
    token_in, token_out = ct.c_uint32(0), ct.c_uint32(0)
    total = 0
    while total < max_entries:
        count = ct.c_uint32(max_entries - total)
        res = lookup_batch(fd, ct.byref(token_in) if total else None, ct.byref(token_out),
                           keys.ctypes.data + total * keys.itemsize,
                           values.ctypes.data + total * values.itemsize, ct.byref(count))
        err = ct.get_errno()
        total += count.value
        if res != 0:
            if err == errno.ENOENT:
                break  # the whole map was read
            if err == errno.EINVAL and not total:
                return None
            raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
        if not count.value:
            break
        token_in.value = token_out.value
    return keys[:total], values[:total]


def paths_of_arrays(keys: np.ndarray, values: np.ndarray) -> list[PathRow]:
    """The rows of the map's keys and values (as :func:`lookup_all` returns them), by id."""
    rows = [row_of(int(k), v) for k, v in zip(keys.tolist(), values, strict=True)]
    return sorted((r for r in rows if r is not None), key=lambda r: r.id)


def read_paths(items: Iterable[tuple[Any, Any]]) -> list[PathRow]:
    """The rows of ``agg_paths`` items, (key, struct agg_path) as bcc hands them out, by id."""
    rows = []
    for key, value in items:
        v = np.frombuffer(memoryview(value).cast("B"), dtype=AGG_DTYPE)[0]
        row = row_of(int(getattr(key, "value", key)), v)
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda r: r.id)
    return rows


def add_open_calls(rows: list[PathRow], frame_items: Iterable[tuple[Any, Any]]
                   ) -> tuple[int, dict[int, int]]:
    """Count the calls left open in ``frame_stacks`` as ``no_return`` on their paths.

    ``rows`` is updated in place.  Returns how many calls were open, and the
    per-function counts of those with no skb call in them (empty calls, as
    the kernel counts them), as :func:`~.frames.open_frame_records` does.
    """
    by_id = {r.id: i for i, r in enumerate(rows)}
    kept, opened, empty = kept_open_frames(frame_items)
    for _tid, _cpu, fs, i, f in kept:
        path = int(f.path)
        parent = int(fs.f[i - 1].path) if i > 0 and int(f.base) != i else 0
        at = by_id.get(path)
        if at is None:
            by_id[path] = len(rows)
            rows.append(PathRow(id=path, parent=parent, func=int(f.func), calls=0, no_return=1))
        else:
            r = rows[at]
            rows[at] = dataclasses.replace(r, no_return=r.no_return + 1)
    return opened, empty
