"""tracepoint mode, pure: which tracepoints to attach BPF to, and where their arguments are.

The tracepoints are tracefs mode's (``probes/tracepoints.toml``) and the
function table has the same shape (names ``group:event``), so the
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

from skbpath.probes.catalog import load_tracepoints
from skbpath.tracer.kernel.btf import Btf
from skbpath.tracer.record.resolve import Skipped
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

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
    for tp in load_tracepoints():
        args = tracepoint_args(btf, tp.event)
        if args is None:
            skipped.append(Skipped(tp.name, "no such tracepoint on this kernel (no BTF typedef)"))
            continue
        skb_arg = _position(args, SKB_TYPE) if tp.skb else 0
        if tp.skb and not skb_arg:
            skipped.append(Skipped(tp.name, f"no {SKB_TYPE} argument in {', '.join(args)}"))
            continue
        aux_arg = _position(args, REASON_TYPE) if tp.drop else 0
        funcs.append(FuncInfo.resolved(tp.spec(skb_arg, aux_arg), len(funcs), (tp.event,)))
    return FuncTable(funcs), skipped

