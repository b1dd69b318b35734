"""The recorder skeleton (tracer/record/session.py) driving a back end made of plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.model.aggregate import PathRow
from skbpath.tracer.model.replay import replay
from skbpath.tracer.record.cflags import ringbuf_pages
from skbpath.tracer.record.resolve import Resolution
from skbpath.tracer.record.session import (
    Session,
    TraceOptions,
    buffer_bytes,
    losses,
    trace_header,
)
from skbpath.tracer.traces.events import CALL_SIZE, pack_calls
from skbpath.tracer.traces.tracefile import TraceReader

from tests.synth import demo_table, tx_rx_stream, v2_records


class FakeBackend:
    """Hands out a synthetic stream in pieces, the way a ring buffer would."""

    def __init__(self, pieces: list[bytes], left_after_detach: bytes = b"",
                 fail_attach: bool = False) -> None:
        self.pieces = list(pieces)
        self.left = left_after_detach
        self.fail_attach = fail_attach
        self.calls: list[str] = []
        self.attach_failures = [("tcp_v4_rcv.cold", "attach failed: test")]
        self.detached = False
        self.new_stacks = {7: ["ip_rcv+0x1", "__netif_receive_skb+0x2"]}
        self.new_tasks = {42: "iperf3"}

    def attach(self) -> None:
        self.calls.append("attach")
        if self.fail_attach:
            raise SkbpathError("no probe could be attached")

    def header(self) -> dict[str, Any]:
        kernel = KernelInfo(release="6.1.0-test", traceable={}, kallsyms=set(), has_kprobes=True,
                            has_btf=True, has_headers=True, has_fentry=True, tracefs="/x")
        return trace_header(kernel, Resolution(demo_table(), []), TraceOptions(output="-"), [])

    def drain(self, timeout: float) -> bytes:
        if self.detached:
            blob, self.left = self.left, b""
            return blob
        return self.pieces.pop(0) if self.pieces else b""

    def take_meta(self) -> tuple[dict[int, list[str]], dict[int, str]]:
        stacks, self.new_stacks = self.new_stacks, {}
        tasks, self.new_tasks = self.new_tasks, {}
        return stacks, tasks

    def stats(self) -> dict[str, Any]:
        self.calls.append("stats")
        return {"lost": {"ringbuf_lost": 3, "stack_lost": 0, "filtered": 5},
                "empty_calls": {"sock_recvmsg": 9}}

    def detach(self) -> None:
        self.calls.append("detach")
        self.detached = True

    def close(self) -> None:
        self.calls.append("close")

    def end_fields(self) -> dict[str, Any]:
        return {"unparsed_lines": 0}

    def aggregate_rows(self) -> list[PathRow]:
        """Events mode never asks (tests/test_aggregate.py's back end answers)."""
        raise AssertionError("aggregate_rows in events mode")


def test_a_session_writes_batches_meta_stats_end_and_replays(tmp_path: Path) -> None:
    # What a live back end drains: version 2 call records, one per call.
    events = v2_records(demo_table(), tx_rx_stream(20))
    blob = pack_calls(events)
    cut = len(blob) // CALL_SIZE // 3 * CALL_SIZE
    pieces = [blob[:cut], b"", blob[cut : 2 * cut]]
    backend = FakeBackend(pieces, left_after_detach=blob[2 * cut :])
    out = tmp_path / "t.skbtrace"
    ready = tmp_path / "ready"
    seen: list[tuple[int, int, float]] = []
    opts = TraceOptions(output=str(out), duration=0.3, ready_file=str(ready), batch_seconds=0.0)
    result = Session(backend, opts, lambda *a: seen.append(a)).run()

    assert backend.calls[0] == "attach" and backend.calls[-2:] == ["stats", "close"]
    assert backend.calls.index("detach") < backend.calls.index("close")
    assert ready.read_text().strip().isdigit()
    assert result.events == len(events)
    assert result.lost == {"ringbuf_lost": 3, "stack_lost": 0, "filtered": 5}
    assert result.attach_failures == [("tcp_v4_rcv.cold", "attach failed: test")]
    # The summary comes from replaying the written file: the same as a replay now.
    rep = replay(str(out), keep_journeys=False)
    assert result.summary == rep.model.summary() and result.summary["journeys"] == 40
    c = TraceReader(str(out)).read_all()
    assert c.events == len(events) and c.truncated is None
    assert c.stacks == {7: ["ip_rcv+0x1", "__netif_receive_skb+0x2"]} and c.tasks == {42: "iperf3"}
    assert c.end is not None and c.end["events"] == len(events)
    assert c.end["lost"] == result.lost and c.end["model"] == result.summary
    assert c.end["attach_failures"] == [["tcp_v4_rcv.cold", "attach failed: test"]]
    assert c.end["unparsed_lines"] == 0
    assert c.stats == {"lost": result.lost, "empty_calls": {"sock_recvmsg": 9}}
    assert c.end["empty_calls"] == {"sock_recvmsg": 9}  # END keeps the last STATS' fields


def test_the_back_end_is_detached_and_closed_when_attach_fails(tmp_path: Path) -> None:
    backend = FakeBackend([], fail_attach=True)
    with pytest.raises(SkbpathError, match="no probe"):
        Session(backend, TraceOptions(output=str(tmp_path / "t"), duration=0.1)).run()
    assert backend.calls == ["attach", "detach", "close"]


def test_losses_leave_out_what_filters_rejected() -> None:
    assert losses({"ringbuf_lost": 2, "filtered": 100, "kprobe_missed": 1}) == 3


def test_buffers_are_sized_by_cpu_count_or_asked_for() -> None:
    assert buffer_bytes(None, cpus=1) == 16 << 20  # the floor
    assert buffer_bytes(None, cpus=4) == 32 << 20  # 8 MiB a CPU
    assert buffer_bytes(None, cpus=512) == 256 << 20  # the ceiling
    assert buffer_bytes(100, cpus=2) == 100 << 20
    assert ringbuf_pages(buffer_bytes(100)) == 32768  # 128 MiB: the next power of two
    assert ringbuf_pages(16 << 20) == 4096 and ringbuf_pages(1) == 1
