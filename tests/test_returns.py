"""Recorded return values: napi_gro_receive's gro_result_t, from the v2 record to the views."""

from __future__ import annotations

from typing import Any

from skbpath.render.terminal import return_table
from skbpath.tracer.model.core import Model
from skbpath.tracer.model.routes import return_name
from skbpath.tracer.record.prepare import return_names
from skbpath.tracer.traces.events import FLAG_RETVAL, CallRecord
from skbpath.tracer.traces.functions import FuncInfo, FuncTable

GRO = {0: "GRO_MERGED", 1: "GRO_MERGED_FREE", 2: "GRO_HELD", 3: "GRO_NORMAL", 4: "GRO_CONSUMED"}


def _table() -> FuncTable:
    return FuncTable([
        FuncInfo(id=0, name="napi_gro_receive", path="rx", layer="device", skb_arg=2, fresh=True,
                 result="gro"),
        FuncInfo(id=1, name="consume_skb", path="free", layer="memory", skb_arg=1, frees=True),
        FuncInfo(id=2, name="fib_table_lookup", path="rx", layer="network", result="route"),
    ])


def _rec(entry: int, skb: int, func: int, flags: int = 0, result: int = 0,
         aux: int = 0) -> CallRecord:
    return CallRecord(entry=entry, duration=10, skb=skb, result=result, tid=5, tgid=5, aux=aux,
                      stack_id=-1, func=func, cpu=0, depth=0, flags=flags, base=0)


def _model(names: dict[int, dict[int, str]] | None) -> Model:
    m = Model(_table(), return_names=names)
    # The kretprobe's register holds garbage above the enum's 32 bits.
    m.feed_calls([
        _rec(100, 0xA00, 0, FLAG_RETVAL, result=(0xDEAD << 32) | 3, aux=7),
        _rec(200, 0xB00, 0, FLAG_RETVAL, result=1),
        _rec(300, 0xC00, 0, FLAG_RETVAL, result=1),
        _rec(400, 0xA00, 1),
    ])
    m.finish()
    return m


def test_gro_results_are_named_counted_and_shown_per_step() -> None:
    m = _model({0: GRO})
    assert m.return_counts() == [("napi_gro_receive", "GRO_MERGED_FREE", 2),
                                 ("napi_gro_receive", "GRO_NORMAL", 1)]
    first = m.journey_list[0]
    step = first.steps[0]
    assert (step.func, step.returned, step.aux) == ("napi_gro_receive", "GRO_NORMAL", 7)
    assert step.result is None  # not a route
    js = first.to_json()
    assert js["steps"][0]["returned"] == "GRO_NORMAL" and js["steps"][0]["route"] is None
    assert js["steps"][1]["returned"] is None  # consume_skb returns nothing recorded
    assert return_table(m.return_counts()).row_count == 2


def test_without_names_the_values_stay_numbers() -> None:
    m = _model(None)
    assert [r[1] for r in m.return_counts()] == ["1", "3"]
    assert return_name(0, 0xFFFFFFFF, None) == "-1"  # a negative errno reads as one


class _Btf:
    def __init__(self, returns: dict[str, str], enums: dict[str, dict[int, str]]) -> None:
        self.returns, self.enums = returns, enums

    def func_return(self, name: str) -> str | None:
        return self.returns.get(name)

    def enum_values(self, name: str) -> dict[int, str] | None:
        return self.enums.get(name)


class _KernelBtf:
    def __init__(self, vmlinux: Any) -> None:
        self.vmlinux = vmlinux


def test_return_names_come_from_the_return_types_btf_enum() -> None:
    btf = _Btf({"napi_gro_receive": "enum gro_result", "fib_table_lookup": "int"},
               {"gro_result": GRO})
    assert return_names(_KernelBtf(btf), _table()) == {"napi_gro_receive": GRO}  # type: ignore[arg-type]
    # A return that is not an enum, or no BTF at all: no names, no error.
    btf.returns["napi_gro_receive"] = "int"
    assert return_names(_KernelBtf(btf), _table()) == {}  # type: ignore[arg-type]
    assert return_names(_KernelBtf(None), _table()) == {}  # type: ignore[arg-type]
