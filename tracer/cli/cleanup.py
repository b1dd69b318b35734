"""``skbpath cleanup``: remove the tracefs instances that killed traces left behind."""

from __future__ import annotations

import os

import click
from skbpath.tracer.errors import SkbpathError


@click.command()
def cleanup() -> None:
    """Remove tracefs instances of skbpath runs that are gone (needs root).

    A ``skbpath trace --attach tracefs`` killed with SIGKILL cannot remove its
    instance (instances/skbpath-<pid>), which keeps recording.  Every
    tracefs-mode start does this too; the instances of live runs stay.

    \b
    Examples:
      sudo skbpath cleanup
    """
    from skbpath.tracer.kernel.info import find_tracefs
    from skbpath.tracer.record.tracefs.instance import mount_tracefs, remove_stale

    if os.geteuid() != 0:
        raise SkbpathError("skbpath cleanup needs root: run it with sudo")
    tracefs = find_tracefs()
    mount_tracefs(tracefs)  # instances outlive an unmount: mounting shows them again
    if not remove_stale(tracefs, lambda line: click.echo(f"skbpath: {line}")):
        click.echo(f"skbpath: no stale skbpath instances under {tracefs}/instances")
