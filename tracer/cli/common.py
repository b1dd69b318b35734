"""Console and warning helpers, and the source-line options, shared by the CLI commands."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from skbpath.render.text import printable
from skbpath.tracer.errors import SkbpathError

F = TypeVar("F", bound=Callable[..., Any])


class _Console(Console):
    """rich's Console, but a closed pipe is the CLI's to handle (silence, exit 0)."""

    def on_broken_pipe(self) -> None:
        # rich would exit 1 here; tracer/cli/main.py treats it like click's output.
        self.quiet = True
        raise BrokenPipeError


def _stderr() -> Console:
    # emoji off: ":name:" in a trace's text is text (render/text.py escapes markup).
    return _Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _stdout() -> Console:
    """Stdout console; piped output gets a wide page instead of rich's 80 columns."""
    con = _Console(highlight=False, emoji=False)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = _Console(highlight=False, emoji=False, width=160)
    return con


def _warn(message: str) -> None:
    # One unwrapped line (rich would wrap it at the console width), so that
    # scripts can grep it; printable, since it may quote the trace.
    click.echo(f"skbpath: warning: {printable(message)}", err=True)


def _warn_read(contents: Any) -> None:
    """The warnings of reading a trace: bad records skipped (--lenient), then a cut tail."""
    for line in contents.skipped:
        _warn(f"skipped {line}")
    if contents.truncated:
        _warn(contents.truncated)


class Seconds(click.ParamType):  # type: ignore[type-arg]
    """A duration in seconds: a finite number greater than 0."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r}: give a finite number of seconds greater than 0", param, ctx)
        return seconds


def _exclusive(**options: Any) -> None:
    """Refuse options that do not go together; each set value is given by its option name."""
    # `is`, not `in`: 0 (--max-depth 0, --skb 0) is given, and 0 == False.
    given = [name for name, value in options.items() if value is not None and value is not False]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} cannot be combined")


def _lenient_option(fn: F) -> F:
    """--lenient: skip bad records of a crafted or damaged trace with a warning."""
    return click.option("--lenient", is_flag=True,
                        help="Skip records that fail the trace schema (with a warning) "
                             "instead of stopping with exit 2.")(fn)


def _check_output_file(path: str) -> None:
    """Fail before tracing, not after, when ``path`` cannot be written."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise SkbpathError(f"{path}: is a directory")
    if not os.path.isdir(parent):
        raise SkbpathError(f"{path}: no such directory {parent}")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise SkbpathError(f"{path}: permission denied")


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
    from skbpath.tracer.kernel.dwarf import source_details, trace_sources

    if vmlinux or module_debug:
        frames = [f for stack in contents.stacks.values() for f in stack]
        found = trace_sources(contents.header.get("functions", []), frames, vmlinux,
                              module_debug)
        for part, entries in found.items():
            contents.sources.setdefault(part, {}).update(entries)
        from skbpath.tracer.traces.tracefile import append_sources

        try:
            # Stored in the trace, so later renders need no vmlinux.
            append_sources(trace_file, found)
        except SkbpathError as exc:
            _warn(f"source lines not saved: {exc}")
    return source_details(contents.sources)
