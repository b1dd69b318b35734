"""DWARF source lines, one compile unit: its declarations, file names, line table, inlines.

The stage between the index (tracer/kernel/dwarf_index.py: which CU holds an
address or a symbol) and the queries (tracer/kernel/dwarf.py: SourceMap).
A :class:`CompileUnit` parses only what a query needs from its CU, once: the
top-level DIEs for declarations, the line program for lines, and the one
subprogram containing an address for its chain of inlined calls.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Any

from skbpath.tracer.kernel.dwarf_index import _attr, _die_ranges
from skbpath.tracer.kernel.symbols import base_name


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


class CompileUnit:
    """What the queries need from one compile unit, parsed once."""

    def __init__(self, cu: Any, dwarf: Any) -> None:
        self.cu = cu
        self.dwarf = dwarf
        self.top = cu.get_top_DIE()
        comp_dir = _attr(self.top, "DW_AT_comp_dir")
        self.comp_dir = text(comp_dir) if comp_dir is not None else ""
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
                decl_file = follow(die, "DW_AT_decl_file")
                decl_line = follow(die, "DW_AT_decl_line")
                if decl_file is None or decl_line is None:
                    continue
                loc = SourceLoc(die_name(die), self.file_name(decl_file), decl_line)
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
                name = text(entry.name)
                dirs = lp.header.include_directory
                d = entry.dir_index if v5 else entry.dir_index - 1
                directory = text(dirs[d]) if 0 <= d < len(dirs) else self.comp_dir
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

    def inline_chain(self, addr: int, prefer: str | None = None) -> list[Any]:
        """[subprogram, inlined_subroutine, ...] containing ``addr``, outermost first.

        ``prefer`` names the function expected there, for relocatable objects
        whose sections overlap at address 0.
        """
        dwarf = self.dwarf
        found = [die for die in self.top.iter_children()
                 if die.tag == "DW_TAG_subprogram" and contains(dwarf, self.cu, die, addr)]
        if not found:
            return []
        want = base_name(prefer) if prefer else None
        node = next((d for d in found if die_name(d) == want), found[0])
        chain = [node]
        while True:
            inner = _find_inlined(dwarf, self.cu, node, addr)
            if inner is None:
                return chain
            chain.append(inner)
            node = inner


def text(value: Any) -> str:
    """A DWARF string attribute as text."""
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


def follow(die: Any, name: str) -> Any:
    """An attribute of the DIE or of its abstract origin / specification chain."""
    seen = 0
    while die is not None and seen < 8:
        if name in die.attributes:
            return die.attributes[name].value
        die = _origin(die)
        seen += 1
    return None


def die_name(die: Any) -> str:
    """The name of a DIE or of its origin; "?" if it has none."""
    v = follow(die, "DW_AT_name")
    return text(v) if v is not None else "?"


def contains(dwarf: Any, cu: Any, die: Any, addr: int) -> bool:
    """Whether one of the DIE's pc ranges holds ``addr``."""
    return any(lo <= addr < hi for lo, hi in _die_ranges(dwarf, cu, die))


def _find_inlined(dwarf: Any, cu: Any, node: Any, addr: int) -> Any:
    """The outermost inlined_subroutine under ``node`` (through lexical blocks) at ``addr``."""
    work = list(node.iter_children())
    while work:
        die = work.pop(0)
        if die.tag == "DW_TAG_inlined_subroutine":
            if contains(dwarf, cu, die, addr):
                return die
        elif die.tag == "DW_TAG_lexical_block" and die.has_children:
            # A block without pc ranges can still hold inlined calls.
            rng = _die_ranges(dwarf, cu, die)
            if not rng or any(lo <= addr < hi for lo, hi in rng):
                work[:0] = list(die.iter_children())
    return None
