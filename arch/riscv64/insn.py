"""riscv64 instruction facts: ebreak encodings, ``GET_INSN_LENGTH``, the
reject/simulate decode tables per kernel, ISA-extension alternatives.

The riscv64 backend (backend.py) reads these; they are data, so nothing here imports it.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs
import numpy as np

from ..base import PtRegsField

if TYPE_CHECKING:
    from kpatch_core.features import FeatureSet


# --- facts -----------------------------------------------------------------------------------
EBREAK = 0x00100073  # __BUG_INSN_32  [asm/bug.h]
C_EBREAK = 0x9002  # __BUG_INSN_16
EBREAK_BYTES = EBREAK.to_bytes(4, "little")
C_EBREAK_BYTES = C_EBREAK.to_bytes(2, "little")
NOP = 0x00000013  # addi x0, x0, 0: what ftrace_init_nop writes (2x) over the patchable entry
NOP_BYTES = NOP.to_bytes(4, "little")
MCOUNT_INSN_SIZE = 8  # patchable function entry bytes  [asm/ftrace.h]
MCOUNT_AUIPC_SIZE = 4  # the auipc ftrace_init_nop writes before the site (RISCV_FTRACE_AUIPC_AT_INIT)
AUIPC_T0 = 0x00000297  # auipc t0, 0  [asm/ftrace.h]
CALL_OPS_SIZE = 8  # the ftrace_ops literal before each function (RISCV_DYNAMIC_FTRACE_WITH_CALL_OPS)
MAX_INSN_SIZE = 2  # kprobe_opcode_t words in a slot  [asm/probes.h]
R_RISCV_RELATIVE = 3
EXTABLE_ENTRY_SIZE = 12  # struct exception_table_entry { int insn, fixup; short type, data; }


# struct alt_entry (6.12, relative)  [arch/riscv/include/asm/alternative.h]
ALT_ENTRY = np.dtype([("old_offset", "<i4"), ("alt_offset", "<i4"), ("vendor_id", "<u2"),
                      ("alt_len", "<u2"), ("patch_id", "<u4")])
# RISCV_ISA_EXT_* ids of 6.12 [asm/hwcap.h] that .alternative entries name (patch_id & 0xffff)
ISA_EXT_IDS_612 = {"D": 3, "F": 5, "V": 21, "ZBB": 30, "ZICBOM": 31, "ZIHINTPAUSE": 32,
                   "SVNAPOT": 33, "ZICBOZ": 34, "ZBA": 37, "ZBS": 38, "ZBC": 45, "ZKR": 52,
                   "ZVE32X": 74, "ZAWRS": 85, "SVVPTC": 86, "XLINUXENVCFG": 127}
# the CPU assumed when nothing says otherwise: the extensions QEMU's default rv64 reports
# (riscv_cpufeature_patch_func applies an alternative when the hart has its extension)
ASSUMED_EXTENSIONS = frozenset({"D", "F", "ZBA", "ZBB", "ZBC", "ZBS", "ZIHINTPAUSE"})
EXT_FACT = "RUNTIME_RISCV_{}"  # fact name per extension, e.g. RUNTIME_RISCV_ZBB


def _auipc_t0(offset: int) -> int:
    """``to_auipc_t0``: the auipc half of a call to ``offset`` bytes away (asm/ftrace.h)."""
    offset &= 0xFFFFFFFF
    hi = (offset & 0xFFFFF000) + (0x1000 if offset & 0x800 else 0)
    return (hi & 0xFFFFF000) | AUIPC_T0


def insn_length(halfword: int) -> int:
    """``GET_INSN_LENGTH``: 4 when the low two bits are ``11``, else 2."""
    return 4 if halfword & 3 == 3 else 2


# struct pt_regs  [arch/riscv/include/asm/ptrace.h]; names from regoffset_table (kernel/ptrace.c)
_PT_NAMES = ("epc ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 s2 s3 s4 s5 s6 s7 s8 s9 "
             "s10 s11 t3 t4 t5 t6 status badaddr cause orig_a0").split()
PT_REGS = tuple(PtRegsField(n, 8 * i) for i, n in enumerate(_PT_NAMES))
PT_REGS_SIZE = 288


class Outcome(enum.Enum):
    """``enum probe_insn`` of decode-insn.h, per instruction."""

    REJECTED = "rejected"  # INSN_REJECTED -> -EINVAL
    GOOD_NO_SLOT = "simulate"  # INSN_GOOD_NO_SLOT: simulate_*() in the handler
    GOOD = "singlestep"  # INSN_GOOD: slot = insn + ebreak


@attrs.frozen
class DecodeRow:
    """One ``riscv_insn_is_<name>`` test: ``(insn & mask) == value`` and, for c.jr/c.jalr in
    6.12, ``insn & nonzero != 0`` (rs1 != 0)."""

    name: str
    mask: int
    value: int
    outcome: Outcome
    nonzero: int = 0


REJ, SIM, STEP = Outcome.REJECTED, Outcome.GOOD_NO_SLOT, Outcome.GOOD
_RS1 = 0x0F80  # RVC_INSN_J_RS1_MASK, bits 11:7

# riscv_probe_decode_insn, in the kernel's order (first match wins); everything else -> GOOD.
# Keyed by the feature RISCV_KPROBES_SIMULATE_RVC.
DECODE_TABLES: dict[bool, tuple[DecodeRow, ...]] = {
    # without (6.1): masks from arch/riscv/kernel/probes/simulate-insn.h; every RVC control
    # transfer is rejected, and c_jal (0xe003/0x2001) also matches RV64's c.addiw
    False: (
        DecodeRow("system", 0x7F, 0x73, REJ),
        DecodeRow("fence", 0x7F, 0x0F, REJ),
        DecodeRow("c_j", 0xE003, 0xA001, REJ),
        DecodeRow("c_jr", 0xF07F, 0x8002, REJ),
        DecodeRow("c_jal", 0xE003, 0x2001, REJ),
        DecodeRow("c_jalr", 0xF07F, 0x9002, REJ),
        DecodeRow("c_beqz", 0xE003, 0xC001, REJ),
        DecodeRow("c_bnez", 0xE003, 0xE001, REJ),
        DecodeRow("c_ebreak", 0xFFFF, 0x9002, REJ),
        DecodeRow("jal", 0x7F, 0x6F, SIM),
        DecodeRow("jalr", 0x707F, 0x67, SIM),
        DecodeRow("auipc", 0x7F, 0x17, SIM),
        DecodeRow("branch", 0x7F, 0x63, SIM),
    ),
    # with (6.12): masks from arch/riscv/include/asm/insn.h; c_jal is RV32-only (never on
    # RV64); compressed jumps and branches are simulated
    True: (
        DecodeRow("system", 0x7F, 0x73, REJ),
        DecodeRow("fence", 0x7F, 0x0F, REJ),
        DecodeRow("c_ebreak", 0xFFFF, 0x9002, REJ),
        DecodeRow("c_j", 0xE003, 0xA001, SIM),
        DecodeRow("c_jr", 0xF07F, 0x8002, SIM, _RS1),
        DecodeRow("c_jalr", 0xF07F, 0x9002, SIM, _RS1),
        DecodeRow("c_beqz", 0xE003, 0xC001, SIM),
        DecodeRow("c_bnez", 0xE003, 0xE001, SIM),
        DecodeRow("jal", 0x7F, 0x6F, SIM),
        DecodeRow("jalr", 0x707F, 0x67, SIM),
        DecodeRow("auipc", 0x7F, 0x17, SIM),
        DecodeRow("branch", 0x7F, 0x63, SIM),
    ),
}
OTHER = DecodeRow("other", 0, 0, STEP)


# --- decoder ---------------------------------------------------------------------------------
def decode_table(features: "FeatureSet") -> tuple[DecodeRow, ...]:
    """``riscv_probe_decode_insn``'s rows on a kernel with ``features``."""
    return DECODE_TABLES[features.has("RISCV_KPROBES_SIMULATE_RVC")]


def decode_word(insn: int, table: tuple[DecodeRow, ...]) -> DecodeRow:
    """``riscv_probe_decode_insn`` (rows ``table``) on the 32-bit word read at the probe address."""
    for row in table:
        if insn & row.mask == row.value and (not row.nonzero or insn & row.nonzero):
            return row
    return OTHER


def decode_words(words: np.ndarray, table: tuple[DecodeRow, ...]) -> np.ndarray:
    """Row index into ``table`` for each u32 word, ``-1`` for GOOD (vectorised)."""
    w = np.asarray(words, dtype=np.uint32)
    out = np.full(len(w), -1, dtype=np.int16)
    for i, row in enumerate(table):
        hit = (out < 0) & ((w & np.uint32(row.mask)) == np.uint32(row.value))
        if row.nonzero:
            hit &= (w & np.uint32(row.nonzero)) != 0
        out[hit] = i
    return out


def insn_starts(code: bytes) -> list[int]:
    """Offsets of the instructions in ``code`` decoding from offset 0 (``arch_check_kprobe``)."""
    half = np.frombuffer(code[: len(code) & ~1], dtype="<u2")
    step = np.where((half & 3) == 3, 2, 1)  # in halfwords
    out = []
    i = 0
    n = len(half)
    while i < n:
        out.append(2 * i)
        i += int(step[i])
    return out
