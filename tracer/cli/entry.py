"""The ``skbpath`` console script: Ctrl-C at any moment, even while importing, is one line.

Importing the CLI (click, rich, the commands) takes a noticeable fraction of
a second, and click turns an interrupt while it parses the options into
"Aborted!" and exit 1.  Outside a command nothing needs cleaning up, so an
interrupt there ends the process at once: ``interrupted``, exit 130.  Inside
a command (tracer/cli/main.py) Python's own handler raises
KeyboardInterrupt, so that the command's cleanup runs first.
This module imports nothing heavy itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType


def early_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT outside a command: one line and exit 130, nothing to clean up."""
    try:
        os.write(2, b"skbpath: interrupted\n")
    finally:
        os._exit(130)


def run() -> None:
    """Run the CLI (``skbpath = skbpath.tracer.cli.entry:run``)."""
    signal.signal(signal.SIGINT, early_interrupt)
    try:
        from skbpath.tracer.cli.main import main

        main()
    except KeyboardInterrupt:  # raised before the handler above took over
        with contextlib.suppress(OSError):
            sys.stderr.write("skbpath: interrupted\n")
        _exit_now(130)
    except SystemExit as exc:
        if exc.code == 130:
            # Interrupted, and said so: leave now.  Letting the interpreter
            # finish made it die of SIGINT (-2) about once in 40 tries, after
            # the command had handled the interrupt and printed its line.
            _exit_now(130)
        raise


def _exit_now(code: int) -> None:
    """Flush what was written and exit at once, without the interpreter's shutdown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
