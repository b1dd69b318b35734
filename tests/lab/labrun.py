"""Run the lab from a test: one boot, one live trace, replayed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import lab_unavailable
from tracer.lab import DEFAULT_KERNEL
from tracer.replay import Replay, replay


def check_nesting(r: Replay) -> int:
    """Assert that no journey step took longer than its enclosing step; return how many pairs."""
    checked = 0
    for j in r.model.journey_list:
        open_at: dict[int, int | None] = {}
        for s in j.steps:
            parent = open_at.get(s.depth - 1) if s.depth else None
            if parent is not None and s.inclusive is not None:
                assert s.inclusive <= parent, (j.id, s.func)
                checked += 1
            open_at[s.depth] = s.inclusive
    return checked


def boot_and_trace(
    tmp_path_factory: pytest.TempPathFactory,
    traffic: str,
    *trace_opts: str,
    lab_opts: tuple[str, ...] = (),
) -> Replay:
    """Boot the lab with ``skbpath lab --traffic TRAFFIC`` and replay the trace it wrote.

    ``trace_opts`` are passed to ``skbpath trace`` in the guest; ``lab_opts``
    to ``skbpath lab`` (``--topology forward``, ``--nic virtio``).
    """
    if os.geteuid() != 0:
        lab_unavailable("the lab needs root")
    for tool in ("qemu-system-x86_64", "busybox"):
        if not shutil.which(tool):
            lab_unavailable(f"{tool} is not installed")
    if not os.path.exists(DEFAULT_KERNEL):
        lab_unavailable(f"{DEFAULT_KERNEL} is not installed")
    out = tmp_path_factory.mktemp("lab") / "lab.skbtrace"
    opts = [f"--trace-opt={o}" for o in trace_opts]
    proc = subprocess.run(
        [sys.executable, "-m", "tracer.cli", "lab", "--traffic", traffic, "-o", str(out),
         *lab_opts, *opts],
        capture_output=True, text=True, timeout=1200, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return replay(str(out))
