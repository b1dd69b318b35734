"""The trace agrees with the kernel's own counters: frames per NIC (sysfs statistics/).

The guest reads every NIC's rx_packets and tx_packets, in both namespaces,
just before the traffic and just after it (tracer/lab/guest.sh, nic_stats),
into NAME.nics beside the trace.  The driver calls and the journeys of the
mixed trace (ARP, TCP rr and bulk, UDP, drops) must add up to them.  The
driver's calls do not say which of the two NICs they served, so the check
is over their sum: both are the lab's driver, and both are traced.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import KERNELS, MIXED, LabSession

pytestmark = pytest.mark.lab

LAB_RUNS = [MIXED]
TOLERANCE = 0.02
Deltas = dict[tuple[str, str, str], tuple[int, int]]
Mixed = tuple[Replay, Deltas]


def nic_deltas(trace: str) -> Deltas:
    """(netns, iface, driver) -> (rx, tx) packets during the traffic, from NAME.nics."""
    path = Path(trace).with_suffix(".nics")
    seen: dict[str, Deltas] = {"before": {}, "after": {}}
    for line in path.read_text().splitlines():
        phase, ns, iface, driver, rx, tx = line.split()
        seen[phase][(ns, iface, driver)] = (int(rx), int(tx))
    return {k: (a[0] - seen["before"][k][0], a[1] - seen["before"][k][1])
            for k, a in seen["after"].items() if k in seen["before"]}


@pytest.fixture(scope="module", params=KERNELS)
def mixed(lab: LabSession, request: pytest.FixtureRequest) -> Mixed:
    """The mixed trace of one kernel, and its NICs' counters over the traffic."""
    r = lab.replay(request.param, "mixed")
    return r, nic_deltas(r.path)


def _calls(r: Replay) -> Counter[str]:
    funcs = r.model.calltree.funcs
    out: Counter[str] = Counter()
    for node in r.model.calltree.nodes():
        out[funcs.name_of(node.func)] += node.count
    return out


def _within(got: int, want: int) -> bool:
    return abs(got - want) <= max(2, TOLERANCE * want)


def test_both_nics_are_counted(mixed: Mixed) -> None:
    _, nics = mixed
    lab_nics = [k for k in nics if k[2] == "e1000"]
    assert len(lab_nics) == 2, nics
    assert {k[0] for k in lab_nics} == {"root", "skbpeer"}
    assert all(rx > 100 and tx > 100 for rx, tx in (nics[k] for k in lab_nics))


def test_napi_gro_receive_calls_equal_rx_packets(mixed: Mixed) -> None:
    r, nics = mixed
    rx = sum(v[0] for k, v in nics.items() if k[2] == "e1000")
    got = _calls(r)["napi_gro_receive"]
    assert _within(got, rx), (got, rx, nics)


def test_wire_frames_at_the_driver_equal_tx_packets(mixed: Mixed) -> None:
    r, nics = mixed
    tx = sum(v[1] for k, v in nics.items() if k[2] == "e1000")
    # Each driver transmit call once (a call is a step of one journey, or of
    # a clone's journey as well: keep it once), with its gso_segs.
    seen: dict[tuple[int, int, int, str], int] = {}
    for j in r.model.journey_list:
        for s in j.steps:
            if s.stage == "sent" and s.func == "e1000_xmit_frame":  # not loopback_xmit
                seen[(s.entry, s.tid, s.cpu, s.func)] = max(s.aux, 1)
    calls = _calls(r)["e1000_xmit_frame"]
    assert len(seen) == calls, (len(seen), calls)  # every transmit is in a journey
    frames = sum(seen.values())
    # TSO: the bulk transfer's skbs are several wire frames each.
    assert frames > calls
    assert _within(frames, tx), (frames, tx, calls, nics)


def test_received_journeys_equal_rx_packets(mixed: Mixed) -> None:
    r, nics = mixed
    rx = sum(v[0] for k, v in nics.items() if k[2] == "e1000")
    received = [j for j in r.model.journey_list
                if next((s.func for s in j.steps if s.skb), None) == "napi_gro_receive"]
    assert _within(len(received), rx), (len(received), rx)
    merged = [j for j in received if j.end == "merged"]
    assert merged, "GRO merged no segment of the bulk transfer"
    ids = {j.id for j in received}
    assert all(j.merged_into in ids for j in merged)


def test_few_journeys_end_reused(mixed: Mixed) -> None:
    r, _ = mixed
    summary = r.model.summary()
    assert summary["journeys_reused"] <= 0.01 * len(r.model.journey_list), summary
