"""The CLI command that records traces live: ``trace`` (fentry, kprobe, tracepoint or
tracefs mode).  What it needs from the kernel first is tracer/record/prepare.py."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import click
from skbpath.tracer.cli.common import (
    Seconds,
    _check_output_file,
    _source_options,
    _stderr,
    _trace_sources,
)
from skbpath.tracer.errors import SkbpathError


def _resolve(iface: str | None, kernel: Any, btf: Any) -> Any:
    """The catalog resolved on ``kernel`` (tests replace this)."""
    from skbpath.tracer.record.prepare import resolve_catalog

    return resolve_catalog(kernel, btf, iface)


@click.command()
@click.argument("expression", nargs=-1)
@click.option("-o", "--output", default="skbpath.skbtrace", show_default=True,
              help="Trace file to write.")
@click.option("-d", "--duration", type=Seconds(), help="Stop after this many seconds.")
@click.option("-p", "--pid", type=int, help="Only packets of this process's sockets.")
@click.option("--comm", help="Only packets of sockets of tasks with this name.")
@click.option("-i", "--iface", help="Only packets on this interface; its driver is traced.")
@click.option("--proto", type=click.Choice(["tcp", "udp"]), help="Only this protocol (IPv4).")
@click.option("--port", type=int, help="Only packets with this source or destination port.")
@click.option("--host", help="Only packets to or from this IPv4 address.")
@click.option("-f", "--filter", "filter_expr", metavar="EXPR",
              help="A pcap-filter expression, as tcpdump's (the same as giving it as arguments).")
@click.option("--attach", type=click.Choice(["auto", "fentry", "kprobe", "tracepoint", "tracefs"]),
              default="auto", show_default=True,
              help="fentry: BPF trampolines, kprobes where they cannot go (needs BTF); "
                   "kprobe: kprobes and kretprobes; tracepoint: BPF on the tracepoints of "
                   "tracefs mode (no kprobes needed; BTF); tracefs: tracepoints read from "
                   "ftrace, no BPF; auto: the first of these that this machine can do.")
@click.option("--buffer-mb", type=click.IntRange(1, 4096),
              help="Kernel buffer for the events, MiB in all (the BPF ring buffer, rounded "
                   "up to a power of two, or tracefs's per-CPU buffers together); "
                   "default: 8 per CPU, 16 to 256.")
@click.option("--aggregate", is_flag=True,
              help="Count calls and latency histograms per call path in the kernel, with no "
                   "per-call records (fentry or kprobe mode): a live view of the hottest paths "
                   "while tracing, and a trace with the call tree but no journeys.")
@click.option("--ebpf", is_flag=True, help="Print the BPF C and its cflags, then exit.")
@click.option("--list-probes", is_flag=True, help="Print how the catalog resolved, then exit.")
@click.option("--ready-file", hidden=True, help="Written once probes are attached (lab use).")
@click.option("--recorded-with", hidden=True, help="How the traffic was made (lab use).")
@_source_options
def trace(
    expression: tuple[str, ...],
    output: str,
    duration: float | None,
    pid: int | None,
    comm: str | None,
    iface: str | None,
    proto: str | None,
    port: int | None,
    host: str | None,
    filter_expr: str | None,
    attach: str,
    buffer_mb: int | None,
    aggregate: bool,
    ebpf: bool,
    list_probes: bool,
    ready_file: str | None,
    recorded_with: str | None,
    vmlinux: str | None,
    module_debug: tuple[str, ...],
) -> None:
    """Trace packets live (needs root): BPF through bcc, or tracepoints through tracefs.

    EXPRESSION is a pcap-filter expression, as tcpdump's (man pcap-filter),
    compiled by libpcap and run in the kernel; IPv4 and IPv6.  --proto,
    --port and --host are shorthands for the IPv4 tuple.

    The BPF modes need bcc and kernel headers.  fentry (BTF and BPF
    trampolines) costs least per call and falls back to kprobes for module
    functions and clones; kprobe needs kprobes; tracepoint (BTF) records
    tracefs mode's tracepoints with real skb addresses and filters.  tracefs
    mode needs only tracefs.  Tracepoint modes give coarser journeys and no
    latencies of their own.  --attach auto picks the first mode this machine
    can do, in that order, and says in one line why not the better ones.

    --aggregate keeps the counting in the kernel: per call path, calls and a
    latency histogram, read once a second into a live view of the hottest
    paths (top for the network stack).  Nothing per call leaves the kernel,
    so it keeps up with any load; the trace has the call tree, flame graph
    and function table, and no journeys.

    \b
    Examples:
      sudo skbpath trace --duration 10 -o bulk.skbtrace
      sudo skbpath trace 'tcp port 443 and host 198.18.0.2'
      sudo skbpath trace -d 5 ip6 and udp
      sudo skbpath trace --iface eth0 --proto tcp --port 443
      sudo skbpath trace --comm iperf3 -o iperf.skbtrace   # Ctrl-C to stop
      sudo skbpath trace --attach tracefs --iface eth0 -d 5
      sudo skbpath trace --attach tracepoint --proto tcp -d 5
      sudo skbpath trace --buffer-mb 128 -d 10   # a bigger buffer for heavy traffic
      sudo skbpath trace --aggregate -o top.skbtrace   # live hottest paths; Ctrl-C stops
      skbpath trace --ebpf          # show the generated program
      skbpath trace --attach fentry --list-probes   # which functions use fentry
    """
    from skbpath.tracer.kernel.info import read_kernel_info
    from skbpath.tracer.model.replay import POINT_MODES
    from skbpath.tracer.record.attach import machine_features, require_mode
    from skbpath.tracer.record.bpf.compile import CompileError
    from skbpath.tracer.record.prepare import KernelBtf
    from skbpath.tracer.record.session import TraceOptions

    expr = _expression(expression, filter_expr)
    inspect = list_probes or ebpf
    if not inspect:
        _check_output_file(output)  # before minutes of tracing, not after
    kernel = read_kernel_info()
    # One place decides what can run here; inspecting needs no root, bcc or headers.
    feat = machine_features(kernel)
    if inspect:
        feat = feat.for_inspection()
    if aggregate and attach in POINT_MODES:
        raise SkbpathError(f"--aggregate counts calls with their durations: it needs "
                           f"--attach fentry or kprobe, not {attach}")
    if attach == "auto":
        modes = _choose_attach(feat)
        if aggregate:
            modes = _aggregate_modes(modes, feat)
    else:
        if not inspect:
            require_mode(feat, attach)  # an explicit mode: every gap, with its remedy
        modes = [attach]
    if modes[0] == "tracefs" and inspect:
        _tracefs_list(ebpf)
        return
    btf = KernelBtf(kernel)  # parsed once, on first use
    for i, mode in enumerate(modes):
        try:
            if mode == "tracefs":
                if expr is not None:
                    raise SkbpathError("a pcap-filter expression needs a BPF mode: not supported "
                                       "with --attach tracefs; use --iface, --pid or --comm")
                _trace_tracefs(kernel, TraceOptions(
                    output=output, duration=duration,
                    filters=_tracefs_filters(iface, pid, comm, proto, port, host),
                    ready_file=ready_file, recorded_with=recorded_with, buffer_mb=buffer_mb))
            elif not _trace_bpf(kernel, btf, mode, list_probes, ebpf, output, duration, pid, comm,
                                iface, proto, port, host, expr, ready_file, recorded_with,
                                buffer_mb, aggregate):
                return  # --list-probes or --ebpf: nothing was recorded
            _add_sources(output, vmlinux, module_debug)
            return
        except CompileError as exc:
            # auto's next mode that can run; tracefs, which compiles nothing, is last.
            if i + 1 == len(modes):
                with contextlib.suppress(OSError):
                    if os.path.getsize(output) == 0:
                        os.unlink(output)
                raise
            _stderr().print(f"skbpath: {mode}: {exc}", highlight=False, soft_wrap=True)
            _stderr().print(f"skbpath: --attach auto: {mode} cannot compile here, "
                            f"trying {modes[i + 1]}", highlight=False)


def _trace_bpf(kernel: Any, btf: Any, attach: str, list_probes: bool, ebpf: bool,
               output: str, duration: float | None, pid: int | None, comm: str | None,
               iface: str | None, proto: str | None, port: int | None, host: str | None,
               expr: str | None, ready_file: str | None, recorded_with: str | None,
               buffer_mb: int | None, aggregate: bool = False) -> bool:
    """``skbpath trace`` (or --list-probes, --ebpf) in a BPF mode; True if it recorded."""
    from skbpath.probes.catalog import bpf_source
    from skbpath.tracer.record.cflags import Filters, build_cflags, own_netns
    from skbpath.tracer.record.prepare import (
        drop_reasons,
        fentry_split,
        ifindex,
        return_names,
        tracepoint_resolution,
    )
    from skbpath.tracer.record.session import TraceOptions

    plan = None
    if attach == "tracepoint":
        resolution = tracepoint_resolution(kernel, btf)
    else:
        resolution = _resolve(iface, kernel, btf)
        if attach == "fentry":
            plan = fentry_split(kernel, btf, resolution)
    filters = Filters(
        pid=pid, comm=comm, iface=iface, ifindex=ifindex(iface) if iface else None,
        proto=proto, port=port, host=host, expr=expr,
    )
    if list_probes or ebpf:
        if list_probes:
            _list_probes(resolution, attach, plan)
        if ebpf:
            cflags = build_cflags(resolution.funcs, filters, attach,
                                  plan.fentry if plan else None, own_netns(),
                                  nargs=plan.nargs if plan else None, aggregate=aggregate)
            click.echo("// cflags:\n//   " + "\n//   ".join(cflags))
            with open(bpf_source()) as fh:
                click.echo(fh.read())
        return False
    from skbpath.tracer.record.bpf.backend import BccBackend

    err = _stderr()
    what = "tracepoints" if attach == "tracepoint" else "functions"
    err.print(f"skbpath: {attach}: {len(resolution.funcs)} {what} resolved, "
              f"{len(resolution.skipped)} skipped (see --list-probes)")
    if plan is not None:
        err.print(f"skbpath: fentry for {len(plan.fentry)} functions, kprobes for "
                  f"{len(plan.kprobe)} symbols (see --list-probes)")
    opts = TraceOptions(output=output, duration=duration, filters=filters, ready_file=ready_file,
                        recorded_with=recorded_with, drop_reasons=drop_reasons(btf),
                        return_names=return_names(btf, resolution.funcs), buffer_mb=buffer_mb,
                        aggregate=aggregate)
    backend = BccBackend(kernel, resolution, opts, attach, plan)
    if aggregate:
        err.print("skbpath: compiling and attaching, counting per call path in the kernel "
                  "(Ctrl-C stops)...")
    else:
        err.print(f"skbpath: compiling and attaching, ring buffer "
                  f"{backend.ringbuf_pages * 4096 >> 20} MiB (Ctrl-C stops)...")
    _record(backend, opts)
    return True


def _record(backend: Any, opts: Any) -> None:
    """Run one session through ``backend``, with the progress lines and the summary."""
    from skbpath.tracer.record.session import Session

    err = _stderr()

    def progress(events: int, lost: int, elapsed: float) -> None:
        err.print(f"  {elapsed:6.1f} s  {events:>10,d} events  {lost:>8,d} lost", highlight=False)

    if opts.aggregate:
        from skbpath.tracer.cli.live import LiveTop

        with LiveTop(err, backend.resolution.funcs) as live:
            result = Session(backend, opts, live=live.show).run()
        err.print(f"skbpath: {result.summary['calls']:,d} calls in {result.paths:,d} call paths "
                  f"in {result.duration:.1f} s -> {opts.output}")
    else:
        result = Session(backend, opts, progress).run()
        err.print(
            f"skbpath: {result.events:,d} events in {result.duration:.1f} s, "
            f"{result.summary['journeys']:,d} journeys -> {opts.output}"
        )
    err.print(f"skbpath: {loss_line(result.lost)}")
    if result.lost.get("open_at_stop"):
        err.print(f"skbpath: {result.lost['open_at_stop']:,d} calls were still running at the "
                  "stop: recorded without a return (open_at_stop)")
    if result.lost.get("open_at_start"):
        err.print(f"skbpath: {result.lost['open_at_start']:,d} calls had begun before the probes "
                  "were armed: not recorded (open_at_start)")
    for name, reason in result.attach_failures:
        err.print(f"skbpath: {name}: {reason}")


def _aggregate_modes(modes: list[str], feat: Any) -> list[str]:
    """auto's modes that can --aggregate (fentry, kprobe); one clear line if none can."""
    from skbpath.tracer.model.replay import POINT_MODES

    usable = [m for m in modes if m not in POINT_MODES]
    if not usable:
        raise SkbpathError(f"--aggregate needs fentry or kprobe mode, and {feat.release} can do "
                           f"only {' or '.join(modes)} (see --attach)")
    return usable


def _expression(words: tuple[str, ...], option: str | None) -> str | None:
    """The pcap-filter expression, from the arguments (joined, as tcpdump) or --filter.

    Compiled here, before anything else, so that a bad one fails in one line
    with libpcap's own message.
    """
    if words and option:
        raise SkbpathError("give the filter expression either as arguments or with --filter")
    expr = " ".join(words) if words else option
    if expr is None:
        return None
    from skbpath.tracer.record.pcap import compile_filter

    compile_filter(expr)
    return expr


def loss_line(lost: dict[str, int]) -> str:
    """Every loss counter, zeros included (a zero is a measurement, not an absence):
    ``LOST a=1, ...`` if any is not zero, else ``lost: none (a=0, ...)``."""
    from skbpath.tracer.record.session import NOT_LOSSES

    counts = {k: v for k, v in sorted(lost.items()) if k not in NOT_LOSSES}
    text = ", ".join(f"{k}={v:,d}" for k, v in counts.items())
    return f"LOST {text}" if any(counts.values()) else f"lost: none ({text})"


def _add_sources(output: str, vmlinux: str | None, module_debug: tuple[str, ...]) -> None:
    if vmlinux or module_debug:
        from skbpath.tracer.traces.tracefile import TraceReader

        mapped = _trace_sources(output, TraceReader(output).read_all(), vmlinux, module_debug)
        _stderr().print(f"skbpath: source lines for {len(mapped)} functions added to {output}")


def _choose_attach(feat: Any) -> list[str]:
    """--attach auto: every mode ``feat`` allows, best first (tracefs, which compiles
    nothing, last), tried in turn when a BPF program does not compile; one line on why not
    the better ones."""
    from skbpath.tracer.record.attach import choose_attach, usable_modes

    mode, why = choose_attach(feat)
    if why:
        tail = " (tracepoints; coarser journeys)" if mode in ("tracefs", "tracepoint") else ""
        click.echo(f"skbpath: {feat.release}: no {'; no '.join(why)}: using {mode}{tail}",
                   err=True)
    return usable_modes(feat)


def _list_probes(resolution: Any, attach: str, plan: Any) -> None:
    """--list-probes: one line per function (with how fentry mode attaches it), then the skipped."""
    for f in resolution.funcs.funcs:
        line = f"{f.id:3d} {f.name:34s} {f.path:4s} {f.layer:9s} skb_arg={f.skb_arg}"
        if attach == "tracepoint":
            line += f" aux_arg={f.aux_arg}{' stack' if f.stack else ''} raw_tp={f.symbols[0]}"
        else:
            line += f" {','.join(f.symbols)}"
        if plan is not None:
            via = ["fentry"] if f.id in plan.fentry else []
            reasons = {plan.kprobe[s] for s in f.symbols if s in plan.kprobe}
            if reasons:
                via.append(f"kprobe ({'; '.join(sorted(reasons))})")
            line += f"  via {' + '.join(via)}"
        click.echo(line)
    for s in resolution.skipped:
        click.echo(f"  - {s.name:34s} skipped: {s.reason}")


def _tracefs_list(ebpf: bool) -> None:
    """--list-probes in tracefs mode: the tracepoints and whether this kernel has them."""
    if ebpf:
        raise SkbpathError("--attach tracefs loads no BPF program: there is nothing to print")
    from skbpath.tracer.kernel.info import find_tracefs
    from skbpath.tracer.record.tracefs.backend import available_tracepoints
    from skbpath.tracer.record.tracefs.instance import mount_tracefs
    from skbpath.tracer.record.tracefs.parse import function_table

    tracefs = find_tracefs()
    mount_tracefs(tracefs)  # unmounted, every tracepoint would look missing
    funcs, _used, skipped = function_table(available_tracepoints(tracefs))
    for f in funcs.funcs:
        click.echo(f"{f.id:3d} {f.name:34s} {f.path:4s} {f.layer:9s} skb_arg={f.skb_arg}"
                   f"{' stack' if f.stack else ''}")
    for s in skipped:
        click.echo(f"  - {s.name:34s} skipped: {s.reason}")


def _tracefs_filters(iface: str | None, pid: int | None, comm: str | None, proto: str | None,
                     port: int | None, host: str | None) -> Any:
    """The filters tracefs mode can apply; the others are one clear error."""
    from skbpath.tracer.record.cflags import Filters

    unsupported = [name for name, value in (("--proto", proto), ("--port", port),
                                            ("--host", host)) if value is not None]
    if unsupported:
        raise SkbpathError(
            f"{', '.join(unsupported)}: not supported with --attach tracefs (the device "
            "tracepoints carry no addresses or ports); use --iface, --pid or --comm")
    if iface and not os.path.exists(f"/sys/class/net/{iface}"):
        raise SkbpathError(f"--iface {iface}: no such interface")
    return Filters(pid=pid, comm=comm, iface=iface)


def _trace_tracefs(kernel: Any, opts: Any) -> None:
    """``skbpath trace`` in tracefs mode."""
    from skbpath.tracer.record.tracefs.backend import TracefsBackend

    backend = TracefsBackend(kernel, opts)
    _stderr().print(f"skbpath: tracefs: {len(backend.used)} tracepoints, {len(backend.skipped)} "
                    "missing on this kernel (Ctrl-C stops)...")
    _record(backend, opts)
