"""Kernel stacks taken from BPF programs, without the BPF machinery's own frames.

A stack taken in an fentry program starts inside the program and its
trampoline, and every fentry/fexit-traced function further down shows up
twice: its body, the trampoline, then the call at its entry (``F+0x5``)
that leads into the trampoline.  Readers want the kernel's call chain, so
those frames go:

* leading ``bpf_prog_*`` frames (the program that took the stack);
* every ``bpf_trampoline_*`` frame;
* the entry call after a trampoline when the frame before it is the same
  function's body (when it is not, as at the top of an fentry stack, the
  entry call is the traced function itself, and stays).
"""

from __future__ import annotations

PROG_PREFIX = "bpf_prog_"
TRAMPOLINE_PREFIX = "bpf_trampoline_"


def frame_function(frame: str) -> str:
    """``dev_hard_start_xmit+0x63 [kernel]`` -> ``dev_hard_start_xmit``."""
    return frame.split("+", 1)[0].split(" ", 1)[0]


def strip_leading(frames: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """``frames`` without leading frames starting with ``prefixes``; the last frame stays."""
    i = 0
    while i < len(frames) - 1 and frames[i].startswith(prefixes):
        i += 1
    return frames[i:]


def clean_stack(frames: list[str]) -> list[str]:
    """``frames`` (innermost first) without BPF program and trampoline frames."""
    i = 0
    while i < len(frames) and frames[i].startswith(PROG_PREFIX):
        i += 1
    out: list[str] = []
    skip_entry_of: str | None = None
    for frame in frames[i:]:
        if frame.startswith(TRAMPOLINE_PREFIX):
            # The next frame is the entry call of the function whose body (if
            # any) is the last frame kept.
            skip_entry_of = frame_function(out[-1]) if out else None
            continue
        if skip_entry_of is not None and frame_function(frame) == skip_entry_of:
            skip_entry_of = None
            continue
        skip_entry_of = None
        out.append(frame)
    return out
