"""--aggregate: call paths counted in the kernel, read into the model, the live view and the CLI.

No kernel here: the kernel's side is given as what it leaves in its maps
(per-CPU ``struct agg_path`` values, ``struct frames``), and the trace as
records.  tests/lab/test_lab_aggregate.py runs the real thing.
"""

from __future__ import annotations

import ctypes
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from skbpath.render.folded import folded_stacks
from skbpath.render.top import path_text, top_lines, top_table
from skbpath.tracer.cli import main as cli
from skbpath.tracer.errors import TraceFormatError
from skbpath.tracer.model.aggregate import PathRow, add_rows, hottest, rows_of
from skbpath.tracer.model.calltree import CallTree, Node
from skbpath.tracer.model.replay import replay
from skbpath.tracer.model.stats import bucket_of
from skbpath.tracer.record.bpf.aggregate import AGG_DTYPE, AGG_HIST, add_open_calls, read_paths
from skbpath.tracer.record.session import Session, TraceOptions
from skbpath.tracer.traces.events import pack_calls, unpack_calls
from skbpath.tracer.traces.tracefile import AGGREGATE, TraceReader, TraceWriter

from tests.synth import demo_table, tx_rx_stream, v2_records
from tests.test_session import FakeBackend

FUNCS = demo_table()
ID = {f.name: f.id for f in FUNCS.funcs}


def rows_of_tree(tree: CallTree) -> list[PathRow]:
    """What the kernel would have counted for the calls ``tree`` aggregated: a row per node."""
    out = []

    def visit(node: Node, parent: int, key: int) -> None:
        h = node.hist
        out.append(PathRow(key, parent, node.func, node.count - node.lost, node.lost,
                           node.total, node.self_total, h.min, h.max,
                           tuple(sorted(h.buckets.items()))))
        for i, c in enumerate(node.sorted_children()):
            visit(c, key, key * 64 + i + 1)

    for i, r in enumerate(tree.sorted_roots()):
        visit(r, 0, i + 1)
    return out


def events_tree() -> CallTree:
    """The call tree replay builds from per-call records of TX and RX journeys."""
    from skbpath.tracer.model.core import Model

    model = Model(FUNCS)
    model.feed_calls(unpack_calls(pack_calls(v2_records(FUNCS, tx_rx_stream(30)))))
    model.finish()
    return model.calltree


def test_rows_give_the_tree_that_replaying_the_calls_gives() -> None:
    tree = events_tree()
    rebuilt = CallTree(FUNCS)
    add_rows(rebuilt, reversed(rows_of_tree(tree)))  # in any order
    assert folded_stacks(rebuilt) == folded_stacks(tree)
    assert folded_stacks(rebuilt, weight="count") == folded_stacks(tree, weight="count")
    for f, h in tree.by_func.items():
        assert rebuilt.by_func[f].count == h.count
        assert rebuilt.by_func[f].percentile(99) == h.percentile(99)
    assert rebuilt.self_by_func == tree.self_by_func
    assert rebuilt.count_by_func == tree.count_by_func


def test_a_path_with_calls_still_open_counts_them_as_lost() -> None:
    tree = CallTree(FUNCS)
    add_rows(tree, [PathRow(1, 0, ID["net_rx_action"], 2, 1, 3000, 1000, 1000, 2000,
                            ((bucket_of(1000), 1), (bucket_of(2000), 1))),
                    PathRow(2, 1, ID["__napi_poll"], 2, 0, 2000, 2000, 900, 1100,
                            ((bucket_of(900), 1), (bucket_of(1100), 1)))])
    root = tree.roots[ID["net_rx_action"]]
    assert (root.count, root.lost, root.total, root.self_total) == (3, 1, 3000, 1000)
    assert root.hist.min == 1000 and root.hist.max == 2000 and root.hist.count == 2
    assert root.children[ID["__napi_poll"]].count == 2


@pytest.mark.parametrize("rows, problem", [
    ([PathRow(1, 0, 1, 1), PathRow(1, 0, 2, 1)], "listed twice"),
    ([PathRow(1, 2, 1, 1), PathRow(2, 1, 2, 1)], "loop"),
])
def test_broken_chains_are_bad_records(rows: list[PathRow], problem: str) -> None:
    with pytest.raises(TraceFormatError, match=problem):
        add_rows(CallTree(FUNCS), rows)


def test_a_path_whose_parent_was_not_stored_is_a_root_and_counted() -> None:
    a, b, c = ID["net_rx_action"], ID["__napi_poll"], ID["e1000_clean"]
    tree = CallTree(FUNCS)
    # The kernel's map was full when path 9 came: 2 and what runs below it are roots.
    orphans = add_rows(tree, [PathRow(1, 0, a, 5), PathRow(2, 9, b, 3), PathRow(3, 2, c, 3)])
    assert orphans == 1
    assert set(tree.roots) == {a, b} and tree.roots[b].children[c].count == 3


def test_the_hottest_paths_are_those_of_the_last_interval() -> None:
    a, b = ID["net_rx_action"], ID["__napi_poll"]
    before = [PathRow(1, 0, a, 10, 0, 10_000, 0, 1000, 1000, ((bucket_of(1000), 10),)),
              PathRow(2, 1, b, 100, 0, 50_000, 0, 500, 500, ((bucket_of(500), 100),))]
    now = [PathRow(1, 0, a, 20, 0, 1_010_000, 0, 1000, 200_000,
                   ((bucket_of(1000), 10), (bucket_of(100_000), 10))),
           PathRow(2, 1, b, 100, 0, 50_000, 0, 500, 500, ((bucket_of(500), 100),))]
    hot = hottest(before, now, 2.0)
    # The idle path is left out; the busy one's p50 is of its new calls only.
    assert [h.funcs for h in hot] == [(a,)]
    assert hot[0].calls == 10 and hot[0].per_second == 5.0 and hot[0].calls_so_far == 20
    assert abs(hot[0].p50 - 100_000) / 100_000 < 0.05 and hot[0].busy == 500_000
    assert [h.funcs for h in hottest([], now, 1.0)] == [(a,), (a, b)]


def test_the_live_view_names_paths_with_their_direction() -> None:
    path = [ID[n] for n in ("__sys_sendto", "tcp_sendmsg", "tcp_write_xmit",
                            "__tcp_transmit_skb", "ip_queue_xmit")]
    assert path_text(FUNCS, path) == ("TX __sys_sendto › … › tcp_write_xmit › "
                                      "__tcp_transmit_skb › ip_queue_xmit")
    hot = hottest([], [PathRow(1, 0, ID["net_rx_action"], 4, 0, 4000, 4000, 900, 1100,
                               ((bucket_of(1000), 4),))], 1.0)
    assert "RX net_rx_action" in top_lines(FUNCS, hot, 1.0)[0]
    table = top_table(FUNCS, hot, 1.0, 0, 1)
    assert table.row_count == 1 and "lost 0" in str(table.title)


def agg_value(fields: dict[str, Any]) -> bytearray:
    """One struct agg_path, as the kernel's map hands it out."""
    v = np.zeros(1, dtype=AGG_DTYPE)
    for k, x in fields.items():
        if k == "hist":
            for b, n in x.items():
                v[0]["hist"][b] = n
        else:
            v[0][k] = x
    return bytearray(v.tobytes())


def test_map_values_become_rows() -> None:
    assert AGG_DTYPE.itemsize == 7 * 8 + 8 + AGG_HIST * 4  # struct agg_path
    counted = agg_value({"parent": 7, "func": 3, "calls": 3, "no_return": 1, "total": 350,
                         "self": 150, "min": 50, "max": 200,
                         "hist": {bucket_of(50): 1, bucket_of(100): 1, bucket_of(200): 1}})
    # Inserted, not counted yet (a read between the insert and the first add).
    fresh = agg_value({"parent": 7, "func": 4, "min": 2**64 - 1})
    # Only calls still open: the kernel's "no minimum yet" is not a latency.
    open_only = agg_value({"parent": 9, "func": 5, "no_return": 2, "min": 2**64 - 1})
    rows = read_paths([(ctypes.c_uint64(9), counted), (ctypes.c_uint64(5), fresh),
                       (ctypes.c_uint64(11), open_only)])
    assert rows == [
        PathRow(9, 7, 3, 3, 1, 350, 150, 50, 200,
                tuple(sorted({bucket_of(50): 1, bucket_of(100): 1, bucket_of(200): 1}.items()))),
        PathRow(11, 9, 5, 0, 2)]


@dataclasses.dataclass
class Frame:
    func: int
    path: int
    base: int
    has_skb: int = 0
    skip: int = 0


@dataclasses.dataclass
class Frames:
    depth: int
    f: list[Frame]


def test_calls_open_at_the_stop_join_their_paths_as_no_return() -> None:
    rows = [PathRow(11, 0, 1, 5)]
    # A syscall (path 11, seen before) with an skb call open inside it; below
    # that a filtered call (transparent: its path is its caller's); an empty
    # call on another thread.
    fs = Frames(3, [Frame(1, 11, 0), Frame(2, 11, 0, skip=1), Frame(3, 12, 0, has_skb=1)])
    empty = Frames(1, [Frame(4, 13, 0)])
    opened, empties = add_open_calls(rows, [(100, fs), (101, empty)])
    assert opened == 3 and empties == {4: 1}
    assert rows == [PathRow(11, 0, 1, 5, 1), PathRow(12, 11, 3, 0, 1)]
    add_rows(CallTree(FUNCS), rows)  # the chain holds


class AggregateBackend(FakeBackend):
    """FakeBackend in --aggregate mode: the kernel's counters grow at each reading."""

    def __init__(self) -> None:
        super().__init__([])
        self.readings = 0

    def aggregate_rows(self) -> list[PathRow]:
        self.readings += 1
        n = min(self.readings, 3)
        return [PathRow(1, 0, ID["net_rx_action"], 10 * n, 0, 10_000 * n, 4_000 * n, 900, 1100,
                        ((bucket_of(1000), 10 * n),)),
                PathRow(2, 1, ID["napi_gro_receive"], 20 * n, 0, 6_000 * n, 6_000 * n, 300,
                        300, ((bucket_of(300), 20 * n),))]


def record_aggregate(tmp_path: Path, seconds: float = 1.2) -> tuple[Path, list[Any]]:
    out = tmp_path / "agg.skbtrace"
    shown: list[Any] = []
    opts = TraceOptions(output=str(out), duration=seconds, aggregate=True)
    result = Session(AggregateBackend(), opts,
                     live=lambda rows, t, lost: shown.append((len(rows), lost))).run()
    assert result.paths == 2 and result.events == 0
    return out, shown


def test_an_aggregate_session_writes_the_paths_and_replays_as_a_call_tree(tmp_path: Path) -> None:
    out, shown = record_aggregate(tmp_path)
    assert shown and shown[0] == (2, 3)  # the live view, with the losses (ringbuf_lost=3)
    c = TraceReader(str(out)).read_all()
    assert c.aggregate is not None and c.end is not None
    rep = replay(str(out))
    assert rep.model.aggregate and rep.model.journey_list == []
    assert rep.model.summary()["calls"] == sum(r.calls for r in rows_of(c.aggregate))
    folded = folded_stacks(rep.model.calltree, weight="count")
    assert folded[-1].endswith("net_rx_action;napi_gro_receive " + str(c.aggregate["paths"][1]
                                                                        ["calls"]))


def test_journey_views_of_an_aggregate_trace_say_so_in_one_line(tmp_path: Path) -> None:
    out, _ = record_aggregate(tmp_path)
    runner = CliRunner()
    for view in (["--json"], ["--skb", "1"], ["--latency"], ["--drops"]):
        r = runner.invoke(cli.main, ["replay", *view, str(out)])
        assert r.exit_code == 0, r.output
        assert "recorded with --aggregate" in r.stderr and "no journeys" in r.stderr
        assert r.stdout == ""
    r = runner.invoke(cli.main, ["render", str(out), "--format", "perfetto", "-o",
                                 str(tmp_path / "p")])
    assert r.exit_code == 0 and "no journeys" in r.stderr
    r = runner.invoke(cli.main, ["render", str(out), "--format", "folded", "-o", "-"])
    assert r.exit_code == 0 and "RX;net_rx_action;napi_gro_receive" in r.stdout
    r = runner.invoke(cli.main, ["replay", str(out)])
    assert r.exit_code == 0 and "napi_gro_receive" in r.stdout
    r = runner.invoke(cli.main, ["info", str(out)])
    calls = replay(str(out)).model.summary()["calls"]
    assert r.exit_code == 0
    assert f"aggregate: {calls:,d} calls counted in the kernel on 2 call paths" in r.stdout
    r = runner.invoke(cli.main, ["replay", "--summary", str(out)])
    assert r.exit_code == 0
    assert f"{calls:,d} calls counted in the kernel on 2 call paths" in r.stdout
    assert "no journeys: recorded with --aggregate" in r.stdout
    assert "RX net_rx_action › napi_gro_receive" in r.stdout  # the hottest paths


def write_with_aggregate(tmp_path: Path, record: Any) -> Path:
    from tests.crafted import base_header

    path = tmp_path / "crafted.skbtrace"
    with open(path, "wb") as fh:
        w = TraceWriter(fh, {**base_header(), "aggregate": True})
        w.write_json(AGGREGATE, record)
    return path


@pytest.mark.parametrize("record, field", [
    ({"paths": [{"id": 0, "parent": 0, "func": 1, "calls": 1}]}, "paths[0].id"),
    ({"paths": [{"id": 1, "parent": 0, "func": 1, "calls": -1}]}, "paths[0].calls"),
    ({"paths": [{"id": 1, "parent": 0, "func": 1, "calls": 1, "hist": {"5000": 1}}]},
     "paths[0].hist.5000"),
    ({"paths": "x"}, "paths"),
])
def test_a_bad_aggregate_record_is_one_line_and_exit_2(tmp_path: Path, record: Any,
                                                       field: str) -> None:
    r = CliRunner().invoke(cli.main, ["replay", str(write_with_aggregate(tmp_path, record))])
    assert r.exit_code == 2
    assert "bad aggregate record" in r.stderr and field in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_a_broken_chain_in_a_trace_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write_with_aggregate(tmp_path, {"paths": [
        {"id": 1, "parent": 2, "func": 1, "calls": 1},
        {"id": 2, "parent": 1, "func": 2, "calls": 1}]})
    r = CliRunner().invoke(cli.main, ["render", str(path), "--format", "folded", "-o", "-"])
    assert r.exit_code == 2 and "loop" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_trace_refuses_aggregate_with_point_modes() -> None:
    r = CliRunner().invoke(cli.main, ["trace", "--aggregate", "--attach", "tracefs", "-d", "1",
                                      "-o", "/dev/null"])
    assert r.exit_code == 2 and "--aggregate" in r.stderr and "fentry or kprobe" in r.stderr


SAMPLE = Path(__file__).resolve().parent.parent / "sample_traces" / "aggregate" / "mixed.skbtrace"


def test_the_recorded_sample_is_a_call_tree_with_the_chains_and_no_impossible_stack() -> None:
    """sample_traces/aggregate/mixed.skbtrace: the lab's mixed traffic, aggregated on 6.1."""
    from tests.lab.labrun import has_subsequence
    from tests.lab.test_lab_capture import SYSCALLS
    from tests.lab.test_lab_tcp import RX_CHAIN, TX_CHAIN

    rep = replay(str(SAMPLE))
    assert rep.model.aggregate and rep.model.summary()["orphans"] == 0
    lines = folded_stacks(rep.model.calltree, "count")
    stacks = [ln.rsplit(" ", 1)[0].split(";") for ln in lines]
    assert not [s for s in stacks if any(f in SYSCALLS for f in s[2:])]
    for root, chain in (("TX", TX_CHAIN), ("RX", RX_CHAIN)):
        assert any(s[0] == root and has_subsequence(s[1:], list(chain)) for s in stacks), root
    r = CliRunner().invoke(cli.main, ["replay", "--latency", str(SAMPLE)])
    assert r.exit_code == 0 and r.stdout == "" and "no journeys" in r.stderr
