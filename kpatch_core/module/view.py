"""A live module presented to the probe pipeline: the laid-out, relocated module written as a
synthetic ELF64 at its module-area addresses, opened as an :class:`Image` whose kernel tables
are the module's own (``find_module_sections``: ``__mcount_loc``, ``_kprobe_blacklist``,
``.kprobes.text``, ``.noinstr.text``, ``__jump_table``, ``.static_call_sites``, ``__bug_table``,
``__ex_table``, ``.return_sites``, ``.parainstructions``, ``.altinstructions``, bounded by the
linker symbols :mod:`kpatch_core.tables` and the backends look up), whose kallsyms are the
module's ``core_kallsyms``, and whose configuration, features and banner are the kernel's.
Addresses outside the module (a call into the kernel, ``pv_ops``) read the kernel image, and
names the module does not define (``__x86_return_thunk``) are the kernel's.

Init text is laid out (relocations into it are applied) but, as after ``do_init_module``, it is
neither text nor in kallsyms: ``MOD:init_fn`` is ENOENT as on a live module.

>>> view = ModuleImage.load(ko, kernel, base)     # doctest: +SKIP
>>> check(view, "ext4_file_open").ok               # doctest: +SKIP
True
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import importlib
import mmap
import os
import shutil
import struct
import tempfile
from types import ModuleType
from typing import TYPE_CHECKING, Callable

import attrs
import numpy as np

from ..errors import InputError
from ..image import Image, KernelVersion, Section
from ..symbols import Kallsyms, SymbolTable
from .kallsyms import CoreSymbols, core_symbols
from .kofile import SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS, KoFile
from .layout import MemType, ModuleLayout, layout_sections, loaded_flags
from .relocate import Relocated, relocate

if TYPE_CHECKING:
    from ..config import KernelConfig
    from ..features import FeatureSet
    from ..tables import KernelTables

FORMAT_VERSION = 6
SHN_ABS = 0xFFF1
STB_GLOBAL = 1

# find_module_sections (kernel/module/main.c) and module_finalize: section -> the linker
# symbols a vmlinux has around the same table
MARKERS: dict[str, tuple[str, str]] = {
    "__mcount_loc": ("__start_mcount_loc", "__stop_mcount_loc"),
    "_kprobe_blacklist": ("__start_kprobe_blacklist", "__stop_kprobe_blacklist"),
    ".kprobes.text": ("__kprobes_text_start", "__kprobes_text_end"),
    ".noinstr.text": ("__noinstr_text_start", "__noinstr_text_end"),
    "__jump_table": ("__start___jump_table", "__stop___jump_table"),
    ".static_call_sites": ("__start_static_call_sites", "__stop_static_call_sites"),
    "__bug_table": ("__start___bug_table", "__stop___bug_table"),
    "__ex_table": ("__start___ex_table", "__stop___ex_table"),
    ".return_sites": ("__return_sites", "__return_sites_end"),
    ".retpoline_sites": ("__retpoline_sites", "__retpoline_sites_end"),
    ".parainstructions": ("__parainstructions", "__parainstructions_end"),
    ".altinstructions": ("__alt_instructions", "__alt_instructions_end"),
    ".static_call.text": ("__static_call_text_start", "__static_call_text_end"),
    ".alternative": ("__alt_start", "__alt_end"),  # riscv module_finalize: apply_module_alternatives
}
_TEXT_MARKERS = (("_stext", "_etext"), ("_sinittext", "_einittext"))


def arch_module(image: Image) -> ModuleType:
    """``kpatch_arch.<arch>.module`` of the image's backend (relocation table, module area)."""
    pkg = importlib.import_module(type(image.backend).__module__).__package__ or ""
    try:
        return importlib.import_module(f"{pkg}.module")
    except ModuleNotFoundError:
        raise InputError(f"{image.path}: loading modules is not supported for "
                         f"{image.backend.name} yet") from None


def kernel_release(kernel: Image) -> str:
    """The release in the banner (``Linux version 6.12.117+deb13-amd64 ...`` -> its 3rd word)."""
    parts = kernel.banner.split()
    return parts[2] if len(parts) > 2 else ""


@attrs.frozen(eq=False)
class LoadedModule:
    """What ``load_module`` made of one .ko: layout, relocations, kept symbols."""

    ko: KoFile
    layout: ModuleLayout
    relocated: Relocated
    names: list[str]
    core: CoreSymbols

    @property
    def name(self) -> str:
        return self.ko.name

    def exports(self) -> dict[str, int]:
        """Global defined symbols (what a module depending on this one resolves against)."""
        syms, _ = self.ko.symtab()
        glob = np.flatnonzero(((syms["info"] >> 4) != 0) & (syms["shndx"] != 0)).tolist()
        v = self.relocated.sym_values
        return {self.names[i]: int(v[i]) for i in glob if self.names[i]}

    def init_functions(self) -> list[tuple[str, int]]:
        """(name, address) of init-text symbols (freed after init; not probeable when live)."""
        v = self.relocated.sym_values
        return [(self.names[i], int(v[i])) for i in self.core.init.tolist()]


def load(ko: KoFile, kernel: Image, base: int, resolve: Callable[[str], int | None]) -> LoadedModule:
    """Lay out and relocate ``ko`` from ``base`` against ``kernel`` (``load_module`` up to
    ``apply_relocations``)."""
    arch = arch_module(kernel)
    ko = arch.module_frob_arch_sections(ko)  # layout_and_allocate: sized before layout
    layout = layout_sections(ko, base, arch.PAGE_SIZE)
    syms, strtab = ko.symtab()
    from .relocate import _names
    names = _names(strtab, syms["name"].astype(np.int64))
    rel = relocate(ko, layout, arch, resolve, names)
    core = core_symbols(ko, layout, names, kernel.config.enabled("KALLSYMS_ALL"),
                        kernel.features.has("MODULE_MAPPING_SYMBOLS_ANY_DOLLAR"))
    return LoadedModule(ko, layout, rel, names, core)


def _cache_dir() -> str:
    c = os.environ.get("KPATCH_CACHE", "")
    if c and c.lower() not in ("off", "0", "no", "none"):
        return os.path.join(c, "modules")
    if c.lower() in ("off", "0", "no", "none"):
        return _private_tmp()
    return os.path.join(os.path.expanduser("~"), ".cache", "kpatch-core", "modules")


@functools.cache
def _makedirs(d: str) -> None:
    os.makedirs(d, exist_ok=True)


@functools.cache
def _private_tmp() -> str:
    d = tempfile.mkdtemp(prefix="kpatch-modules-")
    atexit.register(shutil.rmtree, d, True)
    return d


def write_module_elf(path: str, lm: LoadedModule, machine: int, e_flags: int,
                     callsites: str = "__mcount_loc", page: int = 0) -> None:
    """The relocated module as an ELF64 ET_EXEC: loaded sections at their addresses, its
    core symbols (table order, original st_info), then the marker symbols.  ``callsites``:
    the section ``ftrace_module_init`` reads (FTRACE_CALLSITE_SECTION of the arch)."""
    ko, lay = lm.ko, lm.layout
    e = ko.endian
    idx = sorted(lay.address_of, key=lambda i: lay.address_of[i])
    syms, _ = ko.symtab()
    vals = lm.relocated.sym_values
    # the marker symbols (name, value), after the core symbols
    text = lay.range_of(MemType.TEXT)
    marks = [(_TEXT_MARKERS[0][0], text[0]), (_TEXT_MARKERS[0][1], text[1]),
             (_TEXT_MARKERS[1][0], 0), (_TEXT_MARKERS[1][1], 0)]  # init text: freed after init
    for sec, (start, end) in MARKERS.items():
        s = ko.section(callsites if start == "__start_mcount_loc" else sec)
        a = lay.address_of.get(s.index) if s is not None else None
        lo, hi = (a, a + s.size) if a is not None and s is not None else (0, 0)
        marks += [(start, lo), (end, hi)]
    core = lm.core.index
    names = [lm.names[i].encode("latin-1", "replace") for i in core.tolist()]
    names += [m.encode("latin-1") for m, _ in marks]
    strtab = b"\0" + b"\0".join(names) + b"\0"
    lens = np.fromiter((len(n) + 1 for n in names), np.int64, len(names))
    st = np.zeros(1 + len(names), dtype=[("name", e + "u4"), ("info", "u1"), ("other", "u1"),
                                         ("shndx", e + "u2"), ("value", e + "u8"),
                                         ("size", e + "u8")])
    st["name"][1:] = 1 + np.concatenate(([0], np.cumsum(lens)[:-1]))
    ncore = len(core)
    remap = np.full(len(ko.sections) + 1, SHN_ABS, np.int64)  # section index -> new number
    for k, old in enumerate(idx):
        remap[old] = k + 1
    sh = syms["shndx"][core].astype(np.int64)
    st["info"][1:ncore + 1] = syms["info"][core]
    st["other"][1:ncore + 1] = syms["other"][core]
    st["shndx"][1:ncore + 1] = np.where(sh < len(ko.sections), remap[np.minimum(sh, len(ko.sections))],
                                    SHN_ABS)
    st["value"][1:ncore + 1] = vals[core]
    st["size"][1:ncore + 1] = syms["size"][core]
    st["info"][ncore + 1:] = STB_GLOBAL << 4
    st["shndx"][ncore + 1:] = SHN_ABS
    st["value"][ncore + 1:] = np.array([v for _, v in marks], np.uint64)
    # sections: null, loaded ones, .symtab, .strtab, .shstrtab
    shstr = bytearray(b"\0")
    heads = []
    blobs: list[bytes] = []
    for n, i in enumerate(idx):
        s = ko.sections[i]
        f = loaded_flags(s.name, s.flags) & (SHF_ALLOC | SHF_WRITE | SHF_EXECINSTR)
        # NOBITS in text (riscv's .plt once module_frob_arch_sections sized it): the zeroed
        # module memory, written out as such so the text is loaded
        nobits = s.type == SHT_NOBITS and not f & SHF_EXECINSTR
        data = b"" if nobits else lm.relocated.sections[i]
        size = s.size
        nxt = idx[n + 1] if n + 1 < len(idx) else None
        if not nobits and nxt is not None and lay.mem_of[nxt] == lay.mem_of[i]:
            # the alignment gap up to the next section: zeros (module_memory_alloc clears it)
            size = max(size, lay.address_of[nxt] - lay.address_of[i])
            data = data + bytes(size - len(data))
        elif not nobits and page:
            # the rest of the region's last page: mapped, and read by instruction decoders
            # that run past the last symbol (can_optimize decodes whole kallsyms sizes)
            stop = -(-(lay.address_of[i] + size) // page) * page
            size = stop - lay.address_of[i]
            data = data + bytes(size - len(data))
        heads.append((len(shstr), SHT_NOBITS if nobits else 1, f, lay.address_of[i],
                      size, 0, 0, s.align, 0))
        shstr.extend(s.name.encode("latin-1") + b"\0")
        blobs.append(data)
    nsec = len(idx) + 1
    heads.append((len(shstr), 2, 0, 0, st.nbytes, nsec + 1, 1 + ncore, 8, 24))
    shstr.extend(b".symtab\0")
    blobs.append(st.tobytes())
    heads.append((len(shstr), 3, 0, 0, len(strtab), 0, 0, 1, 0))
    shstr.extend(b".strtab\0")
    blobs.append(bytes(strtab))
    heads.append((len(shstr), 3, 0, 0, 0, 0, 0, 1, 0))
    shstr.extend(b".shstrtab\0")
    blobs.append(bytes(shstr))
    heads[-1] = heads[-1][:4] + (len(shstr),) + heads[-1][5:]
    out = bytearray(64)
    offsets = []
    for b in blobs:
        out.extend(bytes((-len(out)) % 16))
        offsets.append(len(out))
        out.extend(b)
    out.extend(bytes((-len(out)) % 8))
    shoff = len(out)
    out.extend(bytes(64))
    for (name, typ, flags, addr, size, link, info, align, ent), off in zip(heads, offsets):
        out.extend(struct.pack(e + "IIQQQQIIQQ", name, typ, flags, addr, off, size, link, info,
                               align, ent))
    out[:16] = b"\x7fELF" + bytes([2, 1 if ko.little_endian else 2, 1, 0]) + bytes(8)
    struct.pack_into(e + "HHIQQQIHHHHHH", out, 16, 2, machine, 1, 0, 0, shoff, e_flags, 64, 0,
                     0, 64, len(heads) + 1, len(heads))
    d = os.path.dirname(path)
    _makedirs(d)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".mod-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(out)
    os.replace(tmp, path)


class _ModuleSymbols(SymbolTable):
    """The module's symbols; a name it does not define is looked up in the kernel's."""

    kernel: SymbolTable

    def value(self, name: str) -> int | None:
        v = super().value(name)
        return self.kernel.value(name) if v is None else v


class ModuleImage(Image):
    """A live module as an :class:`Image` (see the module docstring)."""

    kernel: Image
    loaded: LoadedModule
    elf_path: str

    @classmethod
    def for_module(cls, lm: LoadedModule, kernel: Image) -> "ModuleImage":
        """Write (or reuse) the synthetic ELF of ``lm`` and open it."""
        key = hashlib.sha256(lm.ko.data).hexdigest()[:24] + "-" + \
            f"{min(lm.layout.address_of.values(), default=0):x}-{kernel.build_id or ''}-{FORMAT_VERSION}"
        path = os.path.join(_cache_dir(), f"{lm.name}-{key}.elf")
        if not os.path.exists(path):
            write_module_elf(path, lm, lm.ko.machine, lm.ko.e_flags,
                             arch_module(kernel).FTRACE_CALLSITE_SECTION, arch_module(kernel).PAGE_SIZE)
        img = cls._open_written(path, kernel)
        img.elf_path = path  # the synthetic ELF (img.path names the .ko in messages)
        img.loaded = lm
        img.path = lm.ko.path
        return img

    @classmethod
    def _open_written(cls, path: str, kernel: Image) -> "ModuleImage":
        """What ``Image.__init__`` makes of a file :func:`write_module_elf` wrote, without its
        pyelftools pass (a millisecond per module): the section headers read with numpy, the
        kernel's backend (tests/test_module.py checks both give the same attributes)."""
        img = cls.__new__(cls)
        img.kernel = kernel
        img.path, img.boot = path, None
        img.config_path, img.overrides = kernel.config_path, dict(kernel.overrides)
        try:
            with open(path, "rb") as f:
                img.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot read the laid-out module ({err}); remove it from "
                             "the module cache and run again") from None
        img.little_endian = img.data[5] == 1
        img.endian = "<" if img.little_endian else ">"
        img.e_type_dyn, img.machine, img.backend = False, kernel.machine, kernel.backend
        e = img.endian
        shoff, = struct.unpack_from(e + "Q", img.data, 40)
        shnum, shstrndx = struct.unpack_from(e + "HH", img.data, 60)
        sh = np.frombuffer(img.data, np.dtype([
            ("name", e + "u4"), ("type", e + "u4"), ("flags", e + "u8"), ("addr", e + "u8"),
            ("offset", e + "u8"), ("size", e + "u8"), ("link", e + "u4"), ("info", e + "u4"),
            ("addralign", e + "u8"), ("entsize", e + "u8")]), count=shnum, offset=shoff)
        so = int(sh["offset"][shstrndx])
        strs = img.data[so:so + int(sh["size"][shstrndx])]
        sections = [Section(strs[n:strs.index(b"\0", n)].decode("latin-1"), a, z, o, t, fl, al)
                    for n, a, z, o, t, fl, al in zip(
                        sh["name"].tolist(), sh["addr"].tolist(), sh["size"].tolist(),
                        sh["offset"].tolist(), sh["type"].tolist(), sh["flags"].tolist(),
                        sh["addralign"].tolist())]
        loaded = [s for s in sections if s.flags & SHF_ALLOC and s.size]
        img.link_range = (min((s.addr for s in loaded), default=0),
                          max((s.end for s in loaded), default=0))
        img.sections = sections
        img.load_offset = img.backend.load_offset(img)
        if img.load_offset:
            img.sections = [attrs.evolve(s, addr=s.addr + img.load_offset)
                            if s.flags & SHF_ALLOC else s for s in sections]
        img._by_name = {s.name: s for s in img.sections}
        img._alloc = sorted((s for s in img.sections
                             if s.flags & SHF_ALLOC and s.size and s.type != SHT_NOBITS),
                            key=lambda s: s.addr)
        img._alloc_starts = [s.addr for s in img._alloc]
        return img

    # -- the kernel's facts ---------------------------------------------------------------
    @functools.cached_property
    def config(self) -> "KernelConfig":
        return self.kernel.config

    @functools.cached_property
    def features(self) -> "FeatureSet":
        return self.kernel.features

    @functools.cached_property
    def banner(self) -> str:
        return self.kernel.banner

    @functools.cached_property
    def version(self) -> KernelVersion:
        return self.kernel.version

    def banner_version(self) -> KernelVersion | None:
        return self.kernel.banner_version()

    @functools.cached_property
    def tables(self) -> "KernelTables":
        """The module's tables; a module without text (data only) has nothing to probe."""
        if self.loaded.layout.range_of(MemType.TEXT)[1] == 0:
            raise InputError(f"{self.path}: module {self.loaded.name} has no text; there is "
                             "nothing in it to probe")
        return super().tables

    @functools.cached_property
    def build_id(self) -> str | None:
        """The module's build-id with the kernel's (the analysis depends on both)."""
        own = self.loaded.ko.build_id
        return f"{own}+{self.kernel.build_id}" if own and self.kernel.build_id else None

    # -- the module's memory, then the kernel's -------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        """Bytes at ``addr``: the module's (across adjacent sections of one memory region, as
        the loader copied them into one allocation), else the kernel's."""
        if self.section_at(addr) is None:
            return self.kernel.read(addr, n)
        out = super().read(addr, n)
        while len(out) < n and self.section_at(addr + len(out)) is not None:
            more = super().read(addr + len(out), n - len(out))
            if not more:
                break
            out += more
        return out

    @functools.cached_property
    def symtab(self) -> SymbolTable:
        own = SymbolTable.read(self)
        st = _ModuleSymbols(own.values, own.sizes, own.info, own.other, own.shndx, own.names)
        st.kernel = self.kernel.symtab
        return st

    @functools.cached_property
    def kallsyms(self) -> Kallsyms:
        """``core_kallsyms``: table order among aliases, sizes to the next symbol or the end
        of the memory region the symbol lies in (``find_kallsyms_symbol``; the region's size
        is page-aligned by ``module_memory_alloc``)."""
        st = self.symtab
        n = len(self.loaded.core.index)
        sel = np.arange(1, 1 + n, dtype=np.int64)
        addrs = st.values[sel]
        order = np.argsort(addrs, kind="stable")
        ks = Kallsyms(addrs[order], [st.names[int(i)] for i in sel[order]], sel[order], st)
        page = arch_module(self.kernel).PAGE_SIZE  # module_memory_alloc: PAGE_ALIGN(size)
        ends = np.array([-(-e // page) * page for _, e in sorted(self.loaded.layout.regions.values())],
                        np.uint64)
        starts = np.array([s for s, _ in sorted(self.loaded.layout.regions.values())], np.uint64)
        if len(ks.uaddrs) and len(starts):
            r = np.searchsorted(starts, ks.uaddrs, side="right").astype(np.int64) - 1
            cap = ends[np.maximum(r, 0)] - ks.uaddrs
            last = np.ones(len(ks.uaddrs), bool)
            last[:-1] = False
            sizes = np.where(last, cap, np.minimum(ks.usizes, cap))
            ks.usizes = np.where(r >= 0, sizes, ks.usizes).astype(np.uint64)
        return ks
