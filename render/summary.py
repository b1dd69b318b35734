"""``skbpath replay --summary`` as plain lines: a screenful that ends with what to run next."""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Sequence

from skbpath.tracer.model.summary import HotPath, Summary

from .units import fmt_ns

PATH_WIDTH = 50


def _path_text(hot: HotPath, width: int = PATH_WIDTH) -> str:
    """``TX __sys_sendto › … › tcp_write_xmit``: the root and as many last calls as fit."""
    names = list(hot.names)
    text = " › ".join(names)
    keep = len(names) - 1
    while len(text) > width - len(hot.direction) - 1 and keep > 1:
        keep -= 1
        text = " › ".join([names[0], "…", *names[-keep:]])
    if len(text) > width - len(hot.direction) - 1:
        text = text[: width - len(hot.direction) - 2] + "…"
    return f"{hot.direction} {text}"


def _lost_text(s: Summary) -> str:
    lost = {k: v for k, v in s.lost.items() if v}
    text = ("events lost: " + ", ".join(f"{k} {v:,d}" for k, v in lost.items())
            if lost else "events lost: none")
    if not s.lost:
        text = "events lost: not recorded (no stats in the trace)"
    extra = []
    if s.lost_returns:
        extra.append(f"calls whose return was never seen {s.lost_returns:,d}"
                     + (f", {s.open_at_stop:,d} of them still running at the stop"
                        if s.open_at_stop else ""))
    if s.filtered:
        extra.append(f"filtered out in the kernel {s.filtered:,d}")
    return text + (f" ({'; '.join(extra)})" if extra else "")


def summary_lines(s: Summary, svgs: Sequence[str] = ()) -> list[str]:
    """The summary, one string per line, at most about 30 lines."""
    trace = shlex.quote(s.trace)
    head = f"skbpath: {s.trace}: kernel {s.kernel}, attach {s.attach}"
    out = [head]
    if s.recorded_with:
        # How it was recorded can be long (the lab names kernel, build, NICs, traffic).
        out += textwrap.wrap(s.recorded_with, 88, initial_indent="  ", subsequent_indent="    ",
                             break_on_hyphens=False)[:3]
    filters = ", ".join(f"{k}={v}" for k, v in s.filters.items()) or "none"
    if s.aggregate_paths is not None:
        out.append(f"  {s.events:,d} calls counted in the kernel on {s.aggregate_paths:,d} call "
                   f"paths over {fmt_ns(s.duration_ns)}; filters: {filters}")
        out.append("  no journeys: recorded with --aggregate")
    else:
        out.append(f"  {s.events:,d} events over {fmt_ns(s.duration_ns)}; filters: {filters}")
        out.append("  " + "; ".join(f"{p}: {c.journeys:,d} journeys, {c.skbs:,d} skbs"
                                    for p, c in s.paths.items()) if s.paths else "  no journeys")
    out.append("  " + _lost_text(s))
    if s.hot:
        what = "self time" if s.by_time else "calls"
        out.append("")
        out.append(f"{'hottest call paths (' + what + ')':<{PATH_WIDTH + 2}}"
                   f"{'calls':>9} {'self':>9} {'p50':>9} {'p99':>9}")
        for hot in s.hot:
            out.append(f"  {_path_text(hot):<{PATH_WIDTH}}{hot.calls:>9,d} "
                       f"{fmt_ns(hot.self_ns) if s.by_time else '-':>9} "
                       f"{fmt_ns(hot.p50_ns) if hot.p50_ns is not None else '-':>9} "
                       f"{fmt_ns(hot.p99_ns) if hot.p99_ns is not None else '-':>9}")
    if s.latency:
        out.append("")
        out.append(f"{'per-packet stack latency':<{PATH_WIDTH + 2}}"
                   f"{'packets':>9} {'':>9} {'p50':>9} {'p99':>9}")
        for label, n, p50, p99 in s.latency:
            out.append(f"  {label:<{PATH_WIDTH}}{n:>9,d} {'':>9} {fmt_ns(p50):>9} {fmt_ns(p99):>9}")
    out.append("")
    if s.drops:
        out.append("drops by reason: " + ", ".join(f"{r} {n:,d}" for r, n in s.drops))
    else:
        out.append("drops: none")
    if svgs:
        out.append("pictures: " + "  ".join(svgs))
    out.append("")
    out.append("next:")
    nexts = [(f"skbpath replay {trace}", "the full call tree and function table")]
    slowest = ((f"skbpath replay {trace} --skb {s.slowest_journey}",
                "the slowest packet, step by step") if s.slowest_journey is not None else None)
    # Three at most: the latency view first, the drops where there are some.
    if s.latency:
        nexts.append((f"skbpath replay {trace} --latency", "per-packet latency by layer boundary"))
    elif slowest:
        nexts.append(slowest)
        slowest = None
    if s.drops:
        nexts.append((f"skbpath replay {trace} --drops", "drops by reason and by dropper"))
    elif slowest:
        nexts.append(slowest)
    elif s.hottest_function:
        nexts.append((f"skbpath explain {s.hottest_function}", "what the hottest function does"))
    width = max(len(cmd) for cmd, _ in nexts)
    out += [f"  {cmd:<{width}}  # {why}" for cmd, why in nexts]
    return out
