"""Boot the lab, send to closed ports, and check the drops and their reasons."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import lab_unavailable
from tracer.drops import drop_report
from tracer.lab import DEFAULT_KERNEL
from tracer.replay import Replay, replay

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def closed_trace(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """TCP connects and UDP datagrams to a closed port, traced live in the lab."""
    if os.geteuid() != 0:
        lab_unavailable("the lab needs root")
    for tool in ("qemu-system-x86_64", "busybox"):
        if not shutil.which(tool):
            lab_unavailable(f"{tool} is not installed")
    if not os.path.exists(DEFAULT_KERNEL):
        lab_unavailable(f"{DEFAULT_KERNEL} is not installed")
    out = tmp_path_factory.mktemp("lab") / "closed.skbtrace"
    proc = subprocess.run(
        [sys.executable, "-m", "tracer.cli", "lab", "--traffic", "closed", "-o", str(out)],
        capture_output=True, text=True, timeout=1200, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return replay(str(out))


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
