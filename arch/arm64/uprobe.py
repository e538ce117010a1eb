"""arm64 uprobes: ``arch_uprobe_analyze_insn`` on the shared decode-insn.c table.

[arch/arm64/kernel/probes/uprobes.c] The offset must be 4-byte aligned; ``arm_probe_decode_insn``
(shared with kprobes: the same table as :data:`kpatch_arch.arm64.DECODE_TABLES`, without the
kprobe-only exclusive-window scan) says reject (-EINVAL), simulate (``simulate_*`` in the
handler) or step the copy in the XOL slot (4 bytes, hardware single-step, then
``pc = vaddr + 4``).  The breakpoint is ``BRK #5`` (``BRK64_OPCODE_UPROBES``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kpatch_arch.base import UprobeSupport
from kpatch_core.slot import Effect, ReadMem
from kpatch_core.uprobe.verdict import Analysis, UMethod, UReason, URefusal

from .insn import UPROBE_BREAKPOINT, Outcome, decode_table, decode_word
from .slot import simulate as simulate_insn

if TYPE_CHECKING:
    from kpatch_arch.base import Backend
    from kpatch_core.features import FeatureSet

    from .backend import Arm64Backend

SWBP_INSN = UPROBE_BREAKPOINT  # UPROBE_SWBP_INSN = BRK #5
SWBP_INSN_SIZE = 4  # UPROBE_SWBP_INSN_SIZE = AARCH64_INSN_SIZE
MAX_UINSN_BYTES = 4
XOL_SLOT_BYTES = 4  # UPROBE_XOL_SLOT_BYTES
PAGE_SIZE = 4096  # the mapping granule: a vma covers whole pages of the file
XOL_STEP = "single"  # user_enable_single_step in arch_uprobe_pre_xol
MASK64 = (1 << 64) - 1
# rows of the shared table that come from arm_kprobe_decode_insn, which uprobes do not call:
# arch_uprobe_analyze_insn -> arm_probe_decode_insn rejects ldr/ldrsw (literal) (-EINVAL; Debian
# 6.12.117 and 7.3.4 arm64: 21 of 21 ldrsw literal words of libc refused, uprobe oracle)
KPROBE_ONLY_ROWS = frozenset({"ldr_lit", "ldrsw_lit"})


def is_trap_insn(insn: bytes, features: FeatureSet) -> bool:
    """Weak ``is_trap_insn`` -> ``is_swbp_insn``: exactly ``BRK #5``."""
    return insn[:4] == SWBP_INSN


def analyze_insn(backend: Arm64Backend, insn: bytes, vaddr: int,
                 features: FeatureSet) -> Analysis | URefusal:
    """``arch_uprobe_analyze_insn`` for a 64-bit process."""
    if vaddr & 3:  # !IS_ALIGNED(addr, AARCH64_INSN_SIZE)
        return URefusal(UReason.MISALIGNED, f"{vaddr:#x}")
    word = int.from_bytes(insn[:4], "little")
    row = decode_word(word, decode_table(features))  # arm_probe_decode_insn
    mn = backend.mnemonic(insn[:4], vaddr)
    if row.name in KPROBE_ONLY_ROWS:  # uses a literal: not steppable, not in arm_probe_decode_insn
        return URefusal(UReason.REJECTED, f"{mn} ({row.name}: aarch64_insn_uses_literal; only "
                                          "arm_kprobe_decode_insn simulates it)")
    if row.outcome == Outcome.REJECTED:
        return URefusal(UReason.REJECTED, f"{mn} ({row.name}: {row.why})")
    if row.outcome == Outcome.GOOD_NO_SLOT:
        return Analysis(UMethod.SIMULATE, 4, mn, row.why, (), insn[:4])
    return Analysis(UMethod.XOL, 4, mn, "xol", (), insn[:4])


def xol_slot(analysis: Analysis, insn: bytes, vaddr: int, xol_vaddr: int) -> bytes:
    """``arch_uprobe_copy_ixol``: the 4-byte copy."""
    return insn[:4]


def emulate(backend: Arm64Backend, analysis: Analysis, insn: bytes, vaddr: int,
            regs: Mapping[str, int], read: ReadMem) -> Effect | None:
    """``arch_uprobe_skip_sstep``: ``api.handler`` when ``auprobe->simulate``."""
    if analysis.method != UMethod.SIMULATE:
        return None
    return simulate_insn(backend, insn[:4], vaddr, regs, read)


def pre_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int]) -> dict[str, int]:
    """``arch_uprobe_pre_xol``: only the PC moves (to the slot)."""
    return {}


def post_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int],
             saved: Mapping[str, int]) -> Effect:
    """``arch_uprobe_post_xol``: ``instruction_pointer_set(regs, utask->vaddr + 4)``."""
    return Effect((vaddr + 4) & MASK64, op="arch_uprobe_post_xol")


def kernel_divergent(code: bytes) -> str | None:
    """FP/SIMD ``ldr`` (literal) is stepped in the slot and loads relative to it (as kprobes);
    the general-register literal loads kprobes simulate are refused here (KPROBE_ONLY_ROWS), so
    the kprobe label for a literal that overlaps the probed word does not apply."""
    from .slot import kernel_divergent as kd
    why = kd(code)
    return why if why == "simd-literal-stepped-in-slot" else None


def insn_length(backend: Arm64Backend, code: bytes) -> int:
    """Every instruction is 4 bytes."""
    return 4 if len(code) >= 4 else 0


BC_COND = (0xFF000010, 0x54000010)  # BC.cond (FEAT_HBC): simulated by 6.12 like B.cond


def oracle_defect(code: bytes) -> str | None:
    """Why unicorn cannot judge ``code``: its CPU model lacks FEAT_HBC, so BC.cond is undefined
    there while the kernel (ARM64_BCOND_MATCHES_BC) simulates it."""
    w = int.from_bytes(code[:4], "little")
    return "unicorn-lacks-feat-hbc" if w & BC_COND[0] == BC_COND[1] else None


class Arm64UprobeSupport(UprobeSupport):
    """arm64 uprobes: the module functions above as the backend's hooks."""

    SWBP_INSN = SWBP_INSN
    SWBP_INSN_SIZE = SWBP_INSN_SIZE
    MAX_UINSN_BYTES = MAX_UINSN_BYTES
    PAGE_SIZE = PAGE_SIZE
    XOL_STEP = XOL_STEP
    is_trap_insn = staticmethod(is_trap_insn)
    analyze_insn = staticmethod(analyze_insn)
    xol_slot = staticmethod(xol_slot)
    pre_xol = staticmethod(pre_xol)
    post_xol = staticmethod(post_xol)
    insn_length = staticmethod(insn_length)
    emulate = staticmethod(emulate)
    kernel_divergent = staticmethod(kernel_divergent)
    oracle_defect = staticmethod(oracle_defect)


def uprobe_support(backend: "Backend") -> Arm64UprobeSupport:
    """The arm64 :class:`~kpatch_arch.base.UprobeSupport` for ``backend``."""
    return Arm64UprobeSupport(backend)
