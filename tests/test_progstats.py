"""Reading the kernel's per-program miss counts (tracer/record/bpf/progstats.py)."""

from __future__ import annotations

import ctypes.util

import pytest
from skbpath.tracer.record.bpf import progstats


def test_libc_is_looked_up_once_for_every_program(monkeypatch: pytest.MonkeyPatch) -> None:
    # find_library runs ldconfig in a subprocess: once per program, every two
    # seconds, it kept a lab tracer from reading its ring buffer.
    looked: list[str] = []
    real = ctypes.util.find_library

    def counting(name: str) -> str | None:
        looked.append(name)
        return real(name)

    monkeypatch.setattr(ctypes.util, "find_library", counting)
    progstats._libc.cache_clear()
    # Bad descriptors: each read fails (EBADF) and the program is left out.
    assert progstats.misses_by_program((f"p{i}", -1) for i in range(50)) == {}
    assert looked == ["c"]
    with pytest.raises(OSError):
        progstats.prog_info(-1)
    assert looked == ["c"]
