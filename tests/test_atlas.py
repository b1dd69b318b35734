"""The path atlas: the shipped data, lookups, layer guesses, ``explain`` and the explained views."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from skbpath.probes.catalog import load_catalog
from skbpath.tracer.cli import main as cli
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.atlas import (
    LAYERS,
    MAX_SUMMARY,
    AtlasEntry,
    AtlasError,
    atlas_details,
    describe,
    layer_from_path,
    load_atlas,
    lookup,
    parse_atlas,
)
from skbpath.tracer.model.replay import replay as run_replay

from tests.synth import demo_table

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(ROOT.glob("sample_traces/*.skbtrace"))
ENV = {"COLUMNS": "400"}
HAVE_DOT = shutil.which("dot") is not None
SVG = "{http://www.w3.org/2000/svg}"
XLINK_TITLE = "{http://www.w3.org/1999/xlink}title"

SYSCALLS = [
    "socket", "bind", "listen", "accept", "accept4", "connect", "send", "sendto", "sendmsg",
    "sendmmsg", "recv", "recvfrom", "recvmsg", "recvmmsg", "recvmmsg_time32", "shutdown",
    "socketpair", "setsockopt", "getsockopt", "socketcall", "getsockname", "getpeername",
]
E1000 = ["e1000_xmit_frame", "e1000_clean", "e1000_clean_rx_irq", "e1000_clean_tx_irq",
         "e1000_intr"]
STACK_FRAMES = [
    "tcp_rcv_state_process", "tcp_ack", "tcp_clean_rtx_queue", "validate_xmit_skb",
    "dev_gro_receive", "napi_complete_done", "gro_normal_list", "ip_sublist_rcv_finish",
    "do_softirq", "__local_bh_enable_ip", "handle_softirqs", "tcp_v4_connect", "tcp_connect",
    "inet_stream_connect", "__sys_connect", "do_syscall_64",
]
CATALOG_NAMES = [e.name for e in load_catalog() if e.name]
ATLAS = load_atlas()


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli.main, args, env=ENV)


# ---------------------------------------------------------------- the data
def test_atlas_loads_and_is_cached() -> None:
    assert len(ATLAS) >= len(CATALOG_NAMES) + len(SYSCALLS)
    assert all(isinstance(e, AtlasEntry) and e.name == n for n, e in ATLAS.items())
    assert load_atlas() is ATLAS


@pytest.mark.parametrize("name", CATALOG_NAMES + ["sock_write_iter", "sock_read_iter"])
def test_catalog_functions_are_in_the_atlas(name: str) -> None:
    entry = ATLAS.get(name)
    assert entry is not None, f"{name} is in the catalog but not in probes/atlas.toml"


def test_atlas_layers_agree_with_the_catalog() -> None:
    for spec in load_catalog():
        if spec.name:
            assert ATLAS[spec.name].layer == spec.layer, spec.name


@pytest.mark.parametrize("name", SYSCALLS)
def test_socket_syscalls(name: str) -> None:
    entry = ATLAS[name]
    assert entry.layer == "syscall"
    assert entry.file == "net/socket.c"
    assert re.search(r"\b__sys_\w+", entry.summary), entry.summary


@pytest.mark.parametrize("name", E1000 + STACK_FRAMES)
def test_driver_and_stack_frames(name: str) -> None:
    assert name in ATLAS


def test_driver_entries_point_at_e1000() -> None:
    for name in E1000:
        assert ATLAS[name].layer == "driver"
        assert ATLAS[name].file == "drivers/net/ethernet/intel/e1000/e1000_main.c"


@pytest.mark.parametrize("name", sorted(ATLAS))
def test_entry_fields(name: str) -> None:
    e = ATLAS[name]
    assert e.layer in LAYERS
    assert re.fullmatch(r"(arch|drivers|include|kernel|net)/[\w./+-]+\.[ch]", e.file), e.file
    assert e.summary.endswith(".")
    assert "\n" not in e.summary
    assert len(e.summary) < MAX_SUMMARY
    assert ". " not in e.summary, "one sentence only"
    assert e.summary[0].isupper() or e.summary[0] == "_", e.summary


def test_entry_files_match_their_layer_where_the_path_is_specific() -> None:
    # The guess is per file, the atlas per function: they only have to agree
    # for files that hold a single layer.
    single = ("net/ipv4/tcp", "net/ipv4/ip_", "net/sched/", "drivers/net/", "kernel/softirq.c")
    for e in ATLAS.values():
        if e.file.startswith(single):
            assert layer_from_path(e.file) == e.layer, e.name


_GOOD = '[[fn]]\nname = "f"\nlayer = "socket"\nfile = "net/socket.c"\nsummary = "Does it."\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[fn]]\nname = ", "not valid TOML"),
        ('[[fn]]\nname = "f"\n', "missing"),
        (_GOOD.replace('layer = "socket"', 'layer = "l7"'), "layer 'l7'"),
        (_GOOD.replace("net/socket.c", "/abs/path.c"), "not a path"),
        (_GOOD.replace("net/socket.c", "net/../socket.c"), "not a path"),
        (_GOOD.replace("Does it.", "Does it. Twice."), "one sentence"),
        (_GOOD.replace("Does it.", "No full stop"), "one sentence"),
        (_GOOD.replace("Does it.", "A" * 300 + "."), "one sentence"),
        (_GOOD + 'colour = "red"\n', "unknown keys"),
        (_GOOD + _GOOD, "duplicate"),
        (_GOOD.replace('name = "f"', 'name = "f g"'), "not a C identifier"),
        (_GOOD.replace('name = "f"', "name = 3"), "non-empty strings"),
        ("fn = 3\n", "array of tables"),
        ("[other]\n", "unknown top-level"),
    ],
)
def test_parse_atlas_rejects_bad_data(text: str, message: str) -> None:
    with pytest.raises(AtlasError, match=re.escape(message)):
        parse_atlas(text)


def test_atlas_errors_are_user_errors() -> None:
    assert issubclass(AtlasError, SkbpathError)
    assert parse_atlas(_GOOD)["f"].summary == "Does it."


# ---------------------------------------------------------------- lookups
@pytest.mark.parametrize(
    ("frame", "name"),
    [
        ("tcp_sendmsg", "tcp_sendmsg"),
        ("napi_gro_complete.constprop.0", "napi_gro_complete"),
        ("tcp_write_xmit.isra.0", "tcp_write_xmit"),
        ("ip_finish_output2.part.0", "ip_finish_output2"),
        ("__napi_poll.cold", "__napi_poll"),
        ("tcp_ack+0x1a", "tcp_ack"),
        ("tcp_ack+0x1a/0x1640", "tcp_ack"),
        ("e1000_clean+0x279 [e1000]", "e1000_clean"),
        ("napi_gro_complete.constprop.0+0x145 [kernel]", "napi_gro_complete"),
        ("  do_syscall_64+0x5d [kernel] ", "do_syscall_64"),
    ],
)
def test_lookup_strips_suffixes(frame: str, name: str) -> None:
    assert lookup(frame) == ATLAS.get(name)


def test_lookup_unknown() -> None:
    assert lookup("no_such_function") is None
    assert lookup("") is None


@pytest.mark.parametrize(
    ("path", "layer"),
    [
        ("net/ipv4/tcp_output.c", "transport"),
        ("net/ipv4/tcp.c", "transport"),
        ("net/ipv6/tcp_ipv6.c", "transport"),
        ("net/ipv4/udp.c", "transport"),
        ("net/ipv4/ip_output.c", "network"),
        ("net/ipv4/route.c", "network"),
        ("net/ipv4/fib_trie.c", "network"),
        ("net/core/neighbour.c", "neighbour"),
        ("net/ipv4/arp.c", "neighbour"),
        ("net/sched/sch_generic.c", "qdisc"),
        ("net/sched/sch_fq_codel.c", "qdisc"),
        ("net/core/dev.c", "device"),
        ("net/core/gro.c", "device"),
        ("net/core/skbuff.c", "memory"),
        ("drivers/net/ethernet/intel/e1000/e1000_main.c", "driver"),
        ("drivers/net/virtio_net.c", "driver"),
        ("net/socket.c", "socket"),
        ("net/ipv4/af_inet.c", "socket"),
        ("net/core/sock.c", "socket"),
        ("kernel/softirq.c", "softirq"),
        ("./net/ipv4/tcp_input.c", "transport"),
        ("/build/linux-6.1/net/ipv4/tcp_input.c", "transport"),
        ("/home/net/src/linux/net/core/dev.c", "device"),
        ("mm/slub.c", None),
        ("fs/read_write.c", None),
        ("kernel/sched/core.c", None),
        ("drivers/gpu/drm/drm_drv.c", None),
        ("", None),
    ],
)
def test_layer_from_path(path: str, layer: str | None) -> None:
    assert layer_from_path(path) == layer


def test_describe() -> None:
    e = ATLAS["ip_finish_output2"]
    text = describe("ip_finish_output2.constprop.0")
    assert text == f"network · net/ipv4/ip_output.c — {e.summary}"
    assert "\n" not in text
    # Unknown: the trace's layer, else a guess from the name, else "?".
    assert describe("mlx5e_napi_poll", "driver") == "driver · not in the atlas"
    assert describe("tcp_made_up") == "transport · not in the atlas"
    assert describe("frobnicate") == "? · not in the atlas"
    assert describe("frobnicate", "?") == "? · not in the atlas"


def test_atlas_details_covers_every_function() -> None:
    funcs = demo_table()
    details = atlas_details(funcs)
    assert set(details) == {f.name for f in funcs.funcs}
    for f in funcs.funcs:
        entry = lookup(f.name)
        if entry is not None:
            assert entry.summary in details[f.name]
        else:
            assert details[f.name].endswith("not in the atlas")


# ---------------------------------------------------------------- explain
@pytest.mark.parametrize("name", SYSCALLS)
def test_explain_syscalls(name: str) -> None:
    result = invoke(["explain", name])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == name
    assert "  layer    syscall" in lines
    assert "  file     net/socket.c" in lines
    assert f"  summary  {ATLAS[name].summary}" in lines


def test_explain_several_and_stack_frames() -> None:
    result = invoke(["explain", "tcp_sendmsg", "napi_gro_complete.constprop.0+0x145 [kernel]"])
    assert result.exit_code == 0, result.output
    assert "net/ipv4/tcp.c" in result.stdout
    assert "napi_gro_complete  (from napi_gro_complete.constprop.0+0x145 [kernel])" in (
        result.stdout
    )
    assert ATLAS["napi_gro_complete"].summary in result.stdout


def test_explain_unknown_is_one_line_with_suggestions() -> None:
    result = invoke(["explain", "tcp_sendmsgg"])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("skbpath: error: tcp_sendmsgg not in the atlas (")
    assert f"({len(ATLAS)} entries)" in lines[0]
    assert "try tcp_sendmsg" in lines[0]
    assert "Traceback" not in result.output


def test_explain_unknown_without_close_matches() -> None:
    result = invoke(["explain", "tcp_ack", "zzzzqqq"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"skbpath: error: zzzzqqq not in the atlas ({len(ATLAS)} entries); "
        "try 'skbpath explain --all'"
    ]


def test_explain_all_is_sorted_and_complete() -> None:
    result = invoke(["explain", "--all"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(ATLAS)
    assert invoke(["explain", "--all"]).stdout == result.stdout  # deterministic


@pytest.mark.parametrize("args", [["explain"], ["explain", "--all", "tcp_ack"]])
def test_explain_usage_errors(args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_explain_help_has_examples() -> None:
    result = invoke(["explain", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert "skbpath explain" in result.stdout


# ---------------------------------------------------------------- views
def _trace_atlas_names(trace: Path) -> set[str]:
    rep = run_replay(str(trace), keep_journeys=False)
    return {f.name for f in rep.model.calltree.funcs.funcs if f.name in ATLAS}


@pytest.mark.skipif(not HAVE_DOT, reason="graphviz 'dot' not installed")
@pytest.mark.parametrize("trace", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_render_svgs_explain_every_function(trace: Path, tmp_path: Path) -> None:
    result = invoke(["render", str(trace), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = _trace_atlas_names(trace)
    assert names

    # Flame graph: every frame of an atlas function has its summary in <title>.
    flame = ET.parse(tmp_path / "flamegraph.svg").getroot()
    seen: set[str] = set()
    for g in flame.iter(f"{SVG}g"):
        if g.get("class") != "f" or g.get("data-d") == "0":
            continue
        name = g.get("data-n", "")
        title = g.find(f"{SVG}title")
        assert title is not None and title.text
        if name in ATLAS:
            assert ATLAS[name].summary in title.text, name
            assert ATLAS[name].file in title.text, name
            seen.add(name)
    assert seen and seen <= names

    # Call tree: each node's tooltip (an <a xlink:title>) names the function first.
    tree = ET.parse(tmp_path / "calltree.svg").getroot()
    nodes = 0
    for g in tree.iter(f"{SVG}g"):
        if "node" not in (g.get("class") or "").split():  # "node" or "node hot"
            continue
        a = next(g.iter(f"{SVG}a"))
        tip = a.get(XLINK_TITLE, "")
        name = tip.split("\n", 1)[0]
        if name in ATLAS:
            assert ATLAS[name].summary in tip, name
            nodes += 1
    assert nodes


@pytest.mark.parametrize("trace", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_render_dot_has_details(trace: Path, tmp_path: Path) -> None:
    result = invoke(["render", str(trace), "-o", str(tmp_path), "--format", "dot"])
    assert result.exit_code == 0, result.output
    dot = (tmp_path / "calltree.dot").read_text(encoding="utf-8")
    tips = re.findall(r'^    n\d+ \[.*tooltip="([^"]*)"', dot, re.M)
    explained = 0
    for tip in tips:
        name = tip.split("\\n", 1)[0]
        if name in ATLAS:
            assert ATLAS[name].summary in tip, name
            explained += 1
    assert explained


@pytest.mark.parametrize("trace", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_replay_explain(trace: Path) -> None:
    plain = invoke(["replay", str(trace)])
    explained = invoke(["replay", "--explain", str(trace)])
    assert plain.exit_code == 0 and explained.exit_code == 0, explained.output
    # Rich may wrap the long lines: compare with whitespace collapsed.
    flat = " ".join(explained.stdout.split())
    shown = [n for n in sorted(_trace_atlas_names(trace)) if f"── {n}  calls" in plain.stdout]
    assert shown
    for name in shown:
        assert " ".join(ATLAS[name].summary.split()) in flat, name
        assert ATLAS[name].summary[:40] not in plain.stdout
