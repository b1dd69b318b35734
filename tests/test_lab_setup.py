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

from tracer import lab
from tracer.errors import SkbpathError
from tracer.lab import NICS, PEER_ADDRS, PRESETS, LabOptions, check_lab, qemu_nics

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
    guest = (ROOT / "tracer" / "lab_guest.sh").read_text()
    for addr in set(re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", guest)):
        assert ipaddress.IPv4Address(addr) in TEST_NET, addr


def test_bad_topology_and_nic_are_one_line_errors() -> None:
    with pytest.raises(SkbpathError, match="--topology ring: not one of pair, forward"):
        check_lab(LabOptions(output="x", topology="ring"))
    with pytest.raises(SkbpathError, match="--nic rtl8139: not one of e1000, virtio"):
        check_lab(LabOptions(output="x", nic="rtl8139"))


def test_cli_rejects_unknown_topology() -> None:
    proc = subprocess.run([sys.executable, "-m", "tracer.cli", "lab", "--topology", "ring"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "'ring' is not one of" in proc.stderr


def test_presets_cover_the_scenarios() -> None:
    assert {"bulk", "rr", "udp", "closed", "firewall", "arp", "loopback"} <= set(PRESETS)
    # The firewall rule file the preset loads ships with the package.
    rules = (ROOT / "tracer" / "lab_firewall.nft").read_text()
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
