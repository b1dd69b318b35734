"""Dropped packets: which reason, and which function dropped them.

The reason is kfree_skb_reason's second argument (the catalog's ``aux_arg``).
Its names come from the traced kernel's BTF (``enum skb_drop_reason``) at
trace time and are stored in the trace header: never a hard-coded table,
since the enum changes between kernels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from skbpath.tracer.kernel.btf import Btf
from skbpath.tracer.kernel.symbols import frame_function
from skbpath.tracer.model.calls import Call
from skbpath.tracer.traces.functions import FuncTable

REASON_ENUM = "skb_drop_reason"
REASON_PREFIX = "SKB_DROP_REASON_"
# Values of the enum that are not drops, where the kernel has them (6.12's
# __kfree_skb_reason treats SKB_CONSUMED as a consume): by name, from BTF.
NOT_DROPS = frozenset({"SKB_CONSUMED", "SKB_NOT_DROPPED_YET"})


def drop_reason_names(btf: Btf | None) -> dict[int, str]:
    """Drop reason values to names (``NO_SOCKET``) from the kernel's BTF, if it has the enum."""
    if btf is None:
        return {}
    values = btf.enum_values(REASON_ENUM) or {}
    return {v: n.removeprefix(REASON_PREFIX) for v, n in sorted(values.items())}


@dataclass(frozen=True)
class DropKey:
    """What a drop is counted by: its reason code, the stack taken, and the enclosing call."""

    reason: int
    stack_id: int
    parent: int  # function id of the enclosing traced call, or -1


class DropCounter:
    """Counts the drop calls (catalog ``drop = true``) of each closed root."""

    def __init__(self, funcs: FuncTable) -> None:
        self.funcs = funcs
        self.enabled = any(funcs.drops)
        self.counts: Counter[DropKey] = Counter()

    def add_root(self, root: Call) -> None:
        """Count the drops in one closed root call tree."""
        if not self.enabled:
            return
        drops_at = self.funcs.drops_at
        for c in root.walk():
            if drops_at(c.func):
                parent = c.parent.func if c.parent is not None else -1
                self.counts[DropKey(c.aux, c.stack_id, parent)] += 1


@dataclass(frozen=True)
class DropRow:
    """One line of the drop report."""

    reason: str
    function: str
    count: int


def dropped_by(key: DropKey, stacks: dict[int, list[str]], funcs: FuncTable) -> str:
    """The function that dropped: the caller in the kernel stack, else the enclosing call."""
    frames = stacks.get(key.stack_id) or []
    if len(frames) > 1:
        # frames[0] is the drop function itself.
        return frame_function(frames[1])
    if key.parent >= 0:
        return funcs.name_of(key.parent) + " (enclosing call)"
    return "?"


def drop_report(
    counter: DropCounter, reasons: dict[int, str], stacks: dict[int, list[str]]
) -> list[DropRow]:
    """Drops grouped by reason name and dropping function, most frequent first."""
    rows: Counter[tuple[str, str]] = Counter()
    for key, n in counter.counts.items():
        reason = reasons.get(key.reason, f"reason {key.reason}")
        if reason in NOT_DROPS:
            continue
        rows[(reason, dropped_by(key, stacks, counter.funcs))] += n
    return [DropRow(r, f, n) for (r, f), n in sorted(rows.items(), key=lambda x: (-x[1], x[0]))]
