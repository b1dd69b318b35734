"""The probe catalog: the shipped file, field checks, and the functions it must cover."""

from __future__ import annotations

import pytest
from skbpath.probes.catalog import (
    DRIVER_ROLES,
    LAYERS,
    MAX_SKB_ARG,
    PATHS,
    CatalogError,
    ProbeSpec,
    Tracepoint,
    load_catalog,
    load_tracepoints,
    parse_catalog,
    parse_tracepoints,
)

TX = [
    "__sys_sendto", "sock_sendmsg", "inet_sendmsg", "tcp_sendmsg", "tcp_sendmsg_locked",
    "__tcp_push_pending_frames", "tcp_push_one", "tcp_write_xmit", "__tcp_transmit_skb",
    "ip_queue_xmit", "__ip_queue_xmit", "ip_local_out", "__ip_local_out", "ip_output",
    "ip_finish_output", "__ip_finish_output", "ip_finish_output2", "__dev_queue_xmit",
    "__qdisc_run", "sch_direct_xmit", "dev_hard_start_xmit",
]
RX = [
    "net_rx_action", "__napi_poll", "napi_gro_receive", "netif_receive_skb",
    "__netif_receive_skb_core", "ip_rcv", "ip_list_rcv", "ip_rcv_finish", "ip_local_deliver",
    "ip_local_deliver_finish", "ip_protocol_deliver_rcu", "tcp_v4_rcv", "tcp_v4_do_rcv",
    "tcp_rcv_established", "tcp_data_queue", "sock_def_readable", "tcp_recvmsg",
]
FREE = ["kfree_skb_reason", "consume_skb", "napi_consume_skb"]

CATALOG = load_catalog()
BY_KEY = {e.key: e for e in CATALOG}


def test_catalog_parses() -> None:
    assert len(CATALOG) >= len(TX) + len(RX) + len(FREE)
    assert all(isinstance(e, ProbeSpec) for e in CATALOG)
    assert len(BY_KEY) == len(CATALOG)  # keys are unique


@pytest.mark.parametrize("entry", CATALOG, ids=lambda e: e.key)
def test_entry_fields(entry: ProbeSpec) -> None:
    assert bool(entry.name) != bool(entry.driver)
    assert entry.path in PATHS
    assert entry.layer in LAYERS
    assert 0 <= entry.skb_arg <= MAX_SKB_ARG
    if entry.skb_deref:
        assert entry.skb_arg
    if entry.driver:
        assert entry.driver in DRIVER_ROLES
        assert entry.layer == "driver"
    else:
        assert entry.name.isidentifier(), entry.name
    if entry.frees:
        assert entry.skb_arg, f"{entry.key} frees an skb it cannot see"


@pytest.mark.parametrize("name", TX)
def test_tx_functions(name: str) -> None:
    assert name in BY_KEY
    assert BY_KEY[name].path == "tx"


@pytest.mark.parametrize("name", RX)
def test_rx_functions(name: str) -> None:
    assert name in BY_KEY
    assert BY_KEY[name].path == "rx"


@pytest.mark.parametrize("name", FREE)
def test_free_functions(name: str) -> None:
    assert name in BY_KEY
    assert BY_KEY[name].frees
    assert BY_KEY[name].skb_arg == 1


@pytest.mark.parametrize("role", DRIVER_ROLES)
def test_driver_roles(role: str) -> None:
    entry = BY_KEY[f"driver:{role}"]
    assert entry.driver == role
    assert entry.name == ""


def test_driver_roles_constant() -> None:
    assert set(DRIVER_ROLES) == {"xmit", "poll", "rx_clean", "tx_clean"}


def test_softirq_entry_is_a_context() -> None:
    assert BY_KEY["net_rx_action"].context
    assert not BY_KEY["__sys_sendto"].context


# ---------------------------------------------------------------- errors
GOOD = '[[probe]]\nname = "ip_rcv"\npath = "rx"\nlayer = "network"\nskb_arg = 1\n'


def test_minimal_catalog() -> None:
    (entry,) = parse_catalog(GOOD)
    assert entry == ProbeSpec(name="ip_rcv", path="rx", layer="network", skb_arg=1)
    assert entry.key == "ip_rcv"
    assert parse_catalog("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[probe]\nname = ", "not valid TOML"),
        (GOOD + "colour = \"red\"\n", "unknown keys \\['colour'\\]"),
        (GOOD + 'driver = "xmit"\n', "exactly one of name and driver"),
        ('[[probe]]\npath = "rx"\nlayer = "network"\n', "exactly one of name and driver"),
        ('[[probe]]\ndriver = "rx_poll"\npath = "rx"\nlayer = "driver"\n', "driver role"),
        (GOOD.replace('"network"', '"physics"'), "layer 'physics'"),
        (GOOD.replace('"rx"', '"sideways"'), "path 'sideways'"),
        (GOOD.replace("skb_arg = 1", "skb_arg = 6"), "skb_arg must be"),
        (GOOD.replace("skb_arg = 1", "skb_arg = -1"), "skb_arg must be"),
        (GOOD.replace("skb_arg = 1", "skb_arg = 0\nskb_deref = true"), "skb_deref needs"),
        (GOOD + GOOD, "duplicate catalog entries: \\['ip_rcv'\\]"),
    ],
    ids=["toml", "unknown-key", "name-and-driver", "neither", "bad-role", "bad-layer",
         "bad-path", "skb-arg-high", "skb-arg-negative", "deref-without-arg", "duplicate"],
)
def test_bad_catalog(text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog(text)


def test_catalog_error_is_a_value_error() -> None:
    assert issubclass(CatalogError, ValueError)


# ------------------------------------------------------------ tracepoints
TP = '[[tracepoint]]\ngroup = "skb"\nevent = "kfree_skb"\npath = "free"\nlayer = "memory"\n'


def test_shipped_tracepoints() -> None:
    tps = load_tracepoints()
    names = [tp.name for tp in tps]
    assert len(names) == len(set(names)) and all(":" in n for n in names)
    # Path order: tx, then rx, then the frees.
    paths = [tp.path for tp in tps]
    assert paths == sorted(paths, key=PATHS.index)
    kfree = next(tp for tp in tps if tp.name == "skb:kfree_skb")
    assert kfree.frees and kfree.drop and kfree.stack and kfree.skb
    assert not next(tp for tp in tps if tp.name == "napi:napi_poll").skb


def test_minimal_tracepoint_and_its_spec() -> None:
    (tp,) = parse_tracepoints(TP + "frees = true\n")
    assert tp == Tracepoint("skb", "kfree_skb", "free", "memory", frees=True)
    assert tp.spec(skb_arg=1, aux_arg=3) == ProbeSpec(
        name="skb:kfree_skb", path="free", layer="memory", skb_arg=1, aux_arg=3, frees=True)
    assert parse_tracepoints("") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[tracepoint]\n", "not valid TOML"),
        ("[[probe]]\n", "unknown top-level keys"),
        (TP + "colour = 1\n", "unknown keys \\['colour'\\]"),
        (TP.replace('group = "skb"\n', ""), "missing \\['group'\\]"),
        (TP + "stack = 1\n", "stack must be a bool"),
        (TP.replace('"kfree_skb"', '""'), "event must be a str"),
        (TP.replace('"memory"', '"physics"'), "layer 'physics'"),
        (TP.replace('"free"', '"sideways"'), "path 'sideways'"),
        (TP + "skb = false\nfrees = true\n", "frees and drop need skb"),
        (TP + TP, "duplicate tracepoints: \\['skb:kfree_skb'\\]"),
    ],
    ids=["toml", "top-level", "unknown-key", "missing", "bool-type", "empty-str", "bad-layer",
         "bad-path", "frees-without-skb", "duplicate"],
)
def test_bad_tracepoints(text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_tracepoints(text)
