"""Tests for kernel detection, driver discovery and catalog resolution (no real kernel)."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest
from skbpath.probes.catalog import ProbeSpec, load_catalog
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.btf import Btf
from skbpath.tracer.kernel.drivers import (
    ethtool_driver,
    find_driver_functions,
    interface_module,
)
from skbpath.tracer.kernel.info import KernelInfo, read_kernel_info
from skbpath.tracer.record.prepare import KernelBtf
from skbpath.tracer.record.resolve import INLINED, NO_INTERFACE, NOT_TRACEABLE, Skipped, resolve
from skbpath.tracer.traces.functions import FuncInfo

from tests.test_btf import Encoder, vmlinux_like

FILTER_FUNCTIONS = """\
__sys_sendto
tcp_sendmsg
__dev_queue_xmit
__netif_receive_skb_core.constprop.0
ip_rcv
ip_rcv_finish.isra.0
ip_rcv_finish.part.0
tcp_v4_rcv
tcp_v4_rcv.cold
consume_skb
__ftrace_invalid_address___64
e1000_xmit_frame [e1000]
e1000_clean [e1000]
e1000_clean_rx_irq [e1000]
e1000_clean_jumbo_rx_irq [e1000]
e1000_clean_rx_ring [e1000]
e1000_clean_tx_irq [e1000]
e1000_clean_tx_ring [e1000]
e1000_receive_skb.isra.0 [e1000]
e1000_netpoll [e1000]
e1000_down [e1000]
e1000_down [e1000e]
tcp_sendmsg
"""

KALLSYMS = """\
0000000000000000 T __sys_sendto
0000000000000000 T tcp_sendmsg
0000000000000000 t ip_rcv_finish.isra.0
0000000000000000 T tcp_v4_rcv
0000000000000000 t tcp_v4_rcv.cold
0000000000000000 T kfree_skb_reason
0000000000000000 D some_data
0000000000000000 T bpf_trampoline_link_prog
0000000000000000 t e1000_xmit_frame\t[e1000]
0000000000000000 t e1000_clean\t[e1000]
"""


def make_root(tmp_path: Path, tracefs: str = "sys/kernel/tracing") -> Path:
    """A fake / with tracefs, kallsyms, BTF, and eth0 driven by e1000."""
    root = tmp_path / "root"
    tr = root / tracefs
    tr.mkdir(parents=True)
    (tr / "available_filter_functions").write_text(FILTER_FUNCTIONS)
    (tr / "kprobe_events").write_text("")
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.1.0-56-amd64\n")
    (root / "proc/kallsyms").write_text(KALLSYMS)
    (root / "lib/modules/6.1.0-56-amd64/build").mkdir(parents=True)
    btf = root / "sys/kernel/btf"
    btf.mkdir(parents=True)
    base, ids = vmlinux_like()
    (btf / "vmlinux").write_bytes(base.blob())
    mod = Encoder(base)
    mod.func("e1000_xmit_frame", mod.proto(ids["netdev_tx_t"], [ids["skb_p"], ids["dev_p"]]))
    mod.func("e1000_clean", mod.proto(ids["int"], [ids["napi_p"], ids["int"]]))
    mod.func("e1000_clean_rx_irq", mod.proto(0, [ids["napi_p"], ids["skb_p"]]))
    (btf / "e1000").write_bytes(mod.blob())
    dev = root / "sys/devices/pci0000:00/0000:00:03.0"
    (dev / "driver").mkdir(parents=True)
    (root / "sys/module/e1000").mkdir(parents=True)
    os.symlink("../../../../module/e1000", dev / "driver/module")
    net = root / "sys/class/net"
    (net / "eth0").mkdir(parents=True)
    os.symlink("../../../devices/pci0000:00/0000:00:03.0", net / "eth0/device")
    (net / "lo").mkdir()
    return root


def kernel(traceable: dict[str, str | None], kallsyms: set[str] | None = None) -> KernelInfo:
    return KernelInfo(
        release="test",
        traceable=traceable,
        kallsyms=set(traceable) if kallsyms is None else kallsyms,
        has_kprobes=True,
        has_btf=False,
        has_headers=False,
        has_fentry=False,
        tracefs="/nonexistent",
    )


def spec(name: str = "", driver: str = "", **kw: object) -> ProbeSpec:
    return ProbeSpec(name=name, driver=driver, path="rx", layer="network", **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ kernel.py


def test_read_kernel_info_from_fake_root(tmp_path: Path) -> None:
    k = read_kernel_info(str(make_root(tmp_path)))
    assert k.release == "6.1.0-56-amd64"
    assert k.traceable["tcp_v4_rcv"] is None
    assert k.traceable["e1000_xmit_frame"] == "e1000"
    assert k.traceable["e1000_down"] == "e1000"  # first listing wins...
    assert "e1000_down" in k.module_functions("e1000e")  # ...but every module keeps it
    assert not any(n.startswith("__ftrace_invalid") for n in k.traceable)
    assert "e1000_clean" in k.kallsyms and "some_data" not in k.kallsyms
    assert k.has_kprobes and k.has_btf and k.has_headers and k.has_fentry
    assert k.tracefs.endswith("sys/kernel/tracing")


def test_read_kernel_info_debugfs_fallback(tmp_path: Path) -> None:
    root = make_root(tmp_path, tracefs="sys/kernel/debug/tracing")
    (root / "sys/kernel/tracing").mkdir()  # an empty, unmounted mount point
    k = read_kernel_info(str(root))
    assert k.tracefs.endswith("sys/kernel/debug/tracing")
    assert "tcp_v4_rcv" in k.traceable


def test_read_kernel_info_empty_root(tmp_path: Path) -> None:
    k = read_kernel_info(str(tmp_path))
    assert k.release == ""
    assert k.traceable == {} and k.kallsyms == set()
    assert not (k.has_kprobes or k.has_btf or k.has_headers or k.has_fentry)


def test_by_module_derived_when_not_given() -> None:
    k = kernel({"a": "m", "b": None})
    assert k.module_functions("m") == {"a"}
    assert k.module_functions("other") == set()


def _btf(k: KernelInfo, root: str) -> KernelBtf:
    """The fake root's BTF, as the tracer loads it."""
    return KernelBtf(k, os.path.join(root, "sys/kernel/btf"))


# ----------------------------------------------------------------- drivers.py


def _no_drvinfo(iface: str) -> str | None:
    return None


def test_interface_module(tmp_path: Path) -> None:
    root = str(make_root(tmp_path))
    assert interface_module("eth0", root, _no_drvinfo) == "e1000"
    assert interface_module("lo", root, _no_drvinfo) is None
    with pytest.raises(SkbpathError, match="no such network interface"):
        interface_module("nope0", root, _no_drvinfo)


def test_interface_without_device_asks_ethtool_then_flags(tmp_path: Path) -> None:
    """veth has no bus device but names its driver; lo names none but is IFF_LOOPBACK."""
    for name, flags in (("veth0", "0x1003"), ("lo", "0x9"), ("dummy0", "0x83")):
        (tmp_path / "sys/class/net" / name).mkdir(parents=True)
        (tmp_path / "sys/class/net" / name / "flags").write_text(flags + "\n")
    root = str(tmp_path)
    drivers = {"veth0": "veth"}
    assert interface_module("veth0", root, drivers.get) == "veth"
    assert interface_module("lo", root, drivers.get) == "loopback"
    assert interface_module("dummy0", root, drivers.get) is None


def test_ethtool_driver_of_a_missing_interface_is_none() -> None:
    assert ethtool_driver("skbpath-none0") is None


def test_interface_builtin_driver_gives_driver_name(tmp_path: Path) -> None:
    root = tmp_path
    (root / "sys/bus/pci/drivers/virtio-pci").mkdir(parents=True)
    (root / "sys/class/net/eth1/device").mkdir(parents=True)
    os.symlink("../../../../bus/pci/drivers/virtio-pci", root / "sys/class/net/eth1/device/driver")
    assert interface_module("eth1", str(root)) == "virtio-pci"


def test_driver_functions_by_btf_signature(tmp_path: Path) -> None:
    root = str(make_root(tmp_path))
    k = read_kernel_info(root)
    btf = _btf(k, root).for_driver("e1000")
    assert btf is not None
    found = find_driver_functions("e1000", k, btf)
    assert found == {
        "xmit": ["e1000_xmit_frame"],
        "poll": ["e1000_clean"],
        "rx_clean": ["e1000_clean_rx_irq"],
        "tx_clean": ["e1000_clean_tx_irq"],
    }


def test_driver_functions_btf_keeps_every_signature_match() -> None:
    base, ids = vmlinux_like()
    mod = Encoder(base)
    for name in ("virtnet_poll", "virtnet_poll_tx"):
        mod.func(name, mod.proto(ids["int"], [ids["napi_p"], ids["int"]]))
    mod.func("start_xmit", mod.proto(ids["netdev_tx_t"], [ids["skb_p"], ids["dev_p"]]))
    btf = Btf(mod.blob(), base=Btf(base.blob()))
    names = ["virtnet_poll", "virtnet_poll_tx", "start_xmit", "free_old_xmit", "receive_buf"]
    k = kernel(dict.fromkeys(names, "virtio_net"))
    assert find_driver_functions("virtio_net", k, btf) == {
        "xmit": ["start_xmit"],
        "poll": ["virtnet_poll", "virtnet_poll_tx"],
        "rx_clean": ["receive_buf"],
        "tx_clean": ["free_old_xmit"],
    }


def test_driver_functions_by_name_fallback(tmp_path: Path) -> None:
    k = read_kernel_info(str(make_root(tmp_path)))
    found = find_driver_functions("e1000", k, None)
    # Netpoll is not the NAPI poll; ring setup/teardown loses to the hot path;
    # the clone e1000_receive_skb.isra.0 is named by its base name.
    assert found == {
        "xmit": ["e1000_xmit_frame"],
        "poll": ["e1000_clean"],
        "rx_clean": ["e1000_clean_rx_irq"],
        "tx_clean": ["e1000_clean_tx_irq"],
    }
    only_receive = kernel({"foo_receive_skb.isra.0": "foo", "foo_start_xmit": "foo"})
    assert find_driver_functions("foo", only_receive, None) == {
        "xmit": ["foo_start_xmit"],
        "rx_clean": ["foo_receive_skb"],
    }


def test_driver_functions_virtio_names_without_prefix() -> None:
    k = kernel(dict.fromkeys(["start_xmit", "free_old_xmit", "virtnet_poll"], "virtio_net"))
    assert find_driver_functions("virtio_net", k, None) == {
        "xmit": ["start_xmit"],
        "poll": ["virtnet_poll"],
        "tx_clean": ["free_old_xmit"],
    }


def test_driver_functions_builtin_by_prefix() -> None:
    """A built-in driver's functions are untagged: found by the driver's name as prefix."""
    base, ids = vmlinux_like()
    base.func("loopback_xmit", base.proto(ids["netdev_tx_t"], [ids["skb_p"], ids["dev_p"]]))
    base.func("loopback_setup", base.proto(ids["int"], [ids["dev_p"]]))
    btf = Btf(base.blob())
    k = kernel({"loopback_xmit": None, "loopback_setup": None, "blackhole_netdev_xmit": None,
                "veth_xmit": "veth"})
    assert find_driver_functions("loopback", k, btf) == {"xmit": ["loopback_xmit"]}
    assert find_driver_functions("e1000", k, btf) == {}


def test_driver_btf_absent(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert _btf(read_kernel_info(root), root).for_driver("e1000") is None


# ----------------------------------------------------------------- resolve.py


def test_resolve_suffixes_inlined_and_untraceable(tmp_path: Path) -> None:
    k = read_kernel_info(str(make_root(tmp_path)))
    cat = [
        spec("__netif_receive_skb_core", skb_arg=1),
        spec("dev_queue_xmit"),
        spec("kfree_skb_reason", frees=True),
        spec("ip_rcv_finish"),
        spec("tcp_v4_rcv", context=True),
        spec("ip_rcv"),
    ]
    res = resolve(cat, k)
    got = {f.name: f for f in res.funcs.funcs}
    assert got["__netif_receive_skb_core"].symbols == ("__netif_receive_skb_core.constprop.0",)
    assert got["__netif_receive_skb_core"].skb_arg == 1
    assert got["ip_rcv_finish"].symbols == ("ip_rcv_finish.isra.0", "ip_rcv_finish.part.0")
    assert got["tcp_v4_rcv"].symbols == ("tcp_v4_rcv",)  # .cold is not attached
    assert got["tcp_v4_rcv"].context
    assert [f.id for f in res.funcs.funcs] == [0, 1, 2, 3]
    assert [f.name for f in res.funcs.funcs] == [
        "__netif_receive_skb_core",
        "ip_rcv_finish",
        "tcp_v4_rcv",
        "ip_rcv",
    ]
    assert res.skipped == [
        Skipped("dev_queue_xmit", INLINED),
        Skipped("kfree_skb_reason", NOT_TRACEABLE),
    ]


def test_resolve_exact_and_clone_together() -> None:
    k = kernel({"f": None, "f.constprop.0": None, "f.cold": None, "fx.isra.0": None})
    res = resolve([spec("f")], k)
    assert res.funcs.funcs[0].symbols == ("f", "f.constprop.0")


def test_resolve_only_cold_counts_as_inlined() -> None:
    k = kernel({"g.cold": None})
    res = resolve([spec("g")], k)
    assert len(res.funcs) == 0
    assert res.skipped == [Skipped("g", INLINED)]


def test_resolve_driver_roles(tmp_path: Path) -> None:
    root = str(make_root(tmp_path))
    k = read_kernel_info(root)
    module = interface_module("eth0", root)
    assert module == "e1000"
    drivers = find_driver_functions(module, k, _btf(k, root).for_driver(module))
    drivers["rx_clean"] = ["e1000_clean_rx_irq", "e1000_clean_jumbo_rx_irq"]
    cat = [
        spec("tcp_sendmsg"),
        spec(driver="xmit", skb_arg=1, stack=True),
        spec(driver="poll"),
        spec(driver="rx_clean"),
        spec(driver="tx_clean"),
        spec("ip_rcv"),
    ]
    res = resolve(cat, k, drivers, module=module)
    rows = [(f.id, f.name, f.driver, f.symbols) for f in res.funcs.funcs]
    assert rows == [
        (0, "tcp_sendmsg", "", ("tcp_sendmsg",)),
        (1, "e1000_xmit_frame", "xmit", ("e1000_xmit_frame",)),
        (2, "e1000_clean", "poll", ("e1000_clean",)),
        (3, "e1000_clean_rx_irq", "rx_clean", ("e1000_clean_rx_irq",)),
        (4, "e1000_clean_jumbo_rx_irq", "rx_clean", ("e1000_clean_jumbo_rx_irq",)),
        (5, "e1000_clean_tx_irq", "tx_clean", ("e1000_clean_tx_irq",)),
        (6, "ip_rcv", "", ("ip_rcv",)),
    ]
    xmit = res.funcs.get(1)
    assert xmit is not None and xmit.stack and xmit.skb_arg == 1
    assert res.skipped == []


def test_resolve_driver_role_missing() -> None:
    k = kernel({"tcp_sendmsg": None})
    cat = [spec(driver="xmit"), spec("tcp_sendmsg")]
    res = resolve(cat, k, {}, module="veth")
    assert res.skipped == [Skipped("driver:xmit", "no xmit function found for driver veth")]
    assert [(f.id, f.name) for f in res.funcs.funcs] == [(0, "tcp_sendmsg")]


def test_resolve_without_interface() -> None:
    k = kernel({"tcp_sendmsg": None})
    res = resolve([spec(driver="poll"), spec("tcp_sendmsg")], k, None)
    assert res.skipped == [Skipped("driver:poll", NO_INTERFACE)]
    assert res.funcs.funcs[0].id == 0


def test_resolve_driver_function_not_twice() -> None:
    k = kernel({"e1000_clean": "e1000"})
    res = resolve([spec("e1000_clean"), spec(driver="poll")], k, {"poll": ["e1000_clean"]})
    assert [f.name for f in res.funcs.funcs] == ["e1000_clean"]


def test_resolve_real_catalog_is_deterministic(tmp_path: Path) -> None:
    k = read_kernel_info(str(make_root(tmp_path)))
    catalog = load_catalog()
    a = resolve(catalog, k, {"xmit": ["e1000_xmit_frame"]}, module="e1000")
    b = resolve(catalog, k, {"xmit": ["e1000_xmit_frame"]}, module="e1000")
    assert a.funcs.to_json() == b.funcs.to_json()
    assert a.skipped == b.skipped
    assert [f.id for f in a.funcs.funcs] == list(range(len(a.funcs)))
    # Every catalog entry is either resolved or skipped with a reason.
    resolved = {f.name for f in a.funcs.funcs} | {f"driver:{f.driver}" for f in a.funcs.funcs}
    for entry in catalog:
        assert entry.key in resolved or any(s.name == entry.key for s in a.skipped)
    assert {f.name for f in a.funcs.funcs} >= {"tcp_sendmsg", "ip_rcv", "e1000_xmit_frame"}


def test_func_info_is_the_spec_resolved() -> None:
    spec = ProbeSpec(driver="poll", path="rx", layer="driver", skb_arg=2, skb_deref=True,
                     stack=True, context=True, frees=True, drop=True, fresh=True, aux_arg=3,
                     result="route")
    f = FuncInfo.resolved(spec, 7, ["e1000_clean", "e1000_clean.isra.0"], name="e1000_clean")
    assert f.id == 7 and f.name == "e1000_clean"
    assert f.symbols == ("e1000_clean", "e1000_clean.isra.0")
    for field in fields(ProbeSpec):
        if field.name != "name":
            assert getattr(f, field.name) == getattr(spec, field.name), field.name
    # The trace header's key order: id, the spec's fields, symbols.
    d = f.to_json()
    assert list(d) == ["id", *(x.name for x in fields(ProbeSpec)), "symbols"]
    assert d["symbols"] == ["e1000_clean", "e1000_clean.isra.0"]
    assert FuncInfo.from_json(d) == f
