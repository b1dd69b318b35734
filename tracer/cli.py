"""The ``skbpath`` command line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from . import __version__
from .errors import SkbpathError

F = TypeVar("F", bound=Callable[..., Any])


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    """Stdout console; piped output gets a wide page instead of rich's 80 columns."""
    con = Console(highlight=False)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(highlight=False, width=160)
    return con


def _warn(message: str) -> None:
    # One unwrapped line (rich would wrap it at the console width), so that
    # scripts can grep it.
    click.echo(f"skbpath: warning: {message}", err=True)


class _Group(click.Group):
    """Turns SkbpathError into one line on stderr and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SkbpathError as exc:
            click.echo(f"skbpath: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            # Before tracing starts (resolution, the lab boot): nothing to save.
            click.echo("skbpath: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # `skbpath render ... -o - | head`: the reader left; that's fine.
            sys.stderr.close()
            ctx.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skbpath")
def main() -> None:
    """skbpath: see what the Linux kernel does with every packet.

    \b
    Examples:
      sudo skbpath trace --duration 5 -o tcp.skbtrace
      skbpath lab -o lab.skbtrace
      skbpath replay tcp.skbtrace
      skbpath render tcp.skbtrace -o out/
      skbpath explain ip_finish_output2
    """


# ---------------------------------------------------------------- sources
def _source_options(fn: F) -> F:
    """--vmlinux and --module-debug: map functions and stack frames to file:line."""
    fn = click.option("--module-debug", "module_debug", multiple=True, metavar="KO",
                      help="A module with debug info (.ko) for its frames (repeatable).")(fn)
    return click.option("--vmlinux", metavar="PATH",
                        help="vmlinux with DWARF: adds file:line to the trace and output "
                             "(e.g. /usr/lib/debug/boot/vmlinux-$(uname -r)).")(fn)


def _trace_sources(trace_file: str, contents: Any, vmlinux: str | None,
                   module_debug: tuple[str, ...]) -> dict[str, str]:
    """function -> "file:line"; with --vmlinux, first maps the trace and appends SOURCES."""
    from .dwarf import source_details, trace_sources

    if vmlinux or module_debug:
        frames = [f for stack in contents.stacks.values() for f in stack]
        found = trace_sources(contents.header.get("functions", []), frames, vmlinux,
                              module_debug)
        for part, entries in found.items():
            contents.sources.setdefault(part, {}).update(entries)
        from .tracefile import append_sources

        try:
            # Stored in the trace, so later renders need no vmlinux.
            append_sources(trace_file, found)
        except SkbpathError as exc:
            _warn(f"source lines not saved: {exc}")
    return source_details(contents.sources)


def _with_sources(details: dict[str, str], sources: dict[str, str]) -> dict[str, str]:
    """Tooltip text: the atlas note and file:line, joined."""
    out = dict(details)
    for name, where in sources.items():
        out[name] = f"{out[name]} · {where}" if out.get(name) else where
    return out


# ---------------------------------------------------------------- trace
def _interfaces_with_drivers() -> list[str]:
    from .drivers import interface_module

    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []
    return [n for n in names if interface_module(n)]


def _resolve(iface: str | None, kernel: Any = None) -> tuple[Any, Any]:
    from probes.catalog import load_catalog

    from .btf import Btf, BtfError
    from .drivers import find_driver_functions, interface_module
    from .kernel import read_kernel_info
    from .resolve import resolve

    kernel = kernel or read_kernel_info()
    base: Btf | None = None
    if kernel.has_btf:
        try:
            base = Btf.load("/sys/kernel/btf/vmlinux")
        except (OSError, BtfError):
            base = None
    ifaces = [iface] if iface else _interfaces_with_drivers()
    if iface and not os.path.exists(f"/sys/class/net/{iface}"):
        raise SkbpathError(f"--iface {iface}: no such interface")
    driver_funcs: dict[str, list[str]] = {}
    for name in ifaces:
        module = interface_module(name)
        if not module:
            continue
        mod_btf = None
        if base is not None and os.path.exists(f"/sys/kernel/btf/{module}"):
            try:
                mod_btf = Btf.load(f"/sys/kernel/btf/{module}", base=base)
            except (OSError, BtfError):
                mod_btf = None
        for role, names in find_driver_functions(module, kernel, mod_btf).items():
            merged = driver_funcs.setdefault(role, [])
            merged.extend(n for n in names if n not in merged)
    return kernel, resolve(load_catalog(), kernel, driver_funcs if ifaces else None)


def _drop_reasons(kernel: Any) -> dict[int, str]:
    from .btf import Btf, BtfError
    from .drops import drop_reason_names

    if not kernel.has_btf:
        return {}
    try:
        return drop_reason_names(Btf.load("/sys/kernel/btf/vmlinux"))
    except (OSError, BtfError):
        return {}


def _ifindex(iface: str) -> int:
    try:
        with open(f"/sys/class/net/{iface}/ifindex") as fh:
            return int(fh.read())
    except (OSError, ValueError) as exc:
        raise SkbpathError(f"--iface {iface}: no such interface") from exc


@main.command()
@click.option("-o", "--output", default="skbpath.skbtrace", show_default=True,
              help="Trace file to write.")
@click.option("-d", "--duration", type=float, help="Stop after this many seconds.")
@click.option("-p", "--pid", type=int, help="Only packets of this process's sockets.")
@click.option("--comm", help="Only packets of sockets of tasks with this name.")
@click.option("-i", "--iface", help="Only packets on this interface; its driver is traced.")
@click.option("--proto", type=click.Choice(["tcp", "udp"]), help="Only this protocol (IPv4).")
@click.option("--port", type=int, help="Only packets with this source or destination port.")
@click.option("--host", help="Only packets to or from this IPv4 address.")
@click.option("--attach", type=click.Choice(["auto", "kprobe", "tracefs"]), default="auto",
              show_default=True,
              help="kprobe: bcc kprobes (needs kprobes and headers); tracefs: tracepoints "
                   "read from a private ftrace instance, no BPF; auto: kprobe when possible.")
@click.option("--ebpf", is_flag=True, help="Print the BPF C and its cflags, then exit.")
@click.option("--list-probes", is_flag=True, help="Print how the catalog resolved, then exit.")
@click.option("--ready-file", hidden=True, help="Written once probes are attached (lab use).")
@click.option("--recorded-with", hidden=True, help="How the traffic was made (lab use).")
@_source_options
def trace(
    output: str,
    duration: float | None,
    pid: int | None,
    comm: str | None,
    iface: str | None,
    proto: str | None,
    port: int | None,
    host: str | None,
    attach: str,
    ebpf: bool,
    list_probes: bool,
    ready_file: str | None,
    recorded_with: str | None,
    vmlinux: str | None,
    module_debug: tuple[str, ...],
) -> None:
    """Trace packets live (needs root): kprobes through bcc, or tracepoints through tracefs.

    kprobe mode needs bcc, kprobes and kernel headers; tracefs mode needs
    only tracefs, and records tracepoints (coarser journeys, no latencies of
    their own).  --attach auto picks kprobe when it can, and says why not.

    \b
    Examples:
      sudo skbpath trace --duration 10 -o bulk.skbtrace
      sudo skbpath trace --iface eth0 --proto tcp --port 443
      sudo skbpath trace --comm iperf3 -o iperf.skbtrace   # Ctrl-C to stop
      sudo skbpath trace --attach tracefs --iface eth0 -d 5
      skbpath trace --ebpf          # show the generated program
    """
    from probes.catalog import bpf_source

    from .bpfconfig import Filters, build_cflags

    if attach == "tracefs" and (list_probes or ebpf):
        _tracefs_list(ebpf)
        return
    if list_probes or ebpf:
        kernel, resolution = _resolve(iface)
    else:
        if os.geteuid() != 0:
            raise SkbpathError("skbpath trace needs root: run it with sudo")
        from .kernel import read_kernel_info

        kernel = read_kernel_info()
        if attach == "auto":
            attach = _choose_attach(kernel)
        if attach == "tracefs":
            _trace_tracefs(kernel, output, duration, iface, pid, comm, proto, port, host,
                           ready_file, recorded_with, vmlinux, module_debug)
            return
        kernel, resolution = _resolve(iface, kernel)
    filters = Filters(
        pid=pid, comm=comm, iface=iface, ifindex=_ifindex(iface) if iface else None,
        proto=proto, port=port, host=host,
    )
    if list_probes or ebpf:
        if list_probes:
            for f in resolution.funcs.funcs:
                click.echo(f"{f.id:3d} {f.name:34s} {f.path:4s} {f.layer:9s} "
                           f"skb_arg={f.skb_arg} {','.join(f.symbols)}")
            for s in resolution.skipped:
                click.echo(f"  - {s.name:34s} skipped: {s.reason}")
        if ebpf:
            cflags = build_cflags(resolution.funcs, filters)
            click.echo("// cflags:\n//   " + "\n//   ".join(cflags))
            with open(bpf_source()) as fh:
                click.echo(fh.read())
        return
    from .live import LiveTracer, TraceOptions, check_environment

    check_environment(kernel)
    err = _stderr()
    err.print(f"skbpath: {len(resolution.funcs)} functions resolved, "
              f"{len(resolution.skipped)} skipped (see --list-probes)")
    opts = TraceOptions(output=output, duration=duration, filters=filters, ready_file=ready_file,
                        recorded_with=recorded_with, drop_reasons=_drop_reasons(kernel))

    def progress(events: int, lost: int, elapsed: float) -> None:
        err.print(f"  {elapsed:6.1f} s  {events:>10,d} events  {lost:>8,d} lost", highlight=False)

    err.print("skbpath: compiling and attaching (Ctrl-C stops)...")
    result = LiveTracer(kernel, resolution, opts, progress).run()
    summary = result.model.summary()
    err.print(
        f"skbpath: {result.events:,d} events in {result.duration:.1f} s, "
        f"{summary['journeys']:,d} journeys -> {output}"
    )
    lost = {k: v for k, v in result.lost.items() if v and k != "filtered"}
    if lost:
        err.print("skbpath: LOST " + ", ".join(f"{k}={v:,d}" for k, v in sorted(lost.items())))
    for name, reason in result.skipped[len(resolution.skipped):]:
        err.print(f"skbpath: {name}: {reason}")
    _add_sources(output, vmlinux, module_debug)


def _add_sources(output: str, vmlinux: str | None, module_debug: tuple[str, ...]) -> None:
    if vmlinux or module_debug:
        from .tracefile import TraceReader

        mapped = _trace_sources(output, TraceReader(output).read_all(), vmlinux, module_debug)
        _stderr().print(f"skbpath: source lines for {len(mapped)} functions added to {output}")


def kprobe_gaps(kernel: Any) -> list[str]:
    """What kprobe mode lacks on this machine (besides root), in words; empty if nothing."""
    gaps = []
    try:
        import bcc  # noqa: F401
    except ImportError:
        gaps.append("no bcc")
    if not kernel.has_kprobes:
        gaps.append("no kprobes")
    if not kernel.has_headers:
        gaps.append("no headers")
    return gaps


def _choose_attach(kernel: Any) -> str:
    """--attach auto: kprobe when check_environment would pass, else tracefs, saying why."""
    gaps = kprobe_gaps(kernel)
    if not gaps:
        return "kprobe"
    words = ", ".join(gaps[:-1]) + " and " + gaps[-1] if len(gaps) > 1 else gaps[0]
    click.echo(f"skbpath: {words} for {kernel.release}: using tracefs "
               "(tracepoints; coarser journeys)", err=True)
    return "tracefs"


def _tracefs_list(ebpf: bool) -> None:
    """--list-probes in tracefs mode: the tracepoints and whether this kernel has them."""
    if ebpf:
        raise SkbpathError("--attach tracefs loads no BPF program: there is nothing to print")
    from .kernel import find_tracefs
    from .tracefs import available_tracepoints, function_table

    funcs, _used, skipped = function_table(available_tracepoints(find_tracefs()))
    for f in funcs.funcs:
        click.echo(f"{f.id:3d} {f.name:34s} {f.path:4s} {f.layer:9s} skb_arg={f.skb_arg}"
                   f"{' stack' if f.stack else ''}")
    for s in skipped:
        click.echo(f"  - {s.name:34s} skipped: {s.reason}")


def _trace_tracefs(kernel: Any, output: str, duration: float | None, iface: str | None,
                   pid: int | None, comm: str | None, proto: str | None, port: int | None,
                   host: str | None, ready_file: str | None, recorded_with: str | None,
                   vmlinux: str | None, module_debug: tuple[str, ...]) -> None:
    """``skbpath trace`` in tracefs mode."""
    from .bpfconfig import Filters
    from .live import TraceOptions
    from .tracefs import TracefsTracer

    unsupported = [name for name, value in (("--proto", proto), ("--port", port),
                                            ("--host", host)) if value is not None]
    if unsupported:
        raise SkbpathError(
            f"{', '.join(unsupported)}: not supported with --attach tracefs (the device "
            "tracepoints carry no addresses or ports); use --iface, --pid or --comm")
    if iface and not os.path.exists(f"/sys/class/net/{iface}"):
        raise SkbpathError(f"--iface {iface}: no such interface")
    filters = Filters(pid=pid, comm=comm, iface=iface)
    opts = TraceOptions(output=output, duration=duration, filters=filters, ready_file=ready_file,
                        recorded_with=recorded_with)
    err = _stderr()

    def progress(events: int, lost: int, elapsed: float) -> None:
        err.print(f"  {elapsed:6.1f} s  {events:>10,d} events  {lost:>8,d} lost", highlight=False)

    tracer = TracefsTracer(kernel, opts, progress)
    err.print(f"skbpath: tracefs: {len(tracer.used)} tracepoints, {len(tracer.skipped)} "
              "missing on this kernel (Ctrl-C stops)...")
    result = tracer.run()
    summary = result.model.summary()
    err.print(
        f"skbpath: {result.events:,d} events in {result.duration:.1f} s, "
        f"{summary['journeys']:,d} journeys -> {output}"
    )
    lost = {k: v for k, v in result.lost.items() if v and k != "filtered"}
    err.print("skbpath: " + ("LOST " + ", ".join(f"{k}={v:,d}" for k, v in sorted(lost.items()))
                             if lost else "lost: none (tracefs overrun=0, dropped events=0)"))
    _add_sources(output, vmlinux, module_debug)


# ---------------------------------------------------------------- lab
@main.command()
@click.option("-o", "--output", default="lab.skbtrace", show_default=True,
              help="Where to write the trace on the host.")
@click.option("--traffic", default="bulk", show_default=True,
              help="bulk (iperf3), rr (TCP request/response) or any shell command; "
                   "$PEER is the peer's address.")
@click.option("--kernel", default=None, help="Kernel image to boot.")
@click.option("--trace-opt", "trace_opts", multiple=True,
              help="Extra option for 'skbpath trace' in the guest (repeatable).")
@click.option("--timeout", default=900, show_default=True, help="Give up after this many s.")
def lab(output: str, traffic: str, kernel: str | None, trace_opts: tuple[str, ...],
        timeout: int) -> None:
    """Boot a real kernel in QEMU and trace traffic between two e1000 NICs.

    The guest runs Debian's 6.1 kernel on this machine's root file system
    (virtme-ng, no KVM needed).  One NIC (198.18.0.1) stays in the root
    namespace, the other (198.18.0.2, $PEER) sits in a netns.

    \b
    Examples:
      skbpath lab -o bulk.skbtrace
      skbpath lab --traffic rr -o rr.skbtrace
      skbpath lab --traffic 'ping -c 5 $PEER' -o ping.skbtrace
      skbpath lab --trace-opt=--proto --trace-opt=tcp
    """
    from .lab import DEFAULT_KERNEL, LabOptions, run_lab

    opts = LabOptions(output=output, traffic=traffic, kernel=kernel or DEFAULT_KERNEL,
                      trace_args=list(trace_opts), timeout=timeout)
    path = run_lab(opts)
    from .live import chown_to_invoker

    chown_to_invoker(path)
    _stderr().print(f"skbpath lab: trace written to {path}")


# ---------------------------------------------------------------- replay
@main.command()
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
    from render.terminal import calltree_view, function_table, journey_timeline

    rep = run_replay(trace_file, keep_journeys=True)
    sources = _trace_sources(trace_file, rep.contents, vmlinux, module_debug)
    out = _stdout()
    if skb_id is not None:
        match = [j for j in rep.model.journey_list if j.id == skb_id]
        if not match:
            raise SkbpathError(f"no journey {skb_id} in {trace_file} "
                               f"(it has {len(rep.model.journey_list)})")
        out.print(journey_timeline(match[0]))
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
    if rep.contents.truncated:
        _warn(rep.contents.truncated)


def _print_drops(out: Console, rep: Any) -> None:
    from rich.table import Table

    from .drops import drop_report

    names = {int(k): v for k, v in (rep.contents.header.get("drop_reasons") or {}).items()}
    # tracefs mode names reasons it met that its header did not know in END.
    names.update({int(k): v for k, v in
                  ((rep.contents.end or {}).get("drop_reasons") or {}).items()})
    rows = drop_report(rep.model.drops, names, rep.contents.stacks)
    if not rep.model.drops.enabled:
        out.print("this trace has no drop probe (kfree_skb_reason was not traced)")
        return
    table = Table(title=f"drops: {sum(r.count for r in rows):,d}")
    table.add_column("reason")
    table.add_column("dropped by")
    table.add_column("count", justify="right")
    for r in rows:
        table.add_row(r.reason, r.function, f"{r.count:,d}")
    out.print(table)


def _replay_json(trace_file: str, with_events: bool) -> None:
    from .replay import function_table as table_of
    from .tracefile import TraceReader

    reader = TraceReader(trace_file)
    funcs = table_of(reader.contents, trace_file)
    from .model import Model

    emit = click.echo
    filters = reader.contents.header.get("filters") or {}
    model = Model(funcs, require_match=bool(filters), keep_journeys=False,
                  on_journey=lambda j: emit(json.dumps(j.to_json(), sort_keys=True)),
                  timeout_ns=int(reader.contents.header.get("journey_timeout_ns",
                                                            5_000_000_000)))
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
@main.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path())
@click.option("-o", "--output", required=True,
              help="Directory to write into, or - for stdout (with --format folded).")
@click.option("--format", "fmt", type=click.Choice(["svg", "dot", "folded"]), default="svg",
              show_default=True, help="svg: calltree.svg and flamegraph.svg.")
@click.option("--weight", type=click.Choice(["time", "count"]), default="time",
              show_default=True, help="Flame graph and folded widths: time or calls.")
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
    from .replay import replay as run_replay

    rep = run_replay(trace_file, keep_journeys=False)
    tree = rep.model.calltree
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


@main.command()
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
@main.command()
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


if __name__ == "__main__":
    main()
