"""tracefs mode on a fresh machine and after a SIGKILL, on this machine's own kernel.

"Fresh" is tracefs not mounted: each case runs in a private mount namespace
(``unshare -m``) where tracefs and debugfs are unmounted first, so the
machine's own mounts are never touched.  Traffic is loopback only, in a new
network namespace (``unshare -n``).  A SIGKILLed trace leaves its instance
behind; the next start, or ``skbpath cleanup``, removes it and says so.
Needs root and tracefs; skipped otherwise, failed where SKBPATH_REQUIRE_LAB is set.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from skbpath.tracer.record.tracefs.instance import remove_instance
from skbpath.tracer.traces.tracefile import TraceReader

from tests.conftest import lab_unavailable

pytestmark = pytest.mark.host

TRACEFS = "/sys/kernel/tracing"
REPO = Path(__file__).resolve().parents[2]
SKBPATH = [sys.executable, "-m", "skbpath.tracer.cli.entry"]

# Loopback UDP for ~3 s, in the new network namespace.
LOOPBACK = """
import socket, time
lo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); lo.bind(("127.0.0.1", 0))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + 3
while time.monotonic() < end:
    tx.sendto(b"x" * 512, lo.getsockname()); lo.recv(2048); time.sleep(0.01)
"""
# In the private mount namespace: tracefs and debugfs (whose tracing/ would
# automount tracefs) unmounted, and checked to be.
UNMOUNT = f"""
umount -l /sys/kernel/debug 2>/dev/null
umount -l {TRACEFS} 2>/dev/null
if [ -d {TRACEFS}/instances ]; then echo "tracefs still mounted"; exit 3; fi
echo "tracefs unmounted"
"""


@pytest.fixture(autouse=True)
def _needs() -> None:
    if os.geteuid() != 0:
        lab_unavailable("tracefs mode tests need root")
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            lab_unavailable(f"{tool} is missing")
    if not os.path.isdir(os.path.join(TRACEFS, "events", "net")):
        # Not mounted here yet (a fresh machine): whether the kernel has it is
        # asked in a private mount namespace, as the cases themselves run.
        probe = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f"mount -t tracefs nodev {TRACEFS} 2>/dev/null; test -d {TRACEFS}/events/net"],
            capture_output=True, timeout=30, check=False)
        if probe.returncode != 0:
            lab_unavailable(f"no tracefs with net events at {TRACEFS}")


def _fresh(commands: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run shell ``commands`` in new mount and network namespaces with tracefs unmounted."""
    script = UNMOUNT + "ip link set lo up\n" + commands
    return subprocess.run(["unshare", "-m", "-n", "--propagation", "private", "sh", "-c",
                           script], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_trace_works_with_tracefs_unmounted(tmp_path: Path) -> None:
    out = tmp_path / "fresh.skbtrace"
    mounted = os.path.isdir(os.path.join(TRACEFS, "instances"))
    cmd = " ".join(SKBPATH)
    r = _fresh(f"{sys.executable} -c '{LOOPBACK}' &\n"
               f"{cmd} trace --attach tracefs --duration 2 -o {out}\n"
               "rc=$?; wait; exit $rc\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tracefs unmounted" in r.stdout
    assert "0 missing on this kernel" in r.stderr and "Traceback" not in r.stderr
    contents = TraceReader(str(out)).read_all()
    assert contents.end is not None and contents.truncated is None
    assert contents.header["attach"] == "tracefs"
    assert "net:net_dev_xmit" in contents.header["tracefs_events"]
    assert contents.events > 0
    # The machine's own tracefs is as it was (mounted or not), no instance of ours left.
    assert os.path.isdir(os.path.join(TRACEFS, "instances")) == mounted


def test_list_probes_with_tracefs_unmounted() -> None:
    r = _fresh(f"{' '.join(SKBPATH)} trace --attach tracefs --list-probes\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "net:net_dev_xmit" in r.stdout and "skipped" not in r.stdout


def _killed_instance(tmp_path: Path) -> tuple[str, int]:
    """Start a tracefs trace, SIGKILL it once recording: its instance stays behind."""
    ready = tmp_path / "ready"
    proc = subprocess.Popen([*SKBPATH, "trace", "--attach", "tracefs", "-o",
                             str(tmp_path / "killed.skbtrace"), "--ready-file", str(ready)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the tracer did not start: {proc.communicate()[1]!r}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    path = os.path.join(TRACEFS, "instances", f"skbpath-{proc.pid}")
    assert os.path.isdir(path), "a SIGKILLed trace leaves its instance"
    with open(os.path.join(path, "tracing_on")) as fh:
        assert fh.read().strip() == "1"  # still recording
    return path, proc.pid


def test_next_start_removes_a_killed_trace_instance(tmp_path: Path) -> None:
    path, pid = _killed_instance(tmp_path)
    try:
        r = subprocess.run([*SKBPATH, "trace", "--attach", "tracefs", "--duration", "1", "-o",
                            str(tmp_path / "next.skbtrace")], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert (f"skbpath: removed tracefs instance skbpath-{pid}, left by pid {pid}, "
                "which is gone") in r.stderr
        assert not os.path.exists(path)
    finally:
        remove_instance(path)


def test_cleanup_command_removes_a_killed_trace_instance(tmp_path: Path) -> None:
    path, pid = _killed_instance(tmp_path)
    try:
        r = subprocess.run([*SKBPATH, "cleanup"], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert f"removed tracefs instance skbpath-{pid}" in r.stdout
        assert not os.path.exists(path)
        again = subprocess.run([*SKBPATH, "cleanup"], cwd=REPO, capture_output=True, text=True,
                               timeout=60)
        assert again.returncode == 0 and "no stale skbpath instances" in again.stdout
    finally:
        remove_instance(path)
