"""In the lab, send to closed ports, and check the drops and their reasons on each kernel."""

from __future__ import annotations

import subprocess

import pytest
from skbpath.tracer.model.drops import drop_report
from skbpath.tracer.model.replay import Replay

from tests.lab.labrun import KERNELS, MIXED, SKBPATH, LabSession

pytestmark = pytest.mark.lab


LAB_RUNS = [MIXED]


@pytest.fixture(scope="module", params=KERNELS)
def closed_trace(request: pytest.FixtureRequest, lab: LabSession) -> Replay:
    """The mixed trace (labrun.MIXED, fentry), with its connects and datagrams to a closed port."""
    return lab.replay(request.param, "mixed")


def test_reason_names_come_from_the_kernel(closed_trace: Replay) -> None:
    names = closed_trace.contents.header["drop_reasons"]
    assert "NO_SOCKET" in names.values()
    assert len(names) > 10


def test_closed_port_drops_are_no_socket_from_tcp_and_udp(closed_trace: Replay) -> None:
    names = {int(k): v for k, v in closed_trace.contents.header["drop_reasons"].items()}
    rows = drop_report(closed_trace.model.drops, names, closed_trace.contents.stacks)
    by = {(r.reason, r.function): r.count for r in rows}
    assert by.get(("NO_SOCKET", "tcp_v4_rcv"), 0) >= 5, rows
    assert any(reason == "NO_SOCKET" and "udp" in fn for reason, fn in by), rows


def test_replay_drops_lists_them(closed_trace: Replay) -> None:
    proc = subprocess.run(
        [*SKBPATH, "replay", closed_trace.path, "--drops"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NO_SOCKET" in proc.stdout and "tcp_v4_rcv" in proc.stdout
