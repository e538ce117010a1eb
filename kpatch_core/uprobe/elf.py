"""A user-space ELF file as the uprobes code sees it: file bytes, PT_LOAD segments, symbols.

uprobes are placed by *file offset* (``uprobe_register(inode, offset, ...)``); tools resolve a
symbol to that offset through the program headers, as libbpf's ``elf_sym_offset`` and bcc's
``bcc_elf_get_...`` do: ``offset = vaddr - p_vaddr + p_offset`` for the ``PT_LOAD`` segment
holding ``vaddr``.  Symbols come from ``.symtab`` (or ``.dynsym`` when stripped), plus a separate
debug file found by build-id (``/usr/lib/debug/.build-id/xx/yyyy.debug``) when one exists.

>>> elf = UserElf.open("/bin/busybox")                        # doctest: +SKIP
>>> elf.symbol_offset("main")                                  # doctest: +SKIP
(Symbol(name='main', ...), 0x4a1c0)
"""
from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING

import attrs
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import InputError

if TYPE_CHECKING:
    from kpatch_arch.base import Backend

DEBUG_ROOTS = ("/usr/lib/debug",)  # gdb's default debug-file-directory
PF_X = 0x1
FUNC_TYPES = frozenset({"STT_FUNC", "STT_GNU_IFUNC"})


@attrs.frozen
class Segment:
    """One ``PT_LOAD`` program header."""

    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)


@attrs.frozen
class Symbol:
    """A function (or other) symbol: name, virtual address, size, where it was read from."""

    name: str
    vaddr: int
    size: int
    kind: str  # "func", "ifunc", "object", "notype"
    bind: str  # "global", "local", "weak"
    table: str  # ".symtab", ".dynsym", "debug:.symtab"


@attrs.frozen
class Note:
    """One ELF note: owner name, type, descriptor bytes (of the section it came from)."""

    name: str
    type: int
    desc: bytes


class UserElf:
    """The mmap'd bytes of an executable or shared library and what uprobes need from them."""

    def __init__(self, path: str, data: bytes | mmap.mmap, debug_roots: Iterable[str] = DEBUG_ROOTS,
                 debug_file: str | None = None) -> None:
        self.path = path
        self.data = data
        self._debug_roots = tuple(debug_roots)
        self._debug_file = debug_file
        try:
            self.elf = ELFFile(_Stream(data))  # type: ignore[arg-type]
            self.machine: str = self.elf["e_machine"]
            self.little_endian: bool = self.elf.little_endian
            self.elf_class: int = self.elf.elfclass
            self.type: str = self.elf["e_type"]
        except (ELFError, ValueError, KeyError) as e:
            raise InputError(f"{path}: not a readable ELF file ({e})") from None
        if self.type not in ("ET_EXEC", "ET_DYN"):
            raise InputError(f"{path}: ELF type {self.type} is not an executable or shared "
                             "library; uprobes attach to mapped ELF files")

    @classmethod
    def open(cls, path: str, debug_roots: Iterable[str] = DEBUG_ROOTS,
             debug_file: str | None = None) -> UserElf:
        """Open ``path`` (one-line :class:`InputError` when it is missing or not an ELF)."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise InputError(f"{path}: empty file, not an ELF executable or library")
                data: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror})") from None
        return cls(path, data, debug_roots, debug_file)

    # -- the backend --------------------------------------------------------------------------
    @cached_property
    def backend(self) -> Backend:
        """The architecture backend (``registry.backend_for`` by ELF machine and endianness)."""
        from ..registry import backend_for
        if self.elf_class != 64:
            raise InputError(f"{self.path}: 32-bit ELF; only 64-bit user code is modelled "
                             "(the compat rule tables are not)")
        return backend_for(self.machine, self.little_endian, self.path)

    # -- file and segments --------------------------------------------------------------------
    @property
    def size(self) -> int:
        """The file size (``i_size_read(inode)``)."""
        return len(self.data)

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes at file ``offset``, zero-filled past the end of the file (``copy_insn``
        copies only the available bytes into a zeroed ``struct arch_uprobe``)."""
        if offset < 0:
            raise ValueError("negative file offset")
        b = bytes(self.data[offset:offset + n])
        return b + bytes(n - len(b))

    @cached_property
    def segments(self) -> tuple[Segment, ...]:
        """The ``PT_LOAD`` program headers, in file order."""
        out = []
        for seg in self.elf.iter_segments():
            if seg["p_type"] == "PT_LOAD":
                out.append(Segment(seg["p_vaddr"], seg["p_offset"], seg["p_filesz"],
                                   seg["p_memsz"], seg["p_flags"]))
        return tuple(out)

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset of ``vaddr``: ``vaddr - p_vaddr + p_offset`` of its ``PT_LOAD`` segment
        (None when no segment maps it from the file)."""
        for s in self.segments:
            if s.vaddr <= vaddr < s.vaddr + s.filesz:
                return vaddr - s.vaddr + s.offset
        return None

    def offset_to_vaddr(self, offset: int) -> int | None:
        """The virtual address a file ``offset`` is mapped at (first executable segment first)."""
        for s in sorted(self.segments, key=lambda s: not s.executable):
            if s.offset <= offset < s.offset + s.filesz:
                return offset - s.offset + s.vaddr
        return None

    def mapped_offset(self, offset: int, page: int) -> bool:
        """True when a process mapping this file has ``offset`` in one of its vmas: the
        ``PT_LOAD`` file ranges widened to whole pages (``register_for_each_vma`` looks for
        vmas, which are page-granular)."""
        for s in self.segments:
            start = s.offset & ~(page - 1)
            end = (s.offset + s.filesz + page - 1) & ~(page - 1)
            if s.filesz and start <= offset < end:
                return True
        return False

    def executable_offset(self, offset: int) -> bool:
        """True when ``offset`` lies in an executable ``PT_LOAD`` segment."""
        return any(s.executable and s.offset <= offset < s.offset + s.filesz for s in self.segments)

    @property
    def pie(self) -> bool:
        """Position-independent (``ET_DYN``: PIE executable or shared library)."""
        return self.type == "ET_DYN"

    # -- notes and build-id -------------------------------------------------------------------
    def notes(self, section: str | None = None) -> Iterator[tuple[str, Note, int]]:
        """Every note as (section name, note, file offset of the note's descriptor)."""
        for sec in self.elf.iter_sections():
            if sec["sh_type"] != "SHT_NOTE" or (section and sec.name != section):
                continue
            for n in sec.iter_notes():  # type: ignore[attr-defined]
                desc_at = n["n_offset"] + 12 + ((n["n_namesz"] + 3) & ~3)
                raw = bytes(self.data[desc_at:desc_at + n["n_descsz"]])
                t = n["n_type"]
                yield sec.name, Note(n["n_name"], t if isinstance(t, int) else _NOTE_TYPES.get(t, -1),
                                     raw), desc_at

    @cached_property
    def build_id(self) -> str | None:
        """The GNU build-id as hex, or None."""
        for _, n, _ in self.notes():
            if n.name == "GNU" and n.type == 3:
                return n.desc.hex()
        return None

    @cached_property
    def debug_path(self) -> str | None:
        """The separate debug file: the one given, else ``ROOT/.build-id/xx/yyyy.debug``."""
        if self._debug_file:
            return self._debug_file
        bid = self.build_id
        if not bid or len(bid) < 4:
            return None
        for root in self._debug_roots:
            p = os.path.join(root, ".build-id", bid[:2], bid[2:] + ".debug")
            if os.path.isfile(p):
                return p
        return None

    # -- symbols ------------------------------------------------------------------------------
    @cached_property
    def symbols(self) -> tuple[Symbol, ...]:
        """Defined symbols: ``.symtab`` if present, else ``.dynsym``; plus the debug file's
        ``.symtab`` (same addresses: it was split from this file)."""
        out: list[Symbol] = []
        tables = [".symtab"] if self.elf.get_section_by_name(".symtab") else []
        tables.append(".dynsym")
        seen: set[tuple[str, int]] = set()
        for t in tables:
            out += _read_symbols(self.elf, t, t, seen)
        dp = self.debug_path
        if dp:
            try:
                with open(dp, "rb") as f:
                    dbg = ELFFile(_Stream(f.read()))  # type: ignore[arg-type]
                out += _read_symbols(dbg, ".symtab", "debug:.symtab", seen)
            except (OSError, ELFError) as e:
                raise InputError(f"{dp}: unreadable debug file ({e})") from None
        return tuple(sorted(out, key=lambda s: (s.vaddr, s.bind != "global", s.name)))

    @cached_property
    def _by_name(self) -> dict[str, list[Symbol]]:
        d: dict[str, list[Symbol]] = {}
        for s in self.symbols:
            d.setdefault(s.name, []).append(s)
        return d

    @cached_property
    def functions(self) -> tuple[Symbol, ...]:
        """Function symbols with a size, one per address (global names first), by address;
        plus the ``.eh_frame`` FDE ranges no symbol covers (a stripped file keeps its unwind
        tables: their ranges still give the instruction boundaries of its functions)."""
        out: dict[int, Symbol] = {}
        for s in self.symbols:
            if s.kind in ("func", "ifunc") and s.size and s.vaddr not in out:
                out[s.vaddr] = s
        starts = sorted(out)
        import bisect
        for f in self.fde_ranges:
            i = bisect.bisect_right(starts, f.vaddr) - 1
            if i >= 0 and starts[i] <= f.vaddr < starts[i] + out[starts[i]].size:
                continue
            out.setdefault(f.vaddr, f)
        return tuple(sorted(out.values(), key=lambda s: s.vaddr))

    @cached_property
    def fde_ranges(self) -> tuple[Symbol, ...]:
        """``.eh_frame`` FDEs as nameless functions (``fde@0xADDR``), by address."""
        from elftools.dwarf.callframe import FDE
        if self.elf.get_section_by_name(".eh_frame") is None:
            return ()
        try:
            cfi = self.elf.get_dwarf_info(relocate_dwarf_sections=False).EH_CFI_entries()
        except (ELFError, ValueError, KeyError, AssertionError):
            return ()  # an unparsable unwind table gives no ranges, symbols still do
        out = {}
        for e in cfi:
            if isinstance(e, FDE) and e.header["address_range"]:
                a = e.header["initial_location"]
                out[a] = Symbol(f"fde@{a:#x}", a, e.header["address_range"], "func", "local",
                                ".eh_frame")
        return tuple(sorted(out.values(), key=lambda s: s.vaddr))

    def lookup(self, name: str) -> list[Symbol]:
        """Symbols called ``name`` (``name@VERSION`` matches the bare name too; ``fde@0xADDR``
        names an unwind-table range)."""
        if name.startswith("fde@"):
            return [f for f in self.fde_ranges if f.name == name]
        return list(self._by_name.get(name, ())) or list(self._by_name.get(name.split("@")[0], ()))

    def function_at(self, vaddr: int) -> Symbol | None:
        """The function symbol whose ``[vaddr, vaddr + size)`` holds ``vaddr``."""
        import bisect
        fs = self.functions
        i = bisect.bisect_right([f.vaddr for f in fs], vaddr) - 1
        while i >= 0:
            f = fs[i]
            if f.vaddr <= vaddr < f.vaddr + f.size:
                return f
            if vaddr - f.vaddr > 1 << 20:
                break
            i -= 1
        return None


_NOTE_TYPES = {"NT_GNU_BUILD_ID": 3, "NT_STAPSDT": 3, "NT_GNU_ABI_TAG": 1, "NT_GNU_PROPERTY_TYPE_0": 5}
_KINDS = {"STT_FUNC": "func", "STT_GNU_IFUNC": "ifunc", "STT_OBJECT": "object", "STT_NOTYPE": "notype"}


def _read_symbols(elf: ELFFile, section: str, label: str, seen: set[tuple[str, int]]) -> list[Symbol]:
    sec = elf.get_section_by_name(section)
    if sec is None or not hasattr(sec, "iter_symbols"):
        return []
    out = []
    for s in sec.iter_symbols():
        if not s.name or s["st_shndx"] == "SHN_UNDEF" or s["st_info"]["type"] not in _KINDS:
            continue
        key = (s.name, s["st_value"])
        if key in seen:
            continue
        seen.add(key)
        out.append(Symbol(s.name, s["st_value"], s["st_size"], _KINDS[s["st_info"]["type"]],
                          s["st_info"]["bind"].removeprefix("STB_").lower(), label))
    return out


class _Stream:
    """A read-only seekable stream over bytes or an mmap (what pyelftools reads from)."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self._d = data
        self._p = 0

    def seek(self, off: int, whence: int = 0) -> int:
        self._p = off if whence == 0 else self._p + off if whence == 1 else len(self._d) + off
        return self._p

    def tell(self) -> int:
        return self._p

    def read(self, n: int = -1) -> bytes:
        end = len(self._d) if n < 0 else self._p + n
        b = bytes(self._d[self._p:end])
        self._p += len(b)
        return b
