"""The CLI commands that describe a trace or a function without replaying it: ``info``
and ``explain`` (and the header summary ``replay`` prints first)."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from skbpath.render.text import markup
from skbpath.tracer.cli.common import (
    _lenient_option,
    _stdout,
    _warn_read,
)
from skbpath.tracer.errors import SkbpathError


def _count_text(n: int) -> str:
    """1234567 -> '1.2M', 4321 -> '4.3k', 12 -> '12'."""
    for div, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _print_info(out: Console, path: str, contents: Any, summary: dict[str, int] | None) -> None:
    from skbpath.tracer.model.replay import is_aggregate

    # Every value from the trace goes through markup(): it is data, never markup.
    h = contents.header
    m = markup
    out.print(f"[bold]{m(path)}[/bold]: skbpath trace format {m(h.get('version', '?'))} "
              f"from skbpath {m(h.get('tool_version', '?'))}")
    out.print(f"  kernel {m(h.get('kernel', '?'))} on {m(h.get('host', '?'))} "
              f"({m(h.get('machine', '?'))}), attach {m(h.get('attach', '?'))}, "
              f"started {m(h.get('started', '?'))}")
    if h.get("kernel_build"):
        out.print(f"  kernel build: {m(h['kernel_build'])}", highlight=False)
    if h.get("recorded_with"):
        out.print(f"  recorded with: {m(h['recorded_with'])}")
    out.print(f"  {len(h.get('functions', []))} functions traced, "
              f"{len(h.get('skipped', []))} skipped; filters: {m(h.get('filters') or 'none')}")
    what = "calls" if h.get("version") == 2 else "events"
    if contents.events_counted:
        events = f"{contents.events:,d} {what}"
    elif contents.end is not None and "events" in contents.end:
        events = f"{contents.end['events']:,d} {what}"  # EVENTS records were not read
    else:
        why = "its end record has no count" if contents.end is not None else "no end record"
        events = f"{what} not counted ({why}; replay counts them)"
    if is_aggregate(h) and not contents.events:
        events = "no per-call records"  # the calls are counted in the AGGREGATE record
    out.print(f"  {events} in {contents.records:,d} records, {len(contents.stacks)} kernel stacks")
    if contents.aggregate is not None:
        paths = contents.aggregate.get("paths", [])
        calls = sum(p["calls"] + p.get("no_return", 0) for p in paths)
        out.print(f"  aggregate: {calls:,d} calls counted in the kernel on {len(paths):,d} call "
                  "paths (--aggregate: a call tree, no journeys)")
    elif is_aggregate(h):
        out.print("  aggregate: no call paths stored (the tracer stopped before it wrote any)")
    final = contents.end or contents.stats or {}
    lost = final.get("lost") or contents.stats.get("lost") or {}
    out.print("  lost: " + (", ".join(f"{m(k)}={v:,d}" for k, v in sorted(lost.items()))
                            or "not recorded"))
    empty = final.get("empty_calls") or contents.stats.get("empty_calls") or {}
    if empty:
        # Calls the kernel counted but did not emit: no packet was handled in them.
        top = sorted(empty.items(), key=lambda kv: (-kv[1], kv[0]))
        more = f" (and {len(top) - 8} more functions)" if len(top) > 8 else ""
        out.print("  empty: " + ", ".join(f"{_count_text(n)} {m(name)}" for name, n in top[:8])
                  + f" calls with no packet{more}: counted in the kernel, not recorded")
    missed = final.get("bpf_missed_by") or contents.stats.get("bpf_missed_by") or {}
    if missed:
        # Which programs the kernel skipped (bpf_missed): one already ran on that CPU.
        top = sorted(missed.items(), key=lambda kv: (-kv[1], kv[0]))
        out.print("  bpf_missed: " + ", ".join(f"{m(name)} {n:,d}" for name, n in top[:8])
                  + (f" (and {len(top) - 8} more)" if len(top) > 8 else ""))
        out.print("    (a softirq called the function while its program ran in the task it "
                  "interrupted: keeping the NICs' interrupts off the traffic's CPUs avoids "
                  "it, as skbpath lab does)")
    if contents.end is None:
        out.print("  [yellow]no end record: the tracer did not stop cleanly[/yellow]")
    if contents.truncated and contents.damaged:
        out.print(f"  [yellow]{m(contents.truncated)}[/yellow]")
    functions = (getattr(contents, "sources", None) or {}).get("functions") or {}
    if functions:
        frames = contents.sources.get("frames") or {}
        out.print(f"  source lines: {len(functions)} functions, {len(frames)} stack frames")
        if summary is None:  # replay shows them in its function table instead
            for name, loc in sorted(functions.items()):
                out.print(f"    {m(name):34s} {m(loc.get('file'))}:{loc.get('line')}")
    if summary:
        out.print("  model: " + ", ".join(f"{k}={v:,d}" for k, v in summary.items()))


@click.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path())
@click.option("--skipped", is_flag=True, help="List the probes that were skipped, and why.")
@_lenient_option
def info(trace_file: str, skipped: bool, lenient: bool) -> None:
    """Describe a trace: kernel, probes, counts, losses.

    \b
    Examples:
      skbpath info sample_traces/tcp_bulk.skbtrace
      skbpath info tcp.skbtrace --skipped
    """
    from skbpath.tracer.traces.tracefile import TraceReader

    # Checksums only: END has the event count, so no event is decompressed.  A
    # trace without END (a killed tracer, a cut) is read again to count them.
    contents = TraceReader(trace_file, lenient=lenient).read_all(count_events=trace_file == "-")
    if contents.end is None and not contents.events_counted:
        contents = TraceReader(trace_file, lenient=lenient).read_all(count_events=True)
    out = _stdout()
    _print_info(out, trace_file, contents, None)
    if skipped:
        for s in contents.header.get("skipped", []):
            out.print(f"  - {markup(s.get('name'))}: {markup(s.get('reason', '?'))}")
    _warn_read(contents)


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

    from skbpath.tracer.kernel.atlas import load_atlas, lookup
    from skbpath.tracer.kernel.symbols import base_name

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
