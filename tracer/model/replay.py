"""Replay a recorded trace through the same model the live tracer runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skbpath.tracer.errors import TraceFormatError
from skbpath.tracer.model.aggregate import rows_of
from skbpath.tracer.model.core import JourneyView, Model
from skbpath.tracer.model.pairing import Call
from skbpath.tracer.traces.functions import FuncTable
from skbpath.tracer.traces.tracefile import TraceContents, TraceReader


@dataclass
class Replay:
    """A trace's metadata and the model built from its events."""

    path: str
    contents: TraceContents
    model: Model

    @property
    def funcs(self) -> FuncTable:
        """The trace's function table."""
        return self.model.funcs


def function_table(contents: TraceContents, path: str = "trace") -> FuncTable:
    """The function table stored in a trace header."""
    try:
        return FuncTable.from_json(contents.header["functions"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TraceFormatError(f"{path}: header has no valid function table") from exc


def model_for(
    reader: TraceReader,
    *,
    keep_journeys: bool = True,
    on_journey: Callable[[JourneyView], None] | None = None,
    on_root: Callable[[Call], None] | None = None,
) -> Model:
    """A fresh :class:`Model` set up as the trace's header says it was recorded."""
    header = reader.contents.header
    funcs = function_table(reader.contents, reader.path)
    ids = {f.name: f.id for f in funcs.funcs}
    return_names = {ids[name]: {int(k): v for k, v in values.items()}
                    for name, values in (header.get("return_names") or {}).items() if name in ids}
    return Model(
        funcs,
        require_match=bool(header.get("filters")),
        keep_journeys=keep_journeys,
        on_journey=on_journey,
        on_root=on_root,
        timeout_ns=header.get("journey_timeout_ns", 5_000_000_000),  # checked by schema
        return_names=return_names,
    )


def replay(
    path: str,
    *,
    keep_journeys: bool = True,
    on_journey: Callable[[JourneyView], None] | None = None,
    on_root: Callable[[Call], None] | None = None,
    lenient: bool = False,
) -> Replay:
    """Read ``path`` and run every record through a fresh :class:`Model` (v1 or v2).

    ``on_root`` receives each closed root call (with its subtree), e.g. to
    keep the calls for a timeline; ``lenient`` skips bad records (see TraceReader).
    """
    reader = TraceReader(path, lenient=lenient)
    model = model_for(reader, keep_journeys=keep_journeys, on_journey=on_journey,
                      on_root=on_root)
    feed = model.feed_calls if reader.version == 2 else model.feed
    for batch in reader.event_batches():
        feed(batch)
    if reader.contents.aggregate is not None:
        model.feed_aggregate(rows_of(reader.contents.aggregate))
    model.finish()
    return Replay(path, reader.contents, model)


def is_aggregate(header: dict[str, Any]) -> bool:
    """Whether the trace was recorded with ``--aggregate`` (call paths, no journeys)."""
    return bool(header.get("aggregate"))


def no_journeys(path: str) -> str:
    """The one line a journey view prints for an ``--aggregate`` trace."""
    return (f"{path}: recorded with --aggregate: the kernel counted calls per call path, "
            "so there are no journeys (call tree, flame graph and function table only)")


# Attach modes whose calls are points (a tracepoint hit), with no duration.
POINT_MODES = frozenset({"tracepoint", "tracefs"})


def default_weight(header: dict[str, Any]) -> str:
    """The flame graph weight that shows something: calls for point modes, else time."""
    return "count" if header.get("attach") in POINT_MODES else "time"
