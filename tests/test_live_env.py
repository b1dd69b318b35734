"""The live tracer's set-up checks: one clear message and exit code 2 for each missing piece."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from tracer.errors import SkbpathError
from tracer.kernel import KernelInfo
from tracer.live import check_environment, kprobe_misses


def kernel(**kw: object) -> KernelInfo:
    base: dict[str, object] = dict(
        release="6.1.0-test", traceable={}, kallsyms=set(), has_kprobes=True, has_btf=True,
        has_headers=True, has_fentry=True, tracefs="/nonexistent",
    )
    base.update(kw)
    return KernelInfo(**base)  # type: ignore[arg-type]


@pytest.fixture
def fake_bcc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcc", types.ModuleType("bcc"))
    monkeypatch.setattr("os.geteuid", lambda: 0)


def test_all_present_passes(fake_bcc: None) -> None:
    check_environment(kernel())


def test_not_root(fake_bcc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(SkbpathError, match="needs root: run it with sudo") as exc:
        check_environment(kernel())
    assert exc.value.exit_code == 2


def test_no_bcc(fake_bcc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcc", None)
    with pytest.raises(SkbpathError, match="apt-get install python3-bpfcc"):
        check_environment(kernel())


def test_no_kprobes(fake_bcc: None) -> None:
    with pytest.raises(SkbpathError, match="no kprobes .*skbpath lab"):
        check_environment(kernel(has_kprobes=False))


def test_no_headers(fake_bcc: None) -> None:
    with pytest.raises(SkbpathError, match="apt-get install linux-headers-6.1.0-test"):
        check_environment(kernel(has_headers=False))


def test_kprobe_misses_sums_only_our_probes(tmp_path: Path) -> None:
    profile = tmp_path / "kprobe_profile"
    profile.write_text(
        "  p_tcp_v4_rcv_bcc_42        1000   3\n"
        "  r_tcp_v4_rcv_bcc_42        1000   4\n"
        "  p_tcp_v4_rcv_bcc_43        1000   100\n"
    )
    assert kprobe_misses(str(tmp_path), 42) == 7
    assert kprobe_misses("/nonexistent", 42) == 0
