"""arm64 instruction facts: decode-insn.c's mask/value tables per kernel, BRK encodings,
alternatives and ``is_probed_address_atomic``.

The arm64 backend (backend.py) reads these; they are data, so nothing here imports it.
"""
from __future__ import annotations

import enum
import functools
from typing import TYPE_CHECKING

import attrs
import numpy as np

from ..base import PtRegsField

if TYPE_CHECKING:
    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image


# --- facts -----------------------------------------------------------------------------------
AARCH64_INSN_SIZE = 4
AARCH64_BREAK_MON = 0xD4200000  # BRK #0; BRK #imm = base | imm << 5  [asm/insn-def.h]


def brk(imm: int) -> int:
    """The ``BRK #imm`` instruction word."""
    return AARCH64_BREAK_MON | (imm << 5)


BRK64_OPCODE_KPROBES = brk(0x004)  # kprobe breakpoint  [asm/debug-monitors.h]
BRK64_OPCODE_UPROBES = brk(0x005)  # uprobe breakpoint
BRK64_OPCODE_KPROBES_SS = brk(0x006)  # ends the single-step slot
KPROBE_BREAKPOINT = BRK64_OPCODE_KPROBES.to_bytes(4, "little")
KPROBE_SS_BREAKPOINT = BRK64_OPCODE_KPROBES_SS.to_bytes(4, "little")
UPROBE_BREAKPOINT = BRK64_OPCODE_UPROBES.to_bytes(4, "little")
MAX_INSN_SIZE = 2  # kprobe_opcode_t words in a slot: insn + BRK #6  [asm/probes.h]
MAX_ATOMIC_CONTEXT_SIZE = 128 // 4  # instructions scanned back  [decode-insn.h]
AARCH64_INSN_SPCLREG_DAIF = 0xDA11  # [asm/insn.h]
R_AARCH64_RELATIVE = 1027
EXTABLE_ENTRY_SIZE = 12  # struct exception_table_entry { int insn, fixup; short type, data; }

# struct alt_instr  [arch/arm64/include/asm/alternative-macros.h]: boot-time patching
ALT_INSTR = np.dtype([("orig_offset", "<i4"), ("alt_offset", "<i4"), ("cpucap", "<u2"),
                      ("orig_len", "u1"), ("alt_len", "u1")])
ARM64_CB_BIT = 0x8000  # alternative_cb: a callback patches the site, nothing is copied
# ARM64_LSE_ATOMIC_INSN(llsc, lse) replacements start with an LSE atomic (LDADD/STADD/SWP...
# or CAS); the cpucap number differs between kernels, so it is recognised from these words
LSE_ATOMIC_OPS = ((0x3F200C00, 0x38200000), (0x3FA07C00, 0x08A07C00))
RUNTIME_LSE_ATOMICS = "RUNTIME_LSE_ATOMICS"  # fact: the CPU has LSE atomics (ARMv8.1+)

# struct pt_regs  [arch/arm64/include/asm/ptrace.h]; names from regoffset_table (kernel/ptrace.c)
PT_REGS = (*(PtRegsField(f"x{n}", 8 * n) for n in range(31)),
           PtRegsField("sp", 248), PtRegsField("pc", 256), PtRegsField("pstate", 264))
REGISTER_ALIASES = {"lr": "x30"}  # regoffset_table: {"lr", regs[30]}
EVENT_REGISTERS = (*(f.name for f in PT_REGS), *REGISTER_ALIASES)
PT_REGS_SIZE = 336  # user_pt_regs 272 + orig_x0, syscallno, sdei_ttbr1, pmr_save, stackframe...


class Outcome(enum.Enum):
    """``enum probe_insn`` of decode-insn.h, per instruction."""

    REJECTED = "rejected"  # INSN_REJECTED -> -EINVAL
    GOOD_NO_SLOT = "simulate"  # INSN_GOOD_NO_SLOT: simulate_*() in the handler
    GOOD = "singlestep"  # INSN_GOOD: copied to a slot and stepped there


@attrs.frozen
class DecodeRow:
    """One row of the decision table: ``(insn & mask) == value`` gives ``outcome``."""

    name: str  # the kernel's predicate name (aarch64_insn_is_<name>) or class
    mask: int
    value: int
    outcome: Outcome
    why: str  # the kernel function that decides


REJ, SIM, STEP = Outcome.REJECTED, Outcome.GOOD_NO_SLOT, Outcome.GOOD
_HINT = 0xD503201F  # aarch64_insn_is_hint: mask 0xFFFFF01F
# aarch64_insn_is_steppable_hint: insn & 0xFE0 in this list
STEPPABLE_HINTS = {"nop": 0x000, "xpaclri": 0x0E0, "pacia1716": 0x100, "pacib1716": 0x140,
                   "paciaz": 0x300, "paciasp": 0x320, "pacibz": 0x340, "pacibsp": 0x360,
                   "bti": 0x400, "bti c": 0x440, "bti j": 0x480, "bti jc": 0x4C0}


@functools.cache
def _table(bcond_matches_bc: bool, mops_not_steppable: bool) -> tuple[DecodeRow, ...]:
    """``arm_kprobe_decode_insn`` flattened to first-match rows, with or without the features
    ARM64_BCOND_MATCHES_BC and ARM64_MOPS_NOT_STEPPABLE.

    The kernel's order: ldr/ldrsw literal are simulated first (arm_kprobe_decode_insn); then
    ``aarch64_insn_is_steppable`` -> slot; else the simulate list of ``arm_probe_decode_insn``;
    else rejected.  Rows inside the branch/system class come before the class catch-all.
    """
    # aarch64_insn_is_bcond: the newer mask also takes BC.cond (bit 4 set)
    bcond = (0xFF000000, 0x54000000) if bcond_matches_bc else (0xFF000010, 0x54000000)
    rows = [
        DecodeRow("ldr_lit", 0xBF000000, 0x18000000, SIM, "simulate_ldr_literal"),
        DecodeRow("ldrsw_lit", 0xFF000000, 0x98000000, SIM, "simulate_ldrsw_literal"),
        # class_branch_sys: branches are not steppable (aarch64_insn_is_branch) ...
        DecodeRow("bcond", *bcond, SIM, "simulate_b_cond"),
        DecodeRow("cbz", 0x7F000000, 0x34000000, SIM, "simulate_cbz_cbnz"),
        DecodeRow("cbnz", 0x7F000000, 0x35000000, SIM, "simulate_cbz_cbnz"),
        DecodeRow("tbz", 0x7F000000, 0x36000000, SIM, "simulate_tbz_tbnz"),
        DecodeRow("tbnz", 0x7F000000, 0x37000000, SIM, "simulate_tbz_tbnz"),
        DecodeRow("b", 0xFC000000, 0x14000000, SIM, "simulate_b_bl"),
        DecodeRow("bl", 0xFC000000, 0x94000000, SIM, "simulate_b_bl"),
        DecodeRow("br", 0xFFFFFC1F, 0xD61F0000, SIM, "simulate_br_blr_ret"),
        DecodeRow("blr", 0xFFFFFC1F, 0xD63F0000, SIM, "simulate_br_blr_ret"),
        DecodeRow("ret", 0xFFFFFC1F, 0xD65F0000, SIM, "simulate_br_blr_ret"),
        DecodeRow("ret_auth", 0xFFFFFBFF, 0xD65F0BFF, REJ, "arm_probe_decode_insn"),
        DecodeRow("br_auth", 0xFEFFF800, 0xD61F0800, REJ, "arm_probe_decode_insn"),
        DecodeRow("blr_auth", 0xFEFFF800, 0xD63F0800, REJ, "arm_probe_decode_insn"),
        # ... nor are msr, exception generation, eret
        DecodeRow("msr_imm", 0xFFF8F01F, 0xD500401F, REJ, "aarch64_insn_is_steppable"),
        DecodeRow("msr_reg", 0xFFF00000, 0xD5100000, REJ, "aarch64_insn_is_steppable"),
        DecodeRow("exception", 0xFF000000, 0xD4000000, REJ, "aarch64_insn_is_steppable"),
        DecodeRow("eret", 0xFFFFFFFF, 0xD69F03E0, REJ, "aarch64_insn_is_steppable"),
        DecodeRow("eret_auth", 0xFFFFFBFF, 0xD69F0BFF, REJ, "aarch64_insn_is_steppable"),
        # mrs is steppable unless it reads DAIF (extract_system_reg != AARCH64_INSN_SPCLREG_DAIF)
        DecodeRow("mrs_daif", 0xFFFFFFE0, 0xD5300000 | AARCH64_INSN_SPCLREG_DAIF << 5, REJ,
                  "aarch64_insn_is_steppable"),
        DecodeRow("mrs", 0xFFF00000, 0xD5300000, STEP, "aarch64_insn_is_steppable"),
        # hint: steppable only when whitelisted (aarch64_insn_is_steppable_hint)
        *(DecodeRow(f"hint_{n.replace(' ', '_')}", 0xFFFFFFFF, _HINT | v, STEP,
                    "aarch64_insn_is_steppable_hint") for n, v in STEPPABLE_HINTS.items()),
        DecodeRow("hint", 0xFFFFF01F, _HINT, REJ, "aarch64_insn_is_steppable_hint"),
        DecodeRow("class_branch_sys", 0x1C000000, 0x14000000, STEP, "aarch64_insn_is_steppable"),
        # other classes: PC-relative literal users, exclusives (and MOPS) are not steppable
        DecodeRow("adr", 0x9F000000, 0x10000000, SIM, "simulate_adr_adrp"),
        DecodeRow("adrp", 0x9F000000, 0x90000000, SIM, "simulate_adr_adrp"),
        DecodeRow("prfm_lit", 0xFF000000, 0xD8000000, REJ, "aarch64_insn_uses_literal"),
        DecodeRow("exclusive", 0x3F800000, 0x08000000, REJ, "aarch64_insn_is_steppable"),
    ]
    if mops_not_steppable:  # aarch64_insn_is_mops
        rows.append(DecodeRow("mops", 0x3B200C00, 0x19000400, REJ, "aarch64_insn_is_steppable"))
    rows.append(DecodeRow("other", 0x00000000, 0x00000000, STEP, "aarch64_insn_is_steppable"))
    return tuple(rows)


def decode_table(features: "FeatureSet") -> tuple[DecodeRow, ...]:
    """The decision table of a kernel with ``features`` (first match wins)."""
    return _table(features.has("ARM64_BCOND_MATCHES_BC"), features.has("ARM64_MOPS_NOT_STEPPABLE"))

# is_probed_address_atomic: exclusive load opens a window, exclusive store closes it
# (aarch64_insn_is_load_ex / _store_ex; these masks also take LDAR/STLR and the LSE CAS forms)
LOAD_EX = (0x3F400000, 0x08400000)
STORE_EX = (0x3F400000, 0x08000000)
# ARM64_EXCLUSIVE_MASKS_EXACT: only LDXR/LDAXR/LDXP/LDAXP and STXR/STLXR/STXP/STLXP (o2 = 0)
LOAD_EX_EXACT = (0x3FC00000, 0x08400000)
STORE_EX_EXACT = (0x3FC00000, 0x08000000)


def exclusive_masks(features: "FeatureSet") -> tuple[tuple[int, int], tuple[int, int]]:
    """(load, store) (mask, value) pairs is_probed_address_atomic uses on a kernel."""
    if features.has("ARM64_EXCLUSIVE_MASKS_EXACT"):
        return LOAD_EX_EXACT, STORE_EX_EXACT
    return LOAD_EX, STORE_EX


# --- decoder ---------------------------------------------------------------------------------
def decode_word(insn: int, table: tuple[DecodeRow, ...]) -> DecodeRow:
    """The first row of ``table`` (:func:`decode_table`) matching instruction word ``insn``."""
    for row in table:
        if insn & row.mask == row.value:
            return row
    raise AssertionError("the table ends in a catch-all row")


def decode_words(words: np.ndarray, table: tuple[DecodeRow, ...]) -> np.ndarray:
    """Row index into ``table`` (:func:`decode_table`) for every word of ``words`` (vectorised)."""
    w = np.asarray(words, dtype=np.uint32)
    out = np.full(len(w), -1, dtype=np.int16)
    for i, row in enumerate(table):
        hit = (out < 0) & ((w & np.uint32(row.mask)) == np.uint32(row.value))
        out[hit] = i
    return out


@attrs.frozen
class Alternatives:
    """``__alt_instructions``: patch sites sorted by address, with their replacements."""

    orig: np.ndarray  # u64 site addresses, sorted
    length: np.ndarray  # orig_len
    alt: np.ndarray  # u64 replacement addresses
    cpucap: np.ndarray  # u16 (ARM64_CB_BIT set: callback)

    def lse_cap(self, image: "Image") -> int | None:
        """The cpucap number of ``ARM64_HAS_LSE_ATOMICS``: the one whose copied replacements
        begin with LSE atomics, or None when the image has no such sites."""
        votes: dict[int, int] = {}
        for i in np.nonzero((self.cpucap & ARM64_CB_BIT) == 0)[0].tolist():
            w = int.from_bytes(image.read(int(self.alt[i]), 4), "little")
            if any(w & m == v for m, v in LSE_ATOMIC_OPS):
                cap = int(self.cpucap[i])
                votes[cap] = votes.get(cap, 0) + 1
        return max(votes, key=votes.__getitem__) if votes else None


def is_probed_address_atomic(words_before: list[int],
                             masks: tuple[tuple[int, int], tuple[int, int]] = (LOAD_EX, STORE_EX)
                             ) -> bool:
    """``is_probed_address_atomic``: ``words_before`` run backwards from ``addr - 4``;
    ``masks`` from :func:`exclusive_masks`."""
    load, store = masks
    for w in words_before:
        if w & store[0] == store[1]:
            return False
        if w & load[0] == load[1]:
            return True
    return False
