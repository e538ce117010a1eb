"""arm64 module loading facts: the module area (``module_init_limits``: without KASLR the
direct-branch region is the 128 MiB below the kernel's end) and ``apply_relocate_add``'s
relocation types (arch/arm64/kernel/module.c: ``reloc_data``, ``reloc_insn_movw``,
``reloc_insn_imm``, ``reloc_insn_adrp``) as a table of vectorised compute functions.

Each row's ``compute(S, A, P, old)`` takes numpy uint64 arrays (symbol value, addend, place,
the field's current contents) and returns (new contents, overflow mask or None).  A CALL26 or
JUMP26 out of range would go through a PLT entry (module-plts.c); modules placed in the direct
region never need one, and an overflow is reported rather than routed.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..base import Reloc

PAGE_SIZE = 4096
# apply_relocate_add may take every RELA section of the module in one pass (each relocation on its own)
RELOCATE_ACROSS_SECTIONS = True
# include/linux/ftrace.h: CC_USING_PATCHABLE_FUNCTION_ENTRY (-fpatchable-function-entry=2)
FTRACE_CALLSITE_SECTION = "__patchable_function_entries"
SZ_128M = 128 << 20

U64 = np.uint64


def module_base(kernel_start: int, kernel_end: int) -> int:
    """``module_direct_base`` without KASLR: ``_end - SZ_128M`` (page aligned)."""
    end = kernel_end or kernel_start + (64 << 20)
    return (end - SZ_128M + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


# do_reloc: RELOC_OP_ABS, RELOC_OP_PREL, RELOC_OP_PAGE
def _abs(S: np.ndarray, A: np.ndarray, P: np.ndarray) -> np.ndarray:
    return S + A


def _prel(S: np.ndarray, A: np.ndarray, P: np.ndarray) -> np.ndarray:
    return S + A - P


def _page(S: np.ndarray, A: np.ndarray, P: np.ndarray) -> np.ndarray:
    return ((S + A) & ~U64(0xFFF)) - (P & ~U64(0xFFF))


def _data(op: Callable, bits: int, signed_only: bool):  # type: ignore[no-untyped-def]
    """reloc_data: the value itself, 16/32/64 bits; overflow outside [-2^(b-1), 2^b) (ABS)
    or [-2^(b-1), 2^(b-1)) (PREL)."""
    def compute(S: np.ndarray, A: np.ndarray, P: np.ndarray, old: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None]:
        v = op(S, A, P)
        if bits == 64:
            return v, None
        s = v.view(np.int64)
        hi = (1 << (bits - 1)) if signed_only else (1 << bits)
        return v & U64((1 << bits) - 1), (s < -(1 << (bits - 1))) | (s >= hi)
    return compute


def _imm(op: Callable, lsb: int, length: int, field: str, check: bool = True):  # type: ignore[no-untyped-def]
    """reloc_insn_imm: (value >> lsb) & mask(length) encoded in the instruction's field."""
    def compute(S: np.ndarray, A: np.ndarray, P: np.ndarray, old: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None]:
        sval = op(S, A, P).view(np.int64) >> lsb
        imm = sval.view(np.uint64) & U64((1 << length) - 1)
        new = _encode(old, imm, field)
        if not check:
            return new, None
        top = sval >> (length - 1)
        return new, (top != 0) & (top != -1)
    return compute


def _movw(op: Callable, lsb: int, signed: bool, check: bool):  # type: ignore[no-untyped-def]
    """reloc_insn_movw: a 16-bit chunk into MOVZ/MOVK (unsigned) or MOVZ/MOVN (signed)."""
    def compute(S: np.ndarray, A: np.ndarray, P: np.ndarray, old: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None]:
        sval = op(S, A, P).view(np.int64) >> lsb
        imm = sval.view(np.uint64) & U64(0xFFFF)
        insn = old
        if signed:  # AARCH64_INSN_IMM_MOVNZ: MOVN of the inverted chunk for a negative value
            neg = sval < 0
            imm = np.where(neg, ~imm & U64(0xFFFF), imm)
            insn = np.where(neg, old & ~U64(1 << 30), old | U64(1 << 30))
        new = _encode(insn, imm, "16")
        if not check:
            return new, None
        top = sval >> 16
        return new, (top != 0) & (top != -1) if signed else top != 0
    return compute


_FIELDS = {"26": (0, 0x3FFFFFF), "19": (5, 0x7FFFF), "16": (5, 0xFFFF), "14": (5, 0x3FFF),
           "12": (10, 0xFFF)}  # aarch64_insn_encode_immediate


def _encode(insn: np.ndarray, imm: np.ndarray, field: str) -> np.ndarray:
    insn = insn & U64(0xFFFFFFFF)
    if field == "adr":  # immlo in [30:29], immhi in [23:5]
        lo, hi = imm & U64(3), (imm >> U64(2)) & U64(0x7FFFF)
        insn = insn & ~U64((3 << 29) | (0x7FFFF << 5))
        return insn | (lo << U64(29)) | (hi << U64(5))
    shift, mask = _FIELDS[field]
    return (insn & ~U64(mask << shift)) | ((imm & U64(mask)) << U64(shift))


R = Reloc
RELOCATIONS: dict[int, Reloc] = {
    0: R("R_AARCH64_NONE", 0, _data(_abs, 64, False)),
    256: R("R_ARM_NONE", 0, _data(_abs, 64, False)),
    257: R("R_AARCH64_ABS64", 8, _data(_abs, 64, False)),
    258: R("R_AARCH64_ABS32", 4, _data(_abs, 32, False)),
    259: R("R_AARCH64_ABS16", 2, _data(_abs, 16, False)),
    260: R("R_AARCH64_PREL64", 8, _data(_prel, 64, True)),
    261: R("R_AARCH64_PREL32", 4, _data(_prel, 32, True)),
    262: R("R_AARCH64_PREL16", 2, _data(_prel, 16, True)),
    263: R("R_AARCH64_MOVW_UABS_G0", 4, _movw(_abs, 0, False, True)),
    264: R("R_AARCH64_MOVW_UABS_G0_NC", 4, _movw(_abs, 0, False, False)),
    265: R("R_AARCH64_MOVW_UABS_G1", 4, _movw(_abs, 16, False, True)),
    266: R("R_AARCH64_MOVW_UABS_G1_NC", 4, _movw(_abs, 16, False, False)),
    267: R("R_AARCH64_MOVW_UABS_G2", 4, _movw(_abs, 32, False, True)),
    268: R("R_AARCH64_MOVW_UABS_G2_NC", 4, _movw(_abs, 32, False, False)),
    269: R("R_AARCH64_MOVW_UABS_G3", 4, _movw(_abs, 48, False, False)),
    270: R("R_AARCH64_MOVW_SABS_G0", 4, _movw(_abs, 0, True, True)),
    271: R("R_AARCH64_MOVW_SABS_G1", 4, _movw(_abs, 16, True, True)),
    272: R("R_AARCH64_MOVW_SABS_G2", 4, _movw(_abs, 32, True, True)),
    273: R("R_AARCH64_LD_PREL_LO19", 4, _imm(_prel, 2, 19, "19")),
    274: R("R_AARCH64_ADR_PREL_LO21", 4, _imm(_prel, 0, 21, "adr")),
    275: R("R_AARCH64_ADR_PREL_PG_HI21", 4, _imm(_page, 12, 21, "adr")),
    276: R("R_AARCH64_ADR_PREL_PG_HI21_NC", 4, _imm(_page, 12, 21, "adr", False)),
    277: R("R_AARCH64_ADD_ABS_LO12_NC", 4, _imm(_abs, 0, 12, "12", False)),
    278: R("R_AARCH64_LDST8_ABS_LO12_NC", 4, _imm(_abs, 0, 12, "12", False)),
    279: R("R_AARCH64_TSTBR14", 4, _imm(_prel, 2, 14, "14")),
    280: R("R_AARCH64_CONDBR19", 4, _imm(_prel, 2, 19, "19")),
    282: R("R_AARCH64_JUMP26", 4, _imm(_prel, 2, 26, "26")),
    283: R("R_AARCH64_CALL26", 4, _imm(_prel, 2, 26, "26")),
    284: R("R_AARCH64_LDST16_ABS_LO12_NC", 4, _imm(_abs, 1, 11, "12", False)),
    285: R("R_AARCH64_LDST32_ABS_LO12_NC", 4, _imm(_abs, 2, 10, "12", False)),
    286: R("R_AARCH64_LDST64_ABS_LO12_NC", 4, _imm(_abs, 3, 9, "12", False)),
    287: R("R_AARCH64_MOVW_PREL_G0", 4, _movw(_prel, 0, True, True)),
    288: R("R_AARCH64_MOVW_PREL_G0_NC", 4, _movw(_prel, 0, False, False)),
    289: R("R_AARCH64_MOVW_PREL_G1", 4, _movw(_prel, 16, True, True)),
    290: R("R_AARCH64_MOVW_PREL_G1_NC", 4, _movw(_prel, 16, False, False)),
    291: R("R_AARCH64_MOVW_PREL_G2", 4, _movw(_prel, 32, True, True)),
    292: R("R_AARCH64_MOVW_PREL_G2_NC", 4, _movw(_prel, 32, False, False)),
    293: R("R_AARCH64_MOVW_PREL_G3", 4, _movw(_prel, 48, True, False)),
    299: R("R_AARCH64_LDST128_ABS_LO12_NC", 4, _imm(_abs, 4, 8, "12", False)),
}


def module_frob_arch_sections(ko: Any) -> Any:
    """arch/arm64/kernel/module-plts.c ``module_frob_arch_sections`` sizes ``.plt``,
    ``.init.plt`` and ``.text.ftrace_trampoline``: not modelled (modules placed in the direct
    region emit no PLT entry; the 6.12 module oracle agreed on 2,100 probes with the sections
    as the file has them)."""
    return ko


def apply_relocate_add(sec: Any, state: dict) -> None:
    """arch/arm64/kernel/module.c ``apply_relocate_add``: the table, each type vectorised
    (``sec`` is a :class:`kpatch_core.module.relocate.RelaSection`)."""
    sec.apply_table(RELOCATIONS)
