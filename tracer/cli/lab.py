"""The CLI command ``lab``: boot the lab kernel in QEMU and trace traffic there (lab/vm.py)."""

from __future__ import annotations

import click
from skbpath.tracer.cli.common import _stderr
from skbpath.tracer.errors import SkbpathError


@click.command()
@click.option("-o", "--output", default=None,
              help="Where to write the trace on the host [default: lab.skbtrace]; with "
                   "--scenario, a directory for NAME.skbtrace files [default: lab-traces].")
@click.option("--traffic", default="bulk", show_default=True,
              help="A preset: bulk (iperf3 TCP), rr (TCP request/response), udp, closed "
                   "(closed ports), firewall (nftables DROP), arp (flushed neighbours, ping), "
                   "loopback (TCP over 127.0.0.1); or any shell command, with $PEER the "
                   "peer's address.")
@click.option("--scenario", "scenarios", multiple=True, metavar="NAME:TRAFFIC[:TRACE OPTS]",
              help="Trace TRAFFIC (as --traffic) with these 'skbpath trace' options into "
                   "OUTPUT/NAME.skbtrace; repeat it to run several in one boot (instead of "
                   "--traffic and --trace-opt).")
@click.option("--topology", type=click.Choice(["pair", "forward"]), default="pair",
              show_default=True,
              help="pair: two NICs, one in a netns; forward: the guest routes from a "
                   "client netns's NIC to a veth into the peer's netns.")
@click.option("--nic", type=click.Choice(["e1000", "virtio"]), default="e1000",
              show_default=True, help="The NIC model QEMU emulates.")
@click.option("--kernel", default="6.1", show_default=True,
              help="A Debian series (6.1, 6.12: the newest image of it in /boot) or the "
                   "path of a kernel image; its headers must be installed.")
@click.option("-f", "--filter", "filter_expr", metavar="EXPR",
              help="A pcap-filter expression for the tracer, as tcpdump's "
                   "(e.g. 'tcp port 5201 or ip6').")
@click.option("--aggregate", is_flag=True,
              help="Trace with 'skbpath trace --aggregate': calls counted per call path in "
                   "the guest's kernel, the hottest paths shown as it runs.")
@click.option("--trace-opt", "trace_opts", multiple=True,
              help="Extra option for 'skbpath trace' in the guest (repeatable).")
@click.option("--timeout", type=int, default=None,
              help="Give up after this many s (default: 300 s, plus 600 s per scenario).")
@click.option("--no-pin", is_flag=True,
              help="Leave the NICs' interrupts and the traffic where the kernel puts them "
                   "(by default: interrupts on CPU 0, traffic on the others, so that no "
                   "softirq lands in a probe of the task it interrupts; see bpf_missed).")
@click.option("-v", "--verbose", is_flag=True,
              help="Show the guest's whole log (with its shell trace), not only progress.")
def lab(output: str | None, traffic: str, scenarios: tuple[str, ...], topology: str, nic: str,
        kernel: str, filter_expr: str | None, aggregate: bool, trace_opts: tuple[str, ...],
        timeout: int | None, no_pin: bool, verbose: bool) -> None:
    """Boot a real kernel in QEMU and trace traffic between two emulated NICs.

    The guest runs Debian's 6.1 kernel (or --kernel 6.12) on this machine's
    root file system (virtme-ng, no KVM needed).  With --topology pair, one
    NIC (198.18.0.1) stays in the root namespace and the other (198.18.0.2,
    $PEER) sits in a netns.  With --topology forward the guest is a router:
    traffic from a client netns enters through one NIC and leaves over a
    veth to the peer (198.18.0.130, $PEER).  Booting costs more than tracing:
    --scenario runs several traced runs in one boot.  The NICs' interrupts
    run on CPU 0 and the traffic on the other CPUs (--no-pin: anywhere).

    It prints progress: the boot, the tracer's lines, the traffic's own
    output.  -v shows the guest's whole log; on a failure its last lines are
    shown, with where the whole log was kept.

    \b
    Examples:
      skbpath lab -o bulk.skbtrace
      skbpath lab --traffic rr -o rr.skbtrace
      skbpath lab --kernel 6.12 --traffic closed -o closed-612.skbtrace
      skbpath lab --traffic 'ping -c 5 $PEER' -o ping.skbtrace
      skbpath lab --trace-opt=--proto --trace-opt=tcp
      skbpath lab --traffic bulk --trace-opt=--buffer-mb=64
      skbpath lab --aggregate -o top.skbtrace   # calls per call path, no journeys
      skbpath lab --traffic udp --filter 'udp and host 198.18.0.2'
      skbpath lab --topology forward --traffic rr -o forward.skbtrace
      skbpath lab --nic virtio --traffic udp -o virtio.skbtrace
      skbpath lab -o out/ --scenario rr:rr --scenario fe:rr:'--attach fentry' \\
                  --scenario drops:closed:'--attach tracepoint'
    """
    from skbpath.tracer.lab.vm import LabOptions, parse_scenario, run_lab, run_scenarios
    from skbpath.tracer.record.session import chown_to_invoker

    if scenarios and (trace_opts or filter_expr or aggregate):
        raise SkbpathError("--trace-opt, --filter and --aggregate apply to --traffic; give a "
                           "scenario's options after its traffic (NAME:TRAFFIC:OPTIONS)")
    trace_args = list(trace_opts) + (["--aggregate"] if aggregate else [])
    if filter_expr is not None:
        from skbpath.tracer.record.pcap import compile_filter

        compile_filter(filter_expr)  # a bad expression fails here, before the boot
        trace_args += ["--filter", filter_expr]
    opts = LabOptions(output=output or ("lab-traces" if scenarios else "lab.skbtrace"),
                      traffic=traffic, topology=topology, nic=nic, kernel=kernel,
                      trace_args=trace_args, timeout=timeout, verbose=verbose, pin=not no_pin,
                      scenarios=[parse_scenario(s) for s in scenarios])
    err = _stderr()
    if not scenarios:
        path = run_lab(opts)
        chown_to_invoker(path)
        err.print(f"skbpath lab: trace written to {path}")
        return
    result = run_scenarios(opts)
    chown_to_invoker(opts.output)
    for name, path in result.traces.items():
        chown_to_invoker(path)
        err.print(f"skbpath lab: {name}: trace written to {path}")
    for name, why in result.failed.items():
        err.print(f"skbpath lab: {name}: no trace; its log:\n  {why}", highlight=False)
    if result.failed:
        raise SkbpathError(f"{len(result.failed)} of {len(opts.scenarios)} scenarios wrote no "
                           f"trace: {', '.join(result.failed)}")
