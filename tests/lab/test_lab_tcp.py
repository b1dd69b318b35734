"""Trace TCP (request/response, then bulk) live in the lab on kprobes, and check the journeys
each real kernel produced.  The trace is the forward boot's: the client's own TX and RX."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from skbpath.tracer.model.core import JourneyView
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import (
    FORWARD,
    SKBPATH,
    LabSession,
    check_nesting,
    has_subsequence,
)

pytestmark = pytest.mark.lab

TX_CHAIN: list[str | tuple[str, ...]] = [
    "tcp_sendmsg",
    "__tcp_transmit_skb",
    "ip_queue_xmit",
    "ip_finish_output2",
    "__dev_queue_xmit",
    "dev_hard_start_xmit",
    "e1000_xmit_frame",
]
RX_CHAIN: list[str | tuple[str, ...]] = [
    "e1000_clean",
    "napi_gro_receive",
    ("ip_rcv", "ip_list_rcv"),
    "ip_local_deliver",
    "tcp_v4_rcv",
]


# The forward boot's trace: the client's TCP sends through its e1000 and
# receives the answers through it, on kprobes (--attach auto prefers fentry).
LAB_RUNS = [FORWARD]


@pytest.fixture(scope="module", params=FORWARD.kernels)
def lab_trace(request: pytest.FixtureRequest, lab: LabSession) -> Replay:
    """TCP rr and bulk from the client netns (labrun.FORWARD), on kprobes (6.1: FORWARD.kernels)."""
    return lab.replay(request.param, "forward")


def _journeys(r: Replay, path: str) -> list[JourneyView]:
    return [j for j in r.model.journey_list if j.path == path]


def test_trace_comes_from_the_lab_kernel(lab_trace: Replay, lab: LabSession) -> None:
    h = lab_trace.contents.header
    assert h["attach"] == "kprobe"
    # Exactly the kernel booted: its release, and its build (the package version).
    assert h["kernel"] == lab.release_of(lab_trace)
    assert h["kernel_build"].startswith("#") and "Debian" in h["kernel_build"], h["kernel_build"]
    assert lab_trace.contents.end is not None, "the tracer did not stop cleanly"
    assert lab_trace.contents.events > 1000
    skipped = {s["name"] for s in h["skipped"]}
    # Inlined on both kernels: skipped, and reported as such.
    assert {"dev_queue_xmit", "netdev_start_xmit", "xmit_one"} <= skipped


def test_suffixed_names_are_attached(lab_trace: Replay) -> None:
    syms = {s for f in lab_trace.funcs.funcs for s in f.symbols}
    assert any(s.startswith("__netif_receive_skb_core.") for s in syms)


def test_tx_journey_runs_from_tcp_to_the_e1000_driver(lab_trace: Replay) -> None:
    tx = _journeys(lab_trace, "TX")
    assert tx
    assert any(has_subsequence(j.functions(), list(TX_CHAIN)) for j in tx), [
        j.functions() for j in tx[:5]
    ]


def test_rx_journey_runs_from_napi_to_tcp(lab_trace: Replay) -> None:
    rx = _journeys(lab_trace, "RX")
    assert rx
    assert any(has_subsequence(j.functions(), list(RX_CHAIN)) for j in rx), [
        j.functions() for j in rx[:5]
    ]


def test_every_child_is_no_slower_than_its_parent(lab_trace: Replay) -> None:
    assert check_nesting(lab_trace) > 100


def test_kernel_stacks_show_frames_probes_cannot_see(lab_trace: Replay) -> None:
    frames = [f for st in lab_trace.contents.stacks.values() for f in st]
    assert any(f.startswith("e1000_xmit_frame") for f in frames)
    assert any(f.startswith("tcp_v4_rcv") for f in frames)


def test_render_and_replay_work_on_the_lab_trace(lab_trace: Replay, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*SKBPATH, "render", lab_trace.path, "-o", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calltree.svg").read_text().count("e1000_xmit_frame") >= 1
    assert "e1000_clean" in (tmp_path / "flamegraph.svg").read_text()


def test_the_bulk_transfer_loses_nothing_and_stores_every_counter(lab_trace: Replay) -> None:
    """The default ring buffer (sized by CPU count), drained in bulk, holds the bulk transfer."""
    end = lab_trace.contents.end
    assert end is not None
    lost = end["lost"]
    # Zeros are stored too: a counter that is absent was not measured.
    assert {"ringbuf_lost", "stack_lost", "kprobe_missed", "filtered"} <= set(lost), lost
    assert lost["ringbuf_lost"] == 0, lost
    assert end["model"]["events"] == lab_trace.contents.events
