"""Tests for the BTF reader, on blobs built here by a tiny encoder."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
from skbpath.tracer.kernel.btf import (
    KIND_CONST,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FUNC,
    KIND_FUNC_PROTO,
    KIND_INT,
    KIND_PTR,
    KIND_STRUCT,
    KIND_TYPEDEF,
    Btf,
    BtfError,
)


class Encoder:
    """Builds raw BTF: add types in id order, then :meth:`blob`.

    For split BTF pass the base encoder: ids and string offsets continue
    after the base's, as in the kernel.
    """

    def __init__(self, base: Encoder | None = None) -> None:
        self.base = base
        self.first_id: int = base.next_id if base else 1
        self.next_id: int = self.first_id
        self.str_base: int = base.str_base + len(base.strings) if base else 0
        # Base BTF starts with the empty string at offset 0.
        self.strings: bytearray = bytearray() if base else bytearray(b"\0")
        self.types = bytearray()

    def s(self, text: str) -> int:
        if not text:
            return 0
        off = self.str_base + len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def _add(self, name: str, kind: int, vlen: int, size_type: int, extra: bytes = b"") -> int:
        info = (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_type) + extra
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name: str, size: int = 4, signed: bool = True) -> int:
        enc = (1 if signed else 0) << 24 | (size * 8)
        return self._add(name, KIND_INT, 0, size, struct.pack("<I", enc))

    def ptr(self, target: int) -> int:
        return self._add("", KIND_PTR, 0, target)

    def const(self, target: int) -> int:
        return self._add("", KIND_CONST, 0, target)

    def typedef(self, name: str, target: int) -> int:
        return self._add(name, KIND_TYPEDEF, 0, target)

    def struct_(self, name: str, members: list[tuple[str, int]]) -> int:
        extra = b"".join(
            struct.pack("<III", self.s(m), t, 32 * i) for i, (m, t) in enumerate(members)
        )
        return self._add(name, KIND_STRUCT, len(members), 4 * len(members), extra)

    def proto(self, ret: int, params: list[int]) -> int:
        extra = b"".join(
            struct.pack("<II", self.s(f"a{i}") if t else 0, t) for i, t in enumerate(params)
        )
        return self._add("", KIND_FUNC_PROTO, len(params), ret, extra)

    def func(self, name: str, proto: int) -> int:
        return self._add(name, KIND_FUNC, 1, proto)

    def enum(self, name: str, values: list[tuple[str, int]], signed: bool = False) -> int:
        extra = b"".join(struct.pack("<Ii", self.s(n), v) for n, v in values)
        kind = (KIND_ENUM << 24) | len(values) | (1 << 31 if signed else 0)
        self.types += struct.pack("<III", self.s(name), kind, 4) + extra
        self.next_id += 1
        return self.next_id - 1

    def enum64(self, name: str, values: list[tuple[str, int]]) -> int:
        extra = b"".join(struct.pack("<III", self.s(n), v & 0xFFFFFFFF, v >> 32) for n, v in values)
        return self._add(name, KIND_ENUM64, len(values), 8, extra)

    def blob(self) -> bytes:
        hdr = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return hdr + bytes(self.types) + bytes(self.strings)


def vmlinux_like() -> tuple[Encoder, dict[str, int]]:
    e = Encoder()
    ids: dict[str, int] = {}
    ids["int"] = e.int_("int")
    ids["uint"] = e.int_("unsigned int", signed=False)
    ids["skb"] = e.struct_("sk_buff", [("len", ids["uint"])])
    ids["dev"] = e.struct_("net_device", [("mtu", ids["uint"])])
    ids["napi"] = e.struct_("napi_struct", [("weight", ids["int"])])
    ids["skb_p"] = e.ptr(ids["skb"])
    ids["skb_pp"] = e.ptr(ids["skb_p"])
    ids["dev_p"] = e.ptr(e.const(ids["dev"]))
    ids["napi_p"] = e.ptr(ids["napi"])
    ids["netdev_tx"] = e.enum("netdev_tx", [("NETDEV_TX_OK", 0), ("NETDEV_TX_BUSY", 16)])
    ids["netdev_tx_t"] = e.typedef("netdev_tx_t", ids["netdev_tx"])
    xmit = e.proto(ids["netdev_tx_t"], [ids["skb_p"], ids["dev_p"]])
    e.func("dev_hard_start_xmit_ish", xmit)
    e.func("consume_skb", e.proto(0, [ids["skb_p"]]))
    e.func("skb_pp_user", e.proto(ids["int"], [ids["skb_pp"], ids["int"]]))
    e.func("printk_like", e.proto(ids["int"], [ids["int"], 0]))
    e.func("no_args", e.proto(0, []))
    e.enum(
        "skb_drop_reason",
        [("SKB_NOT_DROPPED_YET", 0), ("SKB_CONSUMED", 1), ("SKB_DROP_REASON_NOT_SPECIFIED", 2)],
    )
    e.enum("signed_e", [("MINUS", -1), ("ALIAS", -1), ("ZERO", 0)], signed=True)
    e.enum64("big_e", [("HUGE", 1 << 40)])
    return e, ids


def test_func_params_through_pointers_typedefs_and_const() -> None:
    e, _ = vmlinux_like()
    btf = Btf(e.blob())
    assert btf.func_params("dev_hard_start_xmit_ish") == ["struct sk_buff *", "struct net_device *"]
    assert btf.func_return("dev_hard_start_xmit_ish") == "enum netdev_tx"
    assert btf.func_params("consume_skb") == ["struct sk_buff *"]
    assert btf.func_return("consume_skb") == "void"
    assert btf.func_params("skb_pp_user") == ["struct sk_buff **", "int"]
    assert btf.func_params("printk_like") == ["int", "..."]
    assert btf.func_params("no_args") == []
    assert btf.func_params("missing") is None
    assert btf.func_return("missing") is None
    assert btf.func_names() == [
        "consume_skb",
        "dev_hard_start_xmit_ish",
        "no_args",
        "printk_like",
        "skb_pp_user",
    ]


def test_enum_values() -> None:
    e, _ = vmlinux_like()
    btf = Btf(e.blob())
    assert btf.enum_values("skb_drop_reason") == {
        0: "SKB_NOT_DROPPED_YET",
        1: "SKB_CONSUMED",
        2: "SKB_DROP_REASON_NOT_SPECIFIED",
    }
    assert btf.enum_values("enum skb_drop_reason") == btf.enum_values("skb_drop_reason")
    assert btf.enum_values("signed_e") == {-1: "MINUS", 0: "ZERO"}
    assert btf.enum_values("big_e") == {1 << 40: "HUGE"}
    assert btf.enum_values("nope") is None


def test_split_module_blob_uses_base_ids_and_strings() -> None:
    base_enc, ids = vmlinux_like()
    base = Btf(base_enc.blob())
    mod = Encoder(base_enc)
    adapter = mod.struct_("e1000_adapter", [("napi", ids["napi"])])
    mod.func("e1000_xmit_frame", mod.proto(ids["netdev_tx_t"], [ids["skb_p"], ids["dev_p"]]))
    mod.func("e1000_clean", mod.proto(ids["int"], [ids["napi_p"], ids["int"]]))
    mod.func("e1000_clean_rx_irq", mod.proto(0, [mod.ptr(adapter), ids["int"]]))
    mod.enum("e1000_state", [("DOWN", 3)])
    split = Btf(mod.blob(), base=base, source="e1000")
    assert split.start_id == base.start_id + base.nr_types
    assert split.func_params("e1000_xmit_frame") == ["struct sk_buff *", "struct net_device *"]
    assert split.func_signature("e1000_clean") == ("int", ["struct napi_struct *", "int"])
    assert split.func_params("e1000_clean_rx_irq") == ["struct e1000_adapter *", "int"]
    # Base functions and enums are visible through the split blob.
    assert split.func_params("consume_skb") == ["struct sk_buff *"]
    assert split.enum_values("e1000_state") == {3: "DOWN"}
    assert split.enum_values("skb_drop_reason") is not None
    assert split.func_names() == ["e1000_clean", "e1000_clean_rx_irq", "e1000_xmit_frame"]
    assert base.func_params("e1000_clean") is None


def test_load_from_file(tmp_path: Path) -> None:
    e, _ = vmlinux_like()
    path = tmp_path / "vmlinux"
    path.write_bytes(e.blob())
    assert Btf.load(str(path)).func_params("consume_skb") == ["struct sk_buff *"]
    with pytest.raises(BtfError, match="cannot read"):
        Btf.load(str(tmp_path / "absent"))


def test_bad_magic() -> None:
    blob = bytearray(vmlinux_like()[0].blob())
    blob[0:2] = b"\x7fE"
    with pytest.raises(BtfError, match="bad BTF magic"):
        Btf(bytes(blob))


def test_truncated() -> None:
    blob = vmlinux_like()[0].blob()
    with pytest.raises(BtfError, match="too short"):
        Btf(blob[:10])
    with pytest.raises(BtfError, match="truncated"):
        Btf(blob[:-5])
    # A type section whose length cuts a type in half.
    hdr = list(struct.unpack_from("<HBBIIIII", blob))
    hdr[5] -= 4
    with pytest.raises(BtfError, match="truncated"):
        Btf(struct.pack("<HBBIIIII", *hdr) + blob[24:])


def test_unknown_kind() -> None:
    e = Encoder()
    e._add("x", 31, 0, 0)
    with pytest.raises(BtfError, match="unknown BTF kind"):
        Btf(e.blob())


def test_big_endian_blob() -> None:
    # Same layout, every u32 swapped: the magic tells the byte order.
    e = Encoder()
    i = e.int_("int")
    e.func("f", e.proto(i, [e.ptr(i)]))
    le = e.blob()
    words = struct.unpack_from(f"<{(len(le) - 24 - len(e.strings)) // 4}I", le, 24)
    be = (
        struct.pack(">HBB5I", 0xEB9F, 1, 0, *struct.unpack_from("<5I", le, 4))
        + struct.pack(f">{len(words)}I", *words)
        + bytes(e.strings)
    )
    assert Btf(be).func_params("f") == ["int *"]


REAL_VMLINUX = "/sys/kernel/btf/vmlinux"


@pytest.mark.skipif(not os.access(REAL_VMLINUX, os.R_OK), reason="no readable vmlinux BTF")
def test_real_vmlinux_btf() -> None:
    start = time.perf_counter()
    btf = Btf.load(REAL_VMLINUX)
    params = btf.func_params("__dev_queue_xmit") or btf.func_params("dev_queue_xmit")
    reasons = btf.enum_values("skb_drop_reason")
    elapsed = time.perf_counter() - start
    assert params is not None and params[0] == "struct sk_buff *"
    assert reasons is not None and reasons.get(0) == "SKB_NOT_DROPPED_YET"
    assert elapsed < 1.5


# ---------------------------------------------------------------- tracepoint typedefs
def tracepoint_btf() -> Btf:
    """Tracepoint typedefs as the kernel emits them: ``btf_trace_<event>``."""
    e = Encoder()
    void_p = e.ptr(0)
    i = e.int_("int")
    skb_p = e.ptr(e.struct_("sk_buff", [("len", i)]))
    const_skb_p = e.ptr(e.const(e.struct_("sk_buff_c", [("len", i)])))
    sock_p = e.ptr(e.struct_("sock", [("x", i)]))
    reason = e.enum("skb_drop_reason", [("SKB_DROP_REASON_NOT_SPECIFIED", 2)])
    # kfree_skb with the reason third (as in 6.1) and a later-style fourth argument.
    e.typedef("btf_trace_kfree_skb", e.ptr(e.proto(0, [void_p, skb_p, void_p, reason, sock_p])))
    e.typedef("btf_trace_tcp_probe", e.ptr(e.proto(0, [void_p, sock_p, skb_p])))
    e.typedef("btf_trace_skb_const", e.ptr(e.proto(0, [void_p, const_skb_p])))
    e.typedef("btf_trace_napi_poll", e.ptr(e.proto(0, [void_p, i, i])))
    e.typedef("not_a_func_ptr", i)
    e.typedef("btf_trace_typedef_of_typedef", e.typedef("inner", e.ptr(e.proto(0, [void_p]))))
    return Btf(e.blob())


def test_typedef_func_params() -> None:
    btf = tracepoint_btf()
    assert btf.typedef_func_params("btf_trace_kfree_skb") == [
        "void *", "struct sk_buff *", "void *", "enum skb_drop_reason", "struct sock *"]
    assert btf.typedef_func_params("btf_trace_napi_poll") == ["void *", "int", "int"]
    assert btf.typedef_func_params("btf_trace_typedef_of_typedef") == ["void *"]
    assert btf.typedef_func_params("not_a_func_ptr") is None
    assert btf.typedef_func_params("btf_trace_nope") is None


def test_tracepoint_args_drop_the_data_pointer() -> None:
    from skbpath.tracer.record.rawtp import tracepoint_args

    btf = tracepoint_btf()
    assert tracepoint_args(btf, "tcp_probe") == ["struct sock *", "struct sk_buff *"]
    assert tracepoint_args(btf, "nope") is None


def test_tracepoint_table_detects_positions_from_btf() -> None:
    from skbpath.tracer.record.rawtp import tracepoint_table

    e = Encoder()
    void_p = e.ptr(0)
    i = e.int_("int")
    skb_p = e.ptr(e.struct_("sk_buff", [("len", i)]))
    sock_p = e.ptr(e.struct_("sock", [("x", i)]))
    reason = e.enum("skb_drop_reason", [("SKB_DROP_REASON_NOT_SPECIFIED", 2)])
    e.typedef("btf_trace_net_dev_queue", e.ptr(e.proto(0, [void_p, skb_p])))
    e.typedef("btf_trace_tcp_probe", e.ptr(e.proto(0, [void_p, sock_p, skb_p])))
    # A kernel whose kfree_skb has the reason fourth.
    e.typedef("btf_trace_kfree_skb",
              e.ptr(e.proto(0, [void_p, skb_p, void_p, sock_p, reason])))
    # netif_rx without an skb argument cannot be used.
    e.typedef("btf_trace_netif_rx", e.ptr(e.proto(0, [void_p, i])))
    e.typedef("btf_trace_napi_poll", e.ptr(e.proto(0, [void_p, i, i, i])))
    funcs, skipped = tracepoint_table(Btf(e.blob()))
    got = {f.name: (f.skb_arg, f.aux_arg, f.symbols) for f in funcs.funcs}
    assert got == {
        "net:net_dev_queue": (1, 0, ("net_dev_queue",)),
        "tcp:tcp_probe": (2, 0, ("tcp_probe",)),
        "skb:kfree_skb": (1, 4, ("kfree_skb",)),
        "napi:napi_poll": (0, 0, ("napi_poll",)),
    }
    assert [f.id for f in funcs.funcs] == list(range(4))
    reasons = {s.name: s.reason for s in skipped}
    assert "no struct sk_buff * argument" in reasons["net:netif_rx"]
    assert "no such tracepoint" in reasons["net:net_dev_xmit"]
    kfree = next(f for f in funcs.funcs if f.name == "skb:kfree_skb")
    assert kfree.stack and kfree.frees and kfree.drop


