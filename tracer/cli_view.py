"""The CLI commands that read traces: ``replay``, ``render``, ``info`` and ``explain``."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console

from .cli_common import _source_options, _stdout, _trace_sources, _warn
from .errors import SkbpathError


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
@click.option("--max-depth", type=int, help="Limit the depth of the call tree.")
@click.option("--drops", is_flag=True, help="List dropped packets by reason and by dropper.")
@_source_options
@click.option("--explain", is_flag=True,
              help="Follow each function in the call tree with its atlas summary.")
def replay(trace_file: str, skb_id: int | None, as_json: bool, with_events: bool,
           max_depth: int | None, drops: bool, vmlinux: str | None,
           module_debug: tuple[str, ...], explain: bool) -> None:
    """Replay a trace offline: call tree, function table, journeys.

    \b
    Examples:
      skbpath replay sample_traces/tcp_bulk.skbtrace
      skbpath replay tcp.skbtrace --skb 12
      skbpath replay tcp.skbtrace --explain --max-depth 6
      skbpath replay closed-port.skbtrace --drops
      skbpath replay tcp.skbtrace --json | jq 'select(.path=="TX") | .duration_ns'
    """
    from .replay import replay as run_replay

    if as_json:
        _replay_json(trace_file, with_events)
        return
    from render.terminal import calltree_view, function_table, journey_timeline, route_table

    rep = run_replay(trace_file, keep_journeys=True)
    sources = _trace_sources(trace_file, rep.contents, vmlinux, module_debug)
    out = _stdout()
    if skb_id is not None:
        match = [j for j in rep.model.journey_list if j.id == skb_id]
        if not match:
            raise SkbpathError(f"no journey {skb_id} in {trace_file} "
                               f"(it has {len(rep.model.journey_list)})")
        out.print(journey_timeline(match[0], _interfaces(rep.contents.header)))
        return
    if drops:
        _print_drops(out, rep)
        return
    _print_info(out, rep.path, rep.contents, rep.model.summary())
    notes: dict[str, str] | None = None
    if explain:
        from .atlas import atlas_details

        notes = atlas_details(rep.model.calltree.funcs)
    out.print(calltree_view(rep.model.calltree, explain=notes, max_depth=max_depth))
    out.print(function_table(rep.model.calltree, sources=sources or None))
    if rep.model.routes.counts:
        out.print(route_table(rep.model.routes.counts, _interfaces(rep.contents.header)))
    if rep.contents.truncated:
        _warn(rep.contents.truncated)


def _interfaces(header: dict[str, Any]) -> dict[int, str]:
    """ifindex -> name of the tracing host's interfaces, from a trace header (may be empty)."""
    raw = header.get("interfaces") or {}
    return {int(k): str(v) for k, v in raw.items() if str(k).isdigit()}


def _print_drops(out: Console, rep: Any) -> None:
    from rich.table import Table

    from .drops import drop_report

    if not rep.model.drops.enabled:
        out.print("this trace has no drop probe (kfree_skb_reason was not traced)")
        return
    names = {int(k): v for k, v in (rep.contents.header.get("drop_reasons") or {}).items()}
    # tracefs mode names reasons it met that its header did not know in END.
    names.update({int(k): v for k, v in
                  ((rep.contents.end or {}).get("drop_reasons") or {}).items()})
    rows = drop_report(rep.model.drops, names, rep.contents.stacks)
    table = Table(title=f"drops: {sum(r.count for r in rows):,d}")
    table.add_column("reason")
    table.add_column("dropped by")
    table.add_column("count", justify="right")
    for r in rows:
        table.add_row(r.reason, r.function, f"{r.count:,d}")
    out.print(table)


def _replay_json(trace_file: str, with_events: bool) -> None:
    from .replay import model_for
    from .tracefile import TraceReader

    reader = TraceReader(trace_file)
    emit = click.echo
    names = _interfaces(reader.contents.header)
    model = model_for(reader, keep_journeys=False,
                      on_journey=lambda j: emit(json.dumps(j.to_json(names), sort_keys=True)))
    funcs = model.funcs
    for batch in reader.event_batches():
        if with_events:
            events = list(batch)
            for ts, skb, tid, tgid, func, kind, _flags, cpu, _p, sid, _p2 in events:
                emit(json.dumps({
                    "type": "event", "ts": ts, "skb": f"{skb:#x}" if skb else None,
                    "tid": tid, "tgid": tgid, "func": funcs.name_of(func),
                    "kind": "exit" if kind else "entry", "cpu": cpu,
                    "stack_id": sid if sid >= 0 else None,
                }, sort_keys=True))
            model.feed(events)
        else:
            model.feed(batch)
    model.finish()
    if reader.contents.truncated:
        _warn(reader.contents.truncated)


# ---------------------------------------------------------------- render
@click.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path())
@click.option("-o", "--output", required=True,
              help="Directory to write into, or - for stdout (with --format folded).")
@click.option("--format", "fmt", type=click.Choice(["svg", "dot", "folded"]), default="svg",
              show_default=True, help="svg: calltree.svg and flamegraph.svg.")
@click.option("--weight", type=click.Choice(["auto", "time", "count"]), default="auto",
              show_default=True,
              help="Flame graph and folded widths: time or calls; auto: time, except calls "
                   "for tracepoint and tracefs traces (their calls have no duration).")
@_source_options
def render(trace_file: str, output: str, fmt: str, weight: str, vmlinux: str | None,
           module_debug: tuple[str, ...]) -> None:
    """Render a trace to a call tree and a flame graph (no root, no bcc).

    \b
    Examples:
      skbpath render tcp.skbtrace -o out/
      skbpath render tcp.skbtrace -o out/ --format dot
      skbpath render tcp.skbtrace --format folded -o - | flamegraph.pl > fg.svg
    """
    from render.dot import calltree_dot, dot_to_svg
    from render.flamegraph import calltree_flamegraph
    from render.folded import folded_stacks

    from .atlas import atlas_details
    from .replay import default_weight
    from .replay import replay as run_replay

    rep = run_replay(trace_file, keep_journeys=False)
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
        elif fmt == "dot":
            click.echo(calltree_dot(tree, title=title, details=details))
        else:
            raise SkbpathError("-o - writes one stream: use --format folded or dot")
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
    from .live import chown_to_invoker

    for name, text in sorted(files.items()):
        path = os.path.join(output, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        chown_to_invoker(path)
        click.echo(path)
    if rep.contents.truncated:
        _warn(rep.contents.truncated)


# ---------------------------------------------------------------- info
def _print_info(out: Console, path: str, contents: Any, summary: dict[str, int] | None) -> None:
    h = contents.header
    out.print(f"[bold]{path}[/bold]: skbpath trace format {h.get('version')} "
              f"from skbpath {h.get('tool_version')}")
    out.print(f"  kernel {h.get('kernel')} on {h.get('host')} ({h.get('machine', '?')}), "
              f"attach {h.get('attach')}, started {h.get('started', '?')}")
    if h.get("recorded_with"):
        out.print(f"  recorded with: {h['recorded_with']}")
    out.print(f"  {len(h.get('functions', []))} functions traced, "
              f"{len(h.get('skipped', []))} skipped; filters: {h.get('filters') or 'none'}")
    out.print(f"  {contents.events:,d} events in {contents.records:,d} records, "
              f"{len(contents.stacks)} kernel stacks")
    lost = (contents.end or {}).get("lost") or contents.stats.get("lost") or {}
    out.print("  lost: " + (", ".join(f"{k}={v:,d}" for k, v in sorted(lost.items()))
                            or "not recorded"))
    if contents.end is None:
        out.print("  [yellow]no end record: the tracer did not stop cleanly[/yellow]")
    if contents.truncated:
        out.print(f"  [yellow]{contents.truncated}[/yellow]")
    functions = (getattr(contents, "sources", None) or {}).get("functions") or {}
    if functions:
        frames = contents.sources.get("frames") or {}
        out.print(f"  source lines: {len(functions)} functions, {len(frames)} stack frames")
        if summary is None:  # replay shows them in its function table instead
            for name, loc in sorted(functions.items()):
                out.print(f"    {name:34s} {loc.get('file')}:{loc.get('line')}")
    if summary:
        out.print("  model: " + ", ".join(f"{k}={v:,d}" for k, v in summary.items()))


@click.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path())
@click.option("--skipped", is_flag=True, help="List the probes that were skipped, and why.")
def info(trace_file: str, skipped: bool) -> None:
    """Describe a trace: kernel, probes, counts, losses.

    \b
    Examples:
      skbpath info sample_traces/tcp_bulk.skbtrace
      skbpath info tcp.skbtrace --skipped
    """
    from .tracefile import TraceReader

    reader = TraceReader(trace_file)
    contents = reader.read_all()
    out = _stdout()
    _print_info(out, trace_file, contents, None)
    if skipped:
        for s in contents.header.get("skipped", []):
            out.print(f"  - {s.get('name')}: {s.get('reason')}")
    if contents.truncated:
        _warn(contents.truncated)


# ---------------------------------------------------------------- explain
@click.command()
@click.argument("funcs", metavar="FUNC...", nargs=-1)
@click.option("--all", "show_all", is_flag=True, help="List every atlas entry, by name.")
def explain(funcs: tuple[str, ...], show_all: bool) -> None:
    """Explain kernel functions: layer, source file and what they do (from the atlas).

    Stack frames work too: clone suffixes, offsets and modules are ignored.

    \b
    Examples:
      skbpath explain ip_finish_output2
      skbpath explain tcp_sendmsg tcp_write_xmit sendto
      skbpath explain 'napi_gro_complete.constprop.0+0x145 [kernel]'
      skbpath explain --all | grep net/ipv4/tcp
    """
    import difflib

    from .atlas import base_name, load_atlas, lookup

    atlas = load_atlas()
    if show_all and funcs:
        raise click.UsageError("give function names or --all, not both")
    if not show_all and not funcs:
        raise click.UsageError("give one or more function names, or --all")
    if show_all:
        entries = [atlas[n] for n in sorted(atlas)]
        wn = max(len(e.name) for e in entries)
        wf = max(len(e.file) for e in entries)
        for e in entries:
            click.echo(f"{e.name:<{wn}}  {e.layer:<9}  {e.file:<{wf}}  {e.summary}")
        return
    unknown = [f for f in funcs if lookup(f) is None]
    if unknown:
        # Close names in a fixed order, so the hint is the same every run.
        near: list[str] = []
        for name in unknown:
            for m in difflib.get_close_matches(base_name(name), sorted(atlas), n=3, cutoff=0.6):
                if m not in near:
                    near.append(m)
        hint = (", ".join(near) + " or " if near else "") + "'skbpath explain --all'"
        raise SkbpathError(f"{', '.join(unknown)} not in the atlas "
                           f"({len(atlas)} entries); try {hint}")
    for i, name in enumerate(funcs):
        entry = lookup(name)
        assert entry is not None  # checked above
        if i:
            click.echo("")
        shown = entry.name if base_name(name) == name else f"{entry.name}  (from {name})"
        click.echo(shown)
        click.echo(f"  layer    {entry.layer}")
        click.echo(f"  file     {entry.file}")
        click.echo(f"  summary  {entry.summary}")
