"""The differential flame graph and the change table: goldens on sample pairs, properties on all."""

from __future__ import annotations

import difflib
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from skbpath.render.changes import Side, change_rows, change_table, relative_change
from skbpath.render.diff import NEUTRAL, PALETTE_NAME, RDBU, change_class, diff_svg
from skbpath.tracer.cli.main import main
from skbpath.tracer.model.replay import POINT_MODES, replay

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "diff"
SAMPLES = sorted(p.stem for p in (ROOT / "sample_traces").glob("*.skbtrace"))
BLESS = os.environ.get("BLESS") == "1"
SVG = "{http://www.w3.org/2000/svg}"
# kprobe against fentry on the same traffic; closed ports against the firewall's
# drops; two point-only traces, tracepoints and tracefs (compared by calls).
PAIRS = [("tcp_rr", "fentry_rr"), ("closed_ports", "firewall_drop"),
         ("tracepoint_closed", "tracefs_veth")]

_sides: dict[str, Side] = {}


def _side(name: str) -> Side:
    if name not in _sides:
        rep = replay(str(ROOT / "sample_traces" / f"{name}.skbtrace"), keep_journeys=False)
        duration = int(float((rep.contents.end or {}).get("duration_s", 0)) * 1e9)
        _sides[name] = Side(rep.model.calltree, duration,
                            points=rep.contents.header.get("attach") in POINT_MODES)
    return _sides[name]


def _metric(b: Side, a: Side) -> str:
    return "calls" if b.points or a.points else "per-call"


def _outputs(before: str, after: str) -> dict[str, str]:
    b, a = _side(before), _side(after)
    metric = _metric(b, a)
    svg = diff_svg(b, a, metric=metric, normalize=False, title=f"{before} → {after}",
                   include_script=False)
    rows = change_rows(b, a)
    con = Console(record=True, width=160, file=open(os.devnull, "w"))  # noqa: SIM115
    con.print(change_table(rows, by_calls=metric == "calls", before=before, after=after))
    return {"diff.svg": svg, "table.txt": con.export_text()}


@pytest.mark.parametrize(("before", "after"), PAIRS)
def test_golden(before: str, after: str) -> None:
    folder = GOLDEN / f"{before}__{after}"
    for name, text in _outputs(before, after).items():
        path = folder / name
        if BLESS:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            continue
        assert path.exists(), f"missing golden {path}: run with BLESS=1"
        want = path.read_text(encoding="utf-8")
        if text != want:
            delta = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                                 str(path), "now", n=1))
            pytest.fail(f"{path} differs (BLESS=1 if meant):\n{delta[:4000]}")


def _frames(svg: str) -> list[tuple[str, str, str, str]]:
    """(name, class, fill, title) of every drawn frame but the root."""
    out = []
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        if "f" not in (g.get("class") or "").split() or g.get("data-d") == "0":
            continue
        rect = g.find(f"{SVG}rect")
        title = g.find(f"{SVG}title")
        assert rect is not None and title is not None
        out.append((g.get("data-n") or "", g.get("class") or "", rect.get("fill") or "",
                    title.text or ""))
    return out


@pytest.mark.parametrize("name", SAMPLES)
def test_a_trace_against_itself_is_all_neutral(name: str) -> None:
    side = _side(name)
    for normalize in (False, True):
        svg = diff_svg(side, side, metric=_metric(side, side), normalize=normalize, title=name)
        frames = _frames(svg)
        assert frames, "nothing drawn"
        assert {f[2] for f in frames} == {RDBU[NEUTRAL]}
        assert not any(" new" in f[1] or " gone" in f[1] for f in frames)
        assert PALETTE_NAME in svg
    assert change_rows(side, side)[0].score == 0 if change_rows(side, side) else True


@pytest.mark.parametrize("i", range(len(SAMPLES)))
def test_every_sample_against_the_next(i: int) -> None:
    before, after = SAMPLES[i], SAMPLES[(i + 1) % len(SAMPLES)]
    b, a = _side(before), _side(after)
    svg = diff_svg(b, a, metric=_metric(b, a), normalize=True, title="x")
    frames = _frames(svg)
    assert frames
    for fname, cls, fill, title in frames:
        path_new = " new" in cls
        assert fill == "url(#new)" if path_new else fill in RDBU, (fname, fill)
        assert title.startswith(fname)
    # Every path only in AFTER is hatched; every frame of a path BEFORE has is not.
    only_after = sum(1 for f in frames if " new" in f[1])
    assert only_after <= sum(1 for p in a.paths if p not in b.paths)
    rows = change_rows(b, a, normalize=True)
    assert len(rows) <= 20
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    for r in rows:
        assert r.path in a.paths and r.path in b.paths


def test_colours_say_slower_red_faster_blue() -> None:
    b, a = _side("tcp_rr"), _side("fentry_rr")
    frames = {f[0]: f for f in _frames(diff_svg(b, a, metric="per-call", normalize=False,
                                                title="t"))}
    path = ("TX", "__sys_sendto", "inet_sendmsg")
    before, after = b.value(path, "per-call", False), a.value(path, "per-call", False)
    assert before is not None and after is not None
    cls = change_class(relative_change(before, after))
    fill = frames["inet_sendmsg"][2]
    assert fill == RDBU[cls]
    assert (cls < NEUTRAL) == (after > before)
    assert re.search(r"per call: .* → .* \([+-]\d+%\)", frames["inet_sendmsg"][3])


def test_change_classes() -> None:
    assert change_class(0.0) == NEUTRAL
    assert change_class(0.04) == NEUTRAL
    assert change_class(0.10) == NEUTRAL - 1
    assert change_class(-0.10) == NEUTRAL + 1
    assert change_class(math.inf) == 0
    assert change_class(-math.inf) == len(RDBU) - 1
    assert relative_change(100, 200) == 1.0
    assert relative_change(200, 100) == -1.0
    assert relative_change(0, 5) == math.inf


def test_normalize_scales_by_duration() -> None:
    side = _side("tcp_rr")
    path = ("TX", "__sys_sendto")
    raw = side.value(path, "total", False)
    scaled = side.value(path, "total", True)
    assert raw and scaled
    assert scaled == pytest.approx(raw * 1e9 / side.duration_ns)
    assert side.value(path, "per-call", True) == side.value(path, "per-call", False)


def test_paths_only_in_one_trace_are_marked() -> None:
    b, a = _side("closed_ports"), _side("firewall_drop")
    frames = _frames(diff_svg(b, a, metric="per-call", normalize=False, title="t"))
    new = [f for f in frames if " new" in f[1]]
    gone = [f for f in frames if " gone" in f[1]]
    # The firewall adds netfilter's hook; the closed port's no-socket path is not in AFTER.
    assert any(f[0] == "nf_hook_slow" for f in new)
    assert all("only in AFTER" in f[3] for f in new)
    assert gone and all("only in BEFORE below this frame" in f[3] for f in gone)


def test_cli_diff(tmp_path: Path) -> None:
    b = str(ROOT / "sample_traces" / "tcp_rr.skbtrace")
    a = str(ROOT / "sample_traces" / "fentry_rr.skbtrace")
    res = CliRunner().invoke(main, ["diff", b, a, "-o", str(tmp_path), "--normalize",
                                    "--weight", "total", "--top", "5"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == str(tmp_path / "diff.svg")
    assert "5 call paths whose p50 and p99 changed most" in res.output
    svg = (tmp_path / "diff.svg").read_text()
    assert "total inclusive time per second of trace" in svg and "<script>" in svg
    tp = str(ROOT / "sample_traces" / "tracepoint_closed.skbtrace")
    res = CliRunner().invoke(main, ["diff", tp, b, "-o", str(tmp_path), "--weight", "per-call"])
    assert res.exit_code == 2 and "per-call" in res.output
    res = CliRunner().invoke(main, ["diff", tp, str(tmp_path), "-o", str(tmp_path)])
    assert res.exit_code == 2 and "directory" in res.output
