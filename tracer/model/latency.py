"""A packet's own latency: how long the stack took with it, and how long it lived.

A journey's steps include calls without an skb that enclose the packet's
(the syscall, the NAPI poll that handled dozens of packets).  They are
context, never part of a packet's figures:

* **stack latency**: from the packet's first own step (the driver handing it
  up, or its first skb call on transmit) to the first *stage* it reached:
  queued on a socket (the catalog's ``stage = "queued"`` functions, at their
  return), handed to the driver's transmit (at its return: sent, or
  forwarded), or dropped (at the drop's entry).  A received packet that
  reached none of them ends at the entry of its last transport step
  (``until`` says which end was taken).  A packet GRO merged into another
  skb ends where that head skb's stack latency ends: it was delivered with it.
* **lifetime**: from the same first step to its last skb's last step,
  usually the free (for TCP's sent skbs, the ACK that frees them).

:func:`boundaries` splits the stack latency at the layers it crossed, and
:class:`LatencyReport` collects both per direction and end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from skbpath.probes.catalog import load_catalog
from skbpath.tracer.model.stats import Histogram
from skbpath.tracer.traces.functions import FuncTable

QUEUED = "queued"
SENT = "sent"
DROPPED = "dropped"
TRANSPORT = "transport"  # no stage reached: the last transport step's entry
MERGED = "merged"  # the step where GRO merged the packet into a head skb (no end itself)

# The layers a packet's stack latency is split at, in the order it crosses
# them, with what each is called on that path (a received packet's first
# device-layer step is the driver handing it up).
RX_LAYERS = (("device", "driver"), ("network", "IP"), ("transport", "transport"))
TX_LAYERS = (("transport", "transport"), ("network", "IP"), ("device", "device"))
UNTIL_NAMES = {QUEUED: "socket", SENT: "driver xmit", DROPPED: "drop", TRANSPORT: "transport"}
# Each end in words, for views.
UNTIL_TEXT = {QUEUED: "socket queue", SENT: "driver xmit", DROPPED: "drop",
              TRANSPORT: "transport (no queueing traced)"}


def stage_table(funcs: FuncTable) -> list[str]:
    """Each function id's stage: "queued", "sent" (the driver's transmit), "dropped",
    "merged" (GRO's merge: no end, a link) or "".

    Traces recorded before the catalog had stages carry none: their
    functions get the shipped catalog's stages by name.
    """
    stages = [""] * len(funcs.by_id)
    recorded = any(f.stage for f in funcs.funcs)
    by_name = ({} if recorded else
               {s.name: s.stage for s in load_catalog() if s.name and s.stage})
    for f in funcs.funcs:
        if f.merge:
            stages[f.id] = MERGED
        elif f.drop:
            stages[f.id] = DROPPED
        elif f.driver == "xmit":
            stages[f.id] = SENT
        elif f.stage or by_name.get(f.name):
            stages[f.id] = f.stage or by_name[f.name]
    return stages


class StepLike(Protocol):
    """What latency needs of a step (tracer/model/core.py's Step has these)."""

    @property
    def entry(self) -> int: ...
    @property
    def exit(self) -> int | None: ...
    @property
    def skb(self) -> int: ...
    @property
    def layer(self) -> str: ...
    @property
    def stage(self) -> str: ...


def own_steps(steps: Sequence[StepLike]) -> list[StepLike]:
    """The steps with the packet's own skb: the enclosing calls left out."""
    return [s for s in steps if s.skb]


def lifetime(steps: Sequence[StepLike]) -> int:
    """From the first own step's entry to the last own step's return (or entry), in ns."""
    own = own_steps(steps)
    if not own:
        return 0
    return max(s.exit if s.exit is not None else s.entry for s in own) - own[0].entry


def stack_end(steps: Sequence[StepLike], path: str = "RX") -> tuple[int, str] | None:
    """When the packet's stack latency ends, and which end it was; None if unknown."""
    own = own_steps(steps)
    for s in own:
        if s.stage == DROPPED:
            return s.entry, DROPPED
        if s.stage in (QUEUED, SENT):
            # A lost return leaves no end: better none than a guess.
            return (s.exit, s.stage) if s.exit is not None else None
    # Received, but no queueing function traced (or inlined): the transport
    # layer is as far as it is known to have gone.
    transport = [s for s in own if s.layer == TRANSPORT]
    if path.upper() == "RX" and transport:
        return transport[-1].entry, TRANSPORT
    return None


def stack_latency(steps: Sequence[StepLike], path: str = "RX",
                  delivered: tuple[int, str] | None = None) -> tuple[int, str] | None:
    """The stack latency in ns and its end (see the module docstring), or None.

    ``delivered`` is, for a packet GRO merged into a head skb, the end of the
    head's stack latency: the merged packet was delivered with it.
    """
    own = own_steps(steps)
    end = delivered or stack_end(steps, path)
    if not own or end is None:
        return None
    return max(0, end[0] - own[0].entry), end[1]


def merge_step(steps: Sequence[StepLike]) -> StepLike | None:
    """The step that merged the packet into another skb (GRO), if any."""
    return next((s for s in own_steps(steps) if s.stage == MERGED), None)


def boundaries(steps: Sequence[StepLike], path: str,
               delivered: tuple[int, str] | None = None) -> list[tuple[str, int]]:
    """The stack latency split where the packet first entered each layer, in order.

    ``[("driver→IP", ns), ("IP→transport", ns), ("transport→socket", ns)]``
    for a received packet that crossed them all; a layer it skipped is left out.
    A merged packet's is split at its merge: ``driver→GRO merge``, then
    ``GRO merge→socket`` (its head's delivery).
    """
    merge = merge_step(steps) if delivered else None
    if merge is not None and delivered is not None:
        own = own_steps(steps)
        return [("driver→GRO merge", max(0, merge.entry - own[0].entry)),
                (f"GRO merge→{UNTIL_NAMES[delivered[1]]}", max(0, delivered[0] - merge.entry))]
    end = stack_end(steps, path)
    if end is None:
        return []
    layers = RX_LAYERS if path.upper() == "RX" else TX_LAYERS
    names = dict(layers)
    first: dict[str, int] = {}
    for s in own_steps(steps):
        layer = "device" if s.layer == "driver" else s.layer
        if layer in names and layer not in first and s.entry <= end[0]:
            first[layer] = s.entry
    marks = sorted(((names[layer], t) for layer, t in first.items()), key=lambda m: m[1])
    if end[1] != TRANSPORT:
        marks.append((UNTIL_NAMES[end[1]], end[0]))
    pairs = zip(marks, marks[1:], strict=False)
    return [(f"{a}→{b}", max(0, tb - ta)) for (a, ta), (b, tb) in pairs]


@dataclass
class LatencyRow:
    """The journeys of one direction and end: both figures, and the stack latency by boundary."""

    path: str
    until: str
    stack: Histogram = field(default_factory=Histogram)
    life: Histogram = field(default_factory=Histogram)
    parts: dict[str, Histogram] = field(default_factory=dict)
    merged: int = 0  # of which GRO merged into a head skb, delivered with it


@dataclass
class LatencyReport:
    """Per-packet latency of a trace's journeys, grouped by direction and end."""

    rows: dict[tuple[str, str], LatencyRow] = field(default_factory=dict)
    without: int = 0  # journeys with no own step or no end

    def add(self, path: str, steps: Sequence[StepLike],
            delivered: tuple[int, str] | None = None) -> None:
        """Account one journey (``delivered``: see :func:`stack_latency`)."""
        lat = stack_latency(steps, path, delivered)
        if lat is None:
            self.without += 1
            return
        key = (path.upper(), lat[1])
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = LatencyRow(*key)
        row.stack.add(lat[0])
        row.life.add(lifetime(steps))
        if delivered:
            row.merged += 1
        for name, ns in boundaries(steps, path, delivered):
            row.parts.setdefault(name, Histogram()).add(ns)

    def sorted_rows(self) -> list[LatencyRow]:
        """Rows by direction (RX first), then most journeys first."""
        return sorted(self.rows.values(), key=lambda r: (r.path != "RX", -r.stack.count, r.until))


def latency_report(journeys: Iterable[tuple[str, Sequence[StepLike]]]) -> LatencyReport:
    """A report over (path, steps) pairs."""
    rep = LatencyReport()
    for path, steps in journeys:
        rep.add(path, steps)
    return rep
