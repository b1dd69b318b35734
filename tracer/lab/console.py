"""What the lab shows while it runs: the guest's lines as they come, and its log on failure.

The guest writes a progress file (and its whole log) into the shared work
directory; :func:`follow` passes their new lines on while virtme-ng runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

# How much of the guest's log a failure shows.
FAIL_TAIL_LINES = 30
# The tracer's periodic "  12.0 s   1,234 events   0 lost" line (tracer/cli/record.py).
_TICK = re.compile(r"^\s+[\d.]+ s\s+[\d,]+ events\s+[\d,]+ lost\s*$")


class LineEcho:
    """Prints the guest's lines on stderr.  Without ``verbose``, the tracer's
    periodic counters overwrite each other on a terminal and are left out
    elsewhere (its closing line has the totals)."""

    def __init__(self, tty: bool, verbose: bool = False) -> None:
        self.tty = tty
        self.verbose = verbose
        self.pending_cr = False

    def __call__(self, line: str) -> None:
        """Show one line (without its newline)."""
        tick = not self.verbose and _TICK.match(line) is not None
        if tick and not self.tty:
            return
        if self.pending_cr:
            sys.stderr.write("\r\033[K")
        sys.stderr.write(line + ("" if tick else "\n"))
        self.pending_cr = tick
        sys.stderr.flush()

    def close(self) -> None:
        """End a counter line left open on the terminal."""
        if self.pending_cr:
            sys.stderr.write("\n")
            self.pending_cr = False


def kill_tree(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` and its process group (started with ``start_new_session``).

    vng runs QEMU as its child: killing vng alone leaves the guest running,
    and the next lab would boot beside it on the same two cores.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def guard_group(pgid: int) -> subprocess.Popen[bytes]:
    """A watchdog that kills process group ``pgid`` once this process is gone.

    :func:`kill_tree` needs this process alive; a SIGKILL (pytest's timeout,
    ``subprocess.run`` cleaning up after an interrupt) would leave QEMU
    running.  The watchdog sits in a session of its own, polls once a second,
    and is itself killed (:func:`kill_tree` on it) when the boot ends normally,
    before the group's id can be reused.
    """
    script = (f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
              f"kill -9 -{pgid} 2>/dev/null")  # dash: no -- before a negative pid
    return subprocess.Popen(["sh", "-c", script], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def follow(proc: subprocess.Popen[str], path: str, show: Callable[[str], None] | None,
           timeout: float) -> int:
    """Wait for ``proc``, passing each whole line appended to ``path`` to ``show``.

    The guest writes into the shared work dir, so its lines arrive while it
    runs.  Returns the exit code; raises TimeoutExpired after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    offset = 0
    rest = ""

    def drain() -> None:
        nonlocal offset, rest
        try:
            with open(path, errors="replace") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
        except FileNotFoundError:
            return
        *lines, rest = (rest + chunk).split("\n")
        if show is not None:
            for line in lines:
                show(line)

    while True:
        try:
            code = proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            drain()
            if time.monotonic() > deadline:
                kill_tree(proc)
                raise
            continue
        drain()
        if rest and show is not None:
            show(rest)
        if isinstance(show, LineEcho):
            show.close()
        return code


def lab_failure(what: str, log_path: str, vng_log: str) -> str:
    """The error for a failed lab: the last lines of the guest's log and where it is kept."""
    path = log_path if os.path.exists(log_path) and os.path.getsize(log_path) else vng_log
    try:
        with open(path, errors="replace") as fh:
            tail = fh.read().strip().splitlines()[-FAIL_TAIL_LINES:]
    except OSError:
        tail = []
    lines = "".join(f"\n  {line}" for line in tail)
    return f"{what}; the last {len(tail)} lines of {path} (the whole log is kept there):{lines}"
