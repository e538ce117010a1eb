"""ppc64le uprobes: trap words refused, prefixed words crossing 64 bytes refused, ``emulate_step``.

[arch/powerpc/kernel/uprobes.c] ``is_trap_insn`` is ``is_trap`` (tw, td, twi, tdi: -ENOTSUPP from
``prepare_uprobe``); ``arch_uprobe_analyze_insn`` refuses a misaligned address, a prefixed
instruction at ``addr & 0x3f == 60`` on an ISA 3.1 CPU (``CPU_FTR_ARCH_31``: -EINVAL) and what
``can_single_step`` refuses (-ENOTSUPP).  On a hit ``arch_uprobe_skip_sstep`` tries
``emulate_step`` first; what it declines is single-stepped in the 8-byte XOL slot.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kpatch_arch.base import UprobeSupport
from kpatch_core.slot import Effect
from kpatch_core.uprobe.verdict import Analysis, UMethod, UReason, URefusal

from .insn import Analysis as Sstep
from .insn import analyse_class, is_prefixed, not_steppable

if TYPE_CHECKING:
    from kpatch_arch.base import Backend
    from kpatch_core.features import FeatureSet

    from .backend import Ppc64leBackend

SWBP_INSN = (0x7FE00008).to_bytes(4, "little")  # UPROBE_SWBP_INSN = BREAKPOINT_INSTRUCTION
SWBP_INSN_SIZE = 4
MAX_UINSN_BYTES = 8
XOL_SLOT_BYTES = 8
PAGE_SIZE = 0x10000  # Debian ppc64le: 64 KiB pages; a vma covers whole pages of the file
XOL_STEP = "single"  # MSR_SE
CPU_FTR_ARCH_31 = False  # POWER9, as the oracle guest and analyse_class assume; POWER10 sets it
MASK64 = (1 << 64) - 1


# the PC-relative forms (value, mask of the fixed bits, bytes): b and bc with AA=0, addpcis;
# emulate_step emulates them all (analyse_instr), so none is copied to the XOL slot
PC_RELATIVE_FORMS = ((0x48000000, 0xFC000002, 4), (0x40000000, 0xFC000002, 4),
                     (0x4C000004, 0xFC00003E, 4))


def is_trap(word: int) -> bool:
    """``is_trap`` (asm/probes.h, CONFIG_PPC64): tw, td, twi, tdi."""
    return (word & 0xFC0007FE) in (0x7C000008, 0x7C000088) or (word & 0xFC000000) in (0x08000000, 0x0C000000)


def is_trap_insn(insn: bytes, features: FeatureSet) -> bool:
    """``is_trap_insn``: ``is_trap(*insn)``."""
    return is_trap(int.from_bytes(insn[:4], "little"))


def analyze_insn(backend: Ppc64leBackend, insn: bytes, vaddr: int, features: FeatureSet,
                 arch_31: bool = CPU_FTR_ARCH_31) -> Analysis | URefusal:
    """``arch_uprobe_analyze_insn``."""
    word = int.from_bytes(insn[:4], "little")
    n = 8 if is_prefixed(word) else 4
    mn = backend.mnemonic(insn[:n], vaddr)
    if vaddr & 3:
        return URefusal(UReason.MISALIGNED, f"{vaddr:#x}")
    if arch_31 and is_prefixed(word) and (vaddr & 0x3F) == 60:
        return URefusal(UReason.PREFIXED_CROSSES_64B, mn)
    name = not_steppable(word)
    if name is not None:
        return URefusal(UReason.CANNOT_SINGLE_STEP, name)
    cls = analyse_class(word)
    method = UMethod.EMULATE if cls in (Sstep.REGS, Sstep.MEM) else UMethod.XOL
    return Analysis(method, n, mn, "emulate_step" if method == UMethod.EMULATE else "xol", (),
                    insn[:MAX_UINSN_BYTES])


def xol_slot(analysis: Analysis, insn: bytes, vaddr: int, xol_vaddr: int) -> bytes:
    """``arch_uprobe_copy_ixol`` (weak copy): the 8 bytes ``copy_insn`` read."""
    return insn[:MAX_UINSN_BYTES].ljust(MAX_UINSN_BYTES, b"\0")


def pre_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int]) -> dict[str, int]:
    """``arch_uprobe_pre_xol``: only the NIP moves."""
    return {}


def post_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int],
             saved: Mapping[str, int]) -> Effect:
    """``arch_uprobe_post_xol``: ``nip = vaddr + ppc_inst_len(insn)`` (branches were emulated)."""
    return Effect((vaddr + analysis.length) & MASK64, op="arch_uprobe_post_xol")


def insn_length(backend: Ppc64leBackend, code: bytes) -> int:
    """4, or 8 for a prefixed instruction (0 past the end)."""
    if len(code) < 4:
        return 0
    return 8 if is_prefixed(int.from_bytes(code[:4], "little")) else 4


class Ppc64leUprobeSupport(UprobeSupport):
    """ppc64le uprobes: the module functions above as the backend's hooks."""

    ENGINE = "qemu-user"  # unicorn has no little-endian PPC64: kpatch_core.uprobe.qemu_ppc64le
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


def uprobe_support(backend: "Backend") -> Ppc64leUprobeSupport:
    """The ppc64le :class:`~kpatch_arch.base.UprobeSupport` for ``backend``."""
    return Ppc64leUprobeSupport(backend)
