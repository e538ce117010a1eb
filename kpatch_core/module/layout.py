"""Where the loader puts each section: kernel/module/main.c ``layout_sections`` /
``__layout_sections`` (core then init; per pass code, read-only data, ro_after_init, data; each
section aligned to ``sh_addralign`` within its memory type), after ``rewrite_section_headers``
and ``layout_and_allocate`` adjusted the flags (.modinfo, __versions and the per-cpu section are
not loaded; ``.data..ro_after_init`` and ``__jump_table`` are ro_after_init).

Each memory type is its own allocation (``move_module``); they are placed one after another,
page-aligned, from the base the architecture's module area gives.

>>> lay = layout_sections(ko, base=0xffffffffc0000000, page=4096)   # doctest: +SKIP
>>> hex(lay.text[0]), lay.address_of[ko.section(".text").index]      # doctest: +SKIP
"""
from __future__ import annotations

import enum

import attrs

from .kofile import SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS, KoFile

SHF_RO_AFTER_INIT = 0x00200000  # include/linux/module.h (loader-internal flag)


class MemType(enum.IntEnum):
    """``enum mod_mem_type`` (include/linux/module.h), in allocation order."""

    TEXT = 0
    DATA = 1
    RODATA = 2
    RO_AFTER_INIT = 3
    INIT_TEXT = 4
    INIT_DATA = 5
    INIT_RODATA = 6

    @property
    def is_init(self) -> bool:
        """``mod_mem_type_is_init``."""
        return self >= MemType.INIT_TEXT


# __layout_sections: (flags required, flags refused) -> core type, init type
_MASKS = ((SHF_EXECINSTR | SHF_ALLOC, 0, MemType.TEXT, MemType.INIT_TEXT),
          (SHF_ALLOC, SHF_WRITE, MemType.RODATA, MemType.INIT_RODATA),
          (SHF_RO_AFTER_INIT | SHF_ALLOC, 0, MemType.RO_AFTER_INIT, None),
          (SHF_WRITE | SHF_ALLOC, 0, MemType.DATA, MemType.INIT_DATA))
_NOT_LOADED = (".modinfo", "__versions")  # rewrite_section_headers clears SHF_ALLOC
PERCPU_SECTION = ".data..percpu"  # find_pcpusec: allocated in the per-cpu area, not here
_RO_AFTER_INIT = (".data..ro_after_init", "__jump_table")  # layout_and_allocate


def module_init_section(name: str) -> bool:
    """``module_init_layout_section`` with CONFIG_MODULE_UNLOAD (Debian): ``.init*`` only."""
    return name.startswith(".init")


def loaded_flags(name: str, flags: int) -> int:
    """A section's flags as the loader has them before layout."""
    if name in _NOT_LOADED or name == PERCPU_SECTION:
        return flags & ~SHF_ALLOC
    if name in _RO_AFTER_INIT:
        return flags | SHF_RO_AFTER_INIT
    return flags


@attrs.frozen
class ModuleLayout:
    """The placed module: per section index its address and memory type, per type its range."""

    address_of: dict[int, int]  # section index -> address (loaded sections only)
    mem_of: dict[int, MemType]
    regions: dict[MemType, tuple[int, int]]  # [start, end) of each non-empty memory type

    def range_of(self, t: MemType) -> tuple[int, int]:
        """``[start, end)`` of memory type ``t`` (an empty range when the module has none)."""
        return self.regions.get(t, (0, 0))

    @property
    def end(self) -> int:
        """The address after the last memory type."""
        return max((e for _, e in self.regions.values()), default=0)


def layout_sections(ko: KoFile, base: int, page: int) -> ModuleLayout:
    """Lay ``ko`` out from ``base`` (``layout_sections`` + ``move_module``), memory types
    page-aligned in ``enum mod_mem_type`` order."""
    offsets: dict[int, tuple[MemType, int]] = {}
    sizes: dict[MemType, int] = {}
    for is_init in (False, True):
        for need, refuse, core_t, init_t in _MASKS:
            t = init_t if is_init else core_t
            for s in ko.sections:
                if s.index == 0 or s.index in offsets:
                    continue
                f = loaded_flags(s.name, s.flags)
                if (f & need) != need or f & refuse or is_init != module_init_section(s.name):
                    continue
                if t is None:  # WARN_ON_ONCE(type == MOD_INVALID)
                    continue
                off = _align(sizes.get(t, 0), s.align or 1)  # module_get_offset_and_type
                sizes[t] = off + s.size
                offsets[s.index] = (t, off)
    regions: dict[MemType, tuple[int, int]] = {}
    at = base
    for t in MemType:
        if sizes.get(t):
            regions[t] = (at, at + sizes[t])
            at = _align(at + sizes[t], page)
    address_of = {i: regions[t][0] + off for i, (t, off) in offsets.items() if t in regions}
    mem_of = {i: t for i, (t, _) in offsets.items() if t in regions}
    return ModuleLayout(address_of, mem_of, regions)


def section_bytes(ko: KoFile, index: int) -> bytearray:
    """A writable copy of section ``index``'s bytes (zeros for NOBITS), to relocate."""
    s = ko.sections[index]
    return bytearray(s.size) if s.type == SHT_NOBITS else bytearray(ko.bytes_of(s))


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a
