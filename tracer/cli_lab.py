"""The CLI command ``lab``: boot the lab kernel in QEMU and trace traffic there (tracer/lab.py)."""

from __future__ import annotations

import click

from .cli_common import _stderr


@click.command()
@click.option("-o", "--output", default="lab.skbtrace", show_default=True,
              help="Where to write the trace on the host.")
@click.option("--traffic", default="bulk", show_default=True,
              help="A preset: bulk (iperf3 TCP), rr (TCP request/response), udp, closed "
                   "(closed ports), firewall (nftables DROP), arp (flushed neighbours, ping), "
                   "loopback (TCP over 127.0.0.1); or any shell command, with $PEER the "
                   "peer's address.")
@click.option("--topology", type=click.Choice(["pair", "forward"]), default="pair",
              show_default=True,
              help="pair: two NICs, one in a netns; forward: the guest routes from a "
                   "client netns's NIC to a veth into the peer's netns.")
@click.option("--nic", type=click.Choice(["e1000", "virtio"]), default="e1000",
              show_default=True, help="The NIC model QEMU emulates.")
@click.option("--kernel", default=None, help="Kernel image to boot.")
@click.option("--trace-opt", "trace_opts", multiple=True,
              help="Extra option for 'skbpath trace' in the guest (repeatable).")
@click.option("--timeout", default=900, show_default=True, help="Give up after this many s.")
def lab(output: str, traffic: str, topology: str, nic: str, kernel: str | None,
        trace_opts: tuple[str, ...], timeout: int) -> None:
    """Boot a real kernel in QEMU and trace traffic between two emulated NICs.

    The guest runs Debian's 6.1 kernel on this machine's root file system
    (virtme-ng, no KVM needed).  With --topology pair, one NIC (198.18.0.1)
    stays in the root namespace and the other (198.18.0.2, $PEER) sits in a
    netns.  With --topology forward the guest is a router: traffic from a
    client netns enters through one NIC and leaves over a veth to the peer
    (198.18.0.130, $PEER).

    \b
    Examples:
      skbpath lab -o bulk.skbtrace
      skbpath lab --traffic rr -o rr.skbtrace
      skbpath lab --traffic 'ping -c 5 $PEER' -o ping.skbtrace
      skbpath lab --trace-opt=--proto --trace-opt=tcp
      skbpath lab --topology forward --traffic rr -o forward.skbtrace
      skbpath lab --nic virtio --traffic udp -o virtio.skbtrace
    """
    from .lab import DEFAULT_KERNEL, LabOptions, run_lab

    opts = LabOptions(output=output, traffic=traffic, topology=topology, nic=nic,
                      kernel=kernel or DEFAULT_KERNEL, trace_args=list(trace_opts),
                      timeout=timeout)
    path = run_lab(opts)
    from .live import chown_to_invoker

    chown_to_invoker(path)
    _stderr().print(f"skbpath lab: trace written to {path}")
