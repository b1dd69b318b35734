"""The differential flame graph: AFTER's call paths, coloured by how each changed against BEFORE.

The flame graph is drawn on AFTER's call paths, laid out by the flame
graph's own :func:`~skbpath.render.flamegraph.layout` (width: AFTER's time,
or calls for point-only traces).  A frame's colour says how its path changed
against BEFORE, by one of three measures:

* ``per-call``: mean inclusive time per call;
* ``total``: inclusive time of all calls (per second of trace with
  ``normalize``, so that traces of different lengths compare);
* ``calls``: number of calls (per second with ``normalize``), the measure
  left when either trace is point-only (tracepoint, tracefs).

Red is slower (more), blue faster (less), from ColorBrewer's RdBu: a
diverging palette that stays readable for red-green colour-blind users.
Saturation grows with the size of the change.  Paths only in AFTER are
hatched; a frame with paths below it that only BEFORE has gets a dashed
outline and lists them in its tooltip.
"""

from __future__ import annotations

from .changes import METRICS, Side, conventional, metric_label, pct, relative_change

# One layout, escaping and label-fitting rule, style and script for every flame graph SVG.
from .flamegraph import (
    CHAR_W,
    FONT_SIZE,
    FRAME_H,
    PAD,
    WIDTH,
    _asset,
    _esc,
    _fit,
    interactive,
    layout,
)
from .folded import stack_data
from .units import fmt_ns

PALETTE_NAME = "ColorBrewer RdBu (diverging, colour-blind safe)"
# RdBu, 11 classes: dark red (much slower) .. neutral .. dark blue (much faster).
RDBU = ("#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7",
        "#d1e5f0", "#92c5de", "#4393c3", "#2166ac", "#053061")
NEUTRAL = 5
# Upper bounds of the classes away from neutral, as the ratio of the larger
# value to the smaller, less one: under 5 % is no change, 150 % and more the darkest.
STEPS = (0.05, 0.15, 0.35, 0.75, 1.5)
DARK = {0, 1, 9, 10}  # classes that need white labels
TOP = 56
LEGEND_H = 58
ROOT_FILL = "#e0e0e0"


def change_class(change: float) -> int:
    """The RdBu class of a change: 0 (much slower) .. 5 (none) .. 10 (much faster)."""
    m = abs(change)
    level = 0
    for bound in STEPS:
        if m < bound:
            break
        level += 1
    return NEUTRAL - level if change > 0 else NEUTRAL + level


def _fmt(value: float | None, metric: str, normalize: bool) -> str:
    if value is None:
        return "-"
    if metric == "calls":
        return f"{value:,.1f}/s" if normalize else f"{value:,.0f}"
    text = fmt_ns(value)
    return f"{text}/s" if normalize and metric == "total" else text


def _gone_below(before: Side, after: Side) -> dict[tuple[str, ...], list[tuple[str, int]]]:
    """Paths only in BEFORE, under the deepest frame AFTER still has: (name, BEFORE calls)."""
    gone: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    for path, st in before.paths.items():
        if path in after.paths or (len(path) > 1 and path[:-1] not in after.paths):
            continue  # kept, or under a path that is itself gone (counted there)
        gone.setdefault(path[:-1], []).append((path[-1], st.calls))
    for rows in gone.values():
        rows.sort(key=lambda r: (-r[1], r[0]))
    return gone


def diff_svg(
    before: Side,
    after: Side,
    *,
    metric: str,
    normalize: bool,
    title: str,
    details: dict[str, str] | None = None,
    include_script: bool = True,
) -> str:
    """The differential flame graph SVG: AFTER's paths, coloured by the change of ``metric``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    details = details or {}
    stacks = stack_data(after.tree, "count" if after.points else "time")
    drawn, total, size = layout(stacks)
    funcs = after.tree.funcs
    layers = {funcs.name_of(f.id): funcs.layer[f.id] for f in funcs.funcs}
    gone = _gone_below(before, after)
    inner = WIDTH - 2 * PAD
    max_depth = max((d for _, d, _, _ in drawn), default=0)
    height = TOP + (max_depth + 1) * FRAME_H + LEGEND_H
    base_y = TOP + max_depth * FRAME_H
    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'font-family="Verdana, DejaVu Sans, sans-serif" font-size="{FONT_SIZE}">\n',
        "<defs><pattern id=\"new\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
        "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#ffffff\"/>"
        "<rect width=\"3\" height=\"6\" fill=\"#9e9e9e\"/></pattern></defs>\n",
        # The flame graph's style, and what only the diff draws.
        f"<style>\n{_asset('flamegraph.css')}"
        "g.f.gone rect{stroke:#000000;stroke-width:1.2;stroke-dasharray:3 2}\n"
        "g.f text.dark{fill:#ffffff}\n"
        "#tip{pointer-events:none}\n"
        "#tip rect{fill:#fffff0;stroke:#444444}\n"
        "</style>\n",
        f'<rect class="bg" x="0" y="0" width="{WIDTH}" height="{height}"/>\n',
        f'<text id="title" x="{WIDTH / 2:.0f}" y="24">{_esc(title)}</text>\n',
    ]
    if total <= 0:
        out.append(f'<text x="{PAD}" y="{TOP}">no samples in AFTER</text>\n</svg>\n')
        return "".join(out)
    new_paths = sum(1 for p in after.paths if p not in before.paths)
    gone_paths = sum(1 for p in before.paths if p not in after.paths)
    summary = (f"colour: change of {metric_label(metric, normalize)}, AFTER against BEFORE · "
               f"width: AFTER's {'calls' if after.points else 'time'} · "
               f"{new_paths:,} paths only in AFTER, {gone_paths:,} only in BEFORE")
    if size > len(drawn):
        summary += f" · {size - len(drawn):,} small frames not drawn"
    out.append(f'<text class="status" x="{PAD}" y="44">{_esc(summary)}</text>\n')
    out.append('<g id="frames">\n')
    scale = inner / total
    for frame, depth, x, path in drawn:
        name = frame.name
        px = PAD + x * scale
        pw = frame.value * scale
        y = base_y - depth * FRAME_H
        tip = [name]
        classes = "f"
        dark = False
        if depth == 0:
            fill = ROOT_FILL
            tip.append(f"AFTER: {_fmt(total, 'calls' if after.points else 'total', False)}")
        else:
            if name in layers:
                tip.append(f"layer: {layers[name]}")
            fill, dark, lines = _frame_colour(before, after, path, metric, normalize)
            tip.extend(lines)
            if fill == "url(#new)":
                classes += " new"
            if name in details:
                tip.append(details[name])
        below = gone.get(path)
        if below:
            classes += " gone"
            shown = ", ".join(f"{n} ({c:,})" for n, c in below[:5])
            more = f" and {len(below) - 5} more" if len(below) > 5 else ""
            tip.append(f"only in BEFORE below this frame (calls): {shown}{more}")
        label = _fit(name, pw)
        out.append(
            f'<g class="{classes}" data-n="{_esc(name)}" data-x="{x}" data-w="{frame.value}" '
            f'data-d="{depth}"><title>{_esc(chr(10).join(tip))}</title>'
            f'<rect x="{px:.2f}" y="{y}" width="{pw:.2f}" height="{FRAME_H - 1}" rx="2" '
            f'fill="{fill}"/>'
            f'<text{" class=" + chr(34) + "dark" + chr(34) if dark else ""} x="{px + 3:.2f}" '
            f'y="{y + FRAME_H - 4.5:.1f}">{_esc(label)}</text></g>\n'
        )
    out.append("</g>\n")
    out.extend(_legend(height, metric, normalize))
    out.append(f'<text id="details" class="status" x="{PAD}" y="{height - 6}"> </text>\n')
    if include_script:
        # The flame graph's zoom and search, then the diff's tooltip box.
        out.append(interactive(height - 6, total, "calls" if after.points else "ns"))
        out.append('<g id="tip" class="hide"><rect x="0" y="0" width="10" height="10" rx="3"/>'
                   "</g>\n")
        out.append(f"<script><![CDATA[\n{_asset('diff.js')}]]></script>\n")
    out.append("</svg>\n")
    return "".join(out)


def _frame_colour(
    before: Side, after: Side, path: tuple[str, ...], metric: str, normalize: bool
) -> tuple[str, bool, list[str]]:
    """Fill, whether the label needs white, and the tooltip lines of one frame."""
    a_st = after.paths.get(path)
    b_st = before.paths.get(path)
    lines = []
    if a_st is not None:
        lines.append(f"calls: {b_st.calls if b_st else 0:,} → {a_st.calls:,}")
    for m in ("per-call", "total") if metric != "calls" else ("calls",):
        b = before.value(path, m, normalize)
        a = after.value(path, m, normalize)
        label = {"per-call": "per call", "total": "total", "calls": "calls"}[m]
        if normalize and m != "per-call":
            label += " per s"
        change = "" if a is None or b is None else f" ({pct(relative_change(b, a))})"
        lines.append(f"{label}: {_fmt(b, m, normalize)} → {_fmt(a, m, normalize)}{change}")
    if a_st is not None and b_st is not None and a_st.hist.count and b_st.hist.count:
        lines.append(
            f"p50 {fmt_ns(b_st.hist.percentile(50))} → {fmt_ns(a_st.hist.percentile(50))} · "
            f"p99 {fmt_ns(b_st.hist.percentile(99))} → {fmt_ns(a_st.hist.percentile(99))}")
    if b_st is None:
        lines.append("only in AFTER")
        return "url(#new)", False, lines
    b = before.value(path, metric, normalize)
    a = after.value(path, metric, normalize)
    if a is None or b is None:
        lines.append(f"no {metric_label(metric, normalize)} to compare (no return seen)")
        return RDBU[NEUTRAL], False, lines
    cls = change_class(relative_change(b, a))
    return RDBU[cls], cls in DARK, lines


def _legend(height: int, metric: str, normalize: bool) -> list[str]:
    """Swatches from much slower to much faster, the two markers, and the palette's name."""
    y = height - LEGEND_H + 10
    sw = 44
    out = ['<g id="legend" font-size="11">\n']
    # Each swatch is labelled with the least change it stands for.
    labels = [f"+{100 * s:.0f}%" for s in reversed(STEPS)] + ["±5%"] \
        + [f"−{100 * -conventional(-s):.0f}%" for s in STEPS]
    out.append(f'<text x="{PAD}" y="{y + 11}">slower</text>\n')
    x0 = PAD + 46
    for i, colour in enumerate(RDBU):
        x = x0 + i * sw
        out.append(f'<rect x="{x}" y="{y}" width="{sw - 2}" height="14" fill="{colour}" '
                   'stroke="#999999" stroke-width="0.5"/>\n')
        text_fill = "#ffffff" if i in DARK else "#000000"
        out.append(f'<text x="{x + (sw - 2) / 2:.0f}" y="{y + 11}" text-anchor="middle" '
                   f'fill="{text_fill}">{_esc(labels[i])}</text>\n')
    x = x0 + len(RDBU) * sw + 4
    out.append(f'<text x="{x}" y="{y + 11}">faster</text>\n')
    x += 52
    out.append(f'<rect x="{x}" y="{y}" width="30" height="14" fill="url(#new)" '
               'stroke="#999999" stroke-width="0.5"/>\n'
               f'<text x="{x + 34}" y="{y + 11}">only in AFTER</text>\n')
    x += 34 + round(len("only in AFTER") * CHAR_W * 0.95) + 12
    out.append(f'<rect x="{x:.0f}" y="{y}" width="30" height="14" fill="{RDBU[NEUTRAL]}" '
               'stroke="#000000" stroke-width="1.2" stroke-dasharray="3 2"/>\n'
               f'<text x="{x + 34:.0f}" y="{y + 11}">paths below only in BEFORE</text>\n')
    note = f"palette: {PALETTE_NAME}; colour by change of {metric_label(metric, normalize)}"
    out.append(f'<text class="status" x="{PAD}" y="{y + 30}">{_esc(note)}</text>\n')
    out.append("</g>\n")
    return out
