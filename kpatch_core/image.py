"""Open a vmlinux: ELF headers, bytes by address, kernel version, and the backend that reads it.

Loading is lazy: the file is memory-mapped once, and the symbol table, kallsyms view, kernel
tables and configuration are each built on first use and cached on the :class:`Image`.

>>> img = Image.open("testdata/x86_64/vmlinux")   # doctest: +SKIP
>>> img.backend.name, img.version                 # doctest: +SKIP
('x86_64', KernelVersion(major=6, minor=1, patch=0))
"""
from __future__ import annotations

import bisect
import functools
import mmap
import os
import re
import stat
from typing import IO, TYPE_CHECKING, cast

import attrs
import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .buffer_stream import BufferStream
from .errors import InputError
from .inputs import check_regular
from .registry import backend_for

if TYPE_CHECKING:
    from typing import Protocol

    from kpatch_arch.base import Backend

    from .config import KernelConfig
    from .features import FeatureSet
    from .symbols import Kallsyms, SymbolTable
    from .tables import KernelTables

ET_DYN = 3
SHF_ALLOC = 0x2
SHT_NOBITS = 8
SHT_RELA = 4


@attrs.frozen(order=True)
class KernelVersion:
    """The kernel release read from ``linux_banner`` (``6.1.176`` -> (6, 1, 176))."""

    major: int
    minor: int
    patch: int = 0

    def at_least(self, major: int, minor: int) -> bool:
        """True when this kernel is ``major.minor`` or newer; e.g. ``v.at_least(6, 12)``."""
        return (self.major, self.minor) >= (major, minor)

    @property
    def rules(self) -> str:
        """The rule-set label outputs print for this kernel (``"6.12"`` or ``"6.1"``; see
        :data:`kpatch_core.features.RULE_LABELS`); decisions read ``Image.features``."""
        from .features import RULE_LABELS
        return next(label for since, label in RULE_LABELS if (self.major, self.minor) >= since)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def _parse_version(banner: str) -> KernelVersion | None:
    m = re.search(r"Linux version (\d+)\.(\d+)(?:\.(\d+))?", banner)
    if not m:
        return None
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    # Debian's ABI name says 6.1.0-50; the upstream release follows "Debian"
    d = re.search(rf"Debian {major}\.{minor}\.(\d+)", banner)
    return KernelVersion(major, minor, int(d.group(1)) if d else patch)


@attrs.frozen
class Section:
    """One ELF section header, with the fields the engine uses."""

    name: str
    addr: int
    size: int
    offset: int
    type: int
    flags: int
    align: int = 0  # sh_addralign

    @property
    def end(self) -> int:
        return self.addr + self.size


if TYPE_CHECKING:
    class ModuleSource(Protocol):
        """The modules given with the image (kpatch_core.module.ModuleSet)."""

        def view(self, name: str) -> "Image | None": ...

        def view_at(self, addr: int) -> "Image | None": ...

        def missing(self, name: str) -> str: ...


class Image:
    """A kernel image opened for analysis (one per vmlinux file; cheap to keep open)."""

    # MOD:SYM targets are checked against these modules (--module/--modules); None: deferred
    module_source: "ModuleSource | None" = None

    def __init__(self, path: str, config_path: str | None = None,
                 overrides: dict[str, bool] | None = None, system_map: str | None = None) -> None:
        self.path = path
        # a FIFO would block, /dev/zero never ends: regular files only, refused before any read
        check_regular(path, "the path of a vmlinux ELF image")
        from .bootimage import BootElf, boot_elf, needs_boot_elf
        # a vmlinuz/Image/stripped vmlinux: read through a synthetic ELF (kpatch_core/bootimage)
        self.boot: BootElf | None = boot_elf(path, config_path, system_map) \
            if needs_boot_elf(path) else None
        if self.boot is not None:
            config_path = self.boot.config_path
        self.config_path = config_path
        self.overrides = dict(overrides or {})  # --set FACT=y|n, applied over the inferred facts
        try:
            fd = os.open(self.boot.elf_path if self.boot else path, os.O_RDONLY)
        except FileNotFoundError:
            raise InputError(f"{path}: no such file; give the path of a vmlinux ELF image") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory; give the path of a vmlinux ELF image") from None
        except OSError as e:
            raise InputError(f"{path}: cannot open ({e.strerror})") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):  # open(O_RDONLY) succeeds on a directory
                raise InputError(f"{path}: is a directory; give the path of a vmlinux ELF image")
            size = st.st_size
            if size < 64:
                raise InputError(f"{path}: not an ELF file (only {size} bytes); give a vmlinux image")
            self.data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror})") from None
        finally:
            os.close(fd)
        if self.data[:4] != b"\x7fELF":
            raise InputError(f"{path}: not an ELF file (bad magic); give an uncompressed vmlinux, "
                             "not a vmlinuz/bzImage")
        if self.data[4] != 2:
            raise InputError(f"{path}: 32-bit ELF; only 64-bit kernels are supported")
        self.little_endian = self.data[5] == 1
        self._stream = BufferStream(self.data)
        try:
            self.elf = ELFFile(cast("IO[bytes]", self._stream))
            self.e_type_dyn = self.elf.header["e_type"] == "ET_DYN"
            self.machine: str = self.elf.header["e_machine"]
            shoff, shnum, shentsize = (self.elf.header["e_shoff"], self.elf.header["e_shnum"],
                                       self.elf.header["e_shentsize"])
            if shoff + shnum * shentsize > size:
                raise InputError(f"{path}: truncated ELF (section headers end at "
                                 f"{shoff + shnum * shentsize}, file has {size} bytes); "
                                 "download the image again")
            sections = []
            for es in self.elf.iter_sections():
                sh_type = es.header["sh_type"]
                sections.append(Section(es.name, es["sh_addr"], es["sh_size"], es["sh_offset"],
                                        sh_type if isinstance(sh_type, int) else _SHT.get(sh_type, -1),
                                        es["sh_flags"], es["sh_addralign"]))
        except ELFError as e:
            raise InputError(f"{path}: malformed ELF ({e}); give a vmlinux image") from None
        for s in sections:
            if s.type != SHT_NOBITS and s.size and s.offset + s.size > size:
                raise InputError(f"{path}: truncated ELF (section {s.name} ends at "
                                 f"{s.offset + s.size}, file has {size} bytes); download the image again")
            # every address is a 64-bit unsigned long: a section may not wrap past 2^64
            if s.flags & SHF_ALLOC and s.addr + s.size > 1 << 64:
                raise InputError(f"{path}: malformed ELF (section {s.name} at {s.addr:#x} + "
                                 f"{s.size:#x} wraps past 2^64); give a vmlinux image")
        self.backend: Backend = backend_for(self.machine, self.little_endian, path)
        self.endian = "<" if self.little_endian else ">"
        loaded = [s for s in sections if s.flags & SHF_ALLOC and s.size]
        # [lowest, highest) link-time address of the loaded sections, as the file has them
        self.link_range = (min((s.addr for s in loaded), default=0),
                            max((s.end for s in loaded), default=0))
        self.sections = sections
        # where the running kernel (nokaslr) has the image: vmlinux + load_offset (0 except on
        # s390x from 6.10); every address this Image gives or takes is a running-kernel address
        self.load_offset = self.backend.load_offset(self)
        if self.load_offset:
            self.sections = [attrs.evolve(s, addr=s.addr + self.load_offset)
                             if s.flags & SHF_ALLOC else s for s in sections]
        self._by_name = {s.name: s for s in self.sections}
        alloc = sorted((s for s in self.sections
                        if s.flags & SHF_ALLOC and s.size and s.type != SHT_NOBITS),
                       key=lambda s: s.addr)
        self._alloc = alloc
        self._alloc_starts = [s.addr for s in alloc]

    @classmethod
    def open(cls, path: str, config_path: str | None = None,
             overrides: dict[str, bool] | None = None, system_map: str | None = None) -> "Image":
        """Open ``path`` as a kernel image; raises :class:`InputError` with a one-line reason.
        A boot image (vmlinuz, Image, stripped vmlinux) is read with ``system_map`` or its
        kallsyms tables (kpatch_core/bootimage)."""
        return cls(path, config_path, overrides, system_map)

    # -- bytes ------------------------------------------------------------------------------
    def section(self, name: str) -> Section | None:
        """The section called ``name``, or None."""
        return self._by_name.get(name)

    def section_alignment(self, name: str) -> int:
        """``sh_addralign`` of section ``name`` (0 when absent)."""
        s = self.section(name)
        return s.align if s else 0

    def section_at(self, addr: int) -> Section | None:
        """The allocated section holding file bytes at ``addr``, or None."""
        i = bisect.bisect_right(self._alloc_starts, addr) - 1
        if i >= 0 and addr < self._alloc[i].end:
            return self._alloc[i]
        return None

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes at virtual address ``addr`` (fewer at the end of a section, b'' outside)."""
        s = self.section_at(addr)
        if s is None:
            return b""
        off = s.offset + (addr - s.addr)
        end = min(off + n, s.offset + s.size)
        return self.data[off:end]

    def read_u32_at(self, addrs: np.ndarray) -> np.ndarray:
        """The 32-bit word (image byte order) at each address of ``addrs``; 0 where the four
        bytes are not all file bytes of one allocated section (vectorised :meth:`read`)."""
        addrs = np.asarray(addrs, np.uint64)
        out = np.zeros(len(addrs), np.uint32)
        if not len(addrs) or not self._alloc:
            return out
        starts = np.array(self._alloc_starts, np.uint64)
        ends = np.array([s.end for s in self._alloc], np.uint64)
        offsets = np.array([s.offset for s in self._alloc], np.uint64)
        i = np.searchsorted(starts, addrs, side="right").astype(np.int64) - 1
        ok = i >= 0
        ii = np.maximum(i, 0)
        ok &= addrs + np.uint64(4) <= ends[ii]
        pos = (offsets[ii] + (addrs - starts[ii]))[ok].astype(np.int64)
        buf = np.frombuffer(self.data, np.uint8)
        raw = buf[pos[:, None] + np.arange(4)].copy()
        out[ok] = raw.view(np.dtype(self.endian + "u4")).reshape(-1)
        return out

    def read_words(self, start: int, end: int, dtype: str) -> np.ndarray:
        """The array of ``dtype`` (numpy code without byte order, e.g. 'u8') in ``[start, end)``."""
        raw = self.read(start, max(0, end - start))
        dt = np.dtype(self.endian + dtype)
        return np.frombuffer(raw[: len(raw) - len(raw) % dt.itemsize], dtype=dt)

    def read_pointers(self, start: int, end: int) -> np.ndarray:
        """Absolute 64-bit pointers in ``[start, end)``, with R_*_RELATIVE relocations applied.

        arm64 links vmlinux with --no-apply-dynamic-relocs, so pointer tables read as zero in the
        file and their values live in .rela.dyn; other arches store the values directly.
        """
        vals = self.read_words(start, end, "u8").astype(np.uint64).copy()
        end = start + 8 * len(vals)  # a table whose end symbol lies past its section stops there
        if self.load_offset:  # no relocations in the file (s390x 6.10+: the decompressor's)
            lo, hi = self.link_range
            inside = (vals >= np.uint64(lo)) & (vals < np.uint64(hi))
            vals[inside] += np.uint64(self.load_offset)
        offs, addends = self._relative_relocs
        if len(offs) and len(vals):
            lo, hi = np.searchsorted(offs, [start, end])
            rel = offs[lo:hi] - np.uint64(start)
            aligned = rel % np.uint64(8) == 0
            vals[(rel[aligned] // np.uint64(8)).astype(np.int64)] = addends[lo:hi][aligned]
        return vals

    @functools.cached_property
    def _relative_relocs(self) -> tuple[np.ndarray, np.ndarray]:
        rtype = self.backend.relative_reloc_type
        s = self.section(".rela.dyn")
        if s is None or rtype is None:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        dt = np.dtype([("off", self.endian + "u8"), ("info", self.endian + "u8"),
                       ("add", self.endian + "i8")])
        raw = self.data[s.offset:s.offset + s.size]
        rel = np.frombuffer(raw[: len(raw) - len(raw) % 24], dtype=dt)
        offs = rel["off"][(rel["info"] & 0xFFFFFFFF) == rtype]
        vals = rel["add"][(rel["info"] & 0xFFFFFFFF) == rtype].astype(np.uint64)
        atype, dynsym = self.backend.absolute_reloc_type, self.section(".dynsym")
        if atype is not None and dynsym is not None:  # e.g. s390 R_390_64 to a global asm symbol
            sdt = np.dtype([("name", self.endian + "u4"), ("info", "u1"), ("other", "u1"),
                            ("shndx", self.endian + "u2"), ("value", self.endian + "u8"),
                            ("size", self.endian + "u8")])
            sraw = self.data[dynsym.offset:dynsym.offset + dynsym.size]
            syms = np.frombuffer(sraw[: len(sraw) - len(sraw) % 24], dtype=sdt)
            absr = rel[(rel["info"] & 0xFFFFFFFF) == atype]
            idx = (absr["info"] >> np.uint64(32)).astype(np.int64)
            absr = absr[idx < len(syms)]
            idx = idx[idx < len(syms)]
            with np.errstate(over="ignore"):
                avals = syms["value"][idx].astype(np.uint64) + absr["add"].astype(np.uint64)
            offs = np.concatenate([offs, absr["off"]])
            vals = np.concatenate([vals, avals])
        order = np.argsort(offs, kind="stable")
        off = np.uint64(self.load_offset)  # places and values move with the image
        return offs[order].astype(np.uint64) + off, vals[order] + off

    # -- lazily built views ---------------------------------------------------------------
    @functools.cached_property
    def symtab(self) -> "SymbolTable":
        """Every ELF symbol (raw .symtab), read with numpy."""
        from .symbols import SymbolTable
        return SymbolTable.read(self)

    @functools.cached_property
    def kallsyms(self) -> "Kallsyms":
        """The symbols /proc/kallsyms would show, with the kernel's sizes and alias order."""
        from .symbols import Kallsyms
        # scripts/kallsyms.c ignored_prefixes of older kernels (named features)
        ignored = ("__kvm_nvhe_",) if self.features.has("KALLSYMS_IGNORES_KVM_NVHE") else ()
        if self.config.enabled("KALLSYMS_ALL"):
            return Kallsyms.build(self.symtab, ignored=ignored)
        v = self.symtab.value  # without KALLSYMS_ALL: text symbols only (scripts/kallsyms.c)
        ranges: list[tuple[int, int]] = []
        for a, b in (("_stext", "_etext"), ("_sinittext", "_einittext")):
            lo, hi = v(a), v(b)
            if lo is not None and hi is not None:
                ranges.append((lo, hi))
        return Kallsyms.build(self.symtab, tuple(ranges), ignored)

    @functools.cached_property
    def tables(self) -> "KernelTables":
        """The kernel's special tables (blacklist, jump labels, ftrace sites...)."""
        from .tables import KernelTables
        return KernelTables(self)

    @functools.cached_property
    def config(self) -> "KernelConfig":
        """The configuration facts verdicts depend on (inferred, or read from --config)."""
        from .config import KernelConfig
        return KernelConfig.for_image(self, self.config_path, self.overrides)

    def banner_version(self) -> KernelVersion | None:
        """The version of the first ``Linux version`` string in the file (no symbols needed:
        what a backend can ask before addresses are settled)."""
        i = self.data.find(b"Linux version ")
        if i < 0:
            return None
        return _parse_version(self.data[i:i + 512].split(b"\0", 1)[0].decode("ascii", "replace"))

    @functools.cached_property
    def banner(self) -> str:
        """The ``linux_banner`` string (``Linux version 6.1.0-50-amd64 ...``)."""
        addr = self.symtab.value("linux_banner")
        raw = self.read(addr, 512) if addr is not None else b""
        if not raw.startswith(b"Linux version"):
            i = self.data.find(b"Linux version ")
            raw = self.data[i:i + 512] if i >= 0 else b""
        return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()

    @functools.cached_property
    def version(self) -> KernelVersion:
        """The kernel version; 6.1 rules are assumed (and said) when no banner is found."""
        return _parse_version(self.banner) or KernelVersion(6, 1, 0)

    @functools.cached_property
    def features(self) -> "FeatureSet":
        """The kernel behaviours this image has (:mod:`kpatch_core.features`), decided once from
        its version, its architecture and the evidence of its configuration facts."""
        from .features import FeatureSet
        return FeatureSet.for_image(self)

    @functools.cached_property
    def build_id(self) -> str | None:
        """The GNU build-id note as hex, or None."""
        for name in (".notes", ".note.gnu.build-id"):
            s = self.section(name)
            if s is None:
                continue
            raw = self.data[s.offset:s.offset + s.size]
            i = 0
            while i + 12 <= len(raw):
                namesz, descsz, ntype = np.frombuffer(raw[i:i + 12], self.endian + "u4")
                name_end = i + 12 + ((int(namesz) + 3) & ~3)
                if ntype == 3 and raw[i + 12:i + 12 + int(namesz)].rstrip(b"\0") == b"GNU":
                    return raw[name_end:name_end + int(descsz)].hex()
                i = name_end + ((int(descsz) + 3) & ~3)
        return None


_SHT = {"SHT_NULL": 0, "SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_RELA": 4,
        "SHT_NOBITS": 8, "SHT_NOTE": 7, "SHT_REL": 9}
