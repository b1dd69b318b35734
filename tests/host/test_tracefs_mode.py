"""tracefs mode on this machine's own kernel: a real trace of TCP over a veth pair.

Two network namespaces joined by a veth pair (198.18.0.201 <-> 198.18.0.202, our test range)
carry the traffic; only those addresses are ever used.  Needs root and
tracefs; skipped otherwise, failed where SKBPATH_REQUIRE_LAB is set.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from skbpath.tracer.model.replay import replay
from skbpath.tracer.traces.tracefile import TraceReader

from tests.conftest import lab_unavailable

pytestmark = pytest.mark.host

TRACEFS = "/sys/kernel/tracing"
NS_A, NS_B = f"skbpath-ta{os.getpid()}", f"skbpath-tb{os.getpid()}"
ADDR_A, ADDR_B, PORT = "198.18.0.201", "198.18.0.202", 5301
REPO = Path(__file__).resolve().parents[2]

SERVER = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{ADDR_B}", {PORT})); s.listen(); s.settimeout(20)
c, _ = s.accept()
while c.recv(65536):
    pass
"""
CLIENT = f"""
import socket, time
s = socket.create_connection(("{ADDR_B}", {PORT}), timeout=10)
end = time.monotonic() + 1.5
while time.monotonic() < end:
    s.sendall(b"x" * 16384); time.sleep(0.02)
s.close()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


# The tracer's pid per trace file: its tracefs instance is skbpath-<pid>.  Other
# tests may be tracing at the same time (pytest-xdist), so look for our own only.
PIDS: dict[Path, int] = {}


def _instance_left(pid: int) -> bool:
    return os.path.exists(os.path.join(TRACEFS, "instances", f"skbpath-{pid}"))


@pytest.fixture(scope="module")
def netns() -> Iterator[None]:
    if os.geteuid() != 0:
        lab_unavailable("tracefs mode tests need root")
    if shutil.which("ip") is None:
        lab_unavailable("iproute2 (ip) is missing")
    if not os.path.isdir(os.path.join(TRACEFS, "instances")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True)
    if not os.path.isdir(os.path.join(TRACEFS, "events", "net", "net_dev_xmit")):
        lab_unavailable(f"no tracefs with net events at {TRACEFS}")
    dev_a, dev_b = f"sbpa{os.getpid() % 100000}", f"sbpb{os.getpid() % 100000}"
    try:
        _ip("netns", "add", NS_A)
        _ip("netns", "add", NS_B)
        _ip("link", "add", dev_a, "netns", NS_A, "type", "veth", "peer", "name", dev_b,
            "netns", NS_B)
        for ns, dev, addr in ((NS_A, dev_a, ADDR_A), (NS_B, dev_b, ADDR_B)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (NS_A, NS_B):  # deleting a netns deletes its veth end, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def _traffic() -> None:
    server = subprocess.Popen(["ip", "netns", "exec", NS_B, sys.executable, "-c", SERVER])
    try:
        time.sleep(0.4)
        subprocess.run(["ip", "netns", "exec", NS_A, sys.executable, "-c", CLIENT],
                       check=True, timeout=30)
    finally:
        server.wait(timeout=30)


def _start_trace(out: Path, duration: float | None) -> subprocess.Popen[str]:
    ready = out.with_suffix(".ready")
    cmd = [sys.executable, "-m", "skbpath.tracer.cli.main", "trace", "--attach", "tracefs",
           "-o", str(out), "--ready-file", str(ready)]
    if duration is not None:
        cmd += ["--duration", str(duration)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    PIDS[out] = proc.pid
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the tracer did not start: {err}")
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="module")
def traced(netns: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("tracefs") / "veth.skbtrace"
    proc = _start_trace(out, 3)
    _traffic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out, err


def test_trace_records_journeys(traced: tuple[Path, str]) -> None:
    out, err = traced
    assert "lost" in err.lower()  # the lost counts are printed at the end
    rep = replay(str(out))
    header = rep.contents.header
    assert header["attach"] == "tracefs"
    assert "net:net_dev_xmit" in header["tracefs_events"]
    assert rep.contents.end is not None
    assert set(rep.contents.end["lost"]) >= {"tracefs_overrun", "tracefs_dropped"}
    journeys = [j.functions() for j in rep.model.journey_list]
    tx = [f for f in journeys if "net:net_dev_queue" in f and "net:net_dev_xmit" in f]
    assert tx, journeys[:5]
    assert any(f.index("net:net_dev_queue") < f.index("net:net_dev_xmit") for f in tx)
    assert any("net:netif_receive_skb" in f for f in journeys)
    frames = [fr for stack in rep.contents.stacks.values() for fr in stack]
    assert any(fr.startswith("dev_hard_start_xmit") for fr in frames)


def test_render_works(traced: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = traced
    r = subprocess.run([sys.executable, "-m", "skbpath.tracer.cli.main", "render", str(out), "-o",
                        str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "calltree.svg").stat().st_size > 0
    assert (tmp_path / "flamegraph.svg").stat().st_size > 0


def test_no_instance_left(traced: tuple[Path, str]) -> None:
    assert not _instance_left(PIDS[traced[0]])


def test_sigterm_leaves_no_instance(netns: None, tmp_path: Path) -> None:
    out = tmp_path / "term.skbtrace"
    proc = _start_trace(out, None)
    _traffic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not _instance_left(proc.pid)
    contents = TraceReader(str(out)).read_all()
    assert contents.end is not None and contents.truncated is None
    rep = replay(str(out))
    assert rep.contents.header["attach"] == "tracefs" and rep.contents.events > 0
