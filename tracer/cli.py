"""The ``skbpath`` command line: the ``main`` group, its one-line errors, and its commands.

The commands live in cli_record (trace), cli_lab (lab) and cli_view (replay, render,
info, explain); this module is the entry point (``skbpath = tracer.cli:main``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .cli_lab import lab
from .cli_record import trace
from .cli_view import explain, info, render, replay
from .errors import SkbpathError


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


for _command in (trace, lab, replay, render, info, explain):
    main.add_command(_command)


if __name__ == "__main__":
    main()
