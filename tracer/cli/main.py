"""The ``skbpath`` command line: the ``main`` group, its one-line errors, and its commands.

The commands live in cli/record.py (trace), cli/lab.py (lab), cli/view.py (replay, render),
cli/info.py (info, explain), cli/diff.py (diff) and cli/cleanup.py (cleanup); this
module is the group (cli/entry.py is the console script's entry point).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from typing import Any

import click
from skbpath.render.text import printable
from skbpath.tracer import __version__
from skbpath.tracer.cli.cleanup import cleanup
from skbpath.tracer.cli.diff import diff
from skbpath.tracer.cli.info import explain, info
from skbpath.tracer.cli.lab import lab
from skbpath.tracer.cli.record import trace
from skbpath.tracer.cli.view import render, replay
from skbpath.tracer.errors import SkbpathError


class _Group(click.Group):
    """Turns SkbpathError into one line on stderr and its exit code, never a traceback.

    So do write errors (a full disk, a directory where a file goes, no
    permission: exit 2), Ctrl-C (``interrupted``, exit 130) and a reader that
    left the pipe (silence, exit 0, as other Unix tools).
    """

    def invoke(self, ctx: click.Context) -> Any:
        # Inside a command Ctrl-C raises KeyboardInterrupt, so cleanup runs
        # (tracer/cli/entry.py handles it outside).
        outside = _sigint(signal.default_int_handler)
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a late write error is still this command's
            return result
        except SkbpathError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            # Before tracing starts (resolution, the lab boot): nothing to save.
            _fail(ctx, None, 130)
        except BrokenPipeError:
            # `skbpath replay ... | head`: the reader left; that's fine.
            _quiet_stdout()
            ctx.exit(0)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                _quiet_stdout()
                ctx.exit(0)
            _quiet_stdout()
            where = f"{exc.filename}: " if exc.filename else "cannot write output: "
            _fail(ctx, f"{where}{exc.strerror or exc}", 2)
        finally:
            _sigint(outside)


def _sigint(handler: Any) -> Any:
    """Set the SIGINT handler, returning the old one (only the main thread may)."""
    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:
        return handler


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: output still buffered must not fail again at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _fail(ctx: click.Context, message: str | None, code: int) -> None:
    text = "interrupted" if message is None else f"error: {printable(message)}"
    with contextlib.suppress(OSError):  # stderr gone too: the exit code still says it
        click.echo(f"skbpath: {text}", err=True)
    ctx.exit(code)


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
      skbpath diff before.skbtrace after.skbtrace -o out/
      skbpath explain ip_finish_output2
    """


for _command in (trace, lab, replay, render, diff, info, explain, cleanup):
    main.add_command(_command)


if __name__ == "__main__":
    main()
