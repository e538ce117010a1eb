"""A module's kallsyms as kernel/module/kallsyms.c keeps them once the module is live:
``layout_symtab``/``add_kallsyms`` copy the symbols ``is_core_symbol`` accepts (defined in a
loaded, non-init section, named; text only without CONFIG_KALLSYMS_ALL) into ``core_kallsyms``,
which ``do_init_module`` makes the module's table after init.  ``find_kallsyms_symbol`` takes the
first symbol (table order) at the highest address at or below the address, skipping mapping
symbols, and sizes it to the next symbol or the end of the module's text.

>>> core = core_symbols(ko, layout, values, names, kallsyms_all=True)   # doctest: +SKIP
"""
from __future__ import annotations

import attrs
import numpy as np

from .kofile import SHF_ALLOC, SHF_EXECINSTR, SHN_LORESERVE, SHN_UNDEF, KoFile
from .layout import ModuleLayout, loaded_flags

STT_SECTION, STT_FILE = 3, 4


def is_mapping_symbol(name: str) -> bool:
    """include/linux/module_symbol.h ``is_mapping_symbol``: ``.L*``, ``L0``, ``$a/$d/$t/$x``."""
    if name.startswith((".L", "L0")):
        return True
    return len(name) >= 2 and name[0] == "$" and name[1] in "adtx" and (len(name) == 2 or name[2] == ".")


@attrs.frozen(eq=False)
class CoreSymbols:
    """Indices into the module's .symtab that ``core_kallsyms`` keeps, in table order."""

    index: np.ndarray  # int64
    init: np.ndarray  # int64: named text symbols in init text (gone once the module is live)


def core_symbols(ko: KoFile, layout: ModuleLayout, names: list[str], kallsyms_all: bool) -> CoreSymbols:
    """``is_core_symbol`` over the module's symbols (mapping symbols dropped as lookups skip
    them)."""
    syms, _ = ko.symtab()
    shndx = syms["shndx"].astype(np.int64)
    typ = syms["info"] & 0xF
    keep, init = [], []
    flags = {s.index: loaded_flags(s.name, s.flags) for s in ko.sections}
    for i in range(1, len(syms)):
        x = int(shndx[i])
        if x == SHN_UNDEF or x >= SHN_LORESERVE or x >= len(ko.sections) or not names[i]:
            continue
        if int(typ[i]) in (STT_SECTION, STT_FILE) or is_mapping_symbol(names[i]):
            continue
        f = flags[x]
        mem = layout.mem_of.get(x)
        if not f & SHF_ALLOC or mem is None:
            continue
        if mem.is_init:
            if f & SHF_EXECINSTR:
                init.append(i)
            continue
        if not kallsyms_all and not f & SHF_EXECINSTR:
            continue
        keep.append(i)
    return CoreSymbols(np.array(keep, np.int64), np.array(init, np.int64))
