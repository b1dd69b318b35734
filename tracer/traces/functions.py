"""The resolved function table: what each function id in a trace stands for.

It is built at trace time (tracer/record/resolve.py for functions,
tracer/record/rawtp.py and tracer/record/tracefs/parse.py for tracepoints)
and stored in the trace header, so that replay needs neither the catalog
nor the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from skbpath.probes.catalog import ProbeSpec


@dataclass(frozen=True)
class FuncInfo(ProbeSpec):
    """One traced function: a probe spec resolved against a kernel, with its id and symbols.

    The spec's fields are keyword-only; ``result`` says what the return
    event carries: "" (nothing) or "route" (tracer/model/routes.py).
    """

    id: int
    symbols: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def resolved(cls, spec: ProbeSpec, func_id: int, symbols: Iterable[str],
                 name: str | None = None) -> FuncInfo:
        """``spec`` as function ``func_id``, attached through ``symbols``.

        ``name`` replaces the spec's (a driver role resolves to functions of
        its own name).  The one place a FuncInfo is made from a spec.
        """
        values = {f.name: getattr(spec, f.name) for f in fields(ProbeSpec)}
        if name is not None:
            values["name"] = name
        return cls(id=func_id, symbols=tuple(symbols), **values)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: id, the spec's fields, symbols (as a list), in that order."""
        d: dict[str, Any] = {"id": self.id}
        d.update((f.name, getattr(self, f.name)) for f in fields(ProbeSpec))
        d["symbols"] = list(self.symbols)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FuncInfo:
        """Inverse of :meth:`to_json`; unknown keys are an error."""
        d = dict(d)
        d["symbols"] = tuple(d.get("symbols", ()))
        return cls(**d)


class FuncTable:
    """Function metadata indexed by id, with the flat lists the hot loop needs."""

    def __init__(self, funcs: list[FuncInfo]) -> None:
        size = max((f.id for f in funcs), default=-1) + 1
        self.by_id: list[FuncInfo | None] = [None] * size
        for f in funcs:
            self.by_id[f.id] = f
        self.funcs = sorted(funcs, key=lambda f: f.id)
        # Flat per-id lists: the pairing loop indexes these instead of
        # touching dataclass attributes per event.
        self.is_context = [bool(f and f.context) for f in self.by_id]
        self.frees = [bool(f and f.frees) for f in self.by_id]
        self.drops = [bool(f and f.drop) for f in self.by_id]
        self.fresh = [bool(f and f.fresh) for f in self.by_id]
        self.merges = [bool(f and f.merge) for f in self.by_id]
        self.path = [f.path if f else "?" for f in self.by_id]
        self.name = [f.name if f else f"func#{i}" for i, f in enumerate(self.by_id)]
        self.layer = [f.layer if f else "?" for f in self.by_id]
        # What renderers colour by: the layer, except that drops stand out.
        self.colour = [("drop" if f.drop else f.layer) if f else "?" for f in self.by_id]

    def __len__(self) -> int:
        return len(self.funcs)

    def get(self, func_id: int) -> FuncInfo | None:
        """The function with this id, or None if the id is unknown."""
        if 0 <= func_id < len(self.by_id):
            return self.by_id[func_id]
        return None

    # Per-id lookups for ids a trace may hold without a table entry (a damaged
    # or foreign trace): unknown ids get a placeholder, never an IndexError.
    def name_of(self, func_id: int) -> str:
        """The function's name; unknown ids get ``func#<id>``."""
        if 0 <= func_id < len(self.name):
            return self.name[func_id]
        return f"func#{func_id}"

    def layer_of(self, func_id: int) -> str:
        """The function's layer; "?" for unknown ids."""
        return self.layer[func_id] if 0 <= func_id < len(self.layer) else "?"

    def path_of(self, func_id: int) -> str:
        """The function's path (tx, rx, free); "?" for unknown ids."""
        return self.path[func_id] if 0 <= func_id < len(self.path) else "?"

    def colour_of(self, func_id: int) -> str:
        """What renderers colour the function by (its layer, or "drop"); "?" for unknown ids."""
        return self.colour[func_id] if 0 <= func_id < len(self.colour) else "?"

    def frees_at(self, func_id: int) -> bool:
        """Whether the function frees its skb; False for unknown ids."""
        return 0 <= func_id < len(self.frees) and self.frees[func_id]

    def drops_at(self, func_id: int) -> bool:
        """Whether the function is a drop; False for unknown ids."""
        return 0 <= func_id < len(self.drops) and self.drops[func_id]

    def fresh_at(self, func_id: int) -> bool:
        """Whether the function only ever sees new skbs; False for unknown ids."""
        return 0 <= func_id < len(self.fresh) and self.fresh[func_id]

    def merges_at(self, func_id: int) -> bool:
        """Whether the function merges its skb into the one its aux names (GRO)."""
        return 0 <= func_id < len(self.merges) and self.merges[func_id]

    def to_json(self) -> list[dict[str, Any]]:
        """The table as JSON-ready dicts, ordered by id."""
        return [f.to_json() for f in self.funcs]

    @classmethod
    def from_json(cls, rows: list[dict[str, Any]]) -> FuncTable:
        """Inverse of :meth:`to_json`."""
        return cls([FuncInfo.from_json(r) for r in rows])
