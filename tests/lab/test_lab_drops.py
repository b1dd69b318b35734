"""Boot the lab, send to closed ports, and check the drops and their reasons."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.lab.labrun import boot_and_trace
from tracer.drops import drop_report
from tracer.replay import Replay

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def closed_trace(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """TCP connects and UDP datagrams to a closed port, traced live in the lab."""
    return boot_and_trace(tmp_path_factory, "closed")


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
        [sys.executable, "-m", "tracer.cli", "replay", closed_trace.path, "--drops"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NO_SOCKET" in proc.stdout and "tcp_v4_rcv" in proc.stdout
