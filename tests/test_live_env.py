"""Whether a mode can run here: one place decides (tracer/record/attach.py), each gap with its
remedy, one clear message and exit code 2; and the kprobe miss counts."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.record.attach import choose_attach, machine_features, require_mode
from skbpath.tracer.record.bpf.backend import kprobe_misses


def kernel(**kw: object) -> KernelInfo:
    base: dict[str, object] = dict(
        release="6.1.0-test", traceable={}, kallsyms={"bpf_get_raw_tracepoint"},
        has_kprobes=True, has_btf=True, has_headers=True, has_fentry=True, tracefs="/nonexistent",
    )
    base.update(kw)
    return KernelInfo(**base)  # type: ignore[arg-type]


@pytest.fixture
def fake_bcc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcc", types.ModuleType("bcc"))
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")


def check(mode: str = "kprobe", **kw: object) -> None:
    require_mode(machine_features(kernel(**kw)), mode)


@pytest.mark.parametrize("mode", ["fentry", "kprobe", "tracepoint", "tracefs"])
def test_all_present_passes(fake_bcc: None, mode: str) -> None:
    check(mode)


def test_not_root(fake_bcc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for mode in ("kprobe", "tracefs"):
        with pytest.raises(SkbpathError, match="needs root: run it with sudo") as exc:
            check(mode)
        assert exc.value.exit_code == 2
    with pytest.raises(SkbpathError, match="needs root"):  # auto too: no mode runs
        choose_attach(machine_features(kernel()))


def test_no_bcc(fake_bcc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bcc", None)
    with pytest.raises(SkbpathError, match="no bcc .apt-get install python3-bpfcc"):
        check()
    check("tracefs")  # needs no bcc


def test_no_kprobes(fake_bcc: None) -> None:
    with pytest.raises(SkbpathError, match="no kprobes .*skbpath lab"):
        check(has_kprobes=False)
    check("tracepoint", has_kprobes=False)


def test_no_headers(fake_bcc: None) -> None:
    with pytest.raises(SkbpathError, match="apt-get install linux-headers-6.1.0-test"):
        check(has_headers=False)


def test_every_gap_with_its_remedy_in_one_line(fake_bcc: None) -> None:
    with pytest.raises(SkbpathError) as exc:
        check("fentry", has_fentry=False, has_headers=False)
    msg = str(exc.value)
    assert msg.startswith("--attach fentry cannot run on 6.1.0-test: ")
    assert "no BPF trampolines (use --attach kprobe)" in msg
    assert "; no headers (bcc compiles against them: apt-get install linux-headers-6.1.0-test)" \
        in msg
    assert "\n" not in msg


def test_auto_falls_through_to_a_mode_that_runs(fake_bcc: None) -> None:
    feat = machine_features(kernel(has_fentry=False, has_kprobes=False))
    assert choose_attach(feat) == ("tracepoint", ["fentry: no BPF trampolines",
                                                  "kprobe: no kprobes"])
    inspect = machine_features(kernel(has_headers=False)).for_inspection()
    assert choose_attach(inspect) == ("fentry", [])


def test_kprobe_misses_sums_only_our_probes(tmp_path: Path) -> None:
    profile = tmp_path / "kprobe_profile"
    profile.write_text(
        "  p_tcp_v4_rcv_bcc_42        1000   3\n"
        "  r_tcp_v4_rcv_bcc_42        1000   4\n"
        "  p_tcp_v4_rcv_bcc_43        1000   100\n"
    )
    assert kprobe_misses(str(tmp_path), 42) == 7
    assert kprobe_misses("/nonexistent", 42) == 0
