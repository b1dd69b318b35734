"""A minimal reader of BTF, the kernel's own type format.

Only what skbpath needs is decoded: function signatures (FUNC -> FUNC_PROTO ->
parameter types, named as C would write them), the prototypes behind
function-pointer typedefs (a tracepoint's ``btf_trace_<event>``) and enum
values.  The layout
follows the kernel's ``Documentation/bpf/btf.rst``::

    header   magic u16 0xeB9F, version u8, flags u8, hdr_len u32,
             type_off u32, type_len u32, str_off u32, str_len u32
    types    struct btf_type {name_off u32, info u32, size_or_type u32}
             followed by kind-specific data (members, params, enumerators...)
    strings  NUL-terminated, offset 0 is the empty string

Split BTF (``/sys/kernel/btf/<module>``) continues the base's numbering: its
first type id is one past the base's last, and its string offsets start at
the base's string section length.

One pass at load records where each type starts; names are decoded only when
asked for, so a 5 MB vmlinux BTF loads in a fraction of a second.
"""

from __future__ import annotations

import struct
from array import array

BTF_MAGIC = 0xEB9F
HEADER_MIN = 24

# Kinds (info bits 24..28).
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

# Bytes of kind-specific data after the 12-byte btf_type: (fixed, per vlen item).
_EXTRA: dict[int, tuple[int, int]] = {
    KIND_INT: (4, 0),
    KIND_PTR: (0, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FWD: (0, 0),
    KIND_TYPEDEF: (0, 0),
    KIND_VOLATILE: (0, 0),
    KIND_CONST: (0, 0),
    KIND_RESTRICT: (0, 0),
    KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (4, 0),
    KIND_TYPE_TAG: (0, 0),
    KIND_ENUM64: (0, 12),
}
# Kinds that only qualify or rename another type: looked through when naming.
_TRANSPARENT = frozenset({KIND_CONST, KIND_VOLATILE, KIND_RESTRICT, KIND_TYPEDEF, KIND_TYPE_TAG})
_MAX_CHAIN = 64  # guards against reference loops in corrupt data


class BtfError(ValueError):
    """The data is not readable BTF."""


class Btf:
    """Parsed BTF: vmlinux's (``base`` None) or a module's split on top of a base."""

    def __init__(self, data: bytes, base: Btf | None = None, source: str = "<bytes>") -> None:
        """Parse ``data``; raise :class:`BtfError` if it is not valid BTF."""
        self.source = source
        self.base = base
        self._data = data
        if len(data) < HEADER_MIN:
            raise BtfError(f"{source}: too short for a BTF header ({len(data)} bytes)")
        if struct.unpack_from("<H", data, 0)[0] == BTF_MAGIC:
            self._endian = "<"
        elif struct.unpack_from(">H", data, 0)[0] == BTF_MAGIC:
            self._endian = ">"
        else:
            raise BtfError(f"{source}: bad BTF magic {data[:2].hex()} (want 9feb or eb9f)")
        e = self._endian
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(e + "5I", data, 4)
        if hdr_len < HEADER_MIN or hdr_len > len(data):
            raise BtfError(f"{source}: bad BTF header length {hdr_len}")
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._str_start = hdr_len + str_off
        self._str_end = self._str_start + str_len
        if self._types_end > len(data) or self._str_end > len(data):
            raise BtfError(
                f"{source}: truncated BTF: sections end at "
                f"{max(self._types_end, self._str_end)}, data has {len(data)} bytes"
            )
        # A split blob's ids and string offsets continue after its base's.
        self.start_id: int = base.start_id + base.nr_types if base else 1
        self.start_str_off: int = base.start_str_off + base.str_len if base else 0
        self.str_len: int = str_len
        self._offsets = self._scan()
        self.nr_types: int = len(self._offsets)
        self._funcs: dict[str, int] | None = None
        self._enums: dict[str, int] | None = None
        self._typedefs: dict[str, int] | None = None
        self._structs: dict[str, int] | None = None

    @classmethod
    def load(cls, path: str, base: Btf | None = None) -> Btf:
        """Read raw BTF from ``path`` (e.g. ``/sys/kernel/btf/vmlinux``)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise BtfError(f"cannot read BTF {path}: {exc.strerror or exc}") from exc
        return cls(data, base=base, source=path)

    # -- parsing -----------------------------------------------------------

    def _scan(self) -> array[int]:
        """Record the byte offset of every type, checking each fits."""
        data, end = self._data, self._types_end
        unpack = struct.Struct(self._endian + "I").unpack_from
        offsets: array[int] = array("Q")
        pos = self._types_start
        extra = _EXTRA
        while pos < end:
            if pos + 12 > end:
                raise BtfError(f"{self.source}: truncated BTF type at byte {pos}")
            info = unpack(data, pos + 4)[0]
            kind = (info >> 24) & 0x1F
            sizes = extra.get(kind)
            if sizes is None:
                raise BtfError(f"{self.source}: unknown BTF kind {kind} at byte {pos}")
            offsets.append(pos)
            pos += 12 + sizes[0] + sizes[1] * (info & 0xFFFF)
        if pos != end:
            raise BtfError(f"{self.source}: truncated BTF type section")
        return offsets

    def _owner(self, type_id: int) -> Btf | None:
        """The Btf (self or a base) that defines ``type_id``."""
        b: Btf | None = self
        while b is not None and type_id < b.start_id:
            b = b.base
        if b is None or type_id >= b.start_id + b.nr_types:
            return None
        return b

    def _type(self, type_id: int) -> tuple[Btf, int, int, int, int] | None:
        """(owner, byte offset, kind, info, size_or_type) of a type id; None for void."""
        owner = self._owner(type_id)
        if owner is None:
            return None
        off = owner._offsets[type_id - owner.start_id]
        _, info, size_type = struct.unpack_from(owner._endian + "3I", owner._data, off)
        return owner, off, (info >> 24) & 0x1F, info, size_type

    def _name_off(self, off: int) -> int:
        return int(struct.unpack_from(self._endian + "I", self._data, off)[0])

    def string(self, str_off: int) -> str:
        """The string at ``str_off`` (base offsets are looked up in the base)."""
        if str_off < self.start_str_off:
            if self.base is None:  # pragma: no cover - start_str_off is 0 then
                return ""
            return self.base.string(str_off)
        pos = self._str_start + str_off - self.start_str_off
        if pos >= self._str_end:
            raise BtfError(f"{self.source}: string offset {str_off} out of range")
        stop = self._data.find(b"\0", pos, self._str_end)
        if stop < 0:
            stop = self._str_end
        return self._data[pos:stop].decode("utf-8", "replace")

    def _index(self, kinds: frozenset[int]) -> dict[str, int]:
        """Name -> first type id of the given kinds, in this blob only."""
        out: dict[str, int] = {}
        unpack = struct.Struct(self._endian + "II").unpack_from
        data = self._data
        for i, off in enumerate(self._offsets):
            name_off, info = unpack(data, off)
            if (info >> 24) & 0x1F in kinds and name_off:
                out.setdefault(self.string(name_off), self.start_id + i)
        return out

    def _find_func(self, name: str) -> int | None:
        b: Btf | None = self
        while b is not None:
            if b._funcs is None:
                b._funcs = b._index(frozenset({KIND_FUNC}))
            if name in b._funcs:
                return b._funcs[name]
            b = b.base
        return None

    # -- naming ------------------------------------------------------------

    def type_name(self, type_id: int) -> str:
        """A C-like name for a type, looking through typedefs and qualifiers.

        ``struct sk_buff *``, ``int``, ``enum netdev_tx``, ``void *``.  Typedefs
        are resolved so that signatures compare by their underlying types.
        """
        stars = 0
        for _ in range(_MAX_CHAIN):
            t = self._type(type_id) if type_id else None
            if t is None:
                base = "void"
                break
            owner, off, kind, info, size_type = t
            if kind == KIND_PTR:
                stars += 1
                type_id = size_type
                continue
            if kind in _TRANSPARENT:
                type_id = size_type
                continue
            name = owner.string(owner._name_off(off))
            if kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FWD):
                keyword = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(kind, "enum")
                if kind == KIND_FWD:
                    keyword = "union" if info >> 31 else "struct"
                base = f"{keyword} {name or '(anon)'}"
            elif kind == KIND_FUNC_PROTO:
                base = "func"
            elif kind == KIND_ARRAY:
                base = "array"
            else:
                base = name or "?"
            break
        else:
            raise BtfError(f"{self.source}: type reference loop at id {type_id}")
        return base + (" " + "*" * stars if stars else "")

    # -- public queries ----------------------------------------------------

    def func_names(self) -> list[str]:
        """Names of the FUNCs defined in this blob (not its base), sorted."""
        if self._funcs is None:
            self._funcs = self._index(frozenset({KIND_FUNC}))
        return sorted(self._funcs)

    def func_signature(self, name: str) -> tuple[str, list[str]] | None:
        """(return type, parameter types) of FUNC ``name``; None if absent.

        Looks in this blob first, then its base; if several FUNCs share the
        name (static functions), the first wins.  A variadic function ends
        with ``"..."``.
        """
        func_id = self._find_func(name)
        if func_id is None:
            return None
        t = self._type(func_id)
        assert t is not None
        sig = self._proto_signature(t[4])
        if sig is None:
            raise BtfError(f"{self.source}: FUNC {name} does not point to a FUNC_PROTO")
        return sig

    def _proto_signature(self, proto_id: int) -> tuple[str, list[str]] | None:
        """(return type, parameter types) of FUNC_PROTO ``proto_id``; None if not one."""
        proto = self._type(proto_id)
        if proto is None or proto[2] != KIND_FUNC_PROTO:
            return None
        owner, off, _, info, ret_id = proto
        params = []
        for i in range(info & 0xFFFF):
            p_name, p_type = struct.unpack_from(owner._endian + "II", owner._data, off + 12 + 8 * i)
            # btf.rst: a last param with name 0 and type 0 marks varargs.
            if p_type == 0 and p_name == 0:
                params.append("...")
            else:
                params.append(self.type_name(p_type))
        return self.type_name(ret_id), params

    def typedef_func_params(self, name: str) -> list[str] | None:
        """Parameter types of the function-pointer TYPEDEF ``name``; None if absent.

        For ``typedef void (*btf_trace_kfree_skb)(void *, struct sk_buff *, ...)``
        this gives ``["void *", "struct sk_buff *", ...]``.  None too when the
        typedef is not a pointer to a function prototype.
        """
        b: Btf | None = self
        type_id = None
        while b is not None:
            if b._typedefs is None:
                b._typedefs = b._index(frozenset({KIND_TYPEDEF}))
            if name in b._typedefs:
                type_id = b._typedefs[name]
                break
            b = b.base
        if type_id is None:
            return None
        t = self._type(type_id)
        assert t is not None
        target = t[4]
        # Look through qualifiers to the pointer, then to the prototype.
        for _ in range(_MAX_CHAIN):
            tt = self._type(target) if target else None
            if tt is None:
                return None
            kind = tt[2]
            if kind == KIND_PTR or kind in _TRANSPARENT:
                if kind == KIND_PTR:
                    sig = self._proto_signature(tt[4])
                    return None if sig is None else sig[1]
                target = tt[4]
                continue
            return None
        raise BtfError(f"{self.source}: type reference loop at typedef {name}")

    def func_params(self, name: str) -> list[str] | None:
        """Parameter types of FUNC ``name``, e.g. ``["struct sk_buff *", "int"]``."""
        sig = self.func_signature(name)
        return None if sig is None else sig[1]

    def func_return(self, name: str) -> str | None:
        """Return type of FUNC ``name`` (typedefs resolved); None if absent."""
        sig = self.func_signature(name)
        return None if sig is None else sig[0]

    def enum_values(self, enum_name: str) -> dict[int, str] | None:
        """Value -> enumerator name of ENUM/ENUM64 ``enum_name`` (``enum `` optional).

        The first enumerator wins when several share a value.  Looks in this
        blob first, then its base; None if there is no such enum.
        """
        enum_name = enum_name.removeprefix("enum ").strip()
        b: Btf | None = self
        while b is not None:
            if b._enums is None:
                b._enums = b._index(frozenset({KIND_ENUM, KIND_ENUM64}))
            if enum_name in b._enums:
                return b._enumerators(b._enums[enum_name])
            b = b.base
        return None

    def struct_size(self, name: str) -> int | None:
        """The size in bytes of STRUCT ``name`` (this blob, then its base); None if absent."""
        b: Btf | None = self
        while b is not None:
            if b._structs is None:
                b._structs = b._index(frozenset({KIND_STRUCT}))
            if name in b._structs:
                t = b._type(b._structs[name])
                return None if t is None else t[4]
            b = b.base
        return None

    def _enumerators(self, type_id: int) -> dict[int, str]:
        t = self._type(type_id)
        assert t is not None
        _, off, kind, info, _ = t
        signed = bool(info >> 31)  # kind_flag: the enum is signed
        e = self._endian
        out: dict[int, str] = {}
        pos = off + 12
        for _ in range(info & 0xFFFF):
            if kind == KIND_ENUM:
                name_off, raw = struct.unpack_from(e + "II", self._data, pos)
                value = raw - (1 << 32) if signed and raw >= 1 << 31 else raw
                pos += 8
            else:
                name_off, lo, hi = struct.unpack_from(e + "III", self._data, pos)
                value = (hi << 32) | lo
                if signed and value >= 1 << 63:
                    value -= 1 << 64
                pos += 12
            out.setdefault(value, self.string(name_off))
        return out
