"""Source lines for kernel functions and stack frames, from DWARF (pyelftools).

:class:`SourceMap` opens an ELF with debug info (a vmlinux, a module ``.ko``
built with debug info, or any ``gcc -g`` binary) and answers three questions:

* where is a function defined (``function_line``: DW_AT_decl_file/line),
* which source line, and which chain of inlined calls, an address is in
  (``address_lines``: the line table plus DW_TAG_inlined_subroutine DIEs),
* what a kernel stack frame such as ``tcp_v4_rcv+0xdb6 [kernel]`` points at
  (``frame_lines``).

The data flows through three modules: the index of function symbols and
CU ranges (tracer/kernel/dwarf_index.py, cached on disk) leads a query to
the one CU it needs; in it (tracer/kernel/dwarf_cu.py) only the top-level
DIEs plus the one subprogram containing the address are parsed; this module
answers the queries, and :func:`trace_sources` maps a whole trace.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Sequence
from typing import IO, Any

from skbpath.tracer.kernel.atlas import layer_from_path
from skbpath.tracer.kernel.dwarf_cu import CompileUnit, SourceLoc, die_name
from skbpath.tracer.kernel.dwarf_index import (
    _attr,
    _die_ranges,
    _RangeFinder,
    _read_dwarf,
    _save_index,
    open_indexed,
)
from skbpath.tracer.kernel.symbols import base_name, parse_frame


class SourceMap:
    """Function definitions and address lines of one ELF with DWARF.

    Open with :meth:`open`; the index (function symbols and CU ranges) comes
    from the disk cache when it is there.  ``index_built`` tells whether this
    instance had to build it.
    """

    def __init__(self, path: str, fh: IO[bytes], elf: Any, functions: dict[str, list[list[int]]],
                 ranges: _RangeFinder, index_built: bool, cache_file: str | None,
                 dwarf: Any = None) -> None:
        self.path = path
        self._fh = fh
        self._elf = elf
        self.index_built = index_built
        self.cache_file = cache_file
        self._functions = functions
        self._ranges = ranges
        self._by_base: dict[str, list[str]] = {}
        for name in self._functions:
            b = base_name(name)
            if b != name:
                self._by_base.setdefault(b, []).append(name)
        self._dwarf_info: Any = dwarf
        self._cus: dict[int, CompileUnit] = {}
        # Answers of function_line, kept on disk beside the index: parsing a
        # vmlinux CU costs ~0.1 s, so a second render reads no CU at all.
        self._func_cache: dict[str, SourceLoc | None] = _load_lines(self._lines_file())
        self._func_cache_dirty = False
        self._sym_sorted: list[tuple[int, int, str]] | None = None

    # ------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str, cache_dir: str | None = None) -> SourceMap:
        """Open ``path``; raises SkbpathError (one line) when it is missing or not usable."""
        return cls(path, *open_indexed(path, cache_dir))

    def _lines_file(self) -> str | None:
        return self.cache_file.removesuffix(".json") + "-lines.json" if self.cache_file else None

    def close(self) -> None:
        """Save new function_line answers to the cache, and close the ELF file."""
        lines_file = self._lines_file()
        if self._func_cache_dirty and lines_file:
            _save_index(lines_file, {
                name: None if loc is None else [loc.function, loc.file, loc.line]
                for name, loc in sorted(self._func_cache.items())
            })
            self._func_cache_dirty = False
        self._fh.close()

    def __enter__(self) -> SourceMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _dwarf(self) -> Any:
        if self._dwarf_info is None:
            self._dwarf_info = _read_dwarf(self._elf, self._fh)
        return self._dwarf_info

    # ------------------------------------------------------------ lookups
    def _cu_offset_at(self, addr: int) -> int | None:
        return self._ranges.find(addr)

    def _cu(self, offset: int) -> CompileUnit:
        cu = self._cus.get(offset)
        if cu is None:
            cu = CompileUnit(self._dwarf.get_CU_at(offset), self._dwarf)
            self._cus[offset] = cu
        return cu

    def symbol_address(self, name: str) -> int | None:
        """The address of function symbol ``name`` in .symtab (the first, if several)."""
        entries = self._functions.get(name)
        return entries[0][0] if entries else None

    def symbol_at(self, addr: int) -> str | None:
        """The function symbol containing ``addr``."""
        if self._sym_sorted is None:
            self._sym_sorted = sorted((e[0], e[1], n) for n, es in self._functions.items()
                                      for e in es)
        i = bisect.bisect_right(self._sym_sorted, (addr, 1 << 64, "")) - 1
        nearest = self._sym_sorted[i][2] if i >= 0 else None
        for j in range(i, max(i - 8, -1), -1):
            lo, size, name = self._sym_sorted[j]
            if lo <= addr < lo + size:
                return name
        return nearest  # a sizeless (assembly) symbol: the closest one below

    def function_line(self, name: str) -> SourceLoc | None:
        """Where function ``name`` is defined (clone suffixes are stripped), or None."""
        if name in self._func_cache:
            return self._func_cache[name]
        want = base_name(name)
        entries = list(self._functions.get(name, []))
        for full in [want, *self._by_base.get(want, [])]:
            if full != name:
                entries.extend(self._functions.get(full, []))
        loc = None
        for addr, _size, cu_off in entries:
            if cu_off >= 0:
                loc = self._decl_in_cu(cu_off, want, addr)
                if loc is not None:
                    break
        self._func_cache[name] = loc
        self._func_cache_dirty = True
        return loc

    def _decl_in_cu(self, cu_off: int, want: str, addr: int) -> SourceLoc | None:
        cu = self._cu(cu_off)
        by_addr, by_name = cu.declarations()
        if addr in by_addr:
            return by_addr[addr]
        return by_name.get(want)

    def address_lines(self, addr: int, prefer: str | None = None) -> list[SourceLoc]:
        """The line of ``addr`` and its inline chain, innermost first.

        The first entry is the function whose code is at ``addr`` (inlined or
        not) with the line-table line; each next one is its caller with the
        call-site line, up to the real (out-of-line) function.  Empty when no
        CU covers the address.  ``prefer`` names the function expected there,
        for relocatable objects whose sections overlap at address 0.
        """
        cu_off = self._cu_offset_at(addr)
        if cu_off is None:
            return []
        cu = self._cu(cu_off)
        chain = cu.inline_chain(addr, prefer)
        within = None
        if chain and self._elf["e_type"] == "ET_REL":
            within = next((r for r in _die_ranges(self._dwarf, cu.cu, chain[0])
                           if r[0] <= addr < r[1]), None)
        line = cu.line_at(addr, within)
        if not chain:
            if line is None:
                return []
            return [SourceLoc(self.symbol_at(addr) or "?", line[0], line[1])]
        out: list[SourceLoc] = []
        inner = chain[-1]
        if line is not None:
            out.append(SourceLoc(die_name(inner), line[0], line[1], len(chain) > 1))
        for k in range(len(chain) - 1, 0, -1):
            callee, caller = chain[k], chain[k - 1]
            cf = _attr(callee, "DW_AT_call_file")
            cl = _attr(callee, "DW_AT_call_line")
            out.append(SourceLoc(die_name(caller), cu.file_name(cf) if cf is not None else "?",
                                 cl or 0, k - 1 > 0))
        return out

    def frame_lines(self, frame: str) -> list[SourceLoc]:
        """Lines of a kernel stack frame like ``tcp_v4_rcv+0xdb6 [kernel]``.

        The module tag is not checked: route frames to the right file first.
        A frame's offset past 0 is a return address, so the byte before it
        (the call) is looked up, as addr2line does.
        """
        parsed = parse_frame(frame)
        if parsed.offset is None:
            return []
        sym, off = parsed.symbol, parsed.offset
        base = self.symbol_address(sym)
        if base is None:
            return []
        return self.address_lines(base + off - 1 if off else base, prefer=sym)


def _load_lines(path: str | None) -> dict[str, SourceLoc | None]:
    """Cached function_line answers; an unreadable cache is only slower."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
        return {
            str(name): None if v is None else SourceLoc(str(v[0]), str(v[1]), int(v[2]))
            for name, v in raw.items()
        }
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def module_name(path: str) -> str:
    """The kernel's name for a module file: ``.../e1000e.ko`` -> ``e1000e`` (``-`` -> ``_``)."""
    name = os.path.basename(path)
    for suffix in (".debug", ".ko"):
        name = name.removesuffix(suffix)
    return name.replace("-", "_")


def trace_sources(
    functions: list[dict[str, Any]],
    frames: Iterable[str],
    vmlinux: str | None,
    module_debug: Sequence[str] = (),
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """The SOURCES record for a trace: its functions and stack frames mapped to lines.

    ``functions`` is the header's function table (dicts with "name" and
    "symbols"); each is looked up in the vmlinux, then in the modules.
    Frames tagged ``[kernel]`` go to the vmlinux, ``[mod]`` to the module
    file of that name.  What cannot be found is left out.
    """
    kernel = SourceMap.open(vmlinux, cache_dir) if vmlinux else None
    modules = {module_name(p): SourceMap.open(p, cache_dir) for p in module_debug}
    maps = [m for m in [kernel, *modules.values()] if m is not None]
    try:
        funcs: dict[str, dict[str, Any]] = {}
        for f in functions:
            name = str(f.get("name", ""))
            candidates = [name, *[str(s) for s in f.get("symbols", [])]]
            loc = next((loc for m in maps for c in candidates
                        if (loc := m.function_line(c)) is not None), None)
            if loc is not None:
                funcs[name] = {"file": loc.file, "line": loc.line,
                               "layer": layer_from_path(loc.file)}
        out_frames: dict[str, list[list[Any]]] = {}
        for frame in sorted(set(frames)):
            parsed = parse_frame(frame)
            if parsed.offset is None:
                continue
            mod = parsed.module
            smap = kernel if mod in (None, "kernel") else modules.get(mod or "")
            if smap is None:
                continue
            lines = smap.frame_lines(frame)
            if lines:
                out_frames[frame] = [[s.function, s.file, s.line, s.inlined] for s in lines]
        return {"functions": funcs, "frames": out_frames}
    finally:
        for m in maps:
            m.close()


def source_details(sources: dict[str, Any]) -> dict[str, str]:
    """``{function: "file:line"}`` from a trace's SOURCES data (for tooltips and tables)."""
    out: dict[str, str] = {}
    for name, entry in (sources.get("functions") or {}).items():
        if isinstance(entry, dict) and "file" in entry and "line" in entry:
            out[str(name)] = f"{entry['file']}:{entry['line']}"
    return out
