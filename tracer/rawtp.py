"""tracepoint mode, pure: which tracepoints to attach BPF to, and where their arguments are.

The tracepoints are tracefs mode's (:data:`tracer.tracefs_parse.TRACEPOINTS`)
and the function table has the same shape (names ``group:event``), so the
model, renderers and journeys treat both modes alike.  The difference is
that BPF runs at each hit and reads the real skb pointer, the drop reason
and a kernel stack itself.

Where the skb and the drop reason are among a tracepoint's arguments is read
from the kernel's BTF: each tracepoint ``<event>`` has a typedef
``btf_trace_<event>``, a pointer to ``void (void *__data, <TP_PROTO args>)``.
A raw tracepoint program sees the TP_PROTO arguments, so positions are
counted from the parameter after ``__data``.  Nothing is assumed from the
kernel version: ``kfree_skb`` gained and moved arguments over the years.
"""

from __future__ import annotations

from .btf import Btf
from .functions import FuncInfo, FuncTable
from .resolve import Skipped
from .stackframes import strip_leading
from .tracefs_parse import TRACEPOINTS, Tracepoint

SKB_TYPE = "struct sk_buff *"
REASON_TYPE = "enum skb_drop_reason"
TYPEDEF_PREFIX = "btf_trace_"


def tracepoint_args(btf: Btf, event: str) -> list[str] | None:
    """The TP_PROTO argument types of tracepoint ``event`` (no ``__data``); None if absent."""
    params = btf.typedef_func_params(TYPEDEF_PREFIX + event)
    if not params:
        return None
    return params[1:]


def _position(args: list[str], type_name: str) -> int:
    """1-based position of the first argument of this type, or 0."""
    for i, arg in enumerate(args):
        if arg == type_name:
            return i + 1
    return 0


def tracepoint_table(btf: Btf) -> tuple[FuncTable, list[Skipped]]:
    """The FuncTable for tracepoint mode: tracepoints present in ``btf``, in path order.

    ``skb_arg`` and ``aux_arg`` are 1-based positions among the tracepoint's
    arguments (the BPF program reads ``ctx->args[pos - 1]``); ``symbols``
    holds the raw tracepoint name to attach to.
    """
    funcs: list[FuncInfo] = []
    skipped: list[Skipped] = []
    for tp in TRACEPOINTS:
        args = tracepoint_args(btf, tp.event)
        if args is None:
            skipped.append(Skipped(tp.name, "no such tracepoint on this kernel (no BTF typedef)"))
            continue
        skb_arg = _position(args, SKB_TYPE) if tp.skb else 0
        if tp.skb and not skb_arg:
            skipped.append(Skipped(tp.name, f"no {SKB_TYPE} argument in {', '.join(args)}"))
            continue
        funcs.append(_info(tp, len(funcs), skb_arg, _position(args, REASON_TYPE) if tp.drop
                           else 0))
    return FuncTable(funcs), skipped


def _info(tp: Tracepoint, func_id: int, skb_arg: int, aux_arg: int) -> FuncInfo:
    return FuncInfo(
        id=func_id,
        name=tp.name,
        path=tp.path,
        layer=tp.layer,
        skb_arg=skb_arg,
        stack=tp.stack,
        frees=tp.frees,
        drop=tp.drop,
        aux_arg=aux_arg,
        symbols=(tp.event,),
    )


# Frames of the tracing machinery above the code that hit the tracepoint
# (BPF program, bpf_trace_run<n>, __bpf_trace_<event>, __traceiter_<event>).
_TRACING_FRAMES = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_",
                   "trace_call_bpf", "perf_trace_")


def strip_tracing_frames(frames: list[str]) -> list[str]:
    """Drop the leading tracing frames, so frames[0] is the function with the tracepoint.

    tracer/drops.py then reads the dropper in frames[1], as in the other modes.
    """
    return strip_leading(frames, _TRACING_FRAMES)
