"""Boot the lab, trace TCP traffic live, and check the journeys a real 6.1 kernel produced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.labrun import boot_and_trace, check_nesting
from tracer.model import JourneyView
from tracer.replay import Replay

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


def has_subsequence(funcs: list[str], chain: list[str | tuple[str, ...]]) -> bool:
    """True if ``chain`` appears in ``funcs`` in order (gaps allowed)."""
    it = iter(funcs)
    for want in chain:
        options = (want,) if isinstance(want, str) else want
        if not any(f in options for f in it):
            return False
    return True


@pytest.fixture(scope="module")
def lab_trace(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """One lab boot for the module: a TCP bulk transfer traced live with kprobes.

    kprobe explicitly: --attach auto now prefers fentry (tests/lab/test_lab_fentry.py).
    """
    return boot_and_trace(tmp_path_factory, "bulk", "--attach", "kprobe")


def _journeys(r: Replay, path: str) -> list[JourneyView]:
    return [j for j in r.model.journey_list if j.path == path]


def test_trace_comes_from_the_lab_kernel(lab_trace: Replay) -> None:
    h = lab_trace.contents.header
    assert h["attach"] == "kprobe"
    assert h["kernel"].startswith("6.1.")
    assert lab_trace.contents.end is not None, "the tracer did not stop cleanly"
    assert lab_trace.contents.events > 1000
    skipped = {s["name"] for s in h["skipped"]}
    # Inlined on 6.1: skipped, and reported as such.
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
        [sys.executable, "-m", "tracer.cli", "render", lab_trace.path, "-o", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calltree.svg").read_text().count("e1000_xmit_frame") >= 1
    assert "e1000_clean" in (tmp_path / "flamegraph.svg").read_text()
