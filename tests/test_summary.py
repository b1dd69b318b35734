"""``skbpath replay --summary``: a screenful built from the model, checked against it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from skbpath.render.summary import summary_lines
from skbpath.tracer.cli.main import main
from skbpath.tracer.model.drops import drop_report
from skbpath.tracer.model.replay import Replay, replay
from skbpath.tracer.model.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
BULK = ROOT / "sample_traces" / "tcp_bulk.skbtrace"
CLOSED = ROOT / "sample_traces" / "closed_ports.skbtrace"
TRACEPOINT = ROOT / "sample_traces" / "tracepoint_closed.skbtrace"


@pytest.fixture(scope="module")
def bulk() -> Replay:
    return replay(str(BULK))


def test_counts_come_from_the_journeys(bulk: Replay) -> None:
    s = summarize(bulk)
    journeys = bulk.model.journey_list
    assert sum(c.journeys for c in s.paths.values()) == len(journeys)
    for path, c in s.paths.items():
        mine = [j for j in journeys if j.path == path]
        assert c.journeys == len(mine)
        assert c.skbs == sum(len(j.skbs) for j in mine)
    assert s.kernel == bulk.contents.header["kernel"]
    assert s.attach == bulk.contents.header["attach"]
    assert s.events == bulk.model.summary()["events"]


def test_hot_paths_are_the_five_with_most_self_time(bulk: Replay) -> None:
    s = summarize(bulk)
    selfs = sorted((n.self_total for n in bulk.model.calltree.nodes()), reverse=True)
    assert [h.self_ns for h in s.hot] == selfs[:5]
    for h in s.hot:
        assert h.p50_ns is not None and h.p99_ns is not None and h.p50_ns <= h.p99_ns


def test_losses_and_drops_are_shown(bulk: Replay) -> None:
    s = summarize(bulk)
    lost = (bulk.contents.end or {}).get("lost") or bulk.contents.stats.get("lost") or {}
    assert s.lost == {k: v for k, v in sorted(lost.items()) if k != "filtered"}
    text = "\n".join(summary_lines(s))
    shown = {k: v for k, v in s.lost.items() if v}
    for name, n in shown.items():
        assert f"{name} {n:,d}" in text
    if not shown:
        assert "events lost: none" in text
    names = {int(k): v for k, v in bulk.contents.header["drop_reasons"].items()}
    total = sum(r.count for r in drop_report(bulk.model.drops, names, bulk.contents.stacks))
    assert sum(n for _, n in s.drops) == total


def test_a_screenful_ending_with_next_commands(bulk: Replay) -> None:
    s = summarize(bulk)
    lines = summary_lines(s, ["out/calltree.svg", "out/flamegraph.svg"])
    assert len(lines) <= 30
    # Fits a terminal, but for the lines that name the trace (its path may be long).
    assert max(len(line) for line in lines if str(BULK) not in line) <= 92
    assert "pictures: out/calltree.svg  out/flamegraph.svg" in lines
    nexts = lines[lines.index("next:") + 1:]
    assert 2 <= len(nexts) <= 3
    assert nexts[0].split("#")[0].strip() == f"skbpath replay {BULK}"
    assert nexts[1].split("#")[0].strip() == f"skbpath replay {BULK} --latency"
    assert "--drops" in nexts[2]


def test_latency_lines_and_the_slowest_packet(bulk: Replay) -> None:
    s = summarize(bulk)
    rows = sorted(bulk.model.latency.rows.values(), key=lambda r: -r.stack.count)[:3]
    assert [n for _, n, _, _ in s.latency] == [r.stack.count for r in rows]
    text = "\n".join(summary_lines(s))
    assert "per-packet stack latency" in text
    # The slowest packet is the one the stack held longest, not the longest journey.
    lat = {j.id: j.stack_latency[0] for j in bulk.model.journey_list if j.stack_latency}
    assert s.slowest_journey is not None and lat[s.slowest_journey] == max(lat.values())


def test_tracepoint_traces_rank_by_calls() -> None:
    s = summarize(replay(str(TRACEPOINT)))
    assert not s.by_time
    assert all(h.p99_ns is None for h in s.hot)
    counts = [h.calls for h in s.hot]
    assert counts == sorted(counts, reverse=True)


def test_cli_summary_and_its_errors(tmp_path: Path) -> None:
    svg = tmp_path / "calltree.svg"
    svg.write_text("<svg/>")
    runner = CliRunner()
    result = runner.invoke(main, ["replay", str(CLOSED), "--summary", "--svg", str(svg)])
    assert result.exit_code == 0, result.output
    assert f"pictures: {svg}" in result.output
    assert "drops by reason: NO_SOCKET" in result.output
    assert f"skbpath replay {CLOSED} --drops" in result.output
    for args, message in ((["--svg", str(svg)], "--svg goes with --summary"),
                          (["--summary", "--svg", str(tmp_path / "no.svg")], "no such file")):
        bad = runner.invoke(main, ["replay", str(CLOSED), *args])
        assert bad.exit_code == 2
        assert bad.output.strip().splitlines() == [f"skbpath: error: {message}"
                                                   if message.startswith("--") else
                                                   f"skbpath: error: --svg {tmp_path}/no.svg: "
                                                   "no such file"]
