"""A self-contained, interactive flame graph SVG, written from scratch.

The ideas are Brendan Gregg's flamegraph.pl (and inferno's port): stacks
are merged into a tree of frames, each frame as wide as its value, children
stacked on their parent in alphabetical order.  Everything is drawn in the
static SVG (labels and ``<title>`` tooltips), so the graph is fully readable
with JavaScript off; the optional script only adds zoom and search.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping

from tracer.calltree import CallTree

from .colors import layer_color
from .folded import stack_calls, stack_data
from .units import fmt_ns

WIDTH = 1200  # px
PAD = 10  # left and right margin
FRAME_H = 16
FONT_SIZE = 12
CHAR_W = 0.59 * FONT_SIZE  # average glyph width of Verdana, as flamegraph.pl assumes
MIN_FRACTION = 0.001  # frames narrower than 0.1 % of the total are not drawn
TOP = 56  # title and controls
BOTTOM = 36  # status lines
ROOT_NAME = "all"
_DIRECTIONS = {"TX": 0, "RX": 1}


class _Frame:
    __slots__ = ("name", "value", "children")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self.children: dict[str, _Frame] = {}


def _esc(s: str) -> str:
    """Escape text for XML content and double-quoted attributes.

    Control characters other than tab and newline are not allowed in XML 1.0
    at all, so they are replaced rather than escaped.
    """
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    if any(ord(c) < 0x20 and c not in "\t\n" for c in s):
        s = "".join("\ufffd" if ord(c) < 0x20 and c not in "\t\n" else c for c in s)
    return s


def _fit(name: str, px: float) -> str:
    """The label that fits in ``px``: the name, truncated with "..", or nothing."""
    chars = int((px - 6) / CHAR_W)
    if chars < 3:
        return ""
    if len(name) <= chars:
        return name
    return name[: chars - 2] + ".."


def _fmt_value(value: int, unit: str) -> str:
    return fmt_ns(value) if unit == "ns" else f"{value:,} {unit}"


def _build(stacks: list[tuple[list[str], int]]) -> tuple[_Frame, int]:
    """The merged frame tree and its number of frames."""
    root = _Frame(ROOT_NAME)
    size = 1
    for frames, value in stacks:
        if value <= 0:
            continue
        root.value += value
        node = root
        # One dict lookup per frame: linear in the total stack length.
        for name in frames:
            child = node.children.get(name)
            if child is None:
                child = node.children[name] = _Frame(name)
                size += 1
            child.value += value
            node = child
    return root, size


def _order(node: _Frame, depth: int) -> list[_Frame]:
    # Directions first (TX before RX), then alphabetical as in flamegraph.pl,
    # which also makes the layout independent of input order.
    if depth == 0:
        return sorted(node.children.values(), key=lambda f: (_DIRECTIONS.get(f.name, 2), f.name))
    return [node.children[k] for k in sorted(node.children)]


def flamegraph_svg(
    stacks: list[tuple[list[str], int]],
    *,
    layers: dict[str, str],
    title: str,
    unit: str = "ns",
    details: dict[str, str] | None = None,
    include_script: bool = True,
    calls: Mapping[tuple[str, ...], int] | None = None,
) -> str:
    """Render (frames, value) stacks as one self-contained flame graph SVG.

    ``layers`` maps a function name to its layer (which picks the colour);
    ``details`` adds per-function text to the tooltips; ``calls`` maps a
    frame path (without the "all" root) to its call count.  Frames below
    0.1 % of the total are left out and counted in the footer.  With
    ``include_script`` False the SVG is static (zoom and search need it).
    """
    details = details or {}
    # The frame tree is ~1M small objects for 100k stacks; the cyclic GC
    # re-scanning them while they are built costs more than the build itself.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        root, size = _build(stacks)
    finally:
        if gc_was_enabled:
            gc.enable()
    total = root.value
    inner = WIDTH - 2 * PAD
    min_value = total * MIN_FRACTION

    # Lay out depth first; each entry is (frame, depth, x offset in value units, path).
    drawn: list[tuple[_Frame, int, int, tuple[str, ...]]] = []
    if total > 0:
        work: list[tuple[_Frame, int, int, tuple[str, ...]]] = [(root, 0, 0, ())]
        while work:
            frame, depth, x, path = work.pop()
            drawn.append((frame, depth, x, path))
            cx = x
            placed = []
            for child in _order(frame, depth):
                # Children are narrower than their parent: skip the whole subtree.
                if child.value >= min_value:
                    placed.append((child, depth + 1, cx, path + (child.name,)))
                cx += child.value
            work.extend(reversed(placed))
    max_depth = max((d for _, d, _, _ in drawn), default=0)
    height = TOP + (max_depth + 1) * FRAME_H + BOTTOM
    base_y = TOP + max_depth * FRAME_H  # y of the "all" frame, at the bottom

    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'font-family="Verdana, DejaVu Sans, sans-serif" font-size="{FONT_SIZE}">\n',
        "<style>\n"
        "rect.bg{fill:#f8f8f4}\n"
        "g.f rect{stroke:#ffffff;stroke-width:0.5}\n"
        "g.f text{fill:#000000;pointer-events:none}\n"
        "g.f:hover rect{stroke:#000000;stroke-width:1}\n"
        "g.f.match rect{fill:#e600e6}\n"
        "g.f.parent{opacity:0.5}\n"
        ".hide{display:none}\n"
        ".ctl{cursor:pointer;fill:#1f4e9c}\n"
        "#title{font-size:17px;text-anchor:middle}\n"
        ".status{fill:#444444}\n"
        "</style>\n",
        f'<rect class="bg" x="0" y="0" width="{WIDTH}" height="{height}"/>\n',
        f'<text id="title" x="{WIDTH / 2:.0f}" y="24">{_esc(title)}</text>\n',
    ]
    if total <= 0:
        out.append(f'<text x="{PAD}" y="{TOP}">no samples</text>\n</svg>\n')
        return "".join(out)

    drawn_count = len(drawn)
    omitted = size - drawn_count
    summary = f"total {_fmt_value(total, unit)} · {drawn_count:,} frames"
    if omitted:
        noun = "frame" if omitted == 1 else "frames"
        summary += f" · {omitted:,} {noun} below {MIN_FRACTION:.1%} of the total not drawn"
    out.append(f'<text class="status" x="{PAD}" y="44">{_esc(summary)}</text>\n')
    out.append('<g id="frames">\n')
    scale = inner / total
    for frame, depth, x, path in drawn:
        name = frame.name
        px = PAD + x * scale
        pw = frame.value * scale
        y = base_y - depth * FRAME_H
        layer = layers.get(name, "?")
        tip = [name]
        if depth > 0 and name in layers:
            tip.append(f"layer: {layer}")
        if calls is not None and depth > 0 and path in calls:
            tip.append(f"calls: {calls[path]:,}")
        tip.append(f"{_fmt_value(frame.value, unit)} ({100 * frame.value / total:.2f}% of total)")
        if depth > 0 and name in details:
            tip.append(details[name])
        out.append(
            f'<g class="f" data-n="{_esc(name)}" data-x="{x}" data-w="{frame.value}" '
            f'data-d="{depth}"><title>{_esc(chr(10).join(tip))}</title>'
            f'<rect x="{px:.2f}" y="{y}" width="{pw:.2f}" height="{FRAME_H - 1}" rx="2" '
            f'fill="{layer_color(layer)}"/>'
            f'<text x="{px + 3:.2f}" y="{y + FRAME_H - 4.5:.1f}">{_esc(_fit(name, pw))}</text>'
            "</g>\n"
        )
    out.append("</g>\n")
    # Status line the script fills on hover; empty (and harmless) without it.
    out.append(f'<text id="details" class="status" x="{PAD}" y="{height - 12}"> </text>\n')
    if include_script:
        out.append(
            f'<text id="unzoom" class="ctl hide" x="{PAD}" y="24">Reset zoom</text>\n'
            f'<text id="search" class="ctl" x="{WIDTH - PAD}" y="24" '
            'text-anchor="end">Search</text>\n'
            f'<text id="matched" class="status" x="{WIDTH - PAD}" y="{height - 12}" '
            'text-anchor="end"> </text>\n'
        )
        cfg = {"total": total, "pad": PAD, "inner": inner, "charw": CHAR_W, "unit": unit}
        out.append("<script><![CDATA[\n")
        out.append(_SCRIPT.replace("__CFG__", json.dumps(cfg, sort_keys=True)))
        out.append("]]></script>\n")
    out.append("</svg>\n")
    return "".join(out)


def calltree_flamegraph(
    tree: CallTree,
    *,
    weight: str = "time",
    title: str,
    details: dict[str, str] | None = None,
    include_script: bool = True,
) -> str:
    """A flame graph of a call tree: TX and RX roots side by side, calls in the tooltips.

    ``weight`` is "time" (self time in ns) or "count" (calls ending at each path).
    """
    stacks = stack_data(tree, weight)
    funcs = tree.funcs
    layers = {funcs.name_of(f.id): funcs.colour[f.id] for f in funcs.funcs}
    unit = "ns" if weight == "time" else "calls"
    return flamegraph_svg(
        stacks,
        layers=layers,
        title=title,
        unit=unit,
        details=details,
        include_script=include_script,
        calls=stack_calls(tree),
    )


# The interactive part: zoom on click, reset, search with a match percentage.
# Plain ES5 so that any SVG viewer with scripting runs it.
_SCRIPT = r"""(function () {
  "use strict";
  var CFG = __CFG__;
  var frames = Array.prototype.slice.call(document.querySelectorAll("g.f"));
  var details = document.getElementById("details");
  var matched = document.getElementById("matched");
  var unzoomBtn = document.getElementById("unzoom");
  var searchBtn = document.getElementById("search");
  var zoomed = null;
  var term = null;

  function num(g, a) { return +g.getAttribute(a); }
  function fit(name, px) {
    var chars = Math.floor((px - 6) / CFG.charw);
    if (chars < 3) { return ""; }
    return name.length <= chars ? name : name.slice(0, chars - 2) + "..";
  }
  function place(g, x, w) {
    var r = g.querySelector("rect"), t = g.querySelector("text");
    r.setAttribute("x", x.toFixed(2));
    r.setAttribute("width", w.toFixed(2));
    t.setAttribute("x", (x + 3).toFixed(2));
    t.textContent = fit(g.getAttribute("data-n"), w);
  }
  function original(g) {
    var s = CFG.inner / CFG.total;
    place(g, CFG.pad + num(g, "data-x") * s, num(g, "data-w") * s);
  }
  function reset() {
    zoomed = null;
    frames.forEach(function (g) {
      g.classList.remove("hide");
      g.classList.remove("parent");
      original(g);
    });
    unzoomBtn.classList.add("hide");
  }
  function zoom(z) {
    var zx = num(z, "data-x"), zw = num(z, "data-w"), zd = num(z, "data-d");
    if (zd === 0) { reset(); return; }
    var s = CFG.inner / zw;
    zoomed = z;
    frames.forEach(function (g) {
      var x = num(g, "data-x"), w = num(g, "data-w"), d = num(g, "data-d");
      g.classList.remove("hide");
      g.classList.remove("parent");
      if (d <= zd && x <= zx && x + w >= zx + zw) {
        // The zoomed frame and its ancestors span the full width.
        place(g, CFG.pad, CFG.inner);
        if (g !== z) { g.classList.add("parent"); }
      } else if (d > zd && x >= zx && x + w <= zx + zw) {
        place(g, CFG.pad + (x - zx) * s, w * s);
      } else {
        g.classList.add("hide");
      }
    });
    unzoomBtn.classList.remove("hide");
  }
  function clearSearch() {
    term = null;
    frames.forEach(function (g) { g.classList.remove("match"); });
    matched.textContent = " ";
    searchBtn.textContent = "Search";
  }
  function search(t) {
    if (!t) { clearSearch(); return; }
    var re = null;
    try { re = new RegExp(t); } catch (e) { re = null; }
    var spans = [];
    term = t;
    frames.forEach(function (g) {
      var n = g.getAttribute("data-n");
      var hit = re ? re.test(n) : n.indexOf(t) >= 0;
      if (hit) {
        g.classList.add("match");
        spans.push([num(g, "data-x"), num(g, "data-x") + num(g, "data-w")]);
      } else {
        g.classList.remove("match");
      }
    });
    // The union of the matched spans, so a match nested in a match counts once.
    spans.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    var sum = 0, end = -Infinity;
    spans.forEach(function (sp) {
      if (sp[1] <= end) { return; }
      sum += sp[1] - Math.max(sp[0], end);
      end = sp[1];
    });
    matched.textContent = "Matched: " + (100 * sum / CFG.total).toFixed(1) + "%";
    searchBtn.textContent = "Clear search";
  }
  function askSearch() {
    if (term) { clearSearch(); return; }
    var t = window.prompt("Search for a function (regular expression):", "");
    if (t !== null) { search(t); }
  }
  function frameOf(e) {
    var el = e.target;
    return el && el.closest ? el.closest("g.f") : null;
  }
  document.getElementById("frames").addEventListener("click", function (e) {
    var g = frameOf(e);
    if (g) { zoom(g); }
  });
  document.getElementById("frames").addEventListener("mouseover", function (e) {
    var g = frameOf(e);
    if (!g) { return; }
    var lines = g.querySelector("title").textContent.split("\n");
    details.textContent = lines.slice(0, 4).join("  \u00b7  ");
  });
  document.getElementById("frames").addEventListener("mouseout", function () {
    details.textContent = " ";
  });
  unzoomBtn.addEventListener("click", reset);
  searchBtn.addEventListener("click", askSearch);
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && (e.key === "f" || e.key === "F")) {
      e.preventDefault();
      term = null;
      askSearch();
    } else if (e.key === "Escape") {
      if (term) { clearSearch(); } else if (zoomed) { reset(); }
    }
  });
})();
"""
