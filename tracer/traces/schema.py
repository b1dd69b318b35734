"""The trust boundary of a trace: every JSON record is checked here before anything uses it.

A trace file is untrusted input (traces are attached to bug reports, mailed,
downloaded from CI).  :func:`load_record` decodes one JSON record and checks
it against the typed schema of its record type and format version: types,
ranges (function ids fit the u16 of an event, counters are non-negative,
times are finite) and sizes (name lengths, item counts).  What it returns
holds only the fields the schema knows, with the types it promises, so the
model and the renderers never meet a string where a number should be.

The approach is a small typed loader of our own (a few spec classes), not
msgspec or pydantic: the records are a handful of small, mostly optional
dicts; every error must name the record, its byte offset and the field
path, and some fields are keyed by integers written as JSON strings; the
function table's spec is derived from :class:`FuncInfo` itself, so a field
added there is checked without touching this file.  A library would add a
dependency and an error format to translate, for less code saved than this
file has.  Python's own JSON limits (nesting depth, integer digits) are
caught here and reported as the same kind of bad record.

Unknown keys are dropped (the function table rejects them, as
``FuncInfo.from_json`` always has): a field is used only once it is here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

from skbpath.tracer.traces.events import CALL_SIZE, EVENT_SIZE
from skbpath.tracer.traces.functions import FuncInfo

# Format versions whose records this schema describes, and the size of one
# EVENTS record in each: v1 40-byte ENTRY/EXIT events, v2 56-byte calls
# (CALL_SIZE in events.py once version 2 lands).
RECORD_SIZE = {1: EVENT_SIZE, 2: CALL_SIZE}
VERSIONS = tuple(sorted(RECORD_SIZE))

MAX_JSON_RECORD = 64 << 20  # no real JSON record comes near this
MAX_FUNC_ID = 0xFFFF  # the event's func field is a u16
MAX_NAME = 512  # a kernel symbol, an event name, a stack frame
MAX_TEXT = 64 << 10  # free text: recorded_with, a reason, a path
MAX_ITEMS = 1 << 20  # entries in one list or map
MAX_COUNT = (1 << 64) - 1  # counters come from u64 kernel counters


class SchemaError(ValueError):
    """A record that does not match its schema; ``field`` is the path to the bad value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), "?")


# ---------------------------------------------------------------- specs
class Spec:
    """Checks one JSON value and returns it in its checked form."""

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError


class Int(Spec):
    """An integer (not a boolean, not a float) in ``[lo, hi]``."""

    def __init__(self, lo: int = 0, hi: int = MAX_COUNT) -> None:
        self.lo, self.hi = lo, hi

    def check(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(path, f"expected an integer, got {_type_name(value)}")
        if not self.lo <= value <= self.hi:
            raise SchemaError(path, f"{value} is outside {self.lo}..{self.hi}")
        return value


class Float(Spec):
    """A finite number in ``[lo, hi]`` (integers accepted)."""

    def __init__(self, lo: float = 0.0, hi: float = 1e18) -> None:
        self.lo, self.hi = lo, hi

    def check(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaError(path, f"expected a number, got {_type_name(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(path, f"{value} is not a finite number")
        if not self.lo <= value <= self.hi:
            raise SchemaError(path, f"{value} is outside {self.lo:g}..{self.hi:g}")
        return float(value)


class Str(Spec):
    """A string of at most ``max_len`` characters (lone surrogates replaced: output must encode)."""

    def __init__(self, max_len: int = MAX_NAME) -> None:
        self.max_len = max_len

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise SchemaError(path, f"expected a string, got {_type_name(value)}")
        if len(value) > self.max_len:
            raise SchemaError(path, f"string of {len(value):,d} characters "
                                    f"(at most {self.max_len:,d})")
        text: str = value
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
        return text


class Bool(Spec):
    """true or false."""

    def check(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise SchemaError(path, f"expected true or false, got {_type_name(value)}")
        return value


class Null(Spec):
    """null."""

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            raise SchemaError(path, f"expected null, got {_type_name(value)}")


class OneOf(Spec):
    """The first of several specs that accepts the value."""

    def __init__(self, *specs: Spec) -> None:
        self.specs = specs

    def check(self, value: Any, path: str) -> Any:
        err: SchemaError | None = None
        for spec in self.specs:
            try:
                return spec.check(value, path)
            except SchemaError as exc:
                err = err or exc
        assert err is not None
        raise err


class List(Spec):
    """A list of at most ``max_items`` items, each checked by ``item``."""

    def __init__(self, item: Spec, max_items: int = MAX_ITEMS) -> None:
        self.item, self.max_items = item, max_items

    def check(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise SchemaError(path, f"expected a list, got {_type_name(value)}")
        if len(value) > self.max_items:
            raise SchemaError(path, f"{len(value):,d} items (at most {self.max_items:,d})")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class Map(Spec):
    """An object used as a map; with ``int_keys`` its keys are decimal integers in a range."""

    def __init__(self, value: Spec, *, key: Str | None = None,
                 int_keys: tuple[int, int] | None = None, max_items: int = MAX_ITEMS) -> None:
        self.value, self.key, self.int_keys, self.max_items = value, key, int_keys, max_items

    def check(self, value: Any, path: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected an object, got {_type_name(value)}")
        if len(value) > self.max_items:
            raise SchemaError(path, f"{len(value):,d} entries (at most {self.max_items:,d})")
        out: dict[Any, Any] = {}
        for k, v in value.items():
            where = f"{path}.{_shown_key(k)}"
            out[self._key(k, where)] = self.value.check(v, where)
        return out

    def _key(self, k: str, where: str) -> Any:
        if self.int_keys is None:
            return (self.key or Str()).check(k, where)
        lo, hi = self.int_keys
        digits = k[1:] if k[:1] == "-" else k
        # str.isdigit() accepts other scripts' digits; int() would then accept them too.
        if not (0 < len(digits) <= 20 and digits.isascii() and digits.isdigit()):
            raise SchemaError(where, "key is not an integer")
        n = int(k)
        if not lo <= n <= hi:
            raise SchemaError(where, f"key {n} is outside {lo}..{hi}")
        return n


def _shown_key(k: str) -> str:
    # A key is named in a one-line error: keep it short and printable.
    shown = k if len(k) <= 40 else k[:40] + "…"
    return shown.encode("unicode_escape").decode("ascii") if not shown.isprintable() else shown


class Obj(Spec):
    """An object with known fields: ``required`` must be there; unknown keys dropped or refused."""

    def __init__(self, fields: dict[str, Spec], required: tuple[str, ...] = (),
                 strict: bool = False) -> None:
        self.fields, self.required, self.strict = fields, required, strict

    def check(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected an object, got {_type_name(value)}")
        for name in self.required:
            if name not in value:
                raise SchemaError(_join(path, name), "missing")
        out: dict[str, Any] = {}
        for k, v in value.items():
            spec = self.fields.get(k)
            if spec is None:
                if self.strict:
                    raise SchemaError(_join(path, _shown_key(k)), "unknown field")
                continue
            out[k] = spec.check(v, _join(path, k))
        return out


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------- records
_SCALAR_ROW = OneOf(Int(-(1 << 63), MAX_COUNT), Str(MAX_NAME), Bool())


def _func_spec() -> Obj:
    """The function-table row, from FuncInfo's own fields and their types."""
    by_type: dict[str, Callable[[], Spec]] = {
        "int": lambda: Int(0, 64), "bool": Bool, "str": lambda: Str(MAX_NAME),
        "tuple[str, ...]": lambda: List(Str(MAX_NAME), 4096),
    }
    fields: dict[str, Spec] = {}
    required: list[str] = []
    for f in dataclasses.fields(FuncInfo):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        # A type this map lacks still gets a bounded check (a scalar), never none.
        fields[f.name] = by_type.get(kind, lambda: OneOf(_SCALAR_ROW, Null()))()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    fields["id"] = Int(0, MAX_FUNC_ID)
    return Obj(fields, tuple(required), strict=True)


_FUNC = _func_spec()
_NAMED_REASON = Obj({"name": Str(MAX_NAME), "reason": Str(MAX_TEXT)}, ("name",))
_COUNTS = Map(Int(), max_items=4096)
_REASON_NAMES = Map(Str(MAX_NAME), int_keys=(0, 0xFFFFFFFF), max_items=1 << 16)
_TEXT = Str(MAX_TEXT)
_SCALAR = OneOf(Int(-(1 << 63), MAX_COUNT), Str(MAX_TEXT), Bool())


class _FunctionTable(List):
    """The header's function table: rows by id, each id once."""

    def check(self, value: Any, path: str) -> list[Any]:
        rows = super().check(value, path)
        seen: set[int] = set()
        for i, row in enumerate(rows):
            if row["id"] in seen:
                raise SchemaError(f"{path}[{i}].id", f"id {row['id']} is used twice")
            seen.add(row["id"])
        return rows


def _header(version: int) -> Obj:
    # Versions 1 and 2 share the header; only "version" differs.
    return Obj({
        "format": Str(64), "version": Int(version, version), "tool": Str(64),
        "tool_version": Str(64), "kernel": Str(MAX_NAME), "machine": Str(64),
        "host": Str(MAX_NAME), "attach": Str(64), "started": Str(64),
        "functions": _FunctionTable(_FUNC, MAX_FUNC_ID + 1),
        "skipped": List(_NAMED_REASON),
        "filters": Map(OneOf(Int(-(1 << 63), MAX_COUNT), Str(MAX_NAME)), max_items=64),
        "journey_timeout_ns": Int(1, 10**15),
        "cflags": List(Str(4 << 20), 4096),
        "recorded_with": OneOf(_TEXT, Null()),  # null when not given (trace_header)
        "drop_reasons": _REASON_NAMES,
        # Recorded return values' names (napi_gro_receive's gro_result_t), by function.
        "return_names": Map(_REASON_NAMES, max_items=MAX_FUNC_ID + 1),
        "interfaces": Map(Str(64), int_keys=(0, 0xFFFFFFFF), max_items=1 << 16),
        "attach_by": Map(List(Str(MAX_NAME), MAX_FUNC_ID + 1), max_items=16),
        "fentry_fallback": Map(_TEXT, max_items=MAX_FUNC_ID + 1),
        "tracefs_events": List(Str(MAX_NAME), MAX_FUNC_ID + 1),
        "trace_clock": Str(64),
        "kernel_build": Str(MAX_NAME),  # /proc/version: exactly which kernel
        # --aggregate: calls were counted per call path in the kernel, no events.
        "aggregate": Bool(),
    }, ("format", "functions"))


# bpf_missed_by: the kernel's skipped programs per function and end ("ip_rcv entry").
_STATS = Obj({"lost": _COUNTS, "empty_calls": _COUNTS, "bpf_missed_by": _COUNTS})
_END = Obj({
    "lost": _COUNTS, "empty_calls": _COUNTS, "bpf_missed_by": _COUNTS, "events": Int(),
    "duration_s": Float(),
    # The live tracers write [name, reason] pairs; objects are accepted too.
    "model": _COUNTS, "attach_failures": List(OneOf(List(Str(MAX_TEXT), 2), _NAMED_REASON)),
    "unparsed_lines": Int(), "orphan_stacks": Int(), "drop_reasons": _REASON_NAMES,
    # Seconds the recorder spent compiling, attaching and detaching.
    "timings": Obj({k: Float() for k in ("compile_s", "attach_s", "detach_s", "model_s")}),
})
_STACKS = Obj({"stacks": Map(List(Str(MAX_NAME), 1024), int_keys=(-(1 << 31), (1 << 31) - 1))})
_TASKS = Obj({"tasks": Map(Str(64), int_keys=(0, 0xFFFFFFFF))})
_SOURCE_LINE = List(OneOf(Str(MAX_TEXT), Int(0, 1 << 32), Bool()), 4)
_SOURCES = Obj({
    "functions": Map(Obj({"file": Str(MAX_TEXT), "line": Int(0, 1 << 32),
                          "layer": OneOf(Str(64), Null())}, ("file", "line"))),
    "frames": Map(List(_SOURCE_LINE, 256)),
})

# --aggregate: the kernel's call paths (ids are 64-bit hashes; 0 as a parent is a root).
MAX_AGG_BUCKET = 1023  # the model's log-linear buckets (tracer/model/stats.py) for u64 ns
_AGG_PATH = Obj({
    "id": Int(1, MAX_COUNT), "parent": Int(0, MAX_COUNT), "func": Int(0, MAX_FUNC_ID),
    "calls": Int(), "no_return": Int(), "total_ns": Int(), "self_ns": Int(),
    "min_ns": Int(), "max_ns": Int(),
    "hist": Map(Int(), int_keys=(0, MAX_AGG_BUCKET), max_items=MAX_AGG_BUCKET + 1),
}, ("id", "parent", "func", "calls"))
_AGGREGATE = Obj({"seconds": Float(), "paths": List(_AGG_PATH, 1 << 17)}, ("paths",))

SCHEMAS: dict[str, Callable[[int], Spec]] = {
    "header": _header, "stacks": lambda v: _STACKS, "tasks": lambda v: _TASKS,
    "stats": lambda v: _STATS, "end": lambda v: _END, "sources": lambda v: _SOURCES,
    "aggregate": lambda v: _AGGREGATE,
}


def decode_json(payload: bytes) -> Any:
    """Parse JSON, turning Python's own limits into :class:`SchemaError`.

    Nesting past the interpreter's recursion limit and integers past its
    digit limit are bad records like any other.
    """
    if len(payload) > MAX_JSON_RECORD:
        raise SchemaError("", f"JSON record of {len(payload):,d} bytes")
    try:
        text = payload.decode("utf-8")
        # NaN, Infinity and 1e400 parse to floats, which every spec but Float
        # refuses, and Float refuses them as not finite: the error names the field.
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise SchemaError("", "not UTF-8") from exc
    except RecursionError as exc:
        raise SchemaError("", "JSON nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise SchemaError("", f"not JSON ({exc.msg} at byte {exc.pos})") from exc
    except ValueError as exc:  # the integer digit limit
        raise SchemaError("", str(exc).split(":")[0]) from exc


def check_record(name: str, obj: Any, version: int) -> dict[str, Any]:
    """Check one decoded JSON record (``name`` as in RECORD_NAMES); raise SchemaError."""
    return SCHEMAS[name](version).check(obj, "")  # type: ignore[no-any-return]


def load_record(name: str, payload: bytes, version: int) -> dict[str, Any]:
    """Decode and check one JSON record; raise SchemaError."""
    return check_record(name, decode_json(payload), version)


def record_size(version: int) -> int:
    """Bytes per packed record in an EVENTS payload of this format version."""
    return RECORD_SIZE[version]
