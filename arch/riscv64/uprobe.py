"""riscv64 uprobes: ``arch_uprobe_analyze_insn`` on the shared ``riscv_probe_decode_insn``.

[arch/riscv/kernel/probes/uprobes.c] The breakpoint is ``c.ebreak`` (``UPROBE_SWBP_INSN`` with
``CONFIG_RISCV_ISA_C``, Debian's), so offsets need only be 2-byte aligned.  The decoder (the
kprobe one: :func:`kpatch_arch.riscv64.decode_table`) says reject (-EINVAL), simulate, or step:
the XOL slot holds the 8 copied bytes with a 32-bit ``ebreak`` written after the instruction
(``arch_uprobe_copy_ixol``); after it traps, ``pc = vaddr + insn_size``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kpatch_arch.base import UprobeSupport
from kpatch_core.slot import Effect, ReadMem
from kpatch_core.uprobe.verdict import Analysis, UMethod, UReason, URefusal

from .insn import C_EBREAK, EBREAK, EBREAK_BYTES, Outcome, decode_table, decode_word
from .insn import insn_length as insn_length_of
from .slot import kernel_divergent_state
from .slot import simulate as simulate_insn

if TYPE_CHECKING:
    from kpatch_arch.base import Backend
    from kpatch_core.features import FeatureSet

    from .backend import Riscv64Backend

SWBP_INSN = C_EBREAK.to_bytes(2, "little")  # UPROBE_SWBP_INSN = __BUG_INSN_16
SWBP_INSN_SIZE = 2
MAX_UINSN_BYTES = 8
XOL_SLOT_BYTES = 8
PAGE_SIZE = 4096  # the mapping granule: a vma covers whole pages of the file
XOL_STEP = "trap"  # runs to the ebreak that arch_uprobe_copy_ixol appends
MASK64 = (1 << 64) - 1


def is_trap_insn(insn: bytes, features: FeatureSet) -> bool:
    """``is_trap_insn``: ebreak or c.ebreak (6.12); before, weak ``is_swbp_insn``:
    ``(*insn & 0xffff) == c.ebreak``."""
    word = int.from_bytes(insn[:4], "little")
    if features.has("RISCV_UPROBE_TRAP_ANY_EBREAK"):
        return word == EBREAK or (word & 0xFFFF) == C_EBREAK
    return (word & 0xFFFF) == C_EBREAK


def analyze_insn(backend: Riscv64Backend, insn: bytes, vaddr: int,
                 features: FeatureSet) -> Analysis | URefusal:
    """``arch_uprobe_analyze_insn``: no alignment test of its own (the generic 2-byte one)."""
    word = int.from_bytes(insn[:4], "little")
    n = insn_length_of(word & 0xFFFF)
    row = decode_word(word, decode_table(features))  # riscv_probe_decode_insn
    mn = backend.mnemonic(insn[:n], vaddr)
    if row.outcome == Outcome.REJECTED:
        return URefusal(UReason.REJECTED, f"{mn} ({row.name})")
    if row.outcome == Outcome.GOOD_NO_SLOT:
        return Analysis(UMethod.SIMULATE, n, mn, f"simulate_{row.name}", (), insn[:n])
    return Analysis(UMethod.XOL, n, mn, "xol", (), insn[:n])


def xol_slot(analysis: Analysis, insn: bytes, vaddr: int, xol_vaddr: int) -> bytes:
    """``arch_uprobe_copy_ixol``: the 8 copied bytes, ``ebreak`` behind the instruction."""
    buf = bytearray(insn[:MAX_UINSN_BYTES].ljust(MAX_UINSN_BYTES, b"\0"))
    n = analysis.length
    buf[n:n + 4] = EBREAK_BYTES
    return bytes(buf[:max(MAX_UINSN_BYTES, n + 4)])


def emulate(backend: Riscv64Backend, analysis: Analysis, insn: bytes, vaddr: int,
            regs: Mapping[str, int], read: ReadMem) -> Effect | None:
    """``arch_uprobe_skip_sstep``: ``api.handler`` when ``auprobe->simulate``."""
    if analysis.method != UMethod.SIMULATE:
        return None
    return simulate_insn(backend, insn[:analysis.length], vaddr, regs, read)


def pre_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int]) -> dict[str, int]:
    """``arch_uprobe_pre_xol``: only the PC moves."""
    return {}


def post_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int],
             saved: Mapping[str, int]) -> Effect:
    """``arch_uprobe_post_xol``: ``pc = vaddr + insn_size``."""
    return Effect((vaddr + analysis.length) & MASK64, op="arch_uprobe_post_xol")


def insn_length(backend: Riscv64Backend, code: bytes) -> int:
    """``GET_INSN_LENGTH`` of the first halfword (0 past the end)."""
    return insn_length_of(code[0]) if len(code) >= 2 else 0


class Riscv64UprobeSupport(UprobeSupport):
    """riscv64 uprobes: the module functions above as the backend's hooks."""

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
    # simulate_c_jr_jalr is the kprobe one (arch_uprobe_skip_sstep calls the same handler)
    kernel_divergent_state = staticmethod(kernel_divergent_state)


def uprobe_support(backend: "Backend") -> Riscv64UprobeSupport:
    """The riscv64 :class:`~kpatch_arch.base.UprobeSupport` for ``backend``."""
    return Riscv64UprobeSupport(backend)
