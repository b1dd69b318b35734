"""The resolved function table: what each function id in a trace stands for.

It is built by ``tracer.resolve`` at trace time and stored in the trace
header, so that replay needs neither the catalog nor the kernel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class FuncInfo:
    """One traced function, resolved against a kernel."""

    id: int
    name: str
    path: str
    layer: str
    skb_arg: int = 0
    skb_deref: bool = False
    stack: bool = False
    context: bool = False
    frees: bool = False
    drop: bool = False
    fresh: bool = False
    aux_arg: int = 0
    # What the return event carries: "" (nothing) or "route" (tracer/routes.py).
    result: str = ""
    driver: str = ""
    symbols: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (symbols as a list)."""
        d = asdict(self)
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

    def name_of(self, func_id: int) -> str:
        """The function's name; unknown ids get a placeholder."""
        if 0 <= func_id < len(self.name):
            return self.name[func_id]
        return f"func#{func_id}"

    def to_json(self) -> list[dict[str, Any]]:
        """The table as JSON-ready dicts, ordered by id."""
        return [f.to_json() for f in self.funcs]

    @classmethod
    def from_json(cls, rows: list[dict[str, Any]]) -> FuncTable:
        """Inverse of :meth:`to_json`."""
        return cls([FuncInfo.from_json(r) for r in rows])
