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
from .layout import MemType, ModuleLayout, loaded_flags

STT_SECTION, STT_FILE = 3, 4


def is_mapping_symbol(name: str, any_dollar: bool = True) -> bool:
    """include/linux/module_symbol.h ``is_mapping_symbol`` (feature
    MODULE_MAPPING_SYMBOLS_ANY_DOLLAR): ``.L*``, ``L0*``, any ``$*``; before it
    (``is_arm_mapping_symbol``): ``.L*`` and ``$a/$d/$t/$x`` alone or followed by ``.``."""
    if any_dollar:
        return name.startswith((".L", "L0", "$"))
    if name.startswith(".L"):
        return True
    return len(name) >= 2 and name[0] == "$" and name[1] in "adtx" and (len(name) == 2 or name[2] == ".")


@attrs.frozen(eq=False)
class CoreSymbols:
    """Indices into the module's .symtab that ``core_kallsyms`` keeps, in table order."""

    index: np.ndarray  # int64
    init: np.ndarray  # int64: named text symbols in init text (gone once the module is live)


def core_symbols(ko: KoFile, layout: ModuleLayout, names: list[str], kallsyms_all: bool,
                 any_dollar: bool = True) -> CoreSymbols:
    """``is_core_symbol`` over the module's symbols (mapping symbols dropped as lookups skip
    them)."""
    syms, _ = ko.symtab()
    shndx = syms["shndx"].astype(np.int64)
    typ = syms["info"] & 0xF
    nsec = len(ko.sections)
    flags = np.array([loaded_flags(s.name, s.flags) for s in ko.sections], np.int64)
    mem = np.full(nsec, -1, np.int64)  # memory type of each loaded section
    for i, t in layout.mem_of.items():
        mem[i] = int(t)
    ok = (shndx != SHN_UNDEF) & (shndx < min(SHN_LORESERVE, nsec)) & (syms["name"] != 0)
    ok &= (typ != STT_SECTION) & (typ != STT_FILE)
    ok[0] = False
    sec = np.where(ok, shndx, 0)
    f, m = flags[sec], mem[sec]
    ok &= ((f & SHF_ALLOC) != 0) & (m >= 0)
    is_init = m >= int(MemType.INIT_TEXT)
    exec_ = (f & SHF_EXECINSTR) != 0
    cand = ok & ~is_init & (exec_ if not kallsyms_all else True)
    init = ok & is_init & exec_
    keep = [i for i in np.flatnonzero(cand).tolist()
            if names[i] and not is_mapping_symbol(names[i], any_dollar)]
    ini = [i for i in np.flatnonzero(init).tolist()
           if names[i] and not is_mapping_symbol(names[i], any_dollar)]
    return CoreSymbols(np.array(keep, np.int64), np.array(ini, np.int64))
