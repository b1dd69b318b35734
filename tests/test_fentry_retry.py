"""fentry mode compiles kprobe programs only where there is no trampoline; a trampoline
that fails to attach makes the recorder compile once more, with a kprobe for it.

bcc is replaced by a fake that records what it was asked to attach: this host
cannot attach kprobes or the lab's trampolines, and the lab's never fail.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.record.attach import FentryPlan
from skbpath.tracer.record.bpf import backend
from skbpath.tracer.record.bpf.ringbuf import RingReader
from skbpath.tracer.record.resolve import Resolution
from skbpath.tracer.record.session import TraceOptions
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

FUNCS = FuncTable([
    FuncInfo(id=0, name="tcp_sendmsg", path="tx", layer="transport", symbols=("tcp_sendmsg",)),
    FuncInfo(id=1, name="ip_rcv", path="rx", layer="network", skb_arg=1, symbols=("ip_rcv",)),
    FuncInfo(id=2, name="e1000_clean", path="rx", layer="driver", symbols=("e1000_clean",)),
])


class FakeBpf:
    """Attaches whatever was compiled, except the trampolines named in ``broken``."""

    def __init__(self, cflags: list[str], broken: set[str],
                 broken_returns: frozenset[str] = frozenset()) -> None:
        self.cflags = cflags
        self.broken = broken
        self.broken_returns = broken_returns
        self.kprobes: list[str] = []
        self.fentry: list[str] = []
        self.cleaned = False
        self.log: list[tuple[str, Any]] = []  # attaches and arming, in order

    def _compiled_kprobe(self, fn_name: str) -> None:
        probes = next(c for c in self.cflags if c.startswith("-DSKBPATH_PROBES="))
        fid = fn_name.rsplit("_", 1)[1]
        if f"P({fid}," not in probes:
            raise Exception(f"no program {fn_name}")  # bcc raises bare Exception

    def attach_kretfunc(self, fn_name: bytes) -> None:
        sym = fn_name.decode().removeprefix("kretfunc__")
        if sym in self.broken:
            raise Exception(f"cannot attach {sym}")
        self.log.append(("fexit", sym))

    def attach_kfunc(self, fn_name: bytes) -> None:
        self.fentry.append(fn_name.decode().removeprefix("kfunc__"))
        self.log.append(("fentry", self.fentry[-1]))

    def attach_kretprobe(self, event: str, fn_name: str, maxactive: int) -> None:
        self._compiled_kprobe(fn_name)
        if event in self.broken_returns:
            raise Exception(f"cannot attach a kretprobe to {event}")
        self.log.append(("kretprobe", event))

    def attach_kprobe(self, event: str, fn_name: str) -> None:
        self._compiled_kprobe(fn_name)
        self.kprobes.append(event)
        self.log.append(("kprobe", event))

    def detach_kfunc(self, fn_name: bytes) -> None:
        """Detaching always works."""

    detach_kretfunc = detach_kfunc

    def detach_kprobe(self, event: str) -> None:
        self.log.append(("detach kprobe", event))

    def detach_kretprobe(self, event: str) -> None:
        """Detaching always works."""

    def cleanup(self) -> None:
        self.cleaned = True

    def __getitem__(self, name: str) -> Any:
        log = self.log

        class Map:
            map_fd = -1

            def __setitem__(self, key: ctypes.c_int, value: ctypes.c_uint32) -> None:
                log.append((name, value.value))

        return Map()


def _backend(monkeypatch: pytest.MonkeyPatch, broken: set[str],
             broken_returns: frozenset[str] = frozenset()
             ) -> tuple[backend.BccBackend, list[FakeBpf]]:
    compiled: list[FakeBpf] = []

    def compile_program(kernel: KernelInfo, cflags: list[str], log_path: str) -> FakeBpf:
        compiled.append(FakeBpf(list(cflags), broken, broken_returns))
        return compiled[-1]

    monkeypatch.setattr(backend, "compile_program", compile_program)
    monkeypatch.setattr(backend, "map_fd_size", lambda fd: 0)
    monkeypatch.setattr(RingReader, "from_map_fd", classmethod(lambda cls, *a: None))
    monkeypatch.setattr(backend, "misses_by_program", lambda progs: {})
    kernel = KernelInfo(release="6.1.0-test", traceable={}, kallsyms=set(), has_kprobes=True,
                        has_btf=True, has_headers=True, has_fentry=True, tracefs="/nonexistent")
    plan = FentryPlan(fentry={0: "tcp_sendmsg", 1: "ip_rcv"},
                      kprobe={"e1000_clean": "in module e1000"})
    b = backend.BccBackend(kernel, Resolution(FUNCS, []), TraceOptions(output="/dev/null"),
                           "fentry", plan)
    return b, compiled


def test_one_compile_when_every_trampoline_attaches(monkeypatch: pytest.MonkeyPatch) -> None:
    b, compiled = _backend(monkeypatch, broken=set())
    b.attach()
    assert len(compiled) == 1
    assert b.attach_by() == {"fentry": ["ip_rcv", "tcp_sendmsg"], "kprobe": ["e1000_clean"]}
    # Kprobe programs only for the module function.
    assert "-DSKBPATH_PROBES=P(2,0,0,0,0,0)" in compiled[0].cflags
    # Each entry before its return, and the programs armed once all are on.
    log = compiled[0].log
    assert log[-1] == ("armed", backend.ARMED)
    for first, then in (("fentry", "fexit"), ("kprobe", "kretprobe")):
        for kind, sym in log:
            if kind == then:
                assert log.index((first, sym)) < log.index((then, sym)), log


def test_a_failed_trampoline_is_compiled_again_as_a_kprobe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    b, compiled = _backend(monkeypatch, broken={"ip_rcv"})
    b.attach()
    assert len(compiled) == 2 and compiled[0].cleaned and not compiled[1].cleaned
    assert b.attach_by() == {"fentry": ["tcp_sendmsg"], "kprobe": ["e1000_clean", "ip_rcv"]}
    assert not b.attach_failures
    # The header says why ip_rcv is on a kprobe, and its cflags are the second compile's.
    assert "cannot attach ip_rcv" in b.fentry.kprobe["ip_rcv"]
    assert b.cflags == compiled[1].cflags
    assert "fentry failed for 1 functions" in capsys.readouterr().err


class FakeSymbols:
    """bcc's BPF class as far as symbol caches go: one per pid, built on first use."""

    _sym_caches: dict[int, object] = {}


def test_symbols_are_read_again_when_a_module_loads(tmp_path: Any) -> None:
    """A module loaded during the trace (nftables) must not resolve to its neighbour."""
    mods = tmp_path / "modules"
    mods.write_text("e1000 159744 0 - Live 0xffffffffc0100000\n")
    me = object.__new__(backend.BccBackend)
    me.bpf = FakeSymbols()
    FakeSymbols._sym_caches = {-1: "kallsyms before", 7: "a process's"}
    me.frame_names = {0xffffffffc0400010: "e1000_clean+0x300010 [e1000]"}
    me.modules = backend.modules_loaded(str(mods))
    real = backend.modules_loaded
    backend.modules_loaded = lambda path="/proc/modules": real(str(mods))
    try:
        mods.write_text("e1000 159744 3 - Live 0xffffffffc0100000\n")  # only its users changed
        me._fresh_symbols()
        assert FakeSymbols._sym_caches[-1] == "kallsyms before"
        mods.write_text("e1000 159744 0 - Live 0xffffffffc0100000\n"
                        "nf_tables 364544 0 - Live 0xffffffffc0400000\n")
        me._fresh_symbols()
        assert -1 not in FakeSymbols._sym_caches and 7 in FakeSymbols._sym_caches
        assert me.frame_names == {}  # the names given before, nf_tables' address wrongly
    finally:
        backend.modules_loaded = real


def test_skipped_programs_are_named_by_function_and_end() -> None:
    names = {3: "ip_rcv", 12: "net_dev_xmit"}.__getitem__
    assert backend.program_label("kfunc__ip_finish_output2", names) == "ip_finish_output2 entry"
    assert backend.program_label("kretfunc__tcp_v4_rcv", names) == "tcp_v4_rcv return"
    assert backend.program_label("skbpath_entry_3", names) == "ip_rcv entry"
    assert backend.program_label("skbpath_exit_3", names) == "ip_rcv return"
    assert backend.program_label("skbpath_tp_12", names) == "net_dev_xmit hit"
    assert backend.program_label("something_else", names) == "something_else"


def test_a_kprobe_whose_return_fails_is_taken_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # An entry probe alone would push a frame at every call that no return pops.
    b, compiled = _backend(monkeypatch, broken=set(), broken_returns=frozenset({"e1000_clean"}))
    b.attach()
    log = compiled[0].log
    assert ("kprobe", "e1000_clean") in log and ("detach kprobe", "e1000_clean") in log
    assert "e1000_clean" not in b.attach_by().get("kprobe", [])
    assert [name for name, _ in b.attach_failures] == ["e1000_clean"]
