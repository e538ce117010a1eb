"""A kernel module file as ``load_module`` first sees it: a ``.ko`` (or ``.ko.xz`` / ``.ko.zst``,
decompressed as kernel/module/decompress.c does), an ELF64 ET_REL with section headers, a
``.symtab`` and the ``.modinfo`` strings (``name=``, ``vermagic=``, ``depends=``).

Every problem is one :class:`InputError` line (``elf_validity_check``, ``setup_load_info``,
``check_modinfo`` refuse the same files).

>>> ko = KoFile.open("ext4.ko.xz")        # doctest: +SKIP
>>> ko.name, ko.depends                   # doctest: +SKIP
('ext4', ('jbd2', 'crc16', 'mbcache'))
"""
from __future__ import annotations

import lzma
import os

import attrs
import numpy as np

from ..errors import InputError
from ..inputs import read_bytes

ET_REL = 1
SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS = 2, 3, 4, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON = 0, 0xFF00, 0xFFF1, 0xFFF2
_WHAT = "a kernel module (.ko, .ko.xz or .ko.zst)"


def _shdr_dtype(e: str) -> np.dtype:
    return np.dtype([("name", e + "u4"), ("type", e + "u4"), ("flags", e + "u8"), ("addr", e + "u8"),
                     ("offset", e + "u8"), ("size", e + "u8"), ("link", e + "u4"), ("info", e + "u4"),
                     ("addralign", e + "u8"), ("entsize", e + "u8")])


def sym_dtype(e: str) -> np.dtype:
    """numpy dtype of one Elf64_Sym in byte order ``e``."""
    return np.dtype([("name", e + "u4"), ("info", "u1"), ("other", "u1"), ("shndx", e + "u2"),
                     ("value", e + "u8"), ("size", e + "u8")])


def rela_dtype(e: str) -> np.dtype:
    """numpy dtype of one Elf64_Rela in byte order ``e``."""
    return np.dtype([("offset", e + "u8"), ("info", e + "u8"), ("addend", e + "i8")])


@attrs.frozen
class KoSection:
    """One section header of the module (``sh_*`` fields, name resolved)."""

    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int


def decompress(path: str, raw: bytes) -> bytes:
    """The ELF bytes of a module file: xz and zstd as module_decompress() takes them; a
    truncated or corrupt stream is a one-line error."""
    if raw[:6] == b"\xfd7zXZ\x00":
        try:
            return lzma.decompress(raw)
        except lzma.LZMAError as e:
            raise InputError(f"{path}: corrupt or truncated xz module ({e}); fetch the module "
                             "again") from None
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard
        try:
            return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        except zstandard.ZstdError as e:
            raise InputError(f"{path}: corrupt or truncated zstd module ({e}); fetch the "
                             "module again") from None
    if raw[:2] == b"\x1f\x8b":
        import gzip
        import zlib
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{path}: corrupt or truncated gzip module ({e}); fetch the "
                             "module again") from None
    return raw


@attrs.frozen(eq=False)
class KoFile:
    """A module file opened and checked (headers only are parsed here)."""

    path: str
    data: bytes
    little_endian: bool
    machine: int  # e_machine
    e_flags: int
    sections: tuple[KoSection, ...]
    modinfo: tuple[tuple[str, str], ...]

    @property
    def endian(self) -> str:
        return "<" if self.little_endian else ">"

    @classmethod
    def open(cls, path: str) -> "KoFile":
        """Read and check ``path``; raises :class:`InputError` with a one-line reason."""
        raw = read_bytes(path, _WHAT)
        return cls.parse(path, decompress(path, raw))

    @classmethod
    def parse(cls, path: str, data: bytes) -> "KoFile":
        """Check ``data`` as ``elf_validity_check`` does and read its section headers."""
        if len(data) < 64:
            raise InputError(f"{path}: not a kernel module (only {len(data)} bytes); give {_WHAT}")
        if data[:4] != b"\x7fELF":
            raise InputError(f"{path}: not a kernel module (not an ELF file); give {_WHAT}")
        if data[4] != 2:
            raise InputError(f"{path}: 32-bit ELF module; only 64-bit kernels are supported")
        le = data[5] == 1
        e = "<" if le else ">"
        hdr = np.frombuffer(data[16:64], np.dtype([("type", e + "u2"), ("machine", e + "u2"),
                                                   ("version", e + "u4"), ("entry", e + "u8"),
                                                   ("phoff", e + "u8"), ("shoff", e + "u8"),
                                                   ("flags", e + "u4"), ("ehsize", e + "u2"),
                                                   ("phentsize", e + "u2"), ("phnum", e + "u2"),
                                                   ("shentsize", e + "u2"), ("shnum", e + "u2"),
                                                   ("shstrndx", e + "u2")]))[0]
        if int(hdr["type"]) != ET_REL:
            raise InputError(f"{path}: not a kernel module (ELF type {int(hdr['type'])}, not "
                             "ET_REL); give a .ko file, or pass a vmlinux as the image")
        shoff, shnum = int(hdr["shoff"]), int(hdr["shnum"])
        if int(hdr["shentsize"]) != 64 or shnum == 0:
            raise InputError(f"{path}: malformed module (section header size "
                             f"{int(hdr['shentsize'])}, {shnum} sections); give {_WHAT}")
        if shoff + shnum * 64 > len(data):
            raise InputError(f"{path}: truncated module (section headers end at "
                             f"{shoff + shnum * 64}, file has {len(data)} bytes); fetch it again")
        sh = np.frombuffer(data, _shdr_dtype(e), count=shnum, offset=shoff)
        stridx = int(hdr["shstrndx"])
        if stridx >= shnum:
            raise InputError(f"{path}: malformed module (section name table {stridx} of {shnum})")
        for i in range(shnum):
            if int(sh["type"][i]) != SHT_NOBITS and int(sh["offset"][i]) + int(sh["size"][i]) > len(data):
                raise InputError(f"{path}: truncated module (section {i} ends at "
                                 f"{int(sh['offset'][i]) + int(sh['size'][i])}, file has "
                                 f"{len(data)} bytes); fetch it again")
        so, ss = int(sh["offset"][stridx]), int(sh["size"][stridx])
        names = data[so:so + ss]

        def name(off: int) -> str:
            end = names.find(b"\0", off)
            return names[off:end if end >= 0 else len(names)].decode("latin-1")

        secs = tuple(KoSection(i, name(int(s["name"])), int(s["type"]), int(s["flags"]),
                               int(s["offset"]), int(s["size"]), int(s["link"]), int(s["info"]),
                               int(s["addralign"])) for i, s in enumerate(sh))
        mi = next((s for s in secs if s.name == ".modinfo"), None)
        if mi is None:
            raise InputError(f"{path}: not a kernel module (no .modinfo section); give {_WHAT}")
        info = tuple((k, v) for k, _, v in (
            f.decode("utf-8", "replace").partition("=")
            for f in data[mi.offset:mi.offset + mi.size].split(b"\0") if b"=" in f))
        if not any(s.type == SHT_SYMTAB for s in secs):
            raise InputError(f"{path}: module has no symbol table (stripped); give the module "
                             "as packaged (stock modules keep .symtab)")
        ko = cls(path, data, le, int(hdr["machine"]), int(hdr["flags"]), secs, info)
        if not ko.name:
            raise InputError(f"{path}: not a kernel module (.modinfo has no name=); give {_WHAT}")
        return ko

    # -- .modinfo -------------------------------------------------------------------------
    def info(self, key: str) -> str | None:
        """The first ``.modinfo`` value of ``key`` (``get_modinfo``)."""
        return next((v for k, v in self.modinfo if k == key), None)

    @property
    def name(self) -> str:
        """``name=`` (the name ``MOD:SYM`` and lsmod use), else the file name's stem."""
        n = self.info("name")
        if n:
            return n
        base = os.path.basename(self.path).split(".ko", 1)[0]
        return base.replace("-", "_")

    @property
    def vermagic(self) -> str:
        """``vermagic=`` (release first, then SMP preempt mod_unload ...), or ''."""
        return self.info("vermagic") or ""

    @property
    def release(self) -> str:
        """The kernel release this module was built for (first word of vermagic)."""
        return self.vermagic.split(" ", 1)[0]

    @property
    def depends(self) -> tuple[str, ...]:
        """``depends=`` module names (may be empty)."""
        d = self.info("depends") or ""
        return tuple(x for x in d.split(",") if x)

    # -- sections -------------------------------------------------------------------------
    def section(self, name: str) -> KoSection | None:
        """The first section called ``name``."""
        return next((s for s in self.sections if s.name == name), None)

    def bytes_of(self, s: KoSection) -> bytes:
        """The file bytes of section ``s`` (zeros for NOBITS)."""
        if s.type == SHT_NOBITS:
            return bytes(s.size)
        return self.data[s.offset:s.offset + s.size]

    def symtab(self) -> tuple[np.ndarray, bytes]:
        """(Elf64_Sym array, its string table)."""
        st = next(s for s in self.sections if s.type == SHT_SYMTAB)
        if st.link >= len(self.sections):
            raise InputError(f"{self.path}: malformed module (.symtab links section {st.link})")
        syms = np.frombuffer(self.data, sym_dtype(self.endian), count=st.size // 24, offset=st.offset)
        strtab = self.sections[st.link]
        return syms, self.data[strtab.offset:strtab.offset + strtab.size]

    @property
    def build_id(self) -> str | None:
        """The GNU build-id note, hex."""
        s = self.section(".note.gnu.build-id")
        if s is None or s.size < 16:
            return None
        raw = self.data[s.offset:s.offset + s.size]
        namesz = int.from_bytes(raw[0:4], "little" if self.little_endian else "big")
        descsz = int.from_bytes(raw[4:8], "little" if self.little_endian else "big")
        at = 12 + ((namesz + 3) & ~3)
        return raw[at:at + descsz].hex() or None
