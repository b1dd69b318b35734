"""The lab: a real kernel in QEMU (through virtme-ng) to trace live.

The guest boots Debian's 6.1 kernel on the host's root file system, with two
NICs (e1000, or virtio-net) on a QEMU hub, so traffic crosses real driver
paths.  Topologies (built by tracer/lab_guest.sh):

``pair``     the first NIC stays in the root namespace (198.18.0.1), the
             second sits in netns ``skbpeer`` (198.18.0.2).  Traffic runs in
             the root namespace.
``forward``  the root namespace is a router: the first NIC is in netns
             ``skbclient`` (198.18.0.2/25), the second is the router's
             (198.18.0.1/25), and a veth pair leads from the router
             (198.18.0.129/25) to netns ``skbpeer`` (198.18.0.130/25).
             Traffic runs in ``skbclient`` and is forwarded from the NIC to
             the veth.

Every address is in 198.18.0.0/24, our own test range.  ``skbpath trace``
runs inside the guest while the traffic command runs, and the trace comes
back through a ``--rwdir`` shared folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources

from .errors import SkbpathError

DEFAULT_KERNEL = "/boot/vmlinuz-6.1.0-56-amd64"
# The peer's address per topology: where $PEER points.
PEER_ADDRS = {"pair": "198.18.0.2", "forward": "198.18.0.130"}
TOPOLOGIES = tuple(PEER_ADDRS)
# NIC model -> (QEMU device, the guest driver module that binds it).
NICS = {"e1000": ("e1000", "e1000"), "virtio": ("virtio-net-pci", "virtio_net")}
PRESETS = {
    # A TCP bulk transfer; -n bounds the trace to a few MB under TCG.
    "bulk": "iperf3 -c $PEER -n 16M -l 64K",
    # TCP request/response: 200 exchanges of 100 bytes on one connection.
    "rr": '"$SKBPATH_PY" -m tracer.rr client $PEER 200',
    # A UDP stream; the iperf3 server in the peer's netns answers UDP too.
    "udp": "iperf3 -u -c $PEER -b 40M -n 2M -l 1400",
    # TCP and UDP to a closed port: drops with reason NO_SOCKET at the peer.
    "closed": '"$SKBPATH_PY" -m tracer.rr closed $PEER 5',
    # A firewall DROP rule at the peer (nftables): drops with NETFILTER_DROP.
    "firewall": 'ip netns exec skbpeer nft -f "$SKBPATH_ROOT/tracer/lab_firewall.nft" && '
                '"$SKBPATH_PY" -m tracer.rr filtered $PEER 3',
    # Forget every neighbour, then ping: ARP request, reply and the queued packet.
    "arp": "ip neigh flush all && ip -n skbpeer neigh flush all && ping -c 3 -i 0.5 $PEER",
    # TCP request/response over 127.0.0.1: loopback_xmit and the backlog.
    "loopback": '"$SKBPATH_PY" -m tracer.rr server 127.0.0.1 & sleep 1; '
                '"$SKBPATH_PY" -m tracer.rr client 127.0.0.1 100; kill $!',
}
# One lab at a time per machine: two TCG guests on two cores starve each other
# (and the timings the lab measures).
LOCK_PATH = "/tmp/skbpath-lab.lock"


def qemu_nics(nic: str) -> str:
    """QEMU options for two NICs of model ``nic`` on one hub."""
    device = NICS[nic][0]
    return " ".join(
        f"-netdev hubport,id=p{i},hubid=0 -device {device},netdev=p{i}" for i in range(2)
    )


@dataclass
class LabOptions:
    """What ``skbpath lab`` should run."""

    output: str
    traffic: str = "bulk"
    topology: str = "pair"
    nic: str = "e1000"
    kernel: str = DEFAULT_KERNEL
    memory: str = "2G"
    trace_args: list[str] = field(default_factory=list)
    timeout: int = 600
    keep_dir: bool = False
    # "trace" runs the traffic once under the tracer; "attach-bench" times
    # rr exchanges untraced and under each BPF attach mode, alternating; "bench" alternates
    # untraced and traced iperf3 runs and keeps everything in the work dir.
    mode: str = "trace"
    bench_runs: int = 3
    bench_seconds: int = 5
    bench_exchanges: int = 1000


def find_vng() -> str:
    """The vng executable: beside this Python first (its venv), then on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "vng")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("vng")
    if not found:
        raise SkbpathError("virtme-ng is missing: pip install virtme-ng (or run 'make demo')")
    return found


def check_lab(opts: LabOptions) -> None:
    """Fail early, with one line, if the lab cannot boot here."""
    if opts.topology not in PEER_ADDRS:
        raise SkbpathError(f"--topology {opts.topology}: not one of {', '.join(TOPOLOGIES)}")
    if opts.nic not in NICS:
        raise SkbpathError(f"--nic {opts.nic}: not one of {', '.join(NICS)}")
    if not os.path.exists(opts.kernel):
        raise SkbpathError(
            f"lab kernel {opts.kernel} not found: apt-get install linux-image-6.1.0-56-amd64 "
            "linux-headers-6.1.0-56-amd64"
        )
    if not shutil.which("qemu-system-x86_64"):
        raise SkbpathError("QEMU is missing: apt-get install qemu-system-x86")
    if not shutil.which("busybox"):
        raise SkbpathError("virtme-ng needs a static busybox: apt-get install busybox-static")
    find_vng()


def traffic_command(traffic: str) -> str:
    """A preset's command, or the user's own command unchanged."""
    return PRESETS.get(traffic, traffic)


def guest_script_path() -> str:
    """The shell script the guest runs (shipped beside this module)."""
    return str(resources.files("tracer").joinpath("lab_guest.sh"))


@contextlib.contextmanager
def lab_lock(echo: bool = True) -> Iterator[None]:
    """Hold the machine's lab lock; wait (saying so) while another lab runs."""
    with open(LOCK_PATH, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if echo:
                print("skbpath lab: another lab is running; waiting for it...", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_lab(opts: LabOptions, echo: bool = True) -> str:
    """Boot the lab, trace the traffic, copy the trace to ``opts.output``.

    Returns the guest's work directory when ``opts.keep_dir`` is set (bench
    mode reads its results there), else the output path.
    """
    check_lab(opts)
    vng = find_vng()
    workdir = tempfile.mkdtemp(prefix="skbpath-lab-")
    os.chmod(workdir, 0o755)
    trace_in_guest = os.path.join(workdir, "trace.skbtrace")
    log_path = os.path.join(workdir, "guest.log")
    env_file = os.path.join(workdir, "lab.env")
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(env_file, "w") as fh:
        # Values are quoted for the guest's shell; the guest sources this file.
        for key, value in {
            "SKBPATH_PY": sys.executable,
            "SKBPATH_ROOT": repo_root,
            "SKBPATH_OUT": trace_in_guest,
            "SKBPATH_LOG": log_path,
            "SKBPATH_TRAFFIC": traffic_command(opts.traffic),
            "SKBPATH_TRACE_ARGS": shlex.join(opts.trace_args),
            "SKBPATH_TOPOLOGY": opts.topology,
            "SKBPATH_NIC_DRIVER": NICS[opts.nic][1],
            "PEER_ADDR": PEER_ADDRS[opts.topology],
            "SKBPATH_MODE": opts.mode,
            "SKBPATH_BENCH_RUNS": str(opts.bench_runs),
            "SKBPATH_BENCH_SECONDS": str(opts.bench_seconds),
            "SKBPATH_BENCH_EXCHANGES": str(opts.bench_exchanges),
        }.items():
            fh.write(f"{key}={shlex.quote(value)}\n")
    path = os.environ.get("PATH", "")
    env = dict(os.environ, PATH=f"{os.path.dirname(vng)}:{path}")
    cmd = [
        vng,
        "--disable-kvm",
        "--disable-microvm",
        "-r",
        opts.kernel,
        "-m",
        opts.memory,
        "--rwdir",
        workdir,
        f"--qemu-opts={qemu_nics(opts.nic)}",
        "--exec",
        f"bash {shlex.quote(guest_script_path())} {shlex.quote(env_file)}",
    ]
    if echo:
        print(f"skbpath lab: booting {os.path.basename(opts.kernel)} in QEMU (TCG), "
              f"topology {opts.topology}, {opts.nic} NICs...", file=sys.stderr)
    try:
        with lab_lock(echo):
            proc = subprocess.run(
                cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=opts.timeout, check=False,
            )
    except subprocess.TimeoutExpired as exc:
        raise SkbpathError(f"the lab did not finish within {opts.timeout} s") from exc
    guest_log = ""
    if os.path.exists(log_path):
        with open(log_path, errors="replace") as fh:
            guest_log = fh.read()
    if echo and guest_log:
        sys.stderr.write(guest_log)
    if not os.path.exists(trace_in_guest) or os.path.getsize(trace_in_guest) == 0:
        tail = (guest_log or proc.stdout + proc.stderr).strip().splitlines()[-15:]
        lines = "\n  ".join(tail)
        raise SkbpathError(
            f"the lab wrote no trace (vng exit code {proc.returncode}); last lines:\n  {lines}"
        )
    out_dir = os.path.dirname(os.path.abspath(opts.output))
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(trace_in_guest, opts.output)
    if opts.keep_dir:
        return workdir
    shutil.rmtree(workdir, ignore_errors=True)
    return opts.output
