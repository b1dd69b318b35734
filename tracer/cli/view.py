"""The CLI commands that replay a trace: ``replay`` and ``render`` (``info`` and ``explain``
are in cli/info.py)."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.text import Text
from skbpath.render.text import printable
from skbpath.tracer.cli.common import (
    _exclusive,
    _lenient_option,
    _source_options,
    _stdout,
    _trace_sources,
    _warn_read,
)
from skbpath.tracer.cli.info import _print_info
from skbpath.tracer.errors import SkbpathError


def _with_sources(details: dict[str, str], sources: dict[str, str]) -> dict[str, str]:
    """Tooltip text: the atlas note and file:line, joined."""
    out = dict(details)
    for name, where in sources.items():
        out[name] = f"{out[name]} · {where}" if out.get(name) else where
    return out


# ---------------------------------------------------------------- replay
@click.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path())
@click.option("--skb", "skb_id", type=int, help="Show one journey (by id) as a timeline.")
@click.option("--json", "as_json", is_flag=True, help="Print journeys as JSON lines.")
@click.option("--events", "with_events", is_flag=True,
              help="With --json, print the raw events too.")
@click.option("--max-depth", type=click.IntRange(min=0), help="Limit the depth of the call tree.")
@click.option("--drops", is_flag=True, help="List dropped packets by reason and by dropper.")
@click.option("--latency", is_flag=True,
              help="Per-packet stack latency by direction, end and layer boundary "
                   "(p50/p90/p99, histogram), and lifetime.")
@click.option("--summary", is_flag=True,
              help="A screenful: kernel, journeys per path, losses, the hottest call paths, "
                   "drops, and what to run next.")
@click.option("--svg", "svgs", multiple=True, metavar="FILE",
              help="With --summary, a picture rendered from this trace to list (repeatable).")
@_source_options
@click.option("--explain", is_flag=True,
              help="Follow each function in the call tree with its atlas summary.")
@_lenient_option
def replay(trace_file: str, skb_id: int | None, as_json: bool, with_events: bool,
           max_depth: int | None, drops: bool, latency: bool, summary: bool, svgs: tuple[str, ...],
           vmlinux: str | None, module_debug: tuple[str, ...], explain: bool,
           lenient: bool) -> None:
    """Replay a trace offline: call tree, function table, journeys.

    \b
    Examples:
      skbpath replay sample_traces/tcp_bulk.skbtrace
      skbpath replay tcp.skbtrace --summary
      skbpath replay tcp.skbtrace --skb 12
      skbpath replay tcp.skbtrace --explain --max-depth 6
      skbpath replay closed-port.skbtrace --drops
      skbpath replay tcp.skbtrace --latency
      skbpath replay tcp.skbtrace --json | jq 'select(.path=="TX") | .duration_ns'
    """
    from skbpath.tracer.model.replay import replay as run_replay

    # Each of these is its own view: asking for two would silently show one.
    _exclusive(**{"--json": as_json, "--skb": skb_id, "--drops": drops, "--latency": latency})
    views = as_json or drops or latency or skb_id is not None
    _exclusive(**{"--explain": explain, "--json/--skb/--drops/--latency": views})
    _exclusive(**{"--max-depth": max_depth, "--json/--skb/--drops/--latency": views})
    if with_events and not as_json:
        raise click.UsageError("--events goes with --json")
    _exclusive(**{"--summary": summary, "--json/--skb/--drops/--latency": views})
    if svgs and not summary:
        raise SkbpathError("--svg goes with --summary")
    missing = [p for p in svgs if not os.path.isfile(p)]
    if missing:
        raise SkbpathError(f"--svg {missing[0]}: no such file")
    if as_json:
        _replay_json(trace_file, with_events, lenient)
        return
    from skbpath.render.terminal import (
        calltree_view,
        function_table,
        journey_timeline,
        return_table,
        route_table,
    )

    rep = run_replay(trace_file, keep_journeys=True, lenient=lenient)
    if views and _aggregated(rep.contents.header, trace_file):
        _warn_read(rep.contents)
        return
    sources = _trace_sources(trace_file, rep.contents, vmlinux, module_debug)
    out = _stdout()
    if skb_id is not None:
        match = [j for j in rep.model.journey_list if j.id == skb_id]
        if not match:
            raise SkbpathError(f"no journey {skb_id} in {trace_file} "
                               f"(it has {len(rep.model.journey_list)})")
        out.print(journey_timeline(match[0], _interfaces(rep.contents.header)))
        _warn_read(rep.contents)
        return
    if drops:
        _print_drops(out, rep)
        _warn_read(rep.contents)
        return
    if latency:
        from skbpath.render.latency import latency_view

        out.print(latency_view(rep.model.latency, len(rep.model.journey_list)))
        _warn_read(rep.contents)
        return
    if summary:
        from skbpath.render.summary import summary_lines
        from skbpath.tracer.model.summary import summarize

        for line in summary_lines(summarize(rep), svgs):
            click.echo(line)
        _warn_read(rep.contents)
        return
    _print_info(out, rep.path, rep.contents, rep.model.summary())
    notes: dict[str, str] | None = None
    if explain:
        from skbpath.tracer.kernel.atlas import atlas_details

        notes = atlas_details(rep.model.calltree.funcs)
    out.print(calltree_view(rep.model.calltree, explain=notes, max_depth=max_depth))
    out.print(function_table(rep.model.calltree, sources=sources or None))
    if rep.model.routes.counts:
        out.print(route_table(rep.model.routes.counts, _interfaces(rep.contents.header)))
    if rep.model.returns:
        out.print(return_table(rep.model.return_counts()))
    _warn_read(rep.contents)


def _aggregated(header: dict[str, Any], trace_file: str) -> bool:
    """True, having said so in one line, if a journey view was asked of an --aggregate trace."""
    from skbpath.tracer.model.replay import is_aggregate, no_journeys

    if is_aggregate(header):
        click.echo(f"skbpath: {printable(no_journeys(trace_file))}", err=True)
        return True
    return False


def _interfaces(header: dict[str, Any]) -> dict[int, str]:
    """ifindex -> name of the tracing host's interfaces, from a trace header (may be empty)."""
    return dict(header.get("interfaces") or {})  # int keys: checked by the schema


def _print_drops(out: Console, rep: Any) -> None:
    from rich.table import Table
    from skbpath.tracer.model.drops import drop_report

    if not rep.model.drops.enabled:
        out.print("this trace has no drop probe (kfree_skb_reason was not traced)")
        return
    names = dict(rep.contents.header.get("drop_reasons") or {})  # int keys (schema)
    # tracefs mode names reasons it met that its header did not know in END.
    names.update((rep.contents.end or {}).get("drop_reasons") or {})
    rows = drop_report(rep.model.drops, names, rep.contents.stacks)
    table = Table(title=f"drops: {sum(r.count for r in rows):,d}")
    table.add_column("reason")
    table.add_column("dropped by")
    table.add_column("count", justify="right")
    for r in rows:
        table.add_row(Text(printable(r.reason)), Text(printable(r.function)), f"{r.count:,d}")
    out.print(table)


def _replay_json(trace_file: str, with_events: bool, lenient: bool) -> None:
    from skbpath.tracer.model.replay import model_for
    from skbpath.tracer.traces.tracefile import TraceReader

    reader = TraceReader(trace_file, lenient=lenient)
    if _aggregated(reader.contents.header, trace_file):
        reader.close()
        return
    emit = click.echo
    names = _interfaces(reader.contents.header)
    model = model_for(reader, keep_journeys=False,
                      on_journey=lambda j: emit(json.dumps(j.to_json(names), sort_keys=True)))
    funcs = model.funcs
    v2 = reader.version == 2
    feed = model.feed_calls if v2 else model.feed
    for batch in reader.event_batches():
        if with_events:
            events = list(batch)
            for rec in events:
                emit(json.dumps(_record_json(rec, funcs.name_of, v2), sort_keys=True))
            feed(events)
        else:
            feed(batch)
    model.finish()
    _warn_read(reader.contents)


def _record_json(rec: tuple[int, ...], name_of: Any, v2: bool) -> dict[str, Any]:
    """One raw record for ``replay --json --events``: a v2 call or a v1 event."""
    if v2:
        entry, duration, skb, result, tid, tgid, aux, sid, func, cpu, depth, flags, base, _ = rec
        return {
            "type": "call", "entry": entry, "duration": duration,
            "skb": f"{skb:#x}" if skb else None, "result": result, "aux": aux,
            "tid": tid, "tgid": tgid, "func": name_of(func), "cpu": cpu, "depth": depth,
            "base": base, "flags": flags, "stack_id": sid if sid >= 0 else None,
        }
    ts, skb, tid, tgid, func, kind, _flags, cpu, _p, sid, _p2 = rec
    return {
        "type": "event", "ts": ts, "skb": f"{skb:#x}" if skb else None,
        "tid": tid, "tgid": tgid, "func": name_of(func),
        "kind": "exit" if kind else "entry", "cpu": cpu,
        "stack_id": sid if sid >= 0 else None,
    }


# ---------------------------------------------------------------- render
@click.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path())
@click.option("-o", "--output", required=True,
              help="Directory to write into, or - for stdout (with --format folded).")
@click.option("--format", "fmt", type=click.Choice(["svg", "dot", "folded", "perfetto"]),
              default="svg", show_default=True,
              help="svg: calltree.svg and flamegraph.svg; perfetto: trace.perfetto-trace, a "
                   "timeline for ui.perfetto.dev.")
@click.option("--weight", type=click.Choice(["auto", "time", "count"]), default="auto",
              show_default=True,
              help="Flame graph and folded widths: time or calls; auto: time, except calls "
                   "for tracepoint and tracefs traces (their calls have no duration).")
@_source_options
@_lenient_option
def render(trace_file: str, output: str, fmt: str, weight: str, vmlinux: str | None,
           module_debug: tuple[str, ...], lenient: bool) -> None:
    """Render a trace to a call tree and a flame graph (no root, no bcc).

    \b
    Examples:
      skbpath render tcp.skbtrace -o out/
      skbpath render tcp.skbtrace -o out/ --format dot
      skbpath render tcp.skbtrace --format folded -o - | flamegraph.pl > fg.svg
      skbpath render tcp.skbtrace --format perfetto -o out/
    """
    if fmt == "perfetto":
        from skbpath.tracer.cli.timeline import render_perfetto

        render_perfetto(trace_file, output)
        return
    from skbpath.render.dot import calltree_dot, dot_to_svg
    from skbpath.render.flamegraph import calltree_flamegraph
    from skbpath.render.folded import folded_stacks
    from skbpath.tracer.kernel.atlas import atlas_details
    from skbpath.tracer.model.replay import default_weight
    from skbpath.tracer.model.replay import replay as run_replay

    if output == "-" and fmt == "svg":
        raise SkbpathError("-o - writes one stream: use --format folded or dot")
    rep = run_replay(trace_file, keep_journeys=False, lenient=lenient)
    tree = rep.model.calltree
    if weight == "auto":
        weight = default_weight(rep.contents.header)
    title = f"skbpath: {os.path.basename(trace_file)} ({rep.contents.header.get('kernel', '?')})"
    # Tooltips explain each function from the atlas.
    details = atlas_details(tree.funcs)
    details = _with_sources(details, _trace_sources(trace_file, rep.contents, vmlinux,
                                                    module_debug))
    if output == "-":
        if fmt == "folded":
            click.echo("\n".join(folded_stacks(tree, weight=weight)))
        else:
            click.echo(calltree_dot(tree, title=title, details=details))
        _warn_read(rep.contents)
        return
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as exc:
        raise SkbpathError(f"cannot create {output}: {exc.strerror}") from exc
    files: dict[str, str] = {}
    if fmt == "folded":
        files["stacks.folded"] = "\n".join(folded_stacks(tree, weight=weight)) + "\n"
    elif fmt == "dot":
        files["calltree.dot"] = calltree_dot(tree, title=title, details=details)
    else:
        files["calltree.svg"] = dot_to_svg(calltree_dot(tree, title=title, details=details))
        files["flamegraph.svg"] = calltree_flamegraph(tree, weight=weight, title=title,
                                                      details=details)
    from skbpath.tracer.record.session import chown_to_invoker

    for name, text in sorted(files.items()):
        path = os.path.join(output, name)
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:  # not writable, a directory there, a full disk
            raise SkbpathError(f"cannot write {path}: {exc.strerror}") from exc
        chown_to_invoker(path)
        click.echo(path)
    _warn_read(rep.contents)


# ---------------------------------------------------------------- info
