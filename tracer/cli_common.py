"""Console and warning helpers, and the source-line options, shared by the CLI commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

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
