"""The cflags that configure probes/skbpath.bpf.c, and that the C file honours them."""

from __future__ import annotations

import os
import re
import socket
import struct
from pathlib import Path

import pytest
from skbpath.probes.catalog import bpf_source
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.record.cflags import (
    FRAME_DEPTH,
    FRAME_THREADS,
    RINGBUF_PAGES,
    STACK_ENTRIES,
    TRACK_ENTRIES,
    Filters,
    build_cflags,
    context_list,
    own_netns,
    probe_list,
)
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

from tests.synth import demo_table

ROOT = Path(__file__).resolve().parent.parent


def tracepoint_table_demo() -> FuncTable:
    """A two-tracepoint table shaped like tracer/record/rawtp.py's."""
    return FuncTable([
        FuncInfo(id=0, name="net:net_dev_queue", path="tx",
                 layer="device", skb_arg=1, symbols=("net_dev_queue",)),
        FuncInfo(id=1, name="skb:kfree_skb", path="free",
                 layer="memory", skb_arg=1, aux_arg=3, stack=True,
                 frees=True, drop=True, symbols=("kfree_skb",)),
    ])
C_SOURCE = Path(bpf_source()).read_text()
ALL_FILTERS = Filters(pid=42, comm="iperf3", iface="eth0", ifindex=3, proto="udp", port=53,
                      host="192.168.1.2")


def route_table_demo() -> FuncTable:
    return FuncTable([
        FuncInfo(id=0, name="ip_rcv", path="rx", layer="network", skb_arg=1),
        FuncInfo(id=1, name="fib_table_lookup", path="rx", layer="network", result="route"),
    ])


def gso_table_demo() -> FuncTable:
    return FuncTable([
        FuncInfo(id=0, name="dev_hard_start_xmit", path="tx", layer="device", skb_arg=1),
        FuncInfo(id=1, name="e1000_xmit_frame", path="tx", layer="driver", skb_arg=1,
                 driver="xmit", gso_segs=True),
    ])


def retval_table_demo() -> FuncTable:
    return FuncTable([
        FuncInfo(id=0, name="netif_receive_skb", path="rx", layer="device", skb_arg=1),
        FuncInfo(id=3, name="napi_gro_receive", path="rx", layer="device", skb_arg=2,
                 result="gro"),
        FuncInfo(id=4, name="fib_table_lookup", path="rx", layer="network", result="route"),
    ])


def test_retval_list_gives_fexit_the_argument_count() -> None:
    """gro_result_t follows napi_gro_receive's two arguments in fexit's context."""
    kprobe = flag_dict(build_cflags(retval_table_demo(), Filters()))
    assert kprobe["SKBPATH_RETVAL"] == "R(3,0)"  # a kretprobe reads the return register
    fentry = flag_dict(build_cflags(retval_table_demo(), Filters(), "fentry",
                                    {3: "napi_gro_receive"}, nargs={3: 2}))
    assert fentry["SKBPATH_RETVAL"] == "R(3,2)"
    assert "SKBPATH_RETVAL" not in flag_dict(build_cflags(gso_table_demo(), Filters()))


def test_gso_list_names_the_drivers_transmit_only() -> None:
    """The driver's transmit records gso_segs as its aux, in kprobe and fentry modes."""
    assert flag_dict(build_cflags(gso_table_demo(), Filters()))["SKBPATH_GSO"] == "G(1)"
    fentry = build_cflags(gso_table_demo(), Filters(), "fentry", {0: "dev_hard_start_xmit"})
    assert flag_dict(fentry)["SKBPATH_GSO"] == "G(1)"
    assert "SKBPATH_GSO" not in flag_dict(build_cflags(demo_table(), Filters()))
    assert "#define G(id) || func == (id)" in C_SOURCE


def test_route_function_id_is_set_for_probes_not_tracepoints() -> None:
    """fib_table_lookup's return carries its route in kprobe and fentry modes."""
    assert flag_dict(build_cflags(route_table_demo(), Filters()))["ROUTE_FUNC_ID"] == "1"
    fentry = build_cflags(route_table_demo(), Filters(), "fentry", {1: "fib_table_lookup"})
    assert flag_dict(fentry)["ROUTE_FUNC_ID"] == "1"
    assert "ROUTE_FUNC_ID" not in flag_dict(build_cflags(demo_table(), Filters()))
    # Routes name output devices only in the tracer's namespace.
    with_ns = flag_dict(build_cflags(route_table_demo(), Filters(), netns=4026531840))
    assert with_ns["TRACER_NETNS"] == "4026531840U"
    assert "TRACER_NETNS" not in flag_dict(build_cflags(demo_table(), Filters(), netns=1))
    assert own_netns() is None or own_netns() == os.stat("/proc/self/ns/net").st_ino


def flag_dict(flags: list[str]) -> dict[str, str]:
    out = {}
    for f in flags:
        assert f.startswith("-D"), f
        name, _, value = f[2:].partition("=")
        out[name] = value
    return out


def test_base_flags_without_filters() -> None:
    flags = flag_dict(build_cflags(demo_table(), Filters()))
    assert set(flags) == {"SKBPATH_PROBES", "SKBPATH_CONTEXT", "RINGBUF_PAGES", "STACK_ENTRIES",
                          "TRACK_ENTRIES", "FRAME_THREADS", "MAX_DEPTH"}
    # The softirq roots start a context of their own on the kernel's frame stack.
    assert flags["SKBPATH_CONTEXT"] == context_list(demo_table()) == "C(9)"
    assert flags["FRAME_THREADS"] == str(FRAME_THREADS)
    assert flags["MAX_DEPTH"] == str(FRAME_DEPTH)
    assert FRAME_DEPTH & (FRAME_DEPTH - 1) == 0 and FRAME_DEPTH < 256  # masked; a u8 in records
    assert flags["RINGBUF_PAGES"] == str(RINGBUF_PAGES)
    assert RINGBUF_PAGES & (RINGBUF_PAGES - 1) == 0  # a power of two, as the C file needs
    assert flags["STACK_ENTRIES"] == str(STACK_ENTRIES)
    assert flags["TRACK_ENTRIES"] == str(TRACK_ENTRIES)
    assert flags["SKBPATH_PROBES"] == probe_list(demo_table())
    assert not any(k.startswith("FILTER_") for k in flags)


def test_no_functions_is_an_error() -> None:
    with pytest.raises(SkbpathError, match="no function"):
        build_cflags(FuncTable([]), Filters())


@pytest.mark.parametrize(
    ("host", "octets"),
    [("10.0.0.1", (10, 0, 0, 1)), ("192.168.1.2", (192, 168, 1, 2)),
     ("255.0.0.0", (255, 0, 0, 0)), ("0.0.0.1", (0, 0, 0, 1))],
)
def test_host_is_network_order_u32(host: str, octets: tuple[int, ...]) -> None:
    flags = flag_dict(build_cflags(demo_table(), Filters(host=host)))
    # The kernel's __be32 read as a native (little-endian) u32: first octet lowest.
    expected = octets[0] | octets[1] << 8 | octets[2] << 16 | octets[3] << 24
    assert flags["FILTER_HOST"] == f"{expected}U"
    assert expected == struct.unpack("=I", socket.inet_aton(host))[0]


def test_host_10_0_0_1_value() -> None:
    flags = flag_dict(build_cflags(demo_table(), Filters(host="10.0.0.1")))
    assert flags["FILTER_HOST"] == "16777226U"  # 0x0100000a


@pytest.mark.parametrize("host", ["not-an-ip", "::1", "10.0.0.256", "10.0.0", ""])
def test_bad_host(host: str) -> None:
    with pytest.raises(SkbpathError, match="not an IPv4 address"):
        build_cflags(demo_table(), Filters(host=host))


@pytest.mark.parametrize(
    ("comm", "raw"),
    [
        ("iperf3", b"iperf3"),
        ("a", b"a"),
        ("exactly15chars!", b"exactly15chars!"),
        ("much-longer-than-fifteen", b"much-longer-tha"),  # TASK_COMM_LEN 16, NUL included
    ],
)
def test_comm_packing(comm: str, raw: bytes) -> None:
    flags = flag_dict(build_cflags(demo_table(), Filters(comm=comm)))
    padded = raw.ljust(16, b"\0")
    assert flags["FILTER_COMM0"] == f"{int.from_bytes(padded[:8], 'little')}ULL"
    assert flags["FILTER_COMM1"] == f"{int.from_bytes(padded[8:], 'little')}ULL"
    lo = int(flags["FILTER_COMM0"].removesuffix("ULL"))
    hi = int(flags["FILTER_COMM1"].removesuffix("ULL"))
    assert struct.pack("<QQ", lo, hi).rstrip(b"\0") == raw


def test_comm_iperf3_words() -> None:
    flags = flag_dict(build_cflags(demo_table(), Filters(comm="iperf3")))
    assert flags["FILTER_COMM0"] == f"{0x336672657069}ULL"
    assert flags["FILTER_COMM1"] == "0ULL"


@pytest.mark.parametrize(("proto", "number"), [("tcp", 6), ("udp", 17)])
def test_proto(proto: str, number: int) -> None:
    assert flag_dict(build_cflags(demo_table(), Filters(proto=proto)))["FILTER_PROTO"] == str(
        number
    )


def test_bad_proto() -> None:
    with pytest.raises(SkbpathError, match="--proto must be one of"):
        build_cflags(demo_table(), Filters(proto="icmp"))


@pytest.mark.parametrize("port", [1, 80, 65535])
def test_port(port: int) -> None:
    assert flag_dict(build_cflags(demo_table(), Filters(port=port)))["FILTER_PORT"] == str(port)


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_bad_port(port: int) -> None:
    with pytest.raises(SkbpathError, match=f"--port {port} is not a port number"):
        build_cflags(demo_table(), Filters(port=port))


def test_pid_and_ifindex() -> None:
    flags = flag_dict(build_cflags(demo_table(), Filters(pid=1234, ifindex=7, iface="eth1")))
    assert flags["FILTER_TGID"] == "1234"
    assert flags["FILTER_IFINDEX"] == "7"


def test_active_filters() -> None:
    assert Filters().active() == {}
    assert Filters(port=80, proto="tcp").active() == {"port": 80, "proto": "tcp"}
    assert set(ALL_FILTERS.active()) == {"pid", "comm", "iface", "ifindex", "proto", "port",
                                         "host"}


# ---------------------------------------------------------------- X-macro list
P_ITEM = re.compile(r"P\((\d+),(\d+),([01]),([01]),(\d+),([01])\)")


def test_probe_list_format() -> None:
    table = FuncTable([
        FuncInfo(id=0, name="a", path="tx", layer="socket"),
        FuncInfo(id=1, name="b", path="tx", layer="network", skb_arg=2, stack=True),
        FuncInfo(id=5, name="c", path="rx", layer="driver", skb_arg=1, skb_deref=True),
        FuncInfo(id=6, name="d", path="free", layer="memory", skb_arg=1, aux_arg=2, drop=True,
                 frees=True),
    ])
    text = probe_list(table)
    assert text == "P(0,0,0,0,0,0) P(1,2,0,1,0,0) P(5,1,1,0,0,0) P(6,1,0,0,2,1)"
    assert " ".join(m.group(0) for m in P_ITEM.finditer(text)) == text


def test_probe_list_covers_every_function() -> None:
    table = demo_table()
    items = P_ITEM.findall(probe_list(table))
    assert [int(i[0]) for i in items] == [f.id for f in table.funcs]
    assert [int(i[1]) for i in items] == [f.skb_arg for f in table.funcs]


# ---------------------------------------------------------------- the C side
def test_c_file_expands_the_probe_list() -> None:
    define = C_SOURCE.index("#define P(id, arg, deref, stack, aux, frees)")
    expansion = re.search(r"^SKBPATH_PROBES\s*$", C_SOURCE, re.M)
    assert expansion is not None
    assert expansion.start() > define


def test_aggregate_is_a_mode_of_kprobe_and_fentry_only() -> None:
    flags = flag_dict(build_cflags(demo_table(), Filters(), "fentry", {0: "__sys_sendto"},
                                   aggregate=True))
    assert "SKBPATH_AGGREGATE" in flags and int(flags["AGG_PATHS"]) > 0
    assert "SKBPATH_AGGREGATE" not in flag_dict(build_cflags(demo_table(), Filters()))
    with pytest.raises(SkbpathError, match="--aggregate"):
        build_cflags(tracepoint_table_demo(), Filters(), "tracepoint", aggregate=True)


def test_c_file_uses_every_macro_bpfconfig_sets() -> None:
    names = set(flag_dict(build_cflags(demo_table(), ALL_FILTERS)))
    # The other modes' lists (see tests/test_attach.py for their content).
    names |= set(flag_dict(build_cflags(demo_table(), ALL_FILTERS, "fentry", {0: "__sys_sendto"})))
    names |= set(flag_dict(build_cflags(tracepoint_table_demo(), ALL_FILTERS, "tracepoint")))
    names |= set(flag_dict(build_cflags(route_table_demo(), ALL_FILTERS, netns=4026531840)))
    names |= set(flag_dict(build_cflags(gso_table_demo(), ALL_FILTERS)))
    names |= set(flag_dict(build_cflags(retval_table_demo(), ALL_FILTERS)))
    names |= set(flag_dict(build_cflags(demo_table(), ALL_FILTERS, aggregate=True)))
    cflags_py = (ROOT / "tracer" / "record" / "cflags.py").read_text()
    source_names = set(re.findall(r"-D(\w+)=", cflags_py))
    assert source_names <= names  # every -D in cflags.py is produced by ALL_FILTERS
    assert {n for n in names if n.startswith("FILTER_")} == {
        "FILTER_IFINDEX", "FILTER_PROTO", "FILTER_PORT", "FILTER_HOST", "FILTER_TGID",
        "FILTER_COMM0", "FILTER_COMM1",
    }
    code = "\n".join(
        line for line in C_SOURCE.splitlines() if not line.lstrip().startswith("//")
    )
    for name in names:
        assert re.search(rf"\b{name}\b", code), f"{name} is set but never used in the C file"


def test_the_counter_slots_and_arming_states_agree_with_the_c_file() -> None:
    import re

    from skbpath.tracer.record.bpf import backend

    defines = dict(re.findall(r"^#define (CNT_\w+|ARMED|DISARMED) (\d+)", C_SOURCE, re.M))
    slots = sorted(int(v) for k, v in defines.items() if k.startswith("CNT_") and k != "CNT_SLOTS")
    assert slots == list(range(len(backend.COUNTERS)))
    assert int(defines["CNT_SLOTS"]) == len(backend.COUNTERS)
    assert int(defines["CNT_OPEN_AT_START"]) == backend.COUNTERS.index("open_at_start")
    assert int(defines["CNT_UNMATCHED"]) == backend.COUNTERS.index("unmatched_returns")
    assert (int(defines["ARMED"]), int(defines["DISARMED"])) == (backend.ARMED, backend.DISARMED)
