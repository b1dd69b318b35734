"""The lab with virtio-net NICs and check that its driver's functions are found and traced."""

from __future__ import annotations

import pytest
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import LabRun, LabSession, has_subsequence

pytestmark = pytest.mark.lab


LAB_RUNS = [LabRun("virtio_rr", "rr", kernels=("6.1",), nic="virtio")]


@pytest.fixture(scope="module")
def virtio_trace(lab: LabSession) -> Replay:
    """TCP request/response between two virtio-net NICs (auto mode: fentry)."""
    return lab.replay("6.1", "virtio_rr")


def test_virtio_driver_roles_found_by_signature(virtio_trace: Replay) -> None:
    roles: dict[str, set[str]] = {}
    for f in virtio_trace.funcs.funcs:
        if f.driver:
            roles.setdefault(f.driver, set()).add(f.name)
    assert "start_xmit" in roles["xmit"]
    assert {"virtnet_poll", "virtnet_poll_tx"} <= roles["poll"]
    assert not any(name.startswith("e1000") for names in roles.values() for name in names)


def test_tx_reaches_virtio_start_xmit(virtio_trace: Replay) -> None:
    chain: list[str | tuple[str, ...]] = [
        "tcp_sendmsg", "ip_finish_output2", "dev_hard_start_xmit", "start_xmit",
    ]
    assert any(has_subsequence(j.functions(), chain) for j in virtio_trace.model.journey_list)


def test_rx_starts_in_virtnet_poll(virtio_trace: Replay) -> None:
    chain: list[str | tuple[str, ...]] = [
        "virtnet_poll", "napi_gro_receive", ("ip_rcv", "ip_list_rcv"), "tcp_v4_rcv",
    ]
    assert any(has_subsequence(j.functions(), chain) for j in virtio_trace.model.journey_list), [
        j.functions() for j in virtio_trace.model.journey_list[:5]
    ]


def test_fexit_records_the_local_route(virtio_trace: Replay) -> None:
    assert virtio_trace.contents.header["attach"] == "fentry"
    names = {int(k): v for k, v in virtio_trace.contents.header["interfaces"].items()}
    routes = {r.text(names) for r in virtio_trace.model.routes.counts}
    # Packets for 198.18.0.1 are delivered locally: the lookup finds the local /32.
    assert any(t.startswith("198.18.0.1/32 ") and " local dev " in t for t in routes), routes
