"""The CLI command that records traces live: ``trace`` (fentry, kprobe, tracepoint or
tracefs mode).  What it needs from the kernel first is tracer/prepare.py."""

from __future__ import annotations

import os
from typing import Any

import click

from .cli_common import _source_options, _stderr, _trace_sources
from .errors import SkbpathError


def _resolve(iface: str | None, kernel: Any, btf: Any) -> Any:
    """The catalog resolved on ``kernel`` (tests replace this)."""
    from .prepare import resolve_catalog

    return resolve_catalog(kernel, btf, iface)


@click.command()
@click.option("-o", "--output", default="skbpath.skbtrace", show_default=True,
              help="Trace file to write.")
@click.option("-d", "--duration", type=float, help="Stop after this many seconds.")
@click.option("-p", "--pid", type=int, help="Only packets of this process's sockets.")
@click.option("--comm", help="Only packets of sockets of tasks with this name.")
@click.option("-i", "--iface", help="Only packets on this interface; its driver is traced.")
@click.option("--proto", type=click.Choice(["tcp", "udp"]), help="Only this protocol (IPv4).")
@click.option("--port", type=int, help="Only packets with this source or destination port.")
@click.option("--host", help="Only packets to or from this IPv4 address.")
@click.option("--attach", type=click.Choice(["auto", "fentry", "kprobe", "tracepoint", "tracefs"]),
              default="auto", show_default=True,
              help="fentry: BPF trampolines, kprobes where they cannot go (needs BTF); "
                   "kprobe: kprobes and kretprobes; tracepoint: BPF on the tracepoints of "
                   "tracefs mode (no kprobes needed; BTF); tracefs: tracepoints read from "
                   "ftrace, no BPF; auto: the first of these that this machine can do.")
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
    """Trace packets live (needs root): BPF through bcc, or tracepoints through tracefs.

    The BPF modes need bcc and kernel headers.  fentry (BTF and BPF
    trampolines) costs least per call and falls back to kprobes for module
    functions and clones; kprobe needs kprobes; tracepoint (BTF) records
    tracefs mode's tracepoints with real skb addresses and filters.  tracefs
    mode needs only tracefs.  Tracepoint modes give coarser journeys and no
    latencies of their own.  --attach auto picks the first mode this machine
    can do, in that order, and says in one line why not the better ones.

    \b
    Examples:
      sudo skbpath trace --duration 10 -o bulk.skbtrace
      sudo skbpath trace --iface eth0 --proto tcp --port 443
      sudo skbpath trace --comm iperf3 -o iperf.skbtrace   # Ctrl-C to stop
      sudo skbpath trace --attach tracefs --iface eth0 -d 5
      sudo skbpath trace --attach tracepoint --proto tcp -d 5
      skbpath trace --ebpf          # show the generated program
      skbpath trace --attach fentry --list-probes   # which functions use fentry
    """
    from probes.catalog import bpf_source

    from .bpfconfig import Filters, build_cflags, own_netns
    from .kernel import read_kernel_info
    from .prepare import KernelBtf, drop_reasons, fentry_split, ifindex, tracepoint_resolution

    inspect = list_probes or ebpf
    if not inspect and os.geteuid() != 0:
        raise SkbpathError("skbpath trace needs root: run it with sudo")
    if attach == "tracefs" and inspect:
        _tracefs_list(ebpf)
        return
    kernel = read_kernel_info()
    btf = KernelBtf(kernel)  # parsed once, on first use
    if attach == "auto":
        # Printing the program needs neither bcc nor headers: choose as if present.
        attach = _choose_attach(kernel, compile_needs=not inspect)
        if attach == "tracefs" and inspect:
            _tracefs_list(ebpf)
            return
    if attach == "tracefs":
        _trace_tracefs(kernel, output, duration, iface, pid, comm, proto, port, host,
                       ready_file, recorded_with, vmlinux, module_debug)
        return
    if not inspect:
        from .live import check_environment

        check_environment(kernel, attach)
    plan = None
    if attach == "tracepoint":
        resolution = tracepoint_resolution(kernel, btf)
    else:
        resolution = _resolve(iface, kernel, btf)
        if attach == "fentry":
            plan = fentry_split(kernel, btf, resolution)
    filters = Filters(
        pid=pid, comm=comm, iface=iface, ifindex=ifindex(iface) if iface else None,
        proto=proto, port=port, host=host,
    )
    if inspect:
        if list_probes:
            _list_probes(resolution, attach, plan)
        if ebpf:
            cflags = build_cflags(resolution.funcs, filters, attach,
                                  plan.fentry if plan else None, own_netns())
            click.echo("// cflags:\n//   " + "\n//   ".join(cflags))
            with open(bpf_source()) as fh:
                click.echo(fh.read())
        return
    from .live import LiveTracer, TraceOptions

    err = _stderr()
    what = "tracepoints" if attach == "tracepoint" else "functions"
    err.print(f"skbpath: {attach}: {len(resolution.funcs)} {what} resolved, "
              f"{len(resolution.skipped)} skipped (see --list-probes)")
    if plan is not None:
        err.print(f"skbpath: fentry for {len(plan.fentry)} functions, kprobes for "
                  f"{len(plan.kprobe)} symbols (see --list-probes)")
    opts = TraceOptions(output=output, duration=duration, filters=filters, ready_file=ready_file,
                        recorded_with=recorded_with, drop_reasons=drop_reasons(btf))

    def progress(events: int, lost: int, elapsed: float) -> None:
        err.print(f"  {elapsed:6.1f} s  {events:>10,d} events  {lost:>8,d} lost", highlight=False)

    err.print("skbpath: compiling and attaching (Ctrl-C stops)...")
    result = LiveTracer(kernel, resolution, opts, progress, attach, plan).run()
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


def _choose_attach(kernel: Any, compile_needs: bool = True) -> str:
    """--attach auto: the first mode this machine can do; one line on why not the better ones.

    Without ``compile_needs`` (--list-probes, --ebpf) bcc and headers are
    assumed, since only the kernel's own features decide what would run.
    """
    from dataclasses import replace

    from .attach import choose_attach
    from .live import features

    feat = features(kernel)
    if not compile_needs:
        feat = replace(feat, bcc=True, headers=True)
    mode, why = choose_attach(feat)
    if why:
        tail = " (tracepoints; coarser journeys)" if mode in ("tracefs", "tracepoint") else ""
        click.echo(f"skbpath: {kernel.release}: no {'; no '.join(why)}: using {mode}{tail}",
                   err=True)
    return mode


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
    from .kernel import find_tracefs
    from .tracefs import available_tracepoints
    from .tracefs_parse import function_table

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
