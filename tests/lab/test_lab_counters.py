"""The trace agrees with the kernel's own counters: frames per NIC (sysfs statistics/).

The guest reads every NIC's rx_packets and tx_packets, in both namespaces,
just before the traffic, between the small-packet traffic and the bulk
transfer (``lab_mark small``, stamped with the trace's clock) and just after
it (tracer/lab/guest.sh, nic_stats), into NAME.nics beside the trace.
Before the mark (ARP, pings, TCP rr, UDP, drops), every frame is one driver
call: the driver's transmits equal tx_packets and napi_gro_receive's calls
rx_packets.  After it (the bulk transfer), TSO and GRO make skbs of several
frames: the received journeys, merged ones included, equal rx_packets, and
the wire frames (gso_segs) tx_packets.  The driver's calls do not say which
of the two NICs they served, so each check is over their sum: both are the
lab's driver, and both are traced.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from skbpath.tracer.model.core import JourneyView
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import KERNELS, MIXED, LabSession

pytestmark = pytest.mark.lab

LAB_RUNS = [MIXED]
TOLERANCE = 0.02
Nic = tuple[str, str, str]  # (netns, iface, driver)


@dataclass
class Counters:
    """The NICs' counters at each phase of NAME.nics, and when the mark was read."""

    phases: dict[str, dict[Nic, tuple[int, int]]]
    mark_ns: int

    def delta(self, start: str, end: str) -> dict[Nic, tuple[int, int]]:
        """(rx, tx) packets per NIC from phase ``start`` to phase ``end``."""
        a, b = self.phases[start], self.phases[end]
        return {k: (b[k][0] - a[k][0], b[k][1] - a[k][1]) for k in b if k in a}

    def lab(self, start: str, end: str) -> tuple[int, int]:
        """(rx, tx) summed over the lab's two NICs."""
        d = [v for k, v in self.delta(start, end).items() if k[2] == "e1000"]
        return sum(v[0] for v in d), sum(v[1] for v in d)


def read_counters(trace: str) -> Counters:
    """NAME.nics beside ``trace``: phases before, mark (``mark:small:NS``) and after."""
    path = Path(trace).with_suffix(".nics")
    phases: dict[str, dict[Nic, tuple[int, int]]] = {}
    mark_ns = 0
    for line in path.read_text().splitlines():
        phase, ns, iface, driver, rx, tx = line.split()
        if phase.startswith("mark:"):
            _, _, stamp = phase.split(":")
            phase, mark_ns = "mark", int(stamp)
        phases.setdefault(phase, {})[(ns, iface, driver)] = (int(rx), int(tx))
    assert set(phases) == {"before", "mark", "after"}, phases.keys()
    return Counters(phases, mark_ns)


Mixed = tuple[Replay, Counters]


@pytest.fixture(scope="module", params=KERNELS)
def mixed(lab: LabSession, request: pytest.FixtureRequest) -> Mixed:
    """The mixed trace of one kernel, and its NICs' counters over the traffic."""
    r = lab.replay(request.param, "mixed")
    return r, read_counters(r.path)


def _calls_before(r: Replay, name: str, mark: int) -> tuple[int, int]:
    """Calls of ``name`` entered before and after ``mark``, from the journeys' steps."""
    seen: dict[tuple[int, int, int], int] = {}
    for j in r.model.journey_list:
        for s in j.steps:
            if s.func == name:
                seen[(s.entry, s.tid, s.cpu)] = s.entry
    before = sum(1 for t in seen.values() if t < mark)
    return before, len(seen) - before


def _tree_calls(r: Replay, name: str) -> int:
    funcs = r.model.calltree.funcs
    return sum(n.count for n in r.model.calltree.nodes() if funcs.name_of(n.func) == name)


def _within(got: int, want: int) -> bool:
    return abs(got - want) <= max(2, TOLERANCE * want)


def _received(r: Replay) -> list[JourneyView]:
    return [j for j in r.model.journey_list
            if next((s.func for s in j.steps if s.skb), None) == "napi_gro_receive"]


def test_both_nics_are_counted_and_the_mark_is_in_the_trace(mixed: Mixed) -> None:
    r, c = mixed
    nics = c.delta("before", "after")
    lab_nics = [k for k in nics if k[2] == "e1000"]
    assert len(lab_nics) == 2, nics
    assert {k[0] for k in lab_nics} == {"root", "skbpeer"}
    for start, end in (("before", "mark"), ("mark", "after")):
        rx, tx = c.lab(start, end)
        assert rx > 100 and tx > 100, (start, end, c.delta(start, end))
    starts = [j.start for j in r.model.journey_list]
    assert min(starts) < c.mark_ns < max(starts)  # the mark is on the trace's clock


def test_small_packets_one_driver_call_per_frame(mixed: Mixed) -> None:
    r, c = mixed
    rx, tx = c.lab("before", "mark")
    xmit, _ = _calls_before(r, "e1000_xmit_frame", c.mark_ns)
    gro, _ = _calls_before(r, "napi_gro_receive", c.mark_ns)
    assert _within(xmit, tx), (xmit, tx, c.delta("before", "mark"))
    assert _within(gro, rx), (gro, rx, c.delta("before", "mark"))


def test_every_driver_call_is_in_a_journey(mixed: Mixed) -> None:
    r, _ = mixed
    for name in ("e1000_xmit_frame", "napi_gro_receive"):
        before, after = _calls_before(r, name, 1 << 63)
        assert before + after == _tree_calls(r, name), name


def test_bulk_wire_frames_equal_tx_packets(mixed: Mixed) -> None:
    r, c = mixed
    _, tx = c.lab("mark", "after")
    seen: dict[tuple[int, int, int], int] = {}
    for j in r.model.journey_list:
        for s in j.steps:
            # The driver's transmit (not loopback_xmit), once per call: a call
            # can be a step of a clone's journey as well.
            if s.stage == "sent" and s.func == "e1000_xmit_frame" and s.entry > c.mark_ns:
                seen[(s.entry, s.tid, s.cpu)] = max(s.aux, 1)
    frames = sum(seen.values())
    assert frames > len(seen)  # TSO: the bulk transfer's skbs are several frames each
    assert _within(frames, tx), (frames, tx, len(seen), c.delta("mark", "after"))


def test_bulk_received_journeys_equal_rx_packets(mixed: Mixed) -> None:
    r, c = mixed
    rx, _ = c.lab("mark", "after")
    received = [j for j in _received(r) if j.start > c.mark_ns]
    assert _within(len(received), rx), (len(received), rx)
    merged = [j for j in received if j.end == "merged"]
    assert len(merged) > len(received) // 2, "GRO merged few segments of the bulk transfer"
    ids = {j.id for j in _received(r)}
    assert all(j.merged_into in ids for j in merged)


def test_gro_results_agree_with_the_merges(mixed: Mixed) -> None:
    """napi_gro_receive's own verdict: a segment it merged is a journey ended merged."""
    r, _ = mixed
    results = Counter({value: n for func, value, n in r.model.return_counts()
                       if func == "napi_gro_receive"})
    assert sum(results.values()) == _tree_calls(r, "napi_gro_receive"), results
    assert set(results) <= {"GRO_MERGED", "GRO_MERGED_FREE", "GRO_HELD", "GRO_NORMAL",
                            "GRO_CONSUMED"}, results
    merges = results["GRO_MERGED"] + results["GRO_MERGED_FREE"]
    merged = r.model.summary()["journeys_merged"]
    assert _within(merged, merges), (merged, results)


def test_few_journeys_end_reused(mixed: Mixed) -> None:
    r, _ = mixed
    summary = r.model.summary()
    assert summary["journeys_reused"] <= 0.01 * len(r.model.journey_list), summary
