"""The ``.BTF`` section of a vmlinux: function prototypes by name, printable C types, members.

Only what the kprobe_events layer asks of BTF (kernel/trace/trace_probe.c, trace_btf.c):
``btf_find_func_proto`` (first ``BTF_KIND_FUNC`` of that name -> its ``FUNC_PROTO``), the
parameters with their names and types, ``btf_type_skip_modifiers``, ``btf_find_struct_member``
(anonymous members included) and ``fetch_type_from_btf_type`` (the default fetch type of an
argument named from BTF on 6.12).

>>> btf = Btf.from_image(Image.open("vmlinux"))        # doctest: +SKIP
>>> p = btf.func("vfs_read")                           # doctest: +SKIP
>>> [(a.name, a.ctype) for a in p.params]              # doctest: +SKIP
[('file', 'struct file *'), ('buf', 'char *'), ('count', 'size_t'), ('pos', 'loff_t *')]
"""
from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING

import attrs

from .errors import InputError

if TYPE_CHECKING:
    from .image import Image

BTF_MAGIC = 0xEB9F
# BTF_KIND_* (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, \
    FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(1, 20)
KIND_NAMES = {0: "void", INT: "int", PTR: "ptr", ARRAY: "array", STRUCT: "struct", UNION: "union",
              ENUM: "enum", FWD: "fwd", TYPEDEF: "typedef", VOLATILE: "volatile", CONST: "const",
              RESTRICT: "restrict", FUNC: "func", FUNC_PROTO: "func_proto", VAR: "var",
              DATASEC: "datasec", FLOAT: "float", DECL_TAG: "decl_tag", TYPE_TAG: "type_tag",
              ENUM64: "enum64"}
# bytes that follow struct btf_type, per kind: (fixed, per vlen item)
_EXTRA = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
          FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12)}
MODIFIERS = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})  # btf_type_skip_modifiers
BTF_INT_SIGNED, BTF_INT_CHAR, BTF_INT_BOOL = 1, 2, 4
POINTER_SIZE = 8  # 64-bit kernels only


@attrs.frozen
class BtfType:
    """One decoded ``struct btf_type`` (the raw fields the kernel helpers read)."""

    id: int
    kind: int
    name: str
    vlen: int
    kflag: bool
    size_or_type: int  # size for INT/STRUCT/UNION/ENUM/FLOAT, type id for the others
    extra: int  # offset of the kind-specific data after the 12-byte header

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind{self.kind}")


@attrs.frozen
class BtfParam:
    """One function parameter: its name, C type, size and the fetch type 6.12 would use."""

    name: str
    type_id: int
    ctype: str  # printable C type, e.g. 'struct file *'
    size: int | None  # bytes, None when unknown (void, function)
    kind: str  # kind after skipping modifiers: 'int', 'ptr', 'struct', ...
    fetch_type: str  # fetch_type_from_btf_type(), default 'u64'


@attrs.frozen
class FuncProto:
    """A function's prototype from BTF: ``btf_find_func_proto`` + ``btf_get_func_param``."""

    name: str
    params: tuple[BtfParam, ...]
    ret_type_id: int  # 0 = void
    ret_ctype: str
    ret_fetch_type: str

    @property
    def returns_void(self) -> bool:
        return self.ret_type_id == 0

    def signature(self) -> str:
        """C-like text, e.g. ``ssize_t vfs_read(struct file *file, char *buf, ...)``."""
        args = ", ".join(f"{p.ctype} {p.name}".replace("* ", "*") if p.name else p.ctype
                         for p in self.params) or "void"
        return f"{self.ret_ctype} {self.name}({args})"


@attrs.frozen
class BtfMember:
    """A struct/union member found by name (``btf_find_struct_member``)."""

    name: str
    type_id: int
    raw_offset: int  # btf_member.offset as stored (bit offset, or kflag-packed)
    anon_offset: int  # bit offset of the anonymous struct/union it was found in


class Btf:
    """Types of one ``.BTF`` blob, indexed once (type offsets + function names)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise InputError(f".BTF: only {len(data)} bytes; not a BTF section")
        magic_le = struct.unpack_from("<H", data, 0)[0]
        if magic_le == BTF_MAGIC:
            e = "<"
        elif struct.unpack_from(">H", data, 0)[0] == BTF_MAGIC:
            e = ">"
        else:
            raise InputError(f".BTF: bad magic {data[:2].hex()}; not a BTF section")
        self._e = e
        _magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            struct.unpack_from(e + "HBBIIIII", data, 0)
        if version != 1:
            raise InputError(f".BTF: version {version} not supported")
        self._data = data
        self._types_start = hdr_len + type_off
        self._str_start = hdr_len + str_off
        self._str_end = self._str_start + str_len
        types_end = self._types_start + type_len
        if types_end > len(data) or self._str_end > len(data):
            raise InputError(".BTF: truncated section")
        offsets = [0]  # id 0 is void
        funcs: dict[str, int] = {}
        hdr = struct.Struct(e + "III")
        pos, tid = self._types_start, 1
        while pos < types_end:
            name_off, info, _ = hdr.unpack_from(data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            offsets.append(pos)
            if kind == FUNC:
                name = self._str(name_off)
                funcs.setdefault(name, tid)  # btf_find_by_name_kind: first match wins
            fixed, per = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + per * vlen
            tid += 1
        self._offsets = offsets
        self._funcs = funcs

    @classmethod
    def from_image(cls, image: "Image") -> "Btf | None":
        """The image's ``.BTF`` section, or None when the kernel has no BTF."""
        s = image.section(".BTF")
        if s is None or not s.size:
            return None
        return cls(bytes(image.data[s.offset:s.offset + s.size]))

    def __len__(self) -> int:
        return len(self._offsets)

    # -- raw access ----------------------------------------------------------------------------
    def _str(self, off: int) -> str:
        start = self._str_start + off
        if off == 0 or start >= self._str_end:
            return ""
        end = self._data.find(b"\0", start, self._str_end)
        return self._data[start:end if end >= 0 else self._str_end].decode("utf-8", "replace")

    @functools.lru_cache(maxsize=65536)
    def type(self, tid: int) -> BtfType | None:
        """``btf_type_by_id``: the type ``tid`` (None for void/0 or out of range)."""
        if tid <= 0 or tid >= len(self._offsets):
            return None
        pos = self._offsets[tid]
        name_off, info, st = struct.unpack_from(self._e + "III", self._data, pos)
        return BtfType(tid, (info >> 24) & 0x1F, self._str(name_off), info & 0xFFFF,
                       bool(info >> 31), st, pos + 12)

    def _u32s(self, pos: int, n: int) -> tuple[int, ...]:
        return struct.unpack_from(f"{self._e}{n}I", self._data, pos)

    def int_info(self, t: BtfType) -> tuple[int, int, int]:
        """(encoding, bit offset, bits) of a ``BTF_KIND_INT``."""
        v = self._u32s(t.extra, 1)[0]
        return (v >> 24) & 0x0F, (v >> 16) & 0xFF, v & 0xFF

    def skip_modifiers(self, tid: int) -> tuple[int, BtfType | None]:
        """``btf_type_skip_modifiers``: follow typedef/const/volatile/restrict/type_tag."""
        t = self.type(tid)
        seen = 0
        while t is not None and t.kind in MODIFIERS and seen < 64:
            tid, t = t.size_or_type, self.type(t.size_or_type)
            seen += 1
        return tid, t

    # -- functions -----------------------------------------------------------------------------
    def func_names(self) -> list[str]:
        """Every function name with a ``BTF_KIND_FUNC`` record."""
        return list(self._funcs)

    @functools.lru_cache(maxsize=4096)
    def func(self, name: str) -> FuncProto | None:
        """``btf_find_func_proto`` + ``btf_get_func_param``: the prototype of ``name``."""
        fid = self._funcs.get(name)
        ft = self.type(fid) if fid else None
        proto = self.type(ft.size_or_type) if ft else None
        if proto is None or proto.kind != FUNC_PROTO:
            return None
        raw = self._u32s(proto.extra, 2 * proto.vlen) if proto.vlen else ()
        params = []
        for i in range(proto.vlen):
            name_off, ptid = raw[2 * i], raw[2 * i + 1]
            _, real = self.skip_modifiers(ptid)
            params.append(BtfParam(self._str(name_off), ptid, self.c_type(ptid), self.size_of(ptid),
                                   real.kind_name if real else "void",
                                   self.fetch_type(ptid)))
        return FuncProto(name, tuple(params), proto.size_or_type, self.c_type(proto.size_or_type),
                         self.fetch_type(proto.size_or_type))

    @functools.cached_property
    def _structs(self) -> dict[str, int]:
        out: dict[str, int] = {}
        hdr = struct.Struct(self._e + "II")
        for tid in range(1, len(self._offsets)):
            name_off, info = hdr.unpack_from(self._data, self._offsets[tid])
            if (info >> 24) & 0x1F == STRUCT and name_off and info & 0xFFFF:
                out.setdefault(self._str(name_off), tid)
        return out

    def struct_named(self, name: str) -> BtfType | None:
        """``bpf_find_btf_id(name, BTF_KIND_STRUCT)``: the struct called ``name`` (with members)."""
        tid = self._structs.get(name) if name else self._first_anonymous_struct
        return self.type(tid) if tid else None

    @functools.cached_property
    def _first_anonymous_struct(self) -> int | None:
        """The struct ``bpf_find_btf_id("", BTF_KIND_STRUCT)`` finds (the first nameless one)."""
        hdr = struct.Struct(self._e + "II")
        for tid in range(1, len(self._offsets)):
            name_off, info = hdr.unpack_from(self._data, self._offsets[tid])
            if (info >> 24) & 0x1F == STRUCT and not name_off:
                return tid
        return None

    def member_offset(self, struct_name: str, path: str) -> int | None:
        """Byte offset of ``path`` (``'d_name.name'``) in ``struct struct_name`` (offsetof)."""
        tid = self._structs.get(struct_name)
        t = self.type(tid) if tid else None
        bits = 0
        for part in path.split("."):
            if t is None:
                return None
            m = self.find_member(t, part)
            if m is None:
                return None
            bits += m.anon_offset + ((m.raw_offset & 0xFFFFFF) if t.kflag else m.raw_offset)
            _, t = self.skip_modifiers(m.type_id)
        return bits // 8

    # -- type facts ----------------------------------------------------------------------------
    def fetch_type(self, tid: int) -> str:
        """``fetch_type_from_btf_type`` on the unmodified type; 'u64' where it gives NULL."""
        _, t = self.skip_modifiers(tid)
        if t is None:
            return "u64"
        if t.kind == ENUM:
            return "s32"
        if t.kind == ENUM64:
            return "s64"
        if t.kind == PTR:
            return "x64"
        if t.kind == INT:
            enc, _, bits = self.int_info(t)
            if bits in (8, 16, 32, 64):
                return ("s" if enc & BTF_INT_SIGNED else "u") + str(bits)
            return "u64"  # unsigned bitfield-sized int; signed odd sizes fall to the default
        return "u64"

    def size_of(self, tid: int) -> int | None:
        """Size in bytes of type ``tid`` (None for void and functions)."""
        _, t = self.skip_modifiers(tid)
        if t is None:
            return None
        if t.kind == PTR:
            return POINTER_SIZE
        if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return t.size_or_type
        if t.kind == ARRAY:
            elem, _idx, n = self._u32s(t.extra, 3)
            es = self.size_of(elem)
            return None if es is None else es * n
        return None

    def c_type(self, tid: int, depth: int = 0) -> str:
        """A printable C type for ``tid``: ``'struct file *'``, ``'const char *'``, ``'size_t'``."""
        t = self.type(tid)
        if t is None:
            return "void"
        if depth > 16:
            return "..."
        k = t.kind
        if k in (INT, FLOAT, TYPEDEF):
            return t.name or KIND_NAMES[k]
        if k in (STRUCT, UNION):
            return f"{KIND_NAMES[k]} {t.name or '(anon)'}"
        if k in (ENUM, ENUM64):
            return f"enum {t.name or '(anon)'}"
        if k == FWD:
            return f"{'union' if t.kflag else 'struct'} {t.name}"
        if k == PTR:
            inner = self.type(t.size_or_type)
            if inner is not None and inner.kind == FUNC_PROTO:
                return "void (*)(...)"
            s = self.c_type(t.size_or_type, depth + 1)
            return s + ("*" if s.endswith("*") else " *")
        if k in (CONST, VOLATILE, RESTRICT):
            q = KIND_NAMES[k]
            base = self.c_type(t.size_or_type, depth + 1)
            return f"{base} {q}" if base.endswith("*") else f"{q} {base}"
        if k == TYPE_TAG:
            return self.c_type(t.size_or_type, depth + 1)
        if k == ARRAY:
            elem, _idx, n = self._u32s(t.extra, 3)
            return f"{self.c_type(elem, depth + 1)}[{n}]"
        if k == FUNC_PROTO:
            return "function"
        return t.name or KIND_NAMES.get(k, "?")

    def is_char_ptr(self, t: BtfType) -> bool:
        """``btf_type_is_char_ptr``: pointer to an unsigned 8-bit int."""
        _, real = self.skip_modifiers(t.size_or_type)
        if real is None or real.kind != INT:
            return False
        enc, _, bits = self.int_info(real)
        return not enc & BTF_INT_SIGNED and bits == 8

    def is_char_array(self, t: BtfType) -> bool:
        """``btf_type_is_char_array``: array of unsigned 8-bit ints."""
        if t.kind != ARRAY:
            return False
        elem = self._u32s(t.extra, 1)[0]
        _, real = self.skip_modifiers(elem)
        if real is None or real.kind != INT:
            return False
        enc, _, bits = self.int_info(real)
        return not enc & BTF_INT_SIGNED and bits == 8

    def member_names(self, t: BtfType) -> list[str]:
        """Names of the direct members of struct/union ``t`` (anonymous ones left out)."""
        if t.kind not in (STRUCT, UNION) or not t.vlen:
            return []
        raw = self._u32s(t.extra, 3 * t.vlen)
        return [n for n in (self._str(raw[3 * i]) for i in range(t.vlen)) if n]

    def find_member(self, t: BtfType, name: str) -> BtfMember | None:
        """``btf_find_struct_member``: a member of struct/union ``t`` by name; anonymous
        struct/union members are pushed on a stack (at most 16) and searched after, last first."""
        stack: list[tuple[BtfType, int]] = []
        cur, base = t, 0
        while True:
            if cur.kind not in (STRUCT, UNION):
                return None
            raw = self._u32s(cur.extra, 3 * cur.vlen) if cur.vlen else ()
            for i in range(cur.vlen):
                name_off, mtid, off = raw[3 * i:3 * i + 3]
                if not name_off:
                    _, mt = self.skip_modifiers(mtid)
                    if mt is not None and len(stack) < 16:
                        stack.append((mt, base + off))
                elif self._str(name_off) == name:
                    return BtfMember(name, mtid, off, base)
            if not stack:
                return None
            cur, base = stack.pop()
