"""Per-packet latency (tracer/model/latency.py): stack latency, lifetime, boundaries, the view."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from skbpath.probes.catalog import CatalogError, parse_catalog
from skbpath.tracer.cli.main import main as cli
from skbpath.tracer.model.core import Model
from skbpath.tracer.model.latency import (
    DROPPED,
    QUEUED,
    SENT,
    TRANSPORT,
    boundaries,
    latency_report,
    lifetime,
    stack_latency,
    stage_table,
)
from skbpath.tracer.model.replay import replay
from skbpath.tracer.traces.events import CallRecord
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

SAMPLES = sorted((Path(__file__).resolve().parent.parent / "sample_traces").glob("*.skbtrace"))


@dataclass(frozen=True)
class S:
    """A step: only what latency reads."""

    entry: int
    exit: int | None
    skb: int = 0
    layer: str = "device"
    stage: str = ""


# A received TCP segment inside a NAPI poll that lasted 10 ms: the poll and
# the driver's clean routine (no skb) are context, not the packet's time.
RX = [
    S(0, 10_000_000, layer="softirq"),               # net_rx_action
    S(100, 9_000_000, layer="driver"),                # e1000_clean_rx_irq
    S(1_000, 1_500, skb=1, layer="device"),           # napi_gro_receive
    S(4_000, 9_000, skb=1, layer="network"),          # ip_rcv
    S(5_000, 8_000, skb=1, layer="transport"),        # tcp_v4_rcv
    S(6_000, 7_000, skb=1, layer="transport", stage=QUEUED),  # tcp_data_queue
    S(50_000, 50_100, skb=1, layer="memory"),         # the reader's free, later
]


def test_stack_latency_is_the_packets_not_the_polls() -> None:
    # From napi_gro_receive's entry to tcp_data_queue's return.
    assert stack_latency(RX, "RX") == (7_000 - 1_000, QUEUED)
    assert lifetime(RX) == 50_100 - 1_000


def test_boundaries_split_the_stack_latency_in_crossing_order() -> None:
    parts = boundaries(RX, "RX")
    assert parts == [("driver→IP", 3_000), ("IP→transport", 1_000), ("transport→socket", 2_000)]
    assert sum(ns for _, ns in parts) == stack_latency(RX, "RX")[0]  # type: ignore[index]


def test_a_drop_ends_at_its_entry_and_a_transmit_at_its_return() -> None:
    dropped = [S(0, 50, skb=2), S(100, 900, skb=2, layer="network"),
               S(300, 400, skb=2, layer="memory", stage=DROPPED)]
    assert stack_latency(dropped, "RX") == (300, DROPPED)
    sent = [S(0, 5_000, layer="socket"), S(1_000, 4_000, skb=3, layer="transport"),
            S(2_000, 3_500, skb=3, layer="network"), S(2_500, 3_400, skb=3, layer="device"),
            S(2_600, 3_300, skb=3, layer="driver", stage=SENT)]
    assert stack_latency(sent, "TX") == (2_300, SENT)
    assert boundaries(sent, "TX") == [("transport→IP", 1_000), ("IP→device", 500),
                                      ("device→driver xmit", 800)]


def test_no_end_without_a_recorded_return_and_no_guess_on_transmit() -> None:
    lost = [S(0, 10, skb=4), S(20, None, skb=4, layer="transport", stage=QUEUED)]
    assert stack_latency(lost, "RX") is None
    # Received, no queueing traced: as far as the transport layer's last entry.
    rx = [S(0, 10, skb=5), S(30, 90, skb=5, layer="transport"), S(40, 80, skb=5, layer="transport")]
    assert stack_latency(rx, "RX") == (40, TRANSPORT)
    assert stack_latency([S(0, 10, skb=6, layer="transport")], "TX") is None
    assert stack_latency([S(0, 10, layer="softirq")], "RX") is None


def test_report_groups_by_direction_and_end() -> None:
    rep = latency_report([("RX", RX), ("RX", RX), ("TX", [S(0, 1, skb=9, layer="transport")])])
    (row,) = rep.sorted_rows()
    assert (row.path, row.until, row.stack.count) == ("RX", QUEUED, 2)
    assert row.parts["IP→transport"].count == 2
    assert rep.without == 1


def test_stages_come_from_the_table_or_the_catalog_by_name() -> None:
    def table(stage: str) -> FuncTable:
        return FuncTable([
            FuncInfo(id=0, name="tcp_data_queue", path="rx", layer="transport", skb_arg=2,
                     stage=stage),
            FuncInfo(id=1, name="kfree_skb_reason", path="free", layer="memory", skb_arg=1,
                     drop=True, frees=True),
            FuncInfo(id=2, name="e1000_xmit_frame", path="tx", layer="driver", skb_arg=1,
                     driver="xmit"),
            FuncInfo(id=3, name="ip_rcv", path="rx", layer="network", skb_arg=1),
        ])
    # Recorded with stages: the table's own; an older trace: the catalog's by name.
    assert stage_table(table(QUEUED)) == [QUEUED, DROPPED, SENT, ""]
    assert stage_table(table("")) == [QUEUED, DROPPED, SENT, ""]


def test_catalog_checks_stages() -> None:
    base = '[[probe]]\nname = "f"\npath = "rx"\nlayer = "transport"\n'
    with pytest.raises(CatalogError, match="stage 'sent' not in"):
        parse_catalog(base + 'skb_arg = 1\nstage = "sent"\n')
    with pytest.raises(CatalogError, match="stage needs skb_arg"):
        parse_catalog(base + 'stage = "queued"\n')


def test_bulk_sample_rx_latency_is_far_below_the_polls() -> None:
    rep = replay(str(next(p for p in SAMPLES if p.name == "tcp_bulk.skbtrace")))
    rows = {(r.path, r.until): r for r in rep.model.latency.sorted_rows()}
    queued = rows[("RX", QUEUED)]
    assert queued.stack.count > 1000
    # Journeys start at their NAPI poll (net_rx_action, context); a packet's
    # stack latency starts at its own first step, napi_gro_receive.
    js = [j for j in rep.model.journey_list
          if j.path == "RX" and j.stack_latency and j.stack_latency[1] == QUEUED]
    assert sum(j.steps[0].func == "net_rx_action" for j in js) > len(js) / 2
    spans = sorted(j.duration for j in js)
    stacks = sorted(j.stack_latency[0] for j in js if j.stack_latency)
    assert stacks[len(stacks) // 2] * 4 < spans[len(spans) // 2]
    assert rows[("TX", SENT)].stack.count > 500


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_latency_view_on_every_sample(sample: Path) -> None:
    res = CliRunner().invoke(cli, ["replay", str(sample), "--latency"])
    assert res.exit_code == 0, res.output
    assert "stack latency" in res.output
    rep = replay(str(sample))
    if rep.model.latency.rows:
        assert "p50" in res.output


def test_latency_excludes_other_views() -> None:
    res = CliRunner().invoke(cli, ["replay", str(SAMPLES[0]), "--latency", "--drops"])
    assert res.exit_code == 2
    assert "--drops" in res.output and "--latency" in res.output


def test_json_carries_both_figures() -> None:
    import json

    sample = next(p for p in SAMPLES if p.name == "closed_ports.skbtrace")
    res = CliRunner().invoke(cli, ["replay", str(sample), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert rows
    for r in rows:
        assert r["duration_ns"] == r["lifetime_ns"] <= r["span_ns"]
        if r["stack_latency_ns"] is not None:
            assert r["stack_until"] in (QUEUED, SENT, DROPPED, TRANSPORT)
            assert 0 <= r["stack_latency_ns"] <= r["span_ns"]
    assert any(r["stack_until"] == DROPPED for r in rows)


def _gro_table() -> FuncTable:
    return FuncTable([
        FuncInfo(id=0, name="napi_gro_receive", path="rx", layer="device", skb_arg=2, fresh=True),
        FuncInfo(id=1, name="skb_gro_receive", path="rx", layer="device", skb_arg=2, aux_arg=1,
                 merge=True),
        FuncInfo(id=2, name="ip_rcv", path="rx", layer="network", skb_arg=1),
        FuncInfo(id=3, name="tcp_v4_rcv", path="rx", layer="transport", skb_arg=1),
        FuncInfo(id=4, name="tcp_data_queue", path="rx", layer="transport", skb_arg=2,
                 stage=QUEUED),
        FuncInfo(id=5, name="consume_skb", path="free", layer="memory", skb_arg=1, frees=True),
    ])


HEAD, SEG = 0xFFFF888012345600, 0xFFFF888012349900


def _gro_model(head_low: int = HEAD & 0xFFFFFFFF) -> Model:
    def rec(entry: int, dur: int, skb: int, func: int, depth: int, aux: int = 0) -> CallRecord:
        return CallRecord(entry=entry, duration=dur, skb=skb, result=0, tid=9, tgid=9, aux=aux,
                          stack_id=-1, func=func, cpu=0, depth=depth, flags=0, base=0)

    m = Model(_gro_table())
    m.feed_calls([
        rec(100, 50, HEAD, 0, 1),                   # the head arrives
        rec(200, 60, SEG, 0, 1),                    # a segment arrives ...
        rec(210, 20, SEG, 1, 2, aux=head_low),      # ... and GRO merges it into the head
        rec(400, 300, HEAD, 2, 1),                  # the flush: the head goes up
        rec(420, 200, HEAD, 3, 2),
        rec(450, 100, HEAD, 4, 3),                  # queued at 550
        rec(2000, 10, HEAD, 5, 1),                  # the reader frees it
        rec(3000, 40, SEG, 0, 1),                   # the segment's address comes back
    ])
    m.finish()
    return m


def test_a_gro_merged_packet_is_delivered_with_its_head() -> None:
    m = _gro_model()
    head, seg, again = m.journey_list
    assert (head.end, seg.end, again.end) == ("freed", "merged", "trace-end")
    assert seg.merged_into == head.id and head.segments == (seg.id,)
    assert head.stack_latency == (450, QUEUED)
    assert seg.stack_latency == (550 - 200, QUEUED)  # its head's delivery is its own
    assert seg.lifetime == 260 - 200  # its own skb: until napi_gro_receive returned
    assert boundaries(seg.steps, "RX", seg.delivered) == [("driver→GRO merge", 10),
                                                          ("GRO merge→socket", 340)]
    # The address coming back from the driver is a new packet, not a stale journey.
    assert m.summary()["journeys_reused"] == 0
    assert m.summary()["journeys_merged"] == 1
    (row,) = [r for r in m.latency.sorted_rows() if r.until == QUEUED]
    assert (row.stack.count, row.merged) == (2, 1)
    assert seg.to_json()["merged_into"] == head.id


def test_a_merge_into_an_untraced_head_follows_nothing() -> None:
    m = _gro_model(head_low=0x1234)
    assert m.summary()["journeys_merged"] == 0
    # The segment's journey stays open, so its address is "reused" when it comes back.
    assert m.summary()["journeys_reused"] == 1
