"""x86_64 module loading facts: the module area and ``apply_relocate_add``'s relocation types
(arch/x86/kernel/module.c ``__write_relocate_add``) as a table of compute functions.

Each row's ``compute(S, A, P, old)`` takes numpy uint64 arrays (symbol value, addend, place,
the field's current value) and returns (new field value, overflow mask or None).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..base import Reloc

MODULES_VADDR = 0xFFFFFFFFC0000000  # __START_KERNEL_map + KERNEL_IMAGE_SIZE (1 GiB)
PAGE_SIZE = 4096
# apply_relocate_add may take every RELA section of the module in one pass (__write_relocate_add treats each relocation on its own)
RELOCATE_ACROSS_SECTIONS = True
FTRACE_CALLSITE_SECTION = "__mcount_loc"  # include/linux/ftrace.h (-mrecord-mcount)


def module_base(kernel_start: int, kernel_end: int) -> int:
    """Where the first module is placed (module_alloc from MODULES_VADDR; no KASLR)."""
    return MODULES_VADDR


def _abs(S: np.ndarray, A: np.ndarray, P: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, None]:
    return S + A, None


def _abs32(S: np.ndarray, A: np.ndarray, P: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = S + A  # R_X86_64_32: zero-extended
    return v & np.uint64(0xFFFFFFFF), v > np.uint64(0xFFFFFFFF)


def _abs32s(S: np.ndarray, A: np.ndarray, P: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = (S + A).view(np.int64)  # R_X86_64_32S: sign-extended
    return v.view(np.uint64) & np.uint64(0xFFFFFFFF), (v < -(1 << 31)) | (v >= 1 << 31)


def _pc32(S: np.ndarray, A: np.ndarray, P: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = (S + A - P).view(np.int64)
    return v.view(np.uint64) & np.uint64(0xFFFFFFFF), (v < -(1 << 31)) | (v >= 1 << 31)


def _pc64(S: np.ndarray, A: np.ndarray, P: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, None]:
    return S + A - P, None


# arch/x86/kernel/module.c __write_relocate_add (ELF64 x86-64 psABI type numbers)
RELOCATIONS: dict[int, Reloc] = {
    0: Reloc("R_X86_64_NONE", 0, _abs),
    1: Reloc("R_X86_64_64", 8, _abs),
    2: Reloc("R_X86_64_PC32", 4, _pc32),
    4: Reloc("R_X86_64_PLT32", 4, _pc32),
    10: Reloc("R_X86_64_32", 4, _abs32),
    11: Reloc("R_X86_64_32S", 4, _abs32s),
    24: Reloc("R_X86_64_PC64", 8, _pc64),
}


def module_frob_arch_sections(ko: Any) -> Any:
    """x86 keeps the ``__weak`` ``module_frob_arch_sections`` (kernel/module/main.c): nothing
    to size before layout."""
    return ko


def apply_relocate_add(sec: Any, state: dict) -> None:
    """arch/x86/kernel/module.c ``apply_relocate_add`` -> ``__write_relocate_add``: the table,
    each type vectorised (``sec`` is a :class:`kpatch_core.module.relocate.RelaSection`)."""
    sec.apply_table(RELOCATIONS)
