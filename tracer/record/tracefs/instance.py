"""tracefs on a fresh or a dirty machine: mounting it, and removing instances killed runs left.

A fresh machine may not have tracefs mounted at all: the tracepoint list
must be read after mounting it (as perf and trace-cmd do).  A tracefs
instance outlives its process: a SIGKILLed ``skbpath trace`` leaves
``instances/skbpath-<pid>`` behind, still recording into its buffer with
its events and triggers enabled.  Every tracefs-mode start, and ``skbpath
cleanup``, removes the instances named ``skbpath-<pid>`` whose pid is gone
(or is no longer skbpath: pids are reused), and says so.

An instance is told from its pid alone, so a live skbpath in another pid
namespace (a container sharing this kernel) looks dead from here; the lab
runs its own kernel and is not affected.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable

from skbpath.tracer.errors import SkbpathError

INSTANCE_PREFIX = "skbpath-"
_NAME = re.compile(rf"{re.escape(INSTANCE_PREFIX)}(\d+)")
# The event groups skbpath enables (tracer/record/tracefs/parse.py TRACEPOINTS):
# their triggers are the ones a stale instance can hold.
GROUPS = ("net", "napi", "skb", "qdisc", "tcp", "udp", "sock")


def is_mounted(tracefs: str) -> bool:
    """Whether tracefs is mounted at ``tracefs`` (an unmounted mount point is empty)."""
    return os.path.isdir(os.path.join(tracefs, "instances"))


def mount_tracefs(tracefs: str) -> None:
    """Mount tracefs at ``tracefs`` unless it is; raise SkbpathError if that fails."""
    if is_mounted(tracefs):
        return
    err = ""
    try:
        proc = subprocess.run(["mount", "-t", "tracefs", "nodev", tracefs], check=False,
                              capture_output=True, timeout=10, text=True)
        err = proc.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        err = str(exc)
    if not is_mounted(tracefs):
        raise SkbpathError(f"tracefs is not mounted at {tracefs} and mounting it failed"
                           f"{': ' + err if err else ''} (mount -t tracefs nodev {tracefs})")


def _pid_is_skbpath(pid: int) -> bool:
    """Whether ``pid`` is a live process that is skbpath (a reused pid is something else)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return False
    return b"skbpath" in cmdline


def stale_instances(tracefs: str) -> list[tuple[str, int]]:
    """(path, pid) of each ``skbpath-<pid>`` instance whose process is gone."""
    base = os.path.join(tracefs, "instances")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    out = []
    for name in names:
        m = _NAME.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_is_skbpath(int(m.group(1))):
            out.append((os.path.join(base, name), int(m.group(1))))
    return out


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def remove_instance(path: str) -> bool:
    """Stop, disable and remove one instance (whatever it enabled); True if it is gone."""
    with contextlib.suppress(OSError):
        _write(os.path.join(path, "tracing_on"), "0")
    with contextlib.suppress(OSError):
        _write(os.path.join(path, "events", "enable"), "0")
    for group in GROUPS:
        gdir = os.path.join(path, "events", group)
        with contextlib.suppress(OSError):
            for event in os.listdir(gdir):
                _clear_triggers(os.path.join(gdir, event, "trigger"))
    for _ in range(50):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.1)  # EBUSY while a reader still holds trace_pipe
    return not os.path.exists(path)


def _clear_triggers(trigger: str) -> None:
    try:
        with open(trigger) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return
    for line in lines:
        cmd = line.split(" ", 1)[0].strip()
        if cmd and not cmd.startswith("#"):
            with contextlib.suppress(OSError):
                _write(trigger, f"!{cmd.split(':', 1)[0]}")


def _stderr(message: str) -> None:
    print(f"skbpath: {message}", file=sys.stderr, flush=True)


def remove_stale(tracefs: str, say: Callable[[str], None] = _stderr) -> list[str]:
    """Remove the stale skbpath instances, one line each; the names removed."""
    removed = []
    for path, pid in stale_instances(tracefs):
        name = os.path.basename(path)
        if remove_instance(path):
            say(f"removed tracefs instance {name}, left by pid {pid}, which is gone")
            removed.append(name)
        else:
            say(f"could not remove tracefs instance {name} (pid {pid} is gone): "
                f"rmdir {path}")
    return removed


def prepare_tracefs(tracefs: str, say: Callable[[str], None] = _stderr) -> None:
    """Before tracefs mode reads anything: tracefs mounted, stale instances removed."""
    mount_tracefs(tracefs)
    remove_stale(tracefs, say)
