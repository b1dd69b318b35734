"""Reading ``--aggregate``'s call paths out of the kernel (the ``agg_paths`` map).

The BPF program keeps one value per call path and per CPU (struct agg_path
in probes/skbpath.bpf.c).  Each read copies every value out once, views it
as a numpy structured array and sums the CPUs: a few hundred paths cost a
few milliseconds, so user space can read once a second while the kernel
counts.  The calls still open when the trace stops join their paths as
``no_return``, as the kernel would have counted them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
from skbpath.tracer.model.aggregate import PathRow
from skbpath.tracer.record.bpf.frames import open_frames

AGG_HIST = 512  # buckets in struct agg_path (AGG_HIST in probes/skbpath.bpf.c)
AGG_DTYPE = np.dtype([
    ("parent", "<u8"), ("calls", "<u8"), ("no_return", "<u8"), ("total", "<u8"),
    ("self", "<u8"), ("min", "<u8"), ("max", "<u8"), ("func", "<u4"), ("pad", "<u4"),
    ("hist", "<u4", (AGG_HIST,)),
])


def row_from_cpus(path: int, cpus: np.ndarray) -> PathRow | None:
    """One path's row from its per-CPU values (an AGG_DTYPE array); None if none counted yet.

    Each CPU writes the path's parent and function into its own value at
    its first call there, so they are read from a CPU that counted.
    """
    used = cpus[(cpus["calls"] > 0) | (cpus["no_return"] > 0)]
    if not len(used):
        return None
    returned = used[used["calls"] > 0]
    hist = used["hist"].sum(axis=0, dtype=np.uint64)
    buckets = np.nonzero(hist)[0]
    return PathRow(
        id=path, parent=int(used["parent"][0]), func=int(used["func"][0]),
        calls=int(used["calls"].sum()), no_return=int(used["no_return"].sum()),
        total_ns=int(used["total"].sum()), self_ns=int(used["self"].sum()),
        min_ns=int(returned["min"].min()) if len(returned) else 0,
        max_ns=int(returned["max"].max()) if len(returned) else 0,
        hist=tuple((int(b), int(hist[b])) for b in buckets))


def read_paths(items: Iterable[tuple[Any, Any]]) -> list[PathRow]:
    """The rows of ``agg_paths`` items: (key, per-CPU value array) as bcc hands them out."""
    rows = []
    for key, value in items:
        cpus = np.frombuffer(memoryview(value).cast("B"), dtype=AGG_DTYPE)
        row = row_from_cpus(int(getattr(key, "value", key)), cpus)
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda r: r.id)
    return rows


def add_open_calls(rows: list[PathRow], frame_items: Iterable[tuple[int, Any]]
                   ) -> tuple[int, dict[int, int]]:
    """Count the calls left open in ``frame_stacks`` as ``no_return`` on their paths.

    ``rows`` is updated in place.  Returns how many calls were open, and the
    per-function counts of those with no skb call in them (empty calls, as
    the kernel counts them), as :func:`~.frames.open_frame_records` does.
    """
    by_id = {r.id: i for i, r in enumerate(rows)}
    opened = 0
    empty: dict[int, int] = {}
    for _tid, _cpu, fs, i, f, keep in open_frames(frame_items):
        opened += 1
        if not keep:
            empty[int(f.func)] = empty.get(int(f.func), 0) + 1
            continue
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
