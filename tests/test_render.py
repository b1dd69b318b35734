"""Tests of the renderers: golden outputs per trace, and the properties every output must have."""

from __future__ import annotations

import difflib
import os
import random
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console
from skbpath.render.colors import DROP_COLOR, HOT_COLOR, LAYER_COLORS, layer_color
from skbpath.render.dot import calltree_dot, dot_to_svg
from skbpath.render.flamegraph import calltree_flamegraph, flamegraph_svg
from skbpath.render.folded import folded_stacks, parse_folded, stack_data
from skbpath.render.terminal import calltree_view, function_table, journey_timeline, summary_table
from skbpath.render.units import fmt_ns
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.model.calltree import CallTree
from skbpath.tracer.model.core import Model
from skbpath.tracer.model.replay import Replay, default_weight, replay
from skbpath.tracer.traces.events import pack_events
from skbpath.tracer.traces.functions import FuncInfo, FuncTable
from skbpath.tracer.traces.tracefile import TraceWriter

from tests.synth import RX_CHAIN, TX_CHAIN, Spec, demo_table, events_for, tx_rx_stream

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
SAMPLES = sorted(p.stem for p in (ROOT / "sample_traces").glob("*.skbtrace"))
# --aggregate traces (a call tree, no journeys), apart so that the journey tests' globs skip them.
AGGREGATES = sorted(f"aggregate/{p.stem}"
                    for p in (ROOT / "sample_traces" / "aggregate").glob("*.skbtrace"))
CASES = SAMPLES + AGGREGATES + ["synthetic"]
BLESS = os.environ.get("BLESS") == "1"
SVG_NS = "{http://www.w3.org/2000/svg}"
HAVE_DOT = shutil.which("dot") is not None
SYNTH_PACKETS = 50

_replays: dict[str, Replay] = {}


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Replay]:
    """Every case replayed once per module; the synthetic one goes through a real trace file."""
    if not _replays:
        path = tmp_path_factory.mktemp("synth") / "synthetic.skbtrace"
        table = demo_table()
        with open(path, "wb") as fh:
            w = TraceWriter(fh, {"format": "skbpath-trace", "functions": table.to_json()},
                            version=1)
            w.write_events(pack_events(tx_rx_stream(SYNTH_PACKETS, table)))
            w.close()
        _replays["synthetic"] = replay(str(path))
        for name in SAMPLES + AGGREGATES:
            _replays[name] = replay(str(ROOT / "sample_traces" / f"{name}.skbtrace"))
    return _replays


def _tree(traces: dict[str, Replay], case: str) -> CallTree:
    return traces[case].model.calltree


def _outputs(tree: CallTree, case: str, weight: str = "time") -> dict[str, str]:
    """The golden renderings; the flame graph in the weight ``render`` picks by default."""
    title = f"skbpath: {case}"
    return {
        "calltree.dot": calltree_dot(tree, title=title),
        "folded.txt": "\n".join(folded_stacks(tree, "time")) + "\n",
        "folded_count.txt": "\n".join(folded_stacks(tree, "count")) + "\n",
        "flamegraph.svg": calltree_flamegraph(tree, weight=weight, title=title,
                                              include_script=False),
    }


# --- golden files ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_golden(traces: dict[str, Replay], case: str) -> None:
    outputs = _outputs(_tree(traces, case), case, default_weight(traces[case].contents.header))
    folder = GOLDEN / case
    if BLESS:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in outputs.items():
            (folder / name).write_text(text, encoding="utf-8")
        return
    for name, text in outputs.items():
        golden = folder / name
        assert golden.exists(), f"{golden} missing: run BLESS=1 pytest {__file__}"
        want = golden.read_text(encoding="utf-8")
        if text != want:
            diff = "".join(
                list(
                    difflib.unified_diff(
                        want.splitlines(True), text.splitlines(True), str(golden), "rendered"
                    )
                )[:40]
            )
            pytest.fail(f"{name} differs from its golden file (BLESS=1 to accept):\n{diff}")


@pytest.mark.parametrize("case", CASES)
def test_rendering_is_deterministic(traces: dict[str, Replay], case: str) -> None:
    tree = _tree(traces, case)
    assert _outputs(tree, case) == _outputs(tree, case)
    full = calltree_flamegraph(tree, title="x")
    assert full == calltree_flamegraph(tree, title="x")


# --- SVG well-formedness ---------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_svg_parses(traces: dict[str, Replay], case: str) -> None:
    tree = _tree(traces, case)
    weight = default_weight(traces[case].contents.header)
    for include_script in (True, False):
        svg = calltree_flamegraph(tree, weight=weight, title=case, include_script=include_script)
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG_NS}svg"
        assert (root.find(f"{SVG_NS}script") is not None) == include_script
    for weight in ("time", "count"):
        ET.fromstring(calltree_flamegraph(tree, weight=weight, title=case))
    if HAVE_DOT:
        root = ET.fromstring(dot_to_svg(calltree_dot(tree, title=case)))
        assert root.tag == f"{SVG_NS}svg"


# --- folded stacks ---------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_folded_round_trip(traces: dict[str, Replay], case: str) -> None:
    tree = _tree(traces, case)
    for weight in ("time", "count"):
        lines = folded_stacks(tree, weight)
        assert lines == sorted(lines)
        parsed = parse_folded("\n".join(lines) + "\n\n")
        assert parsed == stack_data(tree, weight)
        assert all(v > 0 for _, v in parsed)
        directions = {tree.direction(r) for r in tree.roots.values()}
        assert all(frames[0] in directions for frames, _ in parsed)
    # Time weights are self times, so they add up to the self time of every node.
    assert sum(v for _, v in parse_folded("\n".join(folded_stacks(tree)))) == sum(
        n.self_total for n in tree.nodes()
    )
    # Count weights are the calls that ended on each path: they add up to the calls of the
    # roots, plus extra calls where a path has more calls than its parent (a loop).
    count_sum = sum(v for _, v in parse_folded("\n".join(folded_stacks(tree, "count"))))
    assert count_sum >= sum(r.count for r in tree.roots.values())


def test_folded_synthetic_content(traces: dict[str, Replay]) -> None:
    tree = _tree(traces, "synthetic")
    tx = "TX;" + ";".join(n for n, _, _ in TX_CHAIN)
    rx = "RX;" + ";".join(n for n, _, _ in RX_CHAIN)
    count = folded_stacks(tree, "count")
    assert f"{tx} {SYNTH_PACKETS}" in count
    assert f"{rx} {SYNTH_PACKETS}" in count
    assert len(count) == 4  # TX leaf, RX leaf and the two frees
    time_lines = dict(line.rsplit(" ", 1) for line in folded_stacks(tree))
    # Each synthetic leaf call works 200 ns (TX) exactly.
    assert time_lines[tx] == str(200 * SYNTH_PACKETS)
    assert "TX;__sys_sendto" in time_lines


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TX;a;b\n", "line 1"),
        ("TX;a 1\nTX;b x\n", "line 2: value 'x' is not an integer"),
        ("TX;;b 3\n", "empty frame"),
        ("TX;a -3\n", "negative"),
        (" 5\n", "line 1"),
    ],
)
def test_parse_folded_rejects_bad_lines(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_folded(text)


def test_parse_folded_frames_with_spaces() -> None:
    assert parse_folded("TX;a b;c 7\n\nRX;d 1") == [(["TX", "a b", "c"], 7), (["RX", "d"], 1)]


def test_unknown_weight_is_an_error(traces: dict[str, Replay]) -> None:
    with pytest.raises(ValueError, match="unknown weight"):
        folded_stacks(_tree(traces, "synthetic"), "bytes")


# --- flame graph -----------------------------------------------------------


def _frames(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "f"]


def _title(g: ET.Element) -> str:
    t = g.find(f"{SVG_NS}title")
    assert t is not None and t.text is not None
    return t.text


@pytest.mark.parametrize("case", CASES)
def test_flamegraph_one_title_per_frame(traces: dict[str, Replay], case: str) -> None:
    weight = default_weight(traces[case].contents.header)
    svg = calltree_flamegraph(_tree(traces, case), weight=weight, title=case)
    frames = _frames(svg)
    assert frames
    root = ET.fromstring(svg)
    titles = list(root.iter(f"{SVG_NS}title"))
    assert len(titles) == len(frames)
    for g in frames:
        assert len(g.findall(f"{SVG_NS}title")) == 1
        assert len(g.findall(f"{SVG_NS}rect")) == 1
        assert _title(g).startswith(g.get("data-n", "?"))


def test_flamegraph_synthetic_frames(traces: dict[str, Replay]) -> None:
    tree = _tree(traces, "synthetic")
    details = {"tcp_sendmsg": 'copies user data into skbs <"quoted" & escaped>'}
    svg = calltree_flamegraph(tree, title="synthetic", details=details)
    frames = {g.get("data-n"): g for g in _frames(svg)}
    # all + TX + RX + every function once: nothing is below 0.1 % here.
    assert len(frames) == 3 + len(demo_table())
    assert set(frames) >= {"all", "TX", "RX", "tcp_sendmsg", "consume_skb"}
    tip = _title(frames["tcp_sendmsg"])
    assert "layer: transport" in tip
    assert f"calls: {SYNTH_PACKETS}" in tip
    assert details["tcp_sendmsg"] in tip
    assert f"calls: {SYNTH_PACKETS}" in _title(frames["TX"])
    # Frames are coloured by layer, roots in the unknown grey.
    rect = frames["tcp_sendmsg"].find(f"{SVG_NS}rect")
    assert rect is not None and rect.get("fill") == layer_color("transport")
    rect = frames["TX"].find(f"{SVG_NS}rect")
    assert rect is not None and rect.get("fill") == layer_color("?")
    # Widths are proportional to values; TX comes before RX.
    total = int(frames["all"].get("data-w", "0"))
    assert total == sum(n.self_total for n in tree.nodes())

    def width(name: str) -> float:
        r = frames[name].find(f"{SVG_NS}rect")
        assert r is not None
        return float(r.get("width", "nan"))

    for name in ("TX", "RX", "e1000_clean"):
        share = int(frames[name].get("data-w", "0")) / total
        assert width(name) == pytest.approx(share * width("all"), abs=0.01)
    assert int(frames["TX"].get("data-x", "-1")) == 0
    assert int(frames["RX"].get("data-x", "-1")) == int(frames["TX"].get("data-w", "0"))


def test_flamegraph_omits_tiny_frames_but_counts_them() -> None:
    stacks = [(["TX", "big", "child"], 1_000_000), (["TX", "tiny", "deeper"], 10)]
    svg = flamegraph_svg(stacks, layers={"big": "socket"}, title="t")
    names = [g.get("data-n") for g in _frames(svg)]
    assert names == ["all", "TX", "big", "child"]
    assert "2 frames below 0.1% of the total not drawn" in svg
    assert "tiny" not in svg


def test_flamegraph_escapes_names_and_title() -> None:
    weird = 'a<b>&"c\'d;'
    svg = flamegraph_svg(
        [(["RX", weird], 5), (["RX", "x\x01y"], 5)],
        layers={weird: "nosuchlayer"},
        title="<title & more>",
        details={weird: "<&>"},
        unit="calls",
    )
    frames = {g.get("data-n"): g for g in _frames(svg)}
    assert weird in frames
    assert "x\ufffdy" in frames
    assert _title(frames[weird]).splitlines()[-1] == "<&>"
    assert "5 calls (50.00% of total)" in _title(frames[weird])
    rect = frames[weird].find(f"{SVG_NS}rect")
    assert rect is not None and rect.get("fill") == layer_color("?")


def test_flamegraph_labels_are_truncated_to_fit() -> None:
    long = "a_very_long_function_name_that_cannot_fit_in_a_narrow_frame"
    stacks = [(["TX", long], 3), (["TX", "wide"], 997)]
    svg = flamegraph_svg(stacks, layers={}, title="t", include_script=False)
    frames = {g.get("data-n"): g for g in _frames(svg)}
    text = frames[long].find(f"{SVG_NS}text")
    assert text is not None
    assert (text.text or "") == "" or (text.text or "").endswith("..")
    wide = frames["wide"].find(f"{SVG_NS}text")
    assert wide is not None and wide.text == "wide"


def test_flamegraph_script_controls() -> None:
    stacks = [(["TX", "f"], 10), (["RX", "g"], 30)]
    with_js = flamegraph_svg(stacks, layers={}, title="t", include_script=True)
    without = flamegraph_svg(stacks, layers={}, title="t", include_script=False)
    for needle in ("<script><![CDATA[", "Reset zoom", "Matched: ", "Escape", "ctrlKey", "Search"):
        assert needle in with_js
    assert "<script" not in without and "Reset zoom" not in without
    # Without the script every frame is still drawn, labelled and titled.
    drawn = [g.get("data-n") for g in _frames(with_js)]
    assert drawn == [g.get("data-n") for g in _frames(without)] == ["all", "TX", "f", "RX", "g"]
    node = shutil.which("node")
    if node is not None:
        m = re.search(r"<!\[CDATA\[(.*)\]\]>", with_js, re.S)
        assert m is not None
        proc = subprocess.run(
            [node, "--check"], input=m.group(1), text=True, capture_output=True, check=False
        )
        assert proc.returncode == 0, proc.stderr


def test_flamegraph_empty_input_is_valid() -> None:
    svg = flamegraph_svg([], layers={}, title="nothing")
    ET.fromstring(svg)
    assert "no samples" in svg and not _frames(svg)


def test_flamegraph_handles_100k_distinct_stacks() -> None:
    rnd = random.Random(7)
    names = [f"fn_{i}" for i in range(200)]
    seen: set[tuple[str, ...]] = set()
    stacks: list[tuple[list[str], int]] = []
    while len(stacks) < 100_000:
        stack = (rnd.choice(("TX", "RX")),) + tuple(
            rnd.choice(names) for _ in range(rnd.randint(2, 8))
        )
        if stack not in seen:
            seen.add(stack)
            stacks.append((list(stack), rnd.randint(1, 1000)))
    start = time.perf_counter()
    svg = flamegraph_svg(stacks, layers={}, title="big")
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"100k stacks took {elapsed:.1f} s"
    frames = _frames(svg)
    assert 3 <= len(frames) <= 3000  # small frames are left out...
    assert re.search(r"[\d,]+ frames below 0\.1% of the total not drawn", svg)  # ...and counted


# --- DOT -------------------------------------------------------------------


def _dot_nodes(dot: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(n\d+) (\[.*\]);$", dot, re.M))


def test_dot_highlights_hottest_paths(traces: dict[str, Replay]) -> None:
    tree = _tree(traces, "synthetic")
    dot = calltree_dot(tree, title="synthetic", min_fraction=0.0)
    nodes = _dot_nodes(dot)
    order = list(tree.nodes())
    assert len(nodes) == len(order)
    ids = {id(n): f"n{i}" for i, n in enumerate(order)}
    hot = {ids[id(n)] for r in tree.sorted_roots() for n in tree.hottest_path(r)}
    assert hot == {k for k, v in nodes.items() if 'class="hot"' in v}
    assert len(hot) == len(TX_CHAIN) + len(RX_CHAIN)
    for k in hot:
        assert f'color="{HOT_COLOR}"' in nodes[k]
    hot_edges = re.findall(r"^\s+(n\d+) -> (n\d+) .*style=\"bold\"", dot, re.M)
    assert len(hot_edges) == len(hot) - 2  # a chain per root
    assert all(a in hot and b in hot for a, b in hot_edges)
    # Clusters by the root's direction: TX, then RX; frees sit inside them.
    labels = re.findall(r'subgraph (cluster_\d+) \{\n\s+graph \[label="([^"]*)"', dot)
    assert [lab for _, lab in labels] == ["TX", "RX"]
    assert "n0 [label=\"__sys_sendto\\ncalls 50\\nmean " in dot
    assert 'fillcolor="' + layer_color("socket") + '"' in nodes["n0"]


@pytest.mark.parametrize("case", CASES)
def test_dot_ids_and_edges(traces: dict[str, Replay], case: str) -> None:
    tree = _tree(traces, case)
    dot = calltree_dot(tree, title=case, min_fraction=0.0)
    nodes = _dot_nodes(dot)
    assert sorted(nodes, key=lambda k: int(k[1:])) == [f"n{i}" for i in range(len(nodes))]
    edges = re.findall(r"^\s+n\d+ -> n\d+ \[penwidth=\"([\d.]+)\"", dot, re.M)
    assert len(edges) == len(nodes) - len(tree.roots)
    assert all(1.0 <= float(w) <= 8.0 for w in edges)
    assert dot.startswith("digraph skbpath {") and dot.endswith("}\n")


def _weird_tree() -> CallTree:
    names = ['sock"q\\uote', "plain", "leaf"]
    table = FuncTable(
        [FuncInfo(id=i, name=n, path="tx", layer="socket", skb_arg=1) for i, n in enumerate(names)]
    )
    spec = Spec(names[0], 0xAA00, 100, [Spec("plain", 0xAA00, 100, [Spec("leaf", 0xAA00, 50)])])
    model = Model(table)
    events, _ = events_for(table, spec, 1000)
    model.feed(events)
    model.finish()
    return model.calltree


def test_dot_escapes_quotes_and_backslashes() -> None:
    tree = _weird_tree()
    dot = calltree_dot(tree, title='a "title" \\ here', details={"plain": 'say "hi"\nline 2'})
    assert 'label="a \\"title\\" \\\\ here"' in dot
    assert 'sock\\"q\\\\uote' in dot
    assert 'say \\"hi\\"\\nline 2' in dot
    if HAVE_DOT:
        svg = dot_to_svg(dot)
        root = ET.fromstring(svg)
        texts = "".join(t.text or "" for t in root.iter(f"{SVG_NS}text"))
        assert 'sock"q\\uote' in texts
    ET.fromstring(calltree_flamegraph(tree, title="weird"))


def test_dot_to_svg_without_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SkbpathError, match="graphviz 'dot' not found: apt-get install graphviz"):
        dot_to_svg("digraph { a }")


@pytest.mark.skipif(not HAVE_DOT, reason="graphviz not installed")
def test_dot_to_svg_reports_bad_input() -> None:
    with pytest.raises(SkbpathError, match="graphviz 'dot' failed"):
        dot_to_svg("digraph { this is not dot")


# --- units and colours -----------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0 ns"),
        (850, "850 ns"),
        (999, "999 ns"),
        (999.6, "1.00 µs"),
        (1_000, "1.00 µs"),
        (12_345, "12.3 µs"),
        (123_456, "123 µs"),
        (999_499, "999 µs"),
        (999_999, "1.00 ms"),
        (4_560_000, "4.56 ms"),
        (1_234_567_890, "1.23 s"),
        (98_765_000_000, "98.8 s"),
        (1_234.5, "1.23 µs"),
        (-1_500, "-1.50 µs"),
    ],
)
def test_fmt_ns(ns: float, text: str) -> None:
    assert fmt_ns(ns) == text


def test_layer_colors() -> None:
    layers = ["socket", "transport", "network", "neighbour", "qdisc", "device", "driver",
              "softirq", "memory", "?"]
    colors = [layer_color(x) for x in layers]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors + [DROP_COLOR, HOT_COLOR])
    assert len(set(colors + [DROP_COLOR, HOT_COLOR])) == len(layers) + 2
    assert set(LAYER_COLORS) == set(layers) | {"drop"}
    assert layer_color("drop") == DROP_COLOR
    assert layer_color("no-such-layer") == layer_color("?")
    red, green, blue = (int(DROP_COLOR[i : i + 2], 16) for i in (1, 3, 5))
    assert red > 180 and green < 80 and blue < 80


# --- terminal --------------------------------------------------------------


def _render(obj: object) -> str:
    console = Console(record=True, width=120, color_system="truecolor")
    console.print(obj)
    return console.export_text()


def test_terminal_calltree_view(traces: dict[str, Replay]) -> None:
    tree = _tree(traces, "synthetic")
    text = _render(calltree_view(tree, explain={"ip_rcv": "IPv4 receive entry"}))
    for name in [n for n, _, _ in TX_CHAIN + RX_CHAIN] + ["consume_skb", "napi_consume_skb"]:
        assert name in text
    assert "IPv4 receive entry" in text
    assert text.index("TX") < text.index("RX")
    assert f"calls {SYNTH_PACKETS}" in text and "p99 " in text and "self " in text
    cut = _render(calltree_view(tree, max_depth=1))
    assert "tcp_sendmsg" in cut and "tcp_write_xmit" not in cut
    assert "deeper call paths" in cut


def test_terminal_calltree_view_has_layer_colours(traces: dict[str, Replay]) -> None:
    console = Console(record=True, width=120, color_system="truecolor")
    console.print(calltree_view(_tree(traces, "synthetic")))
    html = console.export_html(inline_styles=True)
    assert layer_color("transport") in html


def test_terminal_function_table(traces: dict[str, Replay]) -> None:
    tree = _tree(traces, "synthetic")
    text = _render(function_table(tree))
    for col in ("function", "layer", "calls", "total", "self", "mean", "p50", "p99"):
        assert col in text
    # Sorted by total inclusive time: the TX syscall first, the smallest free last.
    assert text.index("__sys_sendto") < text.index("tcp_sendmsg") < text.index("consume_skb ")
    assert "transport" in text


def test_terminal_journey_timeline(traces: dict[str, Replay]) -> None:
    journeys = traces["synthetic"].model.journey_list
    assert journeys
    tx = next(j for j in journeys if j.path == "TX")
    text = _render(journey_timeline(tx))
    assert "+0 ns" in text and "Δ prev" in text
    for s in tx.steps:
        assert s.func in text
    # Indentation follows depth.
    line = next(ln for ln in text.splitlines() if "tcp_sendmsg" in ln)
    assert "  tcp_sendmsg" in line
    assert f"journey {tx.id}" in text


def test_terminal_summary_table(traces: dict[str, Replay]) -> None:
    summary: dict[str, int | str] = dict(traces["synthetic"].model.summary())
    summary["kernel"] = "6.8.0-test"
    text = _render(summary_table(summary))
    assert "journeys freed" in text and f"{2 * SYNTH_PACKETS}" in text
    assert "6.8.0-test" in text


def test_dot_hides_small_subtrees_and_says_so(traces: dict[str, Replay]) -> None:
    tree = _tree(traces, "synthetic")
    everything = _dot_nodes(calltree_dot(tree, title="t", min_fraction=0.0))
    pruned_dot = calltree_dot(tree, title="t", min_fraction=0.05)
    pruned = _dot_nodes(pruned_dot)
    assert 0 < len(pruned) < len(everything)
    hidden = len(everything) - len(pruned)
    assert f"{hidden:,} call paths under 5.0% of their direction" in pruned_dot
    # Every edge joins two drawn nodes.
    for a, b in re.findall(r"^\s+(n\d+) -> (n\d+) ", pruned_dot, re.M):
        assert a in pruned and b in pruned


def test_point_modes_weigh_the_flame_graph_by_calls() -> None:
    """Tracepoint and tracefs calls have no duration: by time their flame graph is empty."""
    assert default_weight({"attach": "tracepoint"}) == "count"
    assert default_weight({"attach": "tracefs"}) == "count"
    assert default_weight({"attach": "fentry"}) == "time"
    assert default_weight({"attach": "kprobe"}) == "time"
    assert default_weight({}) == "time"
