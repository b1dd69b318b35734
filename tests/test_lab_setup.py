"""The lab's host side, pure: NIC options, topologies, presets, the lock (no boot)."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.lab import vm as lab
from skbpath.tracer.lab.kernels import lab_kernel, release_of, series_images
from skbpath.tracer.lab.vm import (
    NICS,
    PEER_ADDRS,
    PRESETS,
    LabOptions,
    Scenario,
    check_lab,
    parse_scenario,
    qemu_nics,
)

from tests.lab.labrun import SKBPATH, Boot, boot_report

ROOT = Path(__file__).resolve().parents[1]
TEST_NET = ipaddress.IPv4Network("198.18.0.0/24")


@pytest.mark.parametrize("nic", sorted(NICS))
def test_two_nics_of_the_model_on_one_hub(nic: str) -> None:
    opts = qemu_nics(nic)
    device = NICS[nic][0]
    assert opts.count(f"-device {device},") == 2
    assert opts.count("hubid=0") == 2


def test_every_address_the_lab_uses_is_in_the_test_range() -> None:
    assert all(ipaddress.IPv4Address(a) in TEST_NET for a in PEER_ADDRS.values())
    guest = (ROOT / "tracer" / "lab" / "guest.sh").read_text()
    for addr in set(re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", guest)):
        assert ipaddress.IPv4Address(addr) in TEST_NET, addr


def test_bad_topology_and_nic_are_one_line_errors() -> None:
    with pytest.raises(SkbpathError, match="--topology ring: not one of pair, forward"):
        check_lab(LabOptions(output="x", topology="ring"))
    with pytest.raises(SkbpathError, match="--nic rtl8139: not one of e1000, virtio"):
        check_lab(LabOptions(output="x", nic="rtl8139"))


def test_cli_rejects_unknown_topology() -> None:
    proc = subprocess.run([*SKBPATH, "lab", "--topology", "ring"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "'ring' is not one of" in proc.stderr


def test_presets_cover_the_scenarios() -> None:
    assert {"bulk", "rr", "udp", "closed", "firewall", "arp", "loopback"} <= set(PRESETS)
    # The firewall rule file the preset loads ships with the package.
    rules = (ROOT / "tracer" / "lab" / "firewall.nft").read_text()
    assert re.findall(r"^\s*(tcp|udp) dport 5299 drop$", rules, re.M) == ["tcp", "udp"]


def test_the_lab_lock_serialises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(lab, "LOCK_PATH", str(tmp_path / "lab.lock"))
    order: list[str] = []

    def second() -> None:
        with lab.lab_lock():
            order.append("second")

    with lab.lab_lock():
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(timeout=5)
    assert order == ["first", "second"]
    assert "another lab is running; waiting" in capsys.readouterr().err


def test_scenarios_parse_name_traffic_and_trace_options() -> None:
    assert parse_scenario("rr:rr") == Scenario("rr", "rr")
    assert parse_scenario("fe:rr:--attach fentry") == Scenario("fe", "rr", ("--attach", "fentry"))
    # A command may hold colons; only a last part starting with '-' is options.
    assert parse_scenario("web:curl http://$PEER:80/") == Scenario("web", "curl http://$PEER:80/")
    assert parse_scenario("p:ping -c 1 $PEER:--proto 'udp'") == Scenario(
        "p", "ping -c 1 $PEER", ("--proto", "udp"))


@pytest.mark.parametrize("spec", ["rr", ":rr", "a b:rr", "x:", "x::--attach kprobe",
                                  "x:rr:--attach 'kprobe"])
def test_bad_scenarios_are_one_line_errors(spec: str) -> None:
    with pytest.raises(SkbpathError, match=r"^--scenario "):
        parse_scenario(spec)


def test_scenario_names_must_differ(tmp_path: Path) -> None:
    opts = LabOptions(output=str(tmp_path), scenarios=[Scenario("a", "rr"), Scenario("a", "udp")])
    with pytest.raises(SkbpathError, match="the name a is given twice"):
        check_lab(opts)


BOOT = ["vmlinuz-6.1.0-56-amd64", "vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-57-amd64",
        "vmlinuz-6.12.9+deb12-amd64", "vmlinuz-6.12.117+deb12-amd64",
        "vmlinuz-6.12.117+deb12-rt-amd64", "vmlinuz-6.12.117+deb12-cloud-amd64",
        "config-6.1.0-99-amd64", "vmlinuz-6.10.3-amd64"]


def test_a_series_is_its_newest_standard_image() -> None:
    assert series_images("6.1", BOOT) == [
        "vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-56-amd64", "vmlinuz-6.1.0-57-amd64"]
    assert series_images("6.12", BOOT) == [
        "vmlinuz-6.12.9+deb12-amd64", "vmlinuz-6.12.117+deb12-amd64"]


def test_lab_kernel_finds_series_and_paths(tmp_path: Path) -> None:
    for name in BOOT:
        (tmp_path / name).write_text("")
    assert lab_kernel("6.12", str(tmp_path)) == str(tmp_path / "vmlinuz-6.12.117+deb12-amd64")
    assert lab_kernel("6.1", str(tmp_path)) == str(tmp_path / "vmlinuz-6.1.0-57-amd64")
    image = str(tmp_path / "vmlinuz-6.1.0-9-amd64")
    assert lab_kernel(image, str(tmp_path)) == image
    assert release_of(image) == "6.1.0-9-amd64"
    with pytest.raises(SkbpathError, match=r"--kernel 6\.6: no Debian 6\.6 kernel in .*install"):
        lab_kernel("6.6", str(tmp_path))
    with pytest.raises(SkbpathError, match=r"--kernel /nope: no such kernel image"):
        lab_kernel("/nope", str(tmp_path))


def test_cli_rejects_a_bad_scenario_and_kernel() -> None:
    for args in (["--scenario", "nocolon"], ["--kernel", "/no/such/vmlinuz"]):
        proc = subprocess.run([*SKBPATH, "lab", *args], capture_output=True, text=True,
                              cwd=ROOT, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_default_limit_grows_with_the_scenarios() -> None:
    assert lab.lab_timeout(None, 0) == lab.BOOT_SECONDS + lab.SCENARIO_SECONDS
    assert lab.lab_timeout(None, 4) == lab.BOOT_SECONDS + 4 * lab.SCENARIO_SECONDS
    assert lab.lab_timeout(50, 4) == 50  # --timeout wins
    assert LabOptions(output="x").timeout is None


def test_kill_tree_kills_the_guest_with_its_launcher(tmp_path: Path) -> None:
    """vng's child (QEMU) must not outlive a lab that timed out: the next boot would run
    beside it on the same two cores (what made one CI run take 88 minutes)."""
    from skbpath.tracer.lab.console import kill_tree

    pidfile = tmp_path / "child.pid"
    proc = subprocess.Popen(["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"],
                            start_new_session=True, text=True)
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    kill_tree(proc)
    assert proc.returncode is not None
    for _ in range(100):  # reaped by init once killed; gone from /proc
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_the_guest_dies_with_the_lab_even_by_sigkill(tmp_path: Path) -> None:
    """A SIGKILLed lab (subprocess.run's cleanup after an interrupt) leaves no QEMU behind."""
    fake_lab = (
        "import subprocess, sys, time\n"
        "from skbpath.tracer.lab.console import guard_group\n"
        "guest = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "guard_group(guest.pid)\n"
        "print(guest.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    lab_proc = subprocess.Popen([sys.executable, "-c", fake_lab], stdout=subprocess.PIPE,
                                text=True)
    assert lab_proc.stdout is not None
    guest = int(lab_proc.stdout.readline())
    assert _state(guest) != "Z"
    lab_proc.kill()
    lab_proc.wait()
    for _ in range(100):  # the watchdog polls once a second
        if _state(guest) == "Z":
            break
        time.sleep(0.1)
    assert _state(guest) == "Z"


def test_scenarios_bring_their_nic_counters_beside_the_trace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_scenarios copies NAME.skbtrace and, where the guest wrote it, NAME.nics."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.skbtrace").write_text("trace a")
    (work / "a.nics").write_text("before root eth0 e1000 1 2\nafter root eth0 e1000 5 9\n")
    (work / "b.skbtrace").write_text("trace b")  # a scenario whose counters were not read

    def boot(opts: LabOptions, scenarios: list[Scenario],
             echo: bool) -> tuple[str, dict[str, str], str]:
        return str(work), {s.name: str(work / f"{s.name}.skbtrace") for s in scenarios}, ""

    monkeypatch.setattr(lab, "_boot", boot)
    out = tmp_path / "out"
    res = lab.run_scenarios(LabOptions(output=str(out), scenarios=[Scenario("a", "rr"),
                                                                     Scenario("b", "rr")]))
    assert sorted(res.traces) == ["a", "b"] and not res.failed
    assert (out / "a.nics").read_text().startswith("before root eth0 e1000")
    assert not (out / "b.nics").exists()
    assert not work.exists()  # the work dir is removed afterwards


def test_a_boot_report_keeps_the_lines_that_say_what_happened() -> None:
    # What a CI log shows of each boot, the moment it ends (tests/lab/conftest.py).
    stderr = "\n".join([
        "skbpath lab exited with 1:",
        "lab: guest up: enp0s10 and enp0s11 (e1000), topology pair, peer 198.18.0.2",
        "lab: scenario mixed: start",
        "skbpath: compiling and attaching, ring buffer 16 MiB (Ctrl-C stops)...",
        "skbpath: compiled in 133.5 s, attached 103 probes in 16.8 s",
        "    12.8 s       1,382 events         2 lost",
        "skbpath: 147,466 events in 34.9 s, 16,170 journeys -> /x/mixed.skbtrace",
        "skbpath: LOST bpf_missed=5, stack_lost=1,485",
        "lab: tracer exited with 0",
        "lab: scenario pcap: start",
        "lab: the tracer did not start",
    ])
    lines = boot_report(("6.1", "e1000", "pair"),
                        Boot({"mixed": "/x/mixed.skbtrace"}, stderr, 839.4, ["mixed", "pcap"]))
    assert lines == [
        "lab boot 6.1 e1000 pair: 839 s, 1 of 2 traces (mixed, pcap)",
        "  skbpath lab exited with 1:",
        "  lab: scenario mixed: start",
        "  skbpath: compiled in 133.5 s, attached 103 probes in 16.8 s",
        "  skbpath: 147,466 events in 34.9 s, 16,170 journeys -> /x/mixed.skbtrace",
        "  skbpath: LOST bpf_missed=5, stack_lost=1,485",
        "  lab: tracer exited with 0",
        "  lab: scenario pcap: start",
        "  lab: the tracer did not start",
    ]
