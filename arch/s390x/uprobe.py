"""s390x uprobes: ``arch_uprobe_analyze_insn`` = ``probe_is_prohibited_opcode``.

[arch/s390/kernel/uprobes.c] The breakpoint is the 2-byte ``0x0002`` (``UPROBE_SWBP_INSN``),
offsets 2-byte aligned; the prohibited opcodes are the kprobes ones (arch/s390/lib/probes.c,
shared); relative-long instructions (larl, lgrl, stgrl, cgrl...) are emulated by
``handle_insn_ril`` in ``arch_uprobe_skip_sstep``; everything else is copied (6 bytes, ``ixol``)
and single-stepped with PER, then ``arch_uprobe_post_xol`` applies ``probe_get_fixup_type``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kpatch_core.slot import Effect
from kpatch_core.uprobe.verdict import Analysis, UMethod, UReason, URefusal

from . import Fixup, fixup_type, is_relative_long, opcode_source, prohibited
from . import insn_length as s390_insn_length

if TYPE_CHECKING:
    from kpatch_core.features import FeatureSet

    from . import S390xBackend

SWBP_INSN = (0x0002).to_bytes(2, "big")  # UPROBE_SWBP_INSN
SWBP_INSN_SIZE = 2
MAX_UINSN_BYTES = 6  # uprobe_opcode_t insn[3]
XOL_SLOT_BYTES = 256
PAGE_SIZE = 4096  # the mapping granule: a vma covers whole pages of the file
XOL_STEP = "single"  # PER single-step (TIF_UPROBE_SINGLESTEP)
MASK64 = (1 << 64) - 1


def is_trap_insn(insn: bytes, features: FeatureSet) -> bool:
    """Weak ``is_trap_insn`` -> ``is_swbp_insn``: the halfword is 0x0002."""
    return insn[:2] == SWBP_INSN


def analyze_insn(backend: S390xBackend, insn: bytes, vaddr: int,
                 features: FeatureSet) -> Analysis | URefusal:
    """``arch_uprobe_analyze_insn``: ``probe_is_prohibited_opcode`` (-EINVAL)."""
    src = opcode_source(features)
    why = prohibited(insn, src)
    n = s390_insn_length(insn[0])
    mn = backend.mnemonic(insn, vaddr, src)
    if why is not None:
        return URefusal(UReason.REJECTED, f"{mn}: {why}")
    if is_relative_long(insn):  # arch_uprobe_skip_sstep: handle_insn_ril
        return Analysis(UMethod.EMULATE, n, mn, "handle_insn_ril", (), insn[:n])
    fix = fixup_type(insn)
    names = tuple(f"FIXUP_{f.name}" for f in Fixup if f & fix and f.name)
    return Analysis(UMethod.XOL, n, mn, "xol", names, insn[:MAX_UINSN_BYTES])


def xol_slot(analysis: Analysis, insn: bytes, vaddr: int, xol_vaddr: int) -> bytes:
    """``arch_uprobe_copy_ixol`` (weak copy of ``ixol``: 6 bytes)."""
    return insn[:MAX_UINSN_BYTES].ljust(MAX_UINSN_BYTES, b"\0")


def pre_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int]) -> dict[str, int]:
    """``arch_uprobe_pre_xol``: only the PSW address moves (and PER is armed)."""
    return {}


def post_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int],
             saved: Mapping[str, int]) -> Effect:
    """``arch_uprobe_post_xol``: FIXUP_PSW_NORMAL, FIXUP_RETURN_REGISTER, FIXUP_BRANCH_NOT_TAKEN."""
    fix = fixup_type(analysis.ixol)
    pc = regs["psw.addr"]
    out: dict[str, int] = {}
    if fix & Fixup.PSW_NORMAL:
        pc = (pc + vaddr - xol_vaddr) & MASK64
    if fix & Fixup.RETURN_REGISTER:
        r = (analysis.ixol[1] & 0xF0) >> 4
        out[f"r{r}"] = (regs[f"r{r}"] + vaddr - xol_vaddr) & MASK64
    if fix & Fixup.BRANCH_NOT_TAKEN and regs["psw.addr"] - xol_vaddr == analysis.length:
        pc = (vaddr + analysis.length) & MASK64
    return Effect(pc, out, op="arch_uprobe_post_xol")


def insn_length(backend: S390xBackend, code: bytes) -> int:
    """``insn_length`` from the first byte (0 past the end)."""
    return s390_insn_length(code[0]) if code else 0
