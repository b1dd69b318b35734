"""Source lines for kernel functions and stack frames, from DWARF (pyelftools).

:class:`SourceMap` opens an ELF with debug info (a vmlinux, a module ``.ko``
built with debug info, or any ``gcc -g`` binary) and answers three questions:

* where is a function defined (``function_line``: DW_AT_decl_file/line),
* which source line, and which chain of inlined calls, an address is in
  (``address_lines``: the line table plus DW_TAG_inlined_subroutine DIEs),
* what a kernel stack frame such as ``tcp_v4_rcv+0xdb6 [kernel]`` points at
  (``frame_lines``).

No query walks all CUs: the index of function symbols and CU ranges
(tracer/dwarf_index.py, cached on disk) leads a query to the one CU it
needs, and in it only the top-level DIEs plus the one subprogram containing
the address are parsed.  :func:`trace_sources` maps a whole trace.
"""

from __future__ import annotations

import bisect
import importlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from .dwarf_index import _attr, _die_ranges, _RangeFinder, _read_dwarf, _save_index, open_indexed

_FRAME_RE = re.compile(
    r"^\s*(?P<sym>[^\s+]+)\+0x(?P<off>[0-9a-fA-F]+)(?:/0x[0-9a-fA-F]+)?(?:\s+\[(?P<mod>[^\]]+)\])?\s*$"
)


@dataclass(frozen=True)
class SourceLoc:
    """A source position: the function it is in, file (tree-relative where possible), line.

    ``inlined`` is true when ``function`` was inlined into the next entry of
    an :meth:`SourceMap.address_lines` chain.
    """

    function: str
    file: str
    line: int
    inlined: bool = False

    @property
    def where(self) -> str:
        """``file:line``."""
        return f"{self.file}:{self.line}"


def base_name(name: str) -> str:
    """The C name of a symbol: GCC clone suffixes stripped (``foo.constprop.0`` -> ``foo``)."""
    # C identifiers have no dots, so everything after the first one is a
    # compiler suffix (.constprop.N, .isra.N, .part.N, .cold, .lto_priv.N).
    return name.split(".", 1)[0]


def parse_frame(frame: str) -> tuple[str, int, str | None] | None:
    """``"sym+0x1f [mod]"`` -> (sym, 0x1f, mod), or None when it is not such a frame."""
    m = _FRAME_RE.match(frame)
    if not m:
        return None
    return m.group("sym"), int(m.group("off"), 16), m.group("mod")


def _layer_from_path_fallback(path: str) -> str | None:
    """The stack layer of a kernel source file (used when tracer.atlas is absent)."""
    p = path.lstrip("./")
    if p.startswith("net/ipv4/tcp") or p.startswith("net/ipv4/udp"):
        return "transport"
    if p.startswith("net/ipv4/ip_"):
        return "network"
    if p == "net/core/dev.c":
        return "device"
    if p.startswith("drivers/net/"):
        return "driver"
    if p.startswith("net/sched/"):
        return "qdisc"
    if p == "net/core/neighbour.c":
        return "neighbour"
    if p == "net/socket.c":
        return "socket"
    return None


def layer_from_path(path: str) -> str | None:
    """The stack layer of a source file: tracer.atlas's rules when present, else ours."""
    try:
        atlas = importlib.import_module("tracer.atlas")  # optional: may not exist
    except ImportError:
        return _layer_from_path_fallback(path)
    fn = getattr(atlas, "layer_from_path", None)
    if fn is None:
        return _layer_from_path_fallback(path)
    result = fn(path)
    return result if isinstance(result, str) else None


class _CU:
    """What the queries need from one compile unit, parsed once."""

    def __init__(self, cu: Any, dwarf: Any) -> None:
        self.cu = cu
        self.top = cu.get_top_DIE()
        comp_dir = _attr(self.top, "DW_AT_comp_dir")
        self.comp_dir = _text(comp_dir) if comp_dir is not None else ""
        self.lp = dwarf.line_program_for_CU(cu)
        self.files: dict[int, str] = {}
        self._seqs: list[tuple[int, int, list[int], list[int], list[int]]] | None = None
        self._seq_starts: list[int] = []
        self._decls: tuple[dict[int, SourceLoc], dict[str, SourceLoc]] | None = None

    def declarations(self) -> tuple[dict[int, SourceLoc], dict[str, SourceLoc]]:
        """Definitions of this CU's subprograms by entry address and by name.

        One pass over the top-level DIEs (their subtrees are skipped through
        DW_AT_sibling), shared by every function looked up in this CU.
        """
        if self._decls is None:
            by_addr: dict[int, SourceLoc] = {}
            by_name: dict[str, SourceLoc] = {}
            for die in self.top.iter_children():
                if die.tag != "DW_TAG_subprogram":
                    continue
                decl_file = _follow(die, "DW_AT_decl_file")
                decl_line = _follow(die, "DW_AT_decl_line")
                if decl_file is None or decl_line is None:
                    continue
                loc = SourceLoc(_die_name(die), self.file_name(decl_file), decl_line)
                low = _attr(die, "DW_AT_low_pc")
                if low is not None:
                    by_addr.setdefault(low, loc)
                by_name.setdefault(loc.function, loc)
            self._decls = (by_addr, by_name)
        return self._decls

    def file_name(self, index: int) -> str:
        """The file of a DW_AT_decl_file / call_file index, relative to the tree if possible."""
        if index in self.files:
            return self.files[index]
        name = "?"
        lp = self.lp
        if lp is not None:
            v5 = lp.header.version >= 5
            entries = lp.header.file_entry
            i = index if v5 else index - 1  # DWARF 5 counts files from 0, older from 1
            if 0 <= i < len(entries):
                entry = entries[i]
                name = _text(entry.name)
                dirs = lp.header.include_directory
                d = entry.dir_index if v5 else entry.dir_index - 1
                directory = _text(dirs[d]) if 0 <= d < len(dirs) else self.comp_dir
                if not os.path.isabs(name) and directory:
                    name = os.path.join(directory, name)
                if not os.path.isabs(name) and self.comp_dir:
                    name = os.path.join(self.comp_dir, name)
                name = _relative(os.path.normpath(name), self.comp_dir)
        self.files[index] = name
        return name

    def line_at(self, addr: int, within: tuple[int, int] | None = None) -> tuple[str, int] | None:
        """(file, line) of the line-table row covering ``addr``.

        ``within`` is the enclosing function's range: in a relocatable object
        every section starts at 0, and the sequence must cover that range.
        """
        if self._seqs is None:
            self._build_lines()
        assert self._seqs is not None
        i = bisect.bisect_right(self._seq_starts, addr) - 1
        # Sequences may nest in a relocatable object (several sections at 0):
        # look back for one that covers the address.
        while i >= 0:
            lo, hi, addrs, files, lines = self._seqs[i]
            if lo <= addr < hi and (within is None or lo <= within[0] and within[1] <= hi):
                j = bisect.bisect_right(addrs, addr) - 1
                return self.file_name(files[j]), lines[j]
            i -= 1
        return None

    def _build_lines(self) -> None:
        seqs: list[tuple[int, int, list[int], list[int], list[int]]] = []
        if self.lp is not None:
            addrs: list[int] = []
            files: list[int] = []
            lines: list[int] = []
            for entry in self.lp.get_entries():
                st = entry.state
                if st is None:
                    continue
                if st.end_sequence:
                    if addrs:
                        seqs.append((addrs[0], st.address, addrs, files, lines))
                    addrs, files, lines = [], [], []
                    continue
                addrs.append(st.address)
                files.append(st.file)
                lines.append(st.line)
        seqs.sort(key=lambda s: s[0])
        self._seqs = seqs
        self._seq_starts = [s[0] for s in seqs]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _relative(path: str, comp_dir: str) -> str:
    """``path`` relative to the build directory when under it; kernel trees are built there."""
    if comp_dir:
        prefix = os.path.normpath(comp_dir) + os.sep
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def _origin(die: Any) -> Any:
    """The DIE a concrete or out-of-line instance refers to, if any."""
    for name in ("DW_AT_abstract_origin", "DW_AT_specification"):
        if name in die.attributes:
            try:
                return die.get_DIE_from_attribute(name)
            except Exception:  # noqa: BLE001 - a broken reference is just no origin
                return None
    return None


def _follow(die: Any, name: str) -> Any:
    """An attribute of the DIE or of its abstract origin / specification chain."""
    seen = 0
    while die is not None and seen < 8:
        if name in die.attributes:
            return die.attributes[name].value
        die = _origin(die)
        seen += 1
    return None


def _die_name(die: Any) -> str:
    v = _follow(die, "DW_AT_name")
    return _text(v) if v is not None else "?"


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
        self._cus: dict[int, _CU] = {}
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

    def _cu(self, offset: int) -> _CU:
        cu = self._cus.get(offset)
        if cu is None:
            cu = _CU(self._dwarf.get_CU_at(offset), self._dwarf)
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
        chain = self._inline_chain(cu, addr, prefer)
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
            out.append(SourceLoc(_die_name(inner), line[0], line[1], len(chain) > 1))
        for k in range(len(chain) - 1, 0, -1):
            callee, caller = chain[k], chain[k - 1]
            cf = _attr(callee, "DW_AT_call_file")
            cl = _attr(callee, "DW_AT_call_line")
            out.append(SourceLoc(_die_name(caller), cu.file_name(cf) if cf is not None else "?",
                                 cl or 0, k - 1 > 0))
        return out

    def _inline_chain(self, cu: _CU, addr: int, prefer: str | None = None) -> list[Any]:
        """[subprogram, inlined_subroutine, ...] containing ``addr``, outermost first."""
        dwarf = self._dwarf
        found = [die for die in cu.top.iter_children()
                 if die.tag == "DW_TAG_subprogram" and _contains(dwarf, cu.cu, die, addr)]
        if not found:
            return []
        want = base_name(prefer) if prefer else None
        node = next((d for d in found if _die_name(d) == want), found[0])
        chain = [node]
        while True:
            inner = _find_inlined(dwarf, cu.cu, node, addr)
            if inner is None:
                return chain
            chain.append(inner)
            node = inner

    def frame_lines(self, frame: str) -> list[SourceLoc]:
        """Lines of a kernel stack frame like ``tcp_v4_rcv+0xdb6 [kernel]``.

        The module tag is not checked: route frames to the right file first.
        A frame's offset past 0 is a return address, so the byte before it
        (the call) is looked up, as addr2line does.
        """
        parsed = parse_frame(frame)
        if parsed is None:
            return []
        sym, off, _mod = parsed
        base = self.symbol_address(sym)
        if base is None:
            return []
        return self.address_lines(base + off - 1 if off else base, prefer=sym)


def _contains(dwarf: Any, cu: Any, die: Any, addr: int) -> bool:
    return any(lo <= addr < hi for lo, hi in _die_ranges(dwarf, cu, die))


def _find_inlined(dwarf: Any, cu: Any, node: Any, addr: int) -> Any:
    """The outermost inlined_subroutine under ``node`` (through lexical blocks) at ``addr``."""
    work = list(node.iter_children())
    while work:
        die = work.pop(0)
        if die.tag == "DW_TAG_inlined_subroutine":
            if _contains(dwarf, cu, die, addr):
                return die
        elif die.tag == "DW_TAG_lexical_block" and die.has_children:
            # A block without pc ranges can still hold inlined calls.
            rng = _die_ranges(dwarf, cu, die)
            if not rng or any(lo <= addr < hi for lo, hi in rng):
                work[:0] = list(die.iter_children())
    return None


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
            if parsed is None:
                continue
            mod = parsed[2]
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
