"""The model: events in, journeys, call tree and statistics out.

The live tracer and replay both feed decoded events through :class:`Model`,
so what the tests check on recorded traces is what users see live.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .calltree import CallTree
from .drops import DropCounter
from .functions import FuncTable
from .journeys import Journey, JourneyBuilder
from .pairing import Call, Pairer, PairingListener
from .routes import RouteCounter, decode_route


@dataclass(frozen=True)
class Step:
    """One call in a journey, flattened for rendering and JSON."""

    func: str
    layer: str
    path: str
    entry: int
    exit: int | None
    inclusive: int | None
    self_time: int | None
    depth: int
    skb: int
    cpu: int
    tid: int
    stack_id: int
    lost: bool
    aux: int = 0
    result: tuple[int, int] | None = None  # what the return carried (tracer/routes.py)


@dataclass(frozen=True)
class JourneyView:
    """A finished journey, detached from the live call objects."""

    id: int
    path: str
    end: str
    skbs: tuple[int, ...]
    trigger: int | None
    steps: tuple[Step, ...]

    @property
    def start(self) -> int:
        """Entry time of the first step, in ns."""
        return self.steps[0].entry if self.steps else 0

    @property
    def duration(self) -> int:
        """From the first entry to the last known return or entry, in ns."""
        if not self.steps:
            return 0
        last = max((s.exit if s.exit is not None else s.entry) for s in self.steps)
        return last - self.start

    def functions(self) -> list[str]:
        """Function names in step order."""
        return [s.func for s in self.steps]

    def to_json(self, interfaces: dict[int, str] | None = None) -> dict[str, Any]:
        """A JSON-ready dict (skb pointers as hex strings, routes as text)."""
        return {
            "type": "journey",
            "id": self.id,
            "path": self.path,
            "end": self.end,
            "skbs": [f"{s:#x}" for s in self.skbs],
            "trigger": self.trigger,
            "duration_ns": self.duration,
            "steps": [
                {
                    "func": s.func,
                    "layer": s.layer,
                    "entry": s.entry,
                    "exit": s.exit,
                    "inclusive_ns": s.inclusive,
                    "self_ns": s.self_time,
                    "depth": s.depth,
                    "skb": f"{s.skb:#x}" if s.skb else None,
                    "cpu": s.cpu,
                    "tid": s.tid,
                    "stack_id": s.stack_id if s.stack_id >= 0 else None,
                    "aux": s.aux,
                    "route": decode_route(*s.result).text(interfaces) if s.result else None,
                }
                for s in self.steps
            ],
        }


def view_journey(j: Journey, funcs: FuncTable) -> JourneyView:
    """Flatten a journey; depth counts the step's ancestors that are also steps."""
    members = {id(c) for c in j.steps}
    steps = []
    for c in j.steps:
        depth = 0
        a = c.parent
        while a is not None:
            if id(a) in members:
                depth += 1
            a = a.parent
        steps.append(
            Step(
                func=funcs.name_of(c.func),
                layer=funcs.layer[c.func] if c.func < len(funcs.layer) else "?",
                path=funcs.path[c.func] if c.func < len(funcs.path) else "?",
                entry=c.entry,
                exit=c.exit,
                inclusive=c.inclusive,
                self_time=c.self_time,
                depth=depth,
                skb=c.skb,
                cpu=c.cpu,
                tid=c.tid,
                stack_id=c.stack_id,
                lost=c.lost,
                aux=c.aux,
                result=c.result,
            )
        )
    return JourneyView(j.id, j.path.upper(), j.end, tuple(j.skbs), j.trigger, tuple(steps))


class _Listener(PairingListener):
    def __init__(self, model: Model) -> None:
        self.on_entry = model.journeys.on_entry  # type: ignore[method-assign]
        self.on_exit = model.journeys.on_exit  # type: ignore[method-assign]
        self.on_root = model._on_root  # type: ignore[method-assign]


class Model:
    """Pairs events, builds journeys and aggregates the call tree, as a stream.

    ``on_journey`` receives each finished journey; it is then dropped, which
    keeps memory bounded on long traces.  ``keep_journeys`` collects them.
    """

    def __init__(
        self,
        funcs: FuncTable,
        *,
        require_match: bool = False,
        keep_journeys: bool = True,
        on_journey: Callable[[JourneyView], None] | None = None,
        on_root: Callable[[Call], None] | None = None,
        timeout_ns: int = 5_000_000_000,
    ) -> None:
        self.funcs = funcs
        self.calltree = CallTree(funcs, require_match=require_match)
        self.drops = DropCounter(funcs)
        self.routes = RouteCounter(funcs)
        self.journey_list: list[JourneyView] = []
        self._keep = keep_journeys
        self._on_journey = on_journey
        self._on_root_cb = on_root
        self.journeys = JourneyBuilder(
            funcs, self._journey_done, timeout_ns=timeout_ns, require_match=require_match
        )
        self.pairer = Pairer(funcs, _Listener(self))
        self.finished = False

    def _journey_done(self, j: Journey) -> None:
        if not self._keep and self._on_journey is None:
            return
        view = view_journey(j, self.funcs)
        if self._keep:
            self.journey_list.append(view)
        if self._on_journey is not None:
            self._on_journey(view)

    def _on_root(self, call: Call) -> None:
        self.calltree.add_root(call)
        self.drops.add_root(call)
        self.routes.add_root(call)
        if self._on_root_cb is not None:
            self._on_root_cb(call)

    def feed(self, events: Iterable[tuple[int, ...]]) -> None:
        """Consume a batch of decoded events in arrival order."""
        self.pairer.feed(events)

    def finish(self) -> None:
        """Close what is still open at the end of the trace."""
        if self.finished:
            return
        self.pairer.finish()
        self.journeys.finish()
        self.finished = True
        self.journey_list.sort(key=lambda j: j.id)

    def summary(self) -> dict[str, int]:
        """Counts of what pairing and journey building saw and could not match."""
        p = self.pairer.stats
        js = self.journeys.stats
        return {
            "events": p.events,
            "calls": p.calls,
            "unmatched_exits": p.unmatched_exits,
            "lost_exits": p.lost_exits,
            "open_at_end": p.open_at_end,
            "journeys": js.started,
            "journeys_freed": js.freed,
            "journeys_timed_out": js.timed_out,
            "journeys_at_trace_end": js.at_trace_end,
            "journeys_reused": js.reused,
            "journeys_filtered_out": js.filtered_out,
        }
