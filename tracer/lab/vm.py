"""The lab: a real kernel in QEMU (through virtme-ng) to trace live.

The guest boots a Debian kernel (6.1 by default, or 6.12: tracer/lab/kernels.py)
on the host's root file system, with two
NICs (e1000, or virtio-net) on a QEMU hub, so traffic crosses real driver
paths.  Topologies (built by tracer/lab/guest.sh):

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
back through a ``--rwdir`` shared folder.  One boot can run several
scenarios (traffic and trace options), each into its own trace: booting
costs far more than tracing under TCG.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources

from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.lab.console import LineEcho, follow, guard_group, kill_tree, lab_failure
from skbpath.tracer.lab.kernels import DEFAULT_SERIES, headers_missing, lab_kernel, release_of

# The peer's address per topology: where $PEER points.
PEER_ADDRS = {"pair": "198.18.0.2", "forward": "198.18.0.130"}
TOPOLOGIES = tuple(PEER_ADDRS)
# NIC model -> (QEMU device, the guest driver module that binds it).
NICS = {"e1000": ("e1000", "e1000"), "virtio": ("virtio-net-pci", "virtio_net")}
PRESETS = {
    # A TCP bulk transfer; -n bounds the trace to a few MB under TCG.
    "bulk": "iperf3 -c $PEER -n 16M -l 64K",
    # TCP request/response: 200 exchanges of 100 bytes on one connection.
    "rr": '"$SKBPATH_PY" -m skbpath.tracer.lab.rr client $PEER 200',
    # A UDP stream; the iperf3 server in the peer's netns answers UDP too.
    "udp": "iperf3 -u -c $PEER -b 40M -n 2M -l 1400",
    # TCP and UDP to a closed port: drops with reason NO_SOCKET at the peer.
    "closed": '"$SKBPATH_PY" -m skbpath.tracer.lab.rr closed $PEER 5',
    # A firewall DROP rule at the peer (nftables): drops with NETFILTER_DROP.
    "firewall": 'ip netns exec skbpeer nft -f "$SKBPATH_ROOT/tracer/lab/firewall.nft" && '
                '"$SKBPATH_PY" -m skbpath.tracer.lab.rr filtered $PEER 3',
    # Forget every neighbour, then ping: ARP request, reply and the queued packet.
    "arp": "ip neigh flush all && ip -n skbpeer neigh flush all && ping -c 3 -i 0.5 $PEER",
    # TCP request/response over 127.0.0.1: loopback_xmit and the backlog.
    "loopback": '"$SKBPATH_PY" -m skbpath.tracer.lab.rr server 127.0.0.1 & sleep 1; '
                '"$SKBPATH_PY" -m skbpath.tracer.lab.rr client 127.0.0.1 100; kill $!',
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


SCENARIO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Scenario:
    """One traced run in a lab boot: traffic (a preset or a command) and trace options."""

    name: str
    traffic: str
    trace_args: tuple[str, ...] = ()


def parse_scenario(spec: str) -> Scenario:
    """``NAME:TRAFFIC[:TRACE OPTS]``, e.g. ``fe:rr:--attach fentry`` (options start with ``-``)."""
    name, sep, rest = spec.partition(":")
    if not sep or not rest.strip() or not SCENARIO_NAME_RE.match(name):
        raise SkbpathError(f"--scenario {spec!r}: expected NAME:TRAFFIC[:TRACE OPTIONS] "
                           "(NAME of letters, digits, '_', '-', '.')")
    traffic, opts = rest, ""
    head, sep, tail = rest.rpartition(":")
    if sep and tail.strip().startswith("-"):
        traffic, opts = head, tail
    try:
        args = tuple(shlex.split(opts))
    except ValueError as exc:
        raise SkbpathError(f"--scenario {spec!r}: trace options: {exc}") from exc
    if not traffic.strip():
        raise SkbpathError(f"--scenario {spec!r}: no traffic")
    return Scenario(name, traffic, args)


# Under TCG a boot takes about a minute and a scenario (compile, attach, traffic,
# detach) three to four, most of it bcc's compile: the default limit has room
# for both, about twice over, and the guest gives up on a tracer that has not
# started within SCENARIO_SECONDS (guest.sh), so one hung scenario does not end
# the boot.
BOOT_SECONDS = 300
SCENARIO_SECONDS = 600


@contextlib.contextmanager
def _term_raises() -> Iterator[None]:
    """SIGTERM raises SystemExit here, so that the guest's process group is killed too."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def lab_timeout(given: int | None, scenarios: int) -> int:
    """The limit for one boot: ``given``, or room for the boot and each scenario."""
    return given if given is not None else BOOT_SECONDS + SCENARIO_SECONDS * max(1, scenarios)


@dataclass
class LabOptions:
    """What ``skbpath lab`` should run."""

    output: str
    traffic: str = "bulk"
    topology: str = "pair"
    nic: str = "e1000"
    # A series (6.1, 6.12: the newest installed image of it) or an image path.
    kernel: str = DEFAULT_SERIES
    memory: str = "2G"
    trace_args: list[str] = field(default_factory=list)
    # Seconds for the whole boot; None: BOOT_SECONDS plus SCENARIO_SECONDS per scenario.
    timeout: int | None = None
    keep_dir: bool = False
    # "trace" runs the traffic once under the tracer; "attach-bench" times
    # rr exchanges untraced and under each BPF attach mode, alternating; "bench" alternates
    # untraced and traced iperf3 runs and keeps everything in the work dir.
    mode: str = "trace"
    # Bench mode: the tracers each round runs after its untraced run, in order
    # (events, aggregate, bpftrace: see guest.sh); bpftrace needs events before it.
    bench_modes: str = "events"
    bench_runs: int = 3
    bench_seconds: int = 5
    bench_exchanges: int = 1000
    # Show the guest's whole log (with its shell trace), not only the progress lines.
    verbose: bool = False
    # The NICs' interrupts on CPU 0 and the traffic on the other CPUs (guest.sh):
    # a softirq then never interrupts a probe of its own function in a task,
    # which the kernel would skip (bpf_missed, kprobe_missed).
    pin: bool = True
    # With scenarios, ``output`` is a directory: each writes NAME.skbtrace there.
    scenarios: list[Scenario] = field(default_factory=list)


def find_vng() -> str:
    """The vng executable: beside this Python first (its venv), then on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "vng")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("vng")
    if not found:
        raise SkbpathError("virtme-ng is missing: pip install virtme-ng (or run 'make demo')")
    return found


def check_lab(opts: LabOptions) -> str:
    """Fail early, with one line, if the lab cannot boot here; return the kernel image."""
    if opts.topology not in PEER_ADDRS:
        raise SkbpathError(f"--topology {opts.topology}: not one of {', '.join(TOPOLOGIES)}")
    if opts.nic not in NICS:
        raise SkbpathError(f"--nic {opts.nic}: not one of {', '.join(NICS)}")
    names = [sc.name for sc in opts.scenarios]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SkbpathError(f"--scenario: the name {dup[0]} is given twice")
    image = lab_kernel(opts.kernel)
    release = release_of(image)
    if headers_missing(release):
        raise SkbpathError(f"no headers for the lab kernel {release} (bcc compiles against them "
                           f"in the guest): apt-get install linux-headers-{release}")
    if not shutil.which("qemu-system-x86_64"):
        raise SkbpathError("QEMU is missing: apt-get install qemu-system-x86")
    if not shutil.which("busybox"):
        raise SkbpathError("virtme-ng needs a static busybox: apt-get install busybox-static")
    find_vng()
    return image


def traffic_command(traffic: str) -> str:
    """A preset's command, or the user's own command unchanged."""
    return PRESETS.get(traffic, traffic)


def guest_script_path() -> str:
    """The shell script the guest runs (shipped beside this module)."""
    return str(resources.files("skbpath.tracer.lab").joinpath("guest.sh"))


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
    mode reads its results there), else the output path.  For several
    scenarios in one boot see :func:`run_scenarios`.
    """
    single = Scenario("trace", opts.traffic, tuple(opts.trace_args))
    workdir, traces, tail = _boot(opts, [single], echo)
    trace_in_guest = traces.get(single.name)
    if trace_in_guest is None:
        # The work dir stays: the failure names its log.
        raise SkbpathError(f"the lab wrote no trace: {tail}")
    out_dir = os.path.dirname(os.path.abspath(opts.output))
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(trace_in_guest, opts.output)
    if os.path.exists(trace_in_guest + ".prof"):  # SKBPATH_PROFILE
        shutil.copyfile(trace_in_guest + ".prof", opts.output + ".prof")
    if opts.keep_dir:
        return workdir
    shutil.rmtree(workdir, ignore_errors=True)
    return opts.output


@dataclass
class ScenarioResults:
    """What one boot's scenarios wrote: trace paths by name, and why the others wrote none."""

    traces: dict[str, str]
    failed: dict[str, str]


def run_scenarios(opts: LabOptions, echo: bool = True) -> ScenarioResults:
    """Boot the lab once and trace each of ``opts.scenarios`` into ``opts.output``/NAME.skbtrace.

    A scenario that fails does not stop the others; its guest log lines are
    kept as the reason.
    """
    if not opts.scenarios:
        raise SkbpathError("no scenario given")
    workdir, traces, tail = _boot(opts, opts.scenarios, echo)
    os.makedirs(opts.output, exist_ok=True)
    out = ScenarioResults({}, {})
    for sc in opts.scenarios:
        if sc.name in traces:
            dest = os.path.join(opts.output, f"{sc.name}.skbtrace")
            shutil.copyfile(traces[sc.name], dest)
            out.traces[sc.name] = dest
            # The NICs' counters around its traffic (guest.sh's nic_stats), beside it.
            nics = os.path.join(workdir, f"{sc.name}.nics")
            if os.path.isfile(nics):
                shutil.copyfile(nics, os.path.join(opts.output, f"{sc.name}.nics"))
        else:
            out.failed[sc.name] = _scenario_log(workdir, sc.name) or tail
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def _scenario_log(workdir: str, name: str) -> str:
    """The guest log's lines for scenario ``name`` (the last 15), or empty."""
    try:
        with open(os.path.join(workdir, "guest.log"), errors="replace") as fh:
            text = fh.read()
    except OSError:
        return ""
    start = text.find(f"lab: scenario {name}: start")
    if start < 0:
        return ""
    end = text.find(f"lab: scenario {name}: end", start)
    lines = text[start:end if end >= 0 else None].strip().splitlines()[-15:]
    return "\n  ".join(lines)


def _boot(opts: LabOptions, scenarios: list[Scenario],
          echo: bool) -> tuple[str, dict[str, str], str]:
    """Boot once and run ``scenarios``: (work dir, trace path by scenario, the log's last lines)."""
    image = check_lab(opts)
    vng = find_vng()
    workdir = tempfile.mkdtemp(prefix="skbpath-lab-")
    os.chmod(workdir, 0o755)
    log_path = os.path.join(workdir, "guest.log")
    progress_path = os.path.join(workdir, "progress.log")
    vng_log = os.path.join(workdir, "vng.log")
    env_file = os.path.join(workdir, "lab.env")
    scenario_file = os.path.join(workdir, "scenarios.tsv")
    with open(scenario_file, "w") as fh:
        for sc in scenarios:
            # Tabs and newlines would split the guest's fields: a command has none.
            traffic = " ".join(traffic_command(sc.traffic).split())
            fh.write(f"{sc.name}\t{traffic}\t{shlex.join(sc.trace_args)}\n")
    # The checkout (or site-packages/skbpath): tracer/lab/vm.py is three
    # levels below it, once the checkout's src/skbpath symlinks are resolved.
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    with open(env_file, "w") as fh:
        # Values are quoted for the guest's shell; the guest sources this file.
        for key, value in {
            "SKBPATH_PY": sys.executable,
            "SKBPATH_ROOT": repo_root,
            "SKBPATH_OUT": workdir,
            "SKBPATH_LOG": log_path,
            "SKBPATH_PROGRESS": progress_path,
            "SKBPATH_SCENARIOS": scenario_file,
            "SKBPATH_TRAFFIC": traffic_command(opts.traffic),
            "SKBPATH_TRACE_ARGS": shlex.join(opts.trace_args),
            "SKBPATH_TOPOLOGY": opts.topology,
            "SKBPATH_NIC_DRIVER": NICS[opts.nic][1],
            "PEER_ADDR": PEER_ADDRS[opts.topology],
            "SKBPATH_MODE": opts.mode,
            "SKBPATH_PIN": "1" if opts.pin else "0",
            # A developer's knob: the tracer's own cost under emulation, by function.
            "SKBPATH_PROFILE": os.environ.get("SKBPATH_PROFILE", ""),
            "SKBPATH_BENCH_MODES": opts.bench_modes,
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
        image,
        "-m",
        opts.memory,
        "--rwdir",
        workdir,
        f"--qemu-opts={qemu_nics(opts.nic)}",
        "--exec",
        f"bash {shlex.quote(guest_script_path())} {shlex.quote(env_file)}",
    ]
    if echo:
        what = f", {len(scenarios)} scenarios" if len(scenarios) > 1 else ""
        print(f"skbpath lab: booting {os.path.basename(image)} in QEMU (TCG), "
              f"topology {opts.topology}, {opts.nic} NICs{what}...", file=sys.stderr)
    shown = log_path if opts.verbose else progress_path
    show = LineEcho(sys.stderr.isatty(), opts.verbose) if echo else None
    with lab_lock(echo), open(vng_log, "w") as vng_out:
        # Its own process group, so that a timeout or Ctrl-C kills QEMU too.
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=vng_out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        timeout = lab_timeout(opts.timeout, len(scenarios))
        guard = guard_group(proc.pid)
        try:
            with _term_raises():
                returncode = follow(proc, shown, show, timeout)
        except subprocess.TimeoutExpired:
            raise SkbpathError(lab_failure(f"the lab did not finish within {timeout} s",
                                           log_path, vng_log)) from None
        except BaseException:
            kill_tree(proc)
            raise
        finally:
            kill_tree(guard)
    traces = {}
    for sc in scenarios:
        name = "trace" if opts.mode != "trace" else sc.name
        p = os.path.join(workdir, f"{name}.skbtrace")
        if os.path.exists(p) and os.path.getsize(p) > 0:
            traces[sc.name] = p
    return workdir, traces, lab_failure(f"vng exit code {returncode}", log_path, vng_log)
