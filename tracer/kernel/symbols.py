"""Kernel symbol names and stack frames: the one place that knows how they are spelt.

Symbols.  A C function ``foo`` can appear in the kernel under several
symbols: ``foo`` itself, GCC/LLVM clones that run its whole body
(``foo.constprop.0``, ``foo.isra.0``, ``foo.part.0``, ``foo.llvm.123`` and
chains of these), and split-off pieces that do not (``foo.cold``,
``foo.lto_priv.0`` and whatever suffix a compiler invents next).  Two
questions, two functions:

* :func:`base_name`: which C function is this code from?  C identifiers
  have no dots, so everything from the first dot on is a compiler suffix
  (used to explain symbols and frames: the atlas, DWARF lookups);
* :func:`clone_of`: which function does this symbol run *all* of?  Only the
  clone suffixes above qualify (used to choose what to attach to: a probe on
  ``foo.cold`` would see only the unlikely path).

Frames.  A stack frame is ``sym+0x1a [module]`` as bcc's ``ksym`` prints it,
or ``sym+0x1a/0x40 [module]`` as tracefs does; :func:`parse_frame` reads
both (and a bare symbol or address) into a :class:`Frame`.

Stacks.  A stack taken in an fentry program starts inside the program and
its trampoline, and every fentry/fexit-traced function further down shows up
twice: its body, the trampoline, then the call at its entry (``F+0x5``) that
leads into the trampoline.  Readers want the kernel's call chain, so
:func:`clean_stack` drops:

* leading ``bpf_prog_*`` frames (the program that took the stack);
* every ``bpf_trampoline_*`` frame;
* the entry call after a trampoline when the frame before it is the same
  function's body (when it is not, as at the top of an fentry stack, the
  entry call is the traced function itself, and stays).

Stacks taken at a tracepoint start in the tracing machinery instead, which
:func:`strip_bpf_tracepoint_frames` and :func:`strip_tracefs_frames` drop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROG_PREFIX = "bpf_prog_"
TRAMPOLINE_PREFIX = "bpf_trampoline_"

# Frames of the tracing machinery above the code that hit a tracepoint, when
# BPF took the stack (BPF program, bpf_trace_run<n>, __bpf_trace_<event>,
# __traceiter_<event>) ...
BPF_TRACEPOINT_FRAMES = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_",
                         "trace_call_bpf", "perf_trace_")
# ... and when a tracefs stacktrace trigger did.
TRACEFS_FRAMES = ("trace_event_", "event_triggers_", "__traceiter_", "__trace_", "trace_call_")

# Suffix chains of clones that run the whole body of their function.
_CLONE = re.compile(r"^([^.]+)(?:\.(?:constprop|isra|part|llvm)\.\d+)+$")


@dataclass(frozen=True)
class Frame:
    """One kernel stack frame: ``symbol+0x<offset> [module]``.

    ``offset`` is None when the frame has none (a bare symbol or address);
    ``module`` is None when untagged (bcc tags built-in code ``kernel``).
    """

    symbol: str
    offset: int | None = None
    module: str | None = None

    def __str__(self) -> str:
        """The frame as skbpath stores it: ``sym+0x1a [module]``, without tracefs' ``/size``."""
        off = f"+0x{self.offset:x}" if self.offset is not None else ""
        mod = f" [{self.module}]" if self.module is not None else ""
        return f"{self.symbol}{off}{mod}"


def parse_frame(frame: str) -> Frame:
    """Read a frame: ``sym+0x1a/0x40 [mod]``, ``sym+0x1a [mod]``, ``sym+0x1a``, ``sym``.

    Never fails: text that is not ``sym+0x<hex>`` is a bare symbol.
    """
    head, _, tail = frame.strip().partition(" ")
    tail = tail.strip()
    module = (tail[1:-1] if tail.startswith("[") and tail.endswith("]") else tail) or None
    symbol, plus, off = head.partition("+")
    offset = None
    if plus:
        off = off.split("/", 1)[0]
        if off[:2].lower() == "0x":
            try:
                offset = int(off[2:], 16)
            except ValueError:
                offset = None
    return Frame(symbol, offset, module)


def frame_function(frame: str) -> str:
    """``dev_hard_start_xmit+0x63 [kernel]`` -> ``dev_hard_start_xmit`` (clone suffixes kept)."""
    return parse_frame(frame).symbol


def normalise_frame(frame: str) -> str:
    """``dev_hard_start_xmit+0x16e/0x1d0 [veth]`` -> ``dev_hard_start_xmit+0x16e [veth]``."""
    return str(parse_frame(frame))


def base_name(name: str) -> str:
    """The C function a symbol or frame is from: module, offset and compiler suffixes stripped.

    ``"napi_gro_complete.constprop.0+0x145 [kernel]"`` -> ``"napi_gro_complete"``,
    ``"__napi_poll.cold"`` -> ``"__napi_poll"``.  Tracepoint names
    (``skb:kfree_skb``) have no dots and stay as they are.
    """
    return parse_frame(name).symbol.split(".", 1)[0]


def clone_of(symbol: str) -> str | None:
    """The function whose whole body ``symbol`` runs, or None.

    ``foo`` -> ``foo``; ``foo.constprop.0.isra.0`` -> ``foo``; ``foo.cold``,
    ``foo.lto_priv.0`` or ``foo.bar.isra.0`` -> None (a piece of a function,
    or not a C function's clone at all).
    """
    if "." not in symbol:
        return symbol
    m = _CLONE.match(symbol)
    return m.group(1) if m else None


def strip_leading(frames: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """``frames`` without leading frames starting with ``prefixes``; the last frame stays."""
    i = 0
    while i < len(frames) - 1 and frames[i].startswith(prefixes):
        i += 1
    return frames[i:]


def strip_bpf_tracepoint_frames(frames: list[str]) -> list[str]:
    """A stack BPF took at a raw tracepoint, from the function with the tracepoint down.

    tracer/model/drops.py then reads the dropper in frames[1], as in the other modes.
    """
    return strip_leading(frames, BPF_TRACEPOINT_FRAMES)


def strip_tracefs_frames(frames: list[str]) -> list[str]:
    """A stack a tracefs trigger took, from the function with the tracepoint down."""
    return strip_leading(frames, TRACEFS_FRAMES)


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
