"""The fixed colour palette: one colour per kernel layer, the same in every renderer."""

from __future__ import annotations

# Tableau-10-like hues: distinguishable, readable under black text, and fixed
# so that every output of the same trace looks the same.
LAYER_COLORS: dict[str, str] = {
    "socket": "#4e79a7",  # blue
    "transport": "#59a14f",  # green
    "network": "#f28e2b",  # orange
    "neighbour": "#edc948",  # yellow
    "qdisc": "#b07aa1",  # mauve
    "device": "#76b7b2",  # teal
    "driver": "#9c755f",  # brown
    "softirq": "#ff9da7",  # pink
    "memory": "#bab0ac",  # warm grey
    "drop": "#d62728",  # a call that drops the packet: a red no layer uses
    "?": "#d9d9d9",  # unknown: light grey
}
UNKNOWN = "?"
DROP_COLOR = LAYER_COLORS["drop"]
HOT_COLOR = "#8b008b"  # highlighted hottest path: dark magenta, distinct from every layer
TEXT_COLOR = "#000000"


def layer_color(layer: str) -> str:
    """The hex colour of a layer; unknown layers get the "?" grey."""
    return LAYER_COLORS.get(layer, LAYER_COLORS[UNKNOWN])
