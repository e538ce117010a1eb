"""Write a synthetic ELF64 vmlinux from a boot image's payload, so the ordinary :class:`Image`
opens it: the payload mapped at its link address as sections, a ``.symtab`` from System.map or
kallsyms, and, where the image carries them, ``.rela.dyn`` (the relocations the kernel applies
to itself at boot), ``.BTF`` and ``.notes`` as sections of their own.

>>> write_elf(out, Layout(...), symbols)            # doctest: +SKIP
"""
from __future__ import annotations

import os
import struct
import tempfile

import attrs
import numpy as np

from .symbol_types import STB_LOCAL, NameShapes, symbol_infos

SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOTE, SHT_NOBITS = 1, 2, 3, 4, 7, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHN_ABS = 0xFFF1
ET_EXEC = 2
_BLOB_AT = 0x1000  # file offset of the payload in the synthetic ELF


@attrs.frozen
class OutSection:
    """One section of the synthetic ELF: bytes at ``src`` in the payload (or ``data``)."""

    name: str
    addr: int
    size: int
    type: int = SHT_PROGBITS
    flags: int = SHF_ALLOC
    src: int = -1  # offset in the payload; -1: ``data`` holds the bytes
    data: bytes = b""
    align: int = 1
    entsize: int = 0
    link: int = 0
    info: int = 0


@attrs.frozen
class Symbols:
    """Symbols to write: address, nm type letter, name; in the order to write them."""

    addrs: np.ndarray
    types: str
    names: list[str]
    source: str  # "System.map FILE", "kallsyms", ...
    shapes: NameShapes | None = attrs.field(default=None, eq=False)  # of these names, made early


@attrs.frozen
class Layout:
    """Everything about the payload the ELF header needs."""

    machine: int  # e_machine
    little_endian: bool
    sections: tuple[OutSection, ...]
    e_type: int = ET_EXEC
    e_flags: int = 0
    entry: int = 0


def write_elf(path: str, layout: Layout, payload: bytes | memoryview, syms: Symbols,
              func_names: frozenset[str] = frozenset(), entry_evidence: np.ndarray | None = None,
              own_record: np.ndarray | None = None,
              comment: bytes = b"") -> None:
    """Write the synthetic ELF to ``path`` (atomically: a temporary file renamed into place).
    ``func_names`` (BTF functions), ``entry_evidence`` (per symbol: an ``__mcount_loc``
    record or a function-entry instruction at it) and ``own_record`` (an ``__mcount_loc`` record
    at it and no other symbol there) decide each symbol's ELF type
    (:mod:`.symbol_types`)."""
    out = ElfFile(path)
    try:
        out.write_payload(payload)
    except BaseException:
        out.abort()
        raise
    out.finish(layout, syms, func_names, entry_evidence, own_record, comment)


class ElfFile:
    """A synthetic ELF being written: the payload first, piece by piece as it is decoded
    (:meth:`write_payload`; the GIL is released while the bytes are copied), then the symbol
    table and headers (:meth:`finish`, which renames the file into place); :meth:`abort`
    removes it. :func:`write_elf` does all three at once."""

    def __init__(self, path: str) -> None:
        self.path = path
        d = os.path.dirname(path) or "."
        os.makedirs(d, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=d, prefix=".synth-")
        self._f = os.fdopen(fd, "wb")
        self._f.seek(_BLOB_AT)
        self.payload_size = 0

    def write_payload(self, piece: bytes | bytearray | memoryview) -> None:
        """Append ``piece`` to the payload (file offset ``_BLOB_AT`` onwards)."""
        self._f.write(piece)
        self.payload_size += len(piece)

    def abort(self) -> None:
        """Close and remove the unfinished file."""
        self._f.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def finish(self, layout: Layout, syms: Symbols, func_names: frozenset[str] = frozenset(),
               entry_evidence: np.ndarray | None = None, own_record: np.ndarray | None = None,
               comment: bytes = b"") -> None:
        """Write the sections, ``.symtab``/``.strtab`` and headers after the payload written so
        far and rename the file to its path (the arguments as :func:`write_elf` takes them)."""
        try:
            secs, hdr, shoff, offsets, name_off, e = _tables(
                layout, self.payload_size, syms, func_names, entry_evidence, own_record, comment)
            f = self._f
            for s, off in zip(secs, offsets):
                if s.src < 0 and s.type != SHT_NOBITS:
                    f.seek(off)
                    f.write(s.data)
            f.seek(shoff)
            f.write(bytes(64))
            for s, off, no in zip(secs, offsets, name_off):
                f.write(struct.pack(e + "IIQQQQIIQQ", no, s.type, s.flags, s.addr, off, s.size,
                                    s.link, s.info, s.align, s.entsize))
            f.seek(0)
            f.write(hdr)
            f.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise


def _tables(layout: Layout, payload_size: int, syms: Symbols, func_names: frozenset[str],
            entry_evidence: np.ndarray | None, own_record: np.ndarray | None, comment: bytes
            ) -> tuple[list[OutSection], bytes, int, list[int], list[int], str]:
    """(sections, ELF header, section header offset, file offset and name offset per section,
    byte order) of the synthetic ELF whose payload has ``payload_size`` bytes."""
    e = "<" if layout.little_endian else ">"
    secs = list(layout.sections)
    alloc_sorted = sorted(((s.addr, s.addr + s.size, i + 1, bool(s.flags & SHF_EXECINSTR))
                           for i, s in enumerate(secs) if s.flags & SHF_ALLOC and s.size),
                          key=lambda t: t[0])
    starts = np.array([a[0] for a in alloc_sorted], np.uint64)
    ends = np.array([a[1] for a in alloc_sorted], np.uint64)
    idx = np.array([a[2] for a in alloc_sorted], np.int64)
    exe = np.array([a[3] for a in alloc_sorted], bool)
    addrs = np.asarray(syms.addrs, np.uint64)
    j = np.searchsorted(starts, addrs, side="right").astype(np.int64) - 1
    jj = np.maximum(j, 0)
    inside = (j >= 0) & (addrs <= ends[jj]) if len(starts) else np.zeros(len(addrs), bool)
    shndx = np.where(inside, idx[jj] if len(starts) else 0, SHN_ABS).astype(np.int64)
    is_exec = inside & (exe[jj] if len(starts) else False)
    # .symtab: locals first is an ELF rule (sh_info = first global); keep kallsyms order within
    traced = entry_evidence if entry_evidence is not None else np.zeros(len(addrs), bool)
    info = symbol_infos(syms.types, syms.names, is_exec,
                        np.fromiter(map(func_names.__contains__, syms.names), bool, len(syms.names)),
                        traced, own_record, syms.shapes)
    o = np.argsort((info >> 4) != STB_LOCAL, kind="stable")
    ordered = [syms.names[i] for i in o.tolist()]
    strtab = ("\0" + "\0".join(ordered) + "\0").encode("latin-1")
    st_dt = np.dtype([("name", e + "u4"), ("info", "u1"), ("other", "u1"), ("shndx", e + "u2"),
                      ("value", e + "u8"), ("size", e + "u8")])
    st = np.zeros(len(o) + 1, st_dt)
    lens = np.fromiter(map(len, ordered), np.int64, len(ordered)) + 1  # latin-1: a byte a character
    st["name"][1:] = 1 + np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(o) else []
    st["info"][1:] = info[o]
    st["shndx"][1:] = shndx[o] if len(o) else []
    st["value"][1:] = addrs[o] if len(o) else []
    first_global = 1 + int(((info >> 4) == STB_LOCAL).sum())
    extra = [OutSection(".symtab", 0, st.nbytes, SHT_SYMTAB, 0, data=st.tobytes(), align=8,
                        entsize=24, link=len(secs) + 2, info=first_global),
             OutSection(".strtab", 0, len(strtab), SHT_STRTAB, 0, data=bytes(strtab)),
             OutSection(".comment.kpatch", 0, len(comment), SHT_PROGBITS, 0, data=comment)]
    # a .dynsym cut from a raw image (s390x) keeps its values; its names are not needed, but
    # readers require sh_link to name a string table
    secs = [attrs.evolve(x, link=len(secs) + 2) if x.type == 11 and not x.link else x for x in secs]
    secs += extra
    shstr = bytearray(b"\0")
    name_off = []
    for s in secs + [OutSection(".shstrtab", 0, 0, SHT_STRTAB, 0)]:
        name_off.append(len(shstr))
        shstr += s.name.encode() + b"\0"
    secs.append(OutSection(".shstrtab", 0, len(shstr), SHT_STRTAB, 0, data=bytes(shstr)))
    # file layout: header, payload at _BLOB_AT, own data, section headers
    pos = _BLOB_AT + payload_size
    offsets = []
    for s in secs:
        if s.src >= 0 or s.type == SHT_NOBITS:
            offsets.append(_BLOB_AT + max(s.src, 0))
        else:
            pos = (pos + 7) & ~7
            offsets.append(pos)
            pos += len(s.data)
    shoff = (pos + 7) & ~7
    hdr = bytearray(64)
    hdr[:16] = b"\x7fELF" + bytes([2, 1 if layout.little_endian else 2, 1, 0]) + bytes(8)
    struct.pack_into(e + "HHIQQQIHHHHHH", hdr, 16, layout.e_type, layout.machine, 1, layout.entry,
                     0, shoff, layout.e_flags, 64, 56, 0, 64, len(secs) + 1, len(secs))
    return secs, bytes(hdr), shoff, offsets, name_off, e
