"""The attach modes, pure: auto's choice, fentry's split, each mode's cflags, the C side."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from skbpath.probes.catalog import bpf_source
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.btf import Btf
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.record.attach import (
    FENTRY_MAX_ARGS,
    STACK_REASON,
    Features,
    choose_attach,
    fentry_plan,
    fentry_reason,
    mode_gaps,
)
from skbpath.tracer.record.cflags import (
    Filters,
    build_cflags,
    fentry_list,
    needs_kprobe,
    probe_list,
    tracepoint_list,
)
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

from tests.test_btf import Encoder

C_SOURCE = Path(bpf_source()).read_text()
ALL = Features(bcc=True, headers=True, kprobes=True, btf=True, trampolines=True,
               raw_tracepoints=True, x86_64=True)


# ---------------------------------------------------------------- auto's choice
@pytest.mark.parametrize(
    ("changes", "mode", "why"),
    [
        ({}, "fentry", []),
        ({"trampolines": False}, "kprobe", ["fentry: no BPF trampolines"]),
        ({"x86_64": False}, "kprobe", ["fentry: bcc has fentry on x86_64 only"]),
        ({"btf": False}, "kprobe", ["fentry: no BTF"]),
        ({"trampolines": False, "kprobes": False}, "tracepoint",
         ["fentry: no BPF trampolines", "kprobe: no kprobes"]),
        ({"btf": False, "kprobes": False}, "tracefs",
         ["fentry: no BTF", "kprobe: no kprobes", "tracepoint: no BTF"]),
        ({"headers": False, "kprobes": False}, "tracefs",
         ["fentry: no headers", "kprobe: no kprobes, no headers", "tracepoint: no headers"]),
        ({"bcc": False}, "tracefs",
         ["fentry: no bcc", "kprobe: no bcc", "tracepoint: no bcc"]),
        ({"trampolines": False, "kprobes": False, "raw_tracepoints": False}, "tracefs",
         ["fentry: no BPF trampolines", "kprobe: no kprobes", "tracepoint: no raw tracepoints"]),
    ],
)
def test_auto_takes_the_first_mode_without_gaps(
    changes: dict[str, Any], mode: str, why: list[str]
) -> None:
    assert choose_attach(replace(ALL, **changes)) == (mode, why)


def test_tracefs_needs_nothing() -> None:
    none = Features(bcc=False, headers=False, kprobes=False, btf=False, trampolines=False,
                    raw_tracepoints=False, x86_64=False)
    assert mode_gaps(none, "tracefs") == []


def test_features_are_detected_from_kallsyms_and_btf() -> None:
    kernel = KernelInfo(release="x", traceable={}, kallsyms={"bpf_get_raw_tracepoint"},
                        has_kprobes=False, has_btf=True, has_headers=True, has_fentry=False,
                        tracefs="/nonexistent")
    feat = Features.detect(kernel, bcc=True, machine="aarch64")
    assert feat.raw_tracepoints and not feat.kprobes and not feat.trampolines
    assert [g.what for g in mode_gaps(feat, "fentry")] == ["no BPF trampolines",
                                                           "bcc has fentry on x86_64 only"]
    assert mode_gaps(feat, "tracepoint") == []
    kernel.kallsyms = set()
    assert not Features.detect(kernel, bcc=True, machine="x86_64").raw_tracepoints


# ---------------------------------------------------------------- fentry's split
def _btf() -> Btf:
    e = Encoder()
    i = e.int_("int")
    skb = e.struct_("sk_buff", [("len", i)])
    skb_p = e.ptr(skb)
    e.func("ip_rcv", e.proto(i, [skb_p, i]))
    e.func("__netif_receive_skb_core", e.proto(i, [skb_p, i]))
    e.func("seven_args", e.proto(i, [i] * (FENTRY_MAX_ARGS + 1)))
    e.func("by_value", e.proto(i, [skb]))
    e.func("varargs", e.proto(i, [i, 0]))
    return Btf(e.blob())


def _f(func_id: int, name: str, *symbols: str) -> FuncInfo:
    return FuncInfo(id=func_id, name=name, path="rx",
                    layer="network", skb_arg=1, symbols=symbols or (name,))


def test_fentry_reasons() -> None:
    btf = _btf()
    mods: dict[str, str | None] = {"e1000_xmit_frame": "e1000", "ip_rcv": None}
    assert fentry_reason(_f(0, "ip_rcv"), btf, mods) is None
    assert "module e1000" in str(fentry_reason(_f(0, "e1000_xmit_frame"), btf, mods))
    assert "clones" in str(fentry_reason(_f(0, "x", "x.constprop.0"), btf, mods))
    assert fentry_reason(_f(0, "not_in_btf"), btf, mods) == "no BTF FUNC of that name"
    assert "at most 6" in str(fentry_reason(_f(0, "seven_args"), btf, mods))
    assert "at most 6" in str(fentry_reason(_f(0, "varargs"), btf, mods))
    assert "by value" in str(fentry_reason(_f(0, "by_value"), btf, mods))
    assert fentry_reason(_f(0, "ip_rcv"), None, mods) == "no BTF"
    stacked = replace(_f(0, "ip_rcv"), stack=True)
    assert fentry_reason(stacked, btf, mods) == STACK_REASON


def test_fentry_plan_splits_exact_names_from_clones_and_modules() -> None:
    funcs = FuncTable([
        _f(0, "ip_rcv"),
        _f(1, "__netif_receive_skb_core", "__netif_receive_skb_core",
           "__netif_receive_skb_core.constprop.0"),
        _f(2, "tcp_v4_rcv", "tcp_v4_rcv.part.0"),
        _f(3, "e1000_xmit_frame"),
    ])
    plan = fentry_plan(funcs, _btf(), {"e1000_xmit_frame": "e1000"})
    assert plan.fentry == {0: "ip_rcv", 1: "__netif_receive_skb_core"}
    assert set(plan.kprobe) == {"__netif_receive_skb_core.constprop.0", "tcp_v4_rcv.part.0",
                                "e1000_xmit_frame"}
    assert "clone" in plan.kprobe["__netif_receive_skb_core.constprop.0"]
    assert "module e1000" in plan.kprobe["e1000_xmit_frame"]


# ---------------------------------------------------------------- cflags per mode
def _flags(flags: list[str]) -> dict[str, str]:
    return {f[2:].partition("=")[0]: f[2:].partition("=")[2] for f in flags}


def test_kprobe_mode_has_only_the_kprobe_list() -> None:
    funcs = FuncTable([_f(0, "ip_rcv"), _f(1, "tcp_v4_rcv")])
    flags = _flags(build_cflags(funcs, Filters()))
    assert flags["SKBPATH_PROBES"] == "P(0,1,0,0,0,0) P(1,1,0,0,0,0)"
    assert "SKBPATH_FENTRY" not in flags and "SKBPATH_TRACEPOINTS" not in flags


def test_fentry_mode_has_both_lists() -> None:
    kfree = FuncInfo(id=1, name="kfree_skb_reason", path="free", layer="memory", skb_arg=1,
                     aux_arg=2, stack=True, frees=True, symbols=("kfree_skb_reason",))
    funcs = FuncTable([_f(0, "ip_rcv"), kfree])
    flags = _flags(build_cflags(funcs, Filters(port=80), "fentry",
                                {1: "kfree_skb_reason"}))
    # Only the function without a trampoline gets kprobe programs (half the compile).
    assert flags["SKBPATH_PROBES"] == "P(0,1,0,0,0,0)" == probe_list(funcs, {1: "kfree_skb_reason"})
    assert flags["SKBPATH_FENTRY"] == "F(1,kfree_skb_reason,1,0,1,2,1)"
    assert flags["FILTER_PORT"] == "80"
    assert "SKBPATH_TRACEPOINTS" not in flags


def test_a_function_with_clones_keeps_its_kprobe_beside_the_trampoline() -> None:
    clone = FuncInfo(id=0, name="ip_rcv", path="rx", layer="network", skb_arg=1,
                     symbols=("ip_rcv", "ip_rcv.constprop.0"))
    only = FuncInfo(id=1, name="tcp_v4_rcv", path="rx", layer="transport", skb_arg=1,
                    symbols=("tcp_v4_rcv",))
    fentry = {0: "ip_rcv", 1: "tcp_v4_rcv"}
    assert needs_kprobe(clone, fentry) and not needs_kprobe(only, fentry)
    assert probe_list(FuncTable([clone, only]), fentry) == "P(0,1,0,0,0,0)"


def test_fentry_symbol_must_be_an_identifier() -> None:
    with pytest.raises(SkbpathError, match="not a C identifier"):
        fentry_list(FuncTable([_f(0, "x")]), {0: "x.constprop.0"})


def test_tracepoint_mode_has_only_the_tracepoint_list() -> None:
    funcs = FuncTable([
        FuncInfo(id=0, name="net:net_dev_xmit", path="tx", layer="device", skb_arg=1, stack=True,
                 symbols=("net_dev_xmit",)),
        FuncInfo(id=1, name="skb:kfree_skb", path="free",
                 layer="memory", skb_arg=1, aux_arg=3, stack=True,
                 frees=True, drop=True, symbols=("kfree_skb",)),
        FuncInfo(id=2, name="napi:napi_poll", path="rx", layer="softirq", symbols=("napi_poll",)),
    ])
    flags = _flags(build_cflags(funcs, Filters(proto="tcp"), "tracepoint"))
    assert flags["SKBPATH_TRACEPOINTS"] == (
        "T(0,net_dev_xmit,1,0,1,0) T(1,kfree_skb,1,3,1,1) T(2,napi_poll,0,0,0,0)")
    assert flags["SKBPATH_TRACEPOINTS"] == tracepoint_list(funcs)
    assert "SKBPATH_PROBES" not in flags and "SKBPATH_FENTRY" not in flags
    assert flags["FILTER_PROTO"] == "6"


def test_tracefs_mode_has_no_program() -> None:
    with pytest.raises(SkbpathError, match="loads no BPF program"):
        build_cflags(FuncTable([_f(0, "ip_rcv")]), Filters(), "tracefs")


# ---------------------------------------------------------------- the C side
@pytest.mark.parametrize(
    ("macro", "define"),
    [
        ("SKBPATH_PROBES", "#define P(id, arg, deref, stack, aux, frees)"),
        ("SKBPATH_FENTRY", "#define F(id, sym, arg, deref, stack, aux, frees)"),
        ("SKBPATH_TRACEPOINTS", "#define T(id, tp, arg, aux, stack, frees)"),
    ],
)
def test_c_file_defines_each_list_empty_by_default_and_expands_it(macro: str, define: str) -> None:
    assert f"#ifndef {macro}\n#define {macro}\n#endif" in C_SOURCE
    expansion = re.search(rf"^{macro}\s*$", C_SOURCE, re.M)
    assert expansion is not None and expansion.start() > C_SOURCE.index(define)


def test_c_programs_share_push_pop_and_point() -> None:
    # Every entry program pushes a frame and every return pops one; a
    # tracepoint hit is one POINT record; only submit() reserves ring buffer space.
    for prefix, call in (("skbpath_entry_", "push(ctx,"), ("kfunc__", "push(ctx,"),
                         ("skbpath_exit_", "return pop(id);"), ("kretfunc__", "return pop(id);"),
                         ("skbpath_tp_", "point(ctx,")):
        body = C_SOURCE[C_SOURCE.index(f"int {prefix}##"):]
        assert body.index(call) < body.index("}"), prefix
    assert C_SOURCE.count("ringbuf_reserve(") == 1
    assert "events.ringbuf_reserve(sizeof(struct call))" in C_SOURCE
