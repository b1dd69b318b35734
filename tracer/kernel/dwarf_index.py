"""DWARF source lines, the index: reading an ELF's DWARF, its symbol/CU index, the disk cache.

A vmlinux has thousands of compile units and hundreds of MB of DWARF, so no
query walks all CUs: an index of function symbol -> (address, size, CU
offset), built once from .symtab and .debug_aranges, is cached on disk as
JSON keyed by the ELF's build-id (or its size and mtime).  What follows the
index: one compile unit, parsed (tracer/kernel/dwarf_cu.py), and the queries
over them (functions, addresses, frames to lines: tracer/kernel/dwarf.py).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
from io import BytesIO
from typing import IO, Any, NamedTuple

from skbpath.tracer.errors import SkbpathError

INDEX_VERSION = 1

# Data forms whose DW_AT_high_pc is an offset from DW_AT_low_pc (DWARF 4+).
_OFFSET_FORMS = {"DW_FORM_data1", "DW_FORM_data2", "DW_FORM_data4", "DW_FORM_data8",
                 "DW_FORM_udata", "DW_FORM_sdata", "DW_FORM_implicit_const"}
# Sections the queries need; .debug_frame, .debug_loclists and .eh_frame are
# big in a vmlinux and never used, so they are not read.
_SECTIONS = {
    "debug_info_sec": ".debug_info", "debug_aranges_sec": ".debug_aranges",
    "debug_abbrev_sec": ".debug_abbrev", "debug_str_sec": ".debug_str",
    "debug_ranges_sec": ".debug_ranges", "debug_line_sec": ".debug_line",
    "debug_addr_sec": ".debug_addr", "debug_str_offsets_sec": ".debug_str_offsets",
    "debug_line_str_sec": ".debug_line_str", "debug_rnglists_sec": ".debug_rnglists",
}
_UNUSED = ("debug_frame_sec", "eh_frame_sec", "debug_loc_sec", "debug_pubtypes_sec",
           "debug_pubnames_sec", "debug_loclists_sec", "debug_sup_sec",
           "gnu_debugaltlink_sec", "debug_types_sec")


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/skbpath``, else ``~/.cache/skbpath``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "skbpath")


class IndexedElf(NamedTuple):
    """An ELF opened by :func:`open_indexed`, with its index and what reading it left."""

    fh: IO[bytes]
    elf: Any
    functions: dict[str, list[list[int]]]  # symbol -> [[address, size, CU offset], ...]
    ranges: _RangeFinder
    built: bool  # the index was built, not read from the cache
    cache_file: str
    dwarf: Any  # the DWARFInfo read to build the index, else None


def open_indexed(path: str, cache_dir: str | None = None) -> IndexedElf:
    """Open ``path`` and its index; raises SkbpathError (one line) when it is not usable.

    The index comes from the disk cache in ``cache_dir`` (default
    :func:`default_cache_dir`) when it is there, else it is built and saved.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    if not os.path.exists(path):
        raise SkbpathError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SkbpathError(f"{path}: is a directory, not an ELF file")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - kept open for lazy reads; see SourceMap.close()
    except OSError as exc:
        raise SkbpathError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        if fh.read(4) != b"\x7fELF":
            raise SkbpathError(f"{path}: not an ELF file")
        fh.seek(0)
        elf = ELFFile(fh)
        if elf.get_section_by_name(".debug_info") is None:
            raise SkbpathError(
                f"{path}: has no DWARF debug info (for a kernel, use the vmlinux of "
                "the -dbg package, e.g. /usr/lib/debug/boot/vmlinux-$(uname -r))"
            )
        key = _cache_key(path, elf)
        cdir = cache_dir if cache_dir is not None else default_cache_dir()
        cache_file = os.path.join(cdir, f"dwarf-{key}.json")
        index = _load_index(cache_file, key)
        dwarf = None
        built = index is None
        if index is None:
            dwarf = _read_dwarf(elf, fh)
            index = _build_index(elf, dwarf)
            index["key"] = key
            _save_index(cache_file, index)
        return IndexedElf(fh, elf, index["functions"], _RangeFinder(sorted(index["cu_ranges"])),
                          built, cache_file, dwarf)
    except SkbpathError:
        fh.close()
        raise
    except (ELFError, OSError, ValueError, KeyError, IndexError) as exc:
        fh.close()
        raise SkbpathError(f"{path}: cannot read its ELF/DWARF data ({exc})") from exc


def _attr(die: Any, name: str) -> Any:
    a = die.attributes.get(name)
    return None if a is None else a.value


def _read_dwarf(elf: Any, fh: IO[bytes]) -> Any:
    """The DWARFInfo of ``elf``, reading only the sections the queries use."""
    if elf["e_type"] == "ET_REL" or elf.has_section(".zdebug_info") or any(
        (s := elf.get_section_by_name(n)) is not None and s["sh_flags"] & 0x800
        for n in _SECTIONS.values()
    ):
        # A module object needs its relocations applied; compressed
        # (SHF_COMPRESSED) sections need inflating: pyelftools does both.
        return elf.get_dwarf_info(relocate_dwarf_sections=elf["e_type"] == "ET_REL",
                                  follow_links=False)
    # A linked image: its sections are final.  A vmlinux keeps millions of
    # .rela.debug_* entries (--emit-relocs) that must NOT be applied again
    # (pyelftools would take minutes), and .debug_frame/.debug_loclists are
    # never needed, so the few useful sections are read directly.
    from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DwarfConfig, DWARFInfo

    secs: dict[str, Any] = {k: None for k in _UNUSED}
    for arg, name in _SECTIONS.items():
        sec = elf.get_section_by_name(name)
        if sec is None:
            secs[arg] = None
            continue
        fh.seek(sec["sh_offset"])
        data = fh.read(sec["sh_size"])
        secs[arg] = DebugSectionDescriptor(BytesIO(data), name, sec["sh_offset"],
                                           len(data), sec["sh_addr"])
    config = DwarfConfig(little_endian=elf.little_endian, machine_arch=elf.get_machine_arch(),
                         default_address_size=elf.elfclass // 8)
    return DWARFInfo(config=config, **secs)


def _build_index(elf: Any, dwarf: Any) -> dict[str, Any]:
    """Function symbols with (address, size, CU offset), and CU address ranges.

    One pass over .symtab; each symbol's CU comes from .debug_aranges by
    bisection, so no CU is parsed (except without aranges, see below).
    """
    from elftools.elf.sections import SymbolTableSection

    ranges: list[list[int]] = []
    aranges = dwarf.get_aranges() if dwarf.debug_aranges_sec is not None else None
    if aranges is not None:
        ranges = [[e.begin_addr, e.begin_addr + e.length, e.info_offset]
                  for e in aranges.entries if e.length]
    else:
        # No .debug_aranges: the top DIE of each CU gives its ranges.  This
        # reads every CU header once, only while building the index.
        for cu in dwarf.iter_CUs():
            for lo, hi in _die_ranges(dwarf, cu, cu.get_top_DIE()):
                ranges.append([lo, hi, cu.cu_offset])
    ranges.sort()
    finder = _RangeFinder(ranges)
    functions: dict[str, list[list[int]]] = {}
    symtab = elf.get_section_by_name(".symtab")
    if isinstance(symtab, SymbolTableSection):
        exec_sections = {i for i, sec in enumerate(elf.iter_sections())
                         if sec["sh_flags"] & 0x4}  # SHF_EXECINSTR
        for sym in symtab.iter_symbols():
            st = sym.entry
            shndx = st["st_shndx"]
            if not sym.name or not isinstance(shndx, int) or shndx not in exec_sections:
                continue
            if st["st_info"]["type"] not in ("STT_FUNC", "STT_NOTYPE"):
                continue
            addr = st["st_value"]
            cu = finder.find(addr)
            functions.setdefault(sym.name, []).append(
                [addr, st["st_size"], -1 if cu is None else cu])
    return {"version": INDEX_VERSION, "functions": functions, "cu_ranges": ranges}


class _RangeFinder:
    """Address -> CU offset over sorted [lo, hi, cu] ranges."""

    def __init__(self, ranges: list[list[int]]) -> None:
        self.ranges = ranges
        self.lows = [r[0] for r in ranges]

    def find(self, addr: int) -> int | None:
        i = bisect.bisect_right(self.lows, addr) - 1
        # Ranges only overlap in a relocatable object (its sections all start
        # at 0); a short look back finds the enclosing one there.
        for j in range(i, max(i - 32, -1), -1):
            lo, hi, cu = self.ranges[j]
            if lo <= addr < hi:
                return cu
        return None


def _die_ranges(dwarf: Any, cu: Any, die: Any) -> list[tuple[int, int]]:
    """The [lo, hi) address ranges of a DIE (low/high pc or DW_AT_ranges)."""
    attrs = die.attributes
    if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
        lo = attrs["DW_AT_low_pc"].value
        hi_attr = attrs["DW_AT_high_pc"]
        hi = lo + hi_attr.value if hi_attr.form in _OFFSET_FORMS else hi_attr.value
        return [(lo, hi)]
    if "DW_AT_ranges" in attrs:
        rl = dwarf.range_lists()
        if rl is None:
            return []
        ra = attrs["DW_AT_ranges"]
        offset = ra.value
        if ra.form == "DW_FORM_rnglistx":
            # An index into the CU's offset table (DWARF 5, split units).
            base = _attr(cu.get_top_DIE(), "DW_AT_rnglists_base") or 0
            offset = base + _rnglist_offset(dwarf, cu, base, ra.value)
        try:
            entries = rl.get_range_list_at_offset(offset, cu=cu)
        except Exception:  # noqa: BLE001 - unreadable range list: no ranges
            return []
        base_addr = _attr(cu.get_top_DIE(), "DW_AT_low_pc") or 0
        out = []
        for e in entries:
            if hasattr(e, "base_address"):
                base_addr = e.base_address
            elif e.is_absolute:
                out.append((e.begin_offset, e.end_offset))
            else:
                out.append((base_addr + e.begin_offset, base_addr + e.end_offset))
        return out
    return []


def _rnglist_offset(dwarf: Any, cu: Any, base: int, index: int) -> int:
    size = 8 if cu.dwarf_format() == 64 else 4
    stream = dwarf.debug_rnglists_sec.stream
    stream.seek(base + index * size)
    return int.from_bytes(stream.read(size), "little" if dwarf.config.little_endian else "big")


def _cache_key(path: str, elf: Any) -> str:
    """The ELF's GNU build-id, else a hash of its real path, size and mtime."""
    for sec in elf.iter_sections():
        if sec["sh_type"] != "SHT_NOTE":
            continue
        for note in sec.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return f"bid-{note['n_desc']}"
    st = os.stat(path)
    ident = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}"
    return "st-" + hashlib.sha256(ident.encode()).hexdigest()[:24]


def _load_index(cache_file: str, key: str) -> dict[str, Any] | None:
    try:
        with open(cache_file, encoding="utf-8") as fh:
            index = json.load(fh)
    except (OSError, ValueError):
        return None
    if (not isinstance(index, dict) or index.get("version") != INDEX_VERSION
            or index.get("key") != key or not isinstance(index.get("functions"), dict)
            or not isinstance(index.get("cu_ranges"), list)):
        return None  # stale or foreign: rebuild
    return index


def _save_index(cache_file: str, index: dict[str, Any]) -> None:
    """Write the index atomically; a cache that cannot be written is only slower."""
    tmp = f"{cache_file}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(index, fh, separators=(",", ":"))
        os.replace(tmp, cache_file)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
