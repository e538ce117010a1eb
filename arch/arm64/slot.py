"""arm64 out-of-line execution: the single-step slot, the simulated instructions, CPU facts.

Slot [arch/arm64/kernel/probes/kprobes.c: arch_prepare_ss_slot]: the instruction then
``BRK #6`` (BRK64_OPCODE_KPROBES_SS); after the second trap the PC is ``addr + 4``
(``ainsn.api.restore``).  Branches, ADR/ADRP and literal loads get no slot: they are
simulated [simulate-insn.c: simulate_*], which :func:`simulate` mirrors.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Mapping

import unicorn
import unicorn.arm64_const as ua

from kpatch_arch.base import Backend, SlotSupport
from kpatch_core.slot import CpuFacts, Effect, ReadMem, Slot
from kpatch_core.verdict import Execution, Method, Refusal

from .insn import KPROBE_BREAKPOINT, KPROBE_SS_BREAKPOINT, MAX_INSN_SIZE

if TYPE_CHECKING:
    from kpatch_core.image import Image

    from .backend import Arm64Backend

# alloc_insn_page: one vmalloc page (6.1: VMALLOC_START..VMALLOC_END, which starts at
# MODULES_END); the first allocations after boot land above the kernel image
VMALLOC_SLOT_DEFAULT = 0xFFFF800080000000
SLOT_SIZE = MAX_INSN_SIZE * 4  # kprobe_insn_slots.insn_size (2 words)
MASK64 = (1 << 64) - 1

_REGS = {f"x{n}": getattr(ua, f"UC_ARM64_REG_X{n}") for n in range(31)}
CPU = CpuFacts(
    uc_arch=unicorn.UC_ARCH_ARM64, uc_mode=unicorn.UC_MODE_ARM,
    # pstate: the condition flags (NZCV, bits 28..31) are what simulate_b_cond reads
    regs={**_REGS, "sp": ua.UC_ARM64_REG_SP, "pc": ua.UC_ARM64_REG_PC,
          "pstate": ua.UC_ARM64_REG_NZCV},
    pc="pc", sp="sp", link="x30", rebase=0,
    breakpoint_pc_advance=False, interrupt_numbers=(7,),  # EXCP_BKPT: PC stays on the BRK
    flags_mask={"pstate": 0xF0000000},
)
FLAGS_FIXED: dict[str, int] = {}
BREAKPOINTS = (KPROBE_BREAKPOINT, KPROBE_SS_BREAKPOINT)  # BRK #4 (probe), BRK #6 (slot end)


def default_slot_addr(image: "Image | None" = None) -> int:
    """The first insn slot page (vmalloc'd by alloc_insn_page)."""
    return VMALLOC_SLOT_DEFAULT


def build_slot(backend: "Arm64Backend", execution: Execution, addr: int,
               slot_addr: int) -> Slot | Refusal:
    """``arch_prepare_ss_slot`` (single-step) or no slot (``arch_prepare_simulate``)."""
    insn = execution.insn[:4]
    if execution.method == Method.SIMULATE:
        return Slot(addr, slot_addr, insn, b"", Method.SIMULATE, addr + 4, None,
                    execution.mnemonic, "simulated: no slot (ainsn.api.insn = NULL)")
    note = "single-step ends on BRK #6 (KPROBES_SS)"
    if kernel_divergent(insn):
        note += ("; the copy loads its literal relative to the slot, not the probed address: "
                 "the kernel's aarch64_insn_uses_literal misses the SIMD/FP ldr (literal) forms")
    return Slot(addr, slot_addr, insn, insn + KPROBE_SS_BREAKPOINT, Method.SINGLESTEP, addr + 4,
                4, execution.mnemonic, note)


# ldr s/d/q (literal): opc V=1 (0x1C/0x5C/0x9C); aarch64_insn_is_ldr_lit is 0xBF000000/0x18000000
SIMD_LDR_LITERAL = (0x3F000000, 0x1C000000)


def kernel_divergent(code: bytes) -> str | None:
    """Why the kernel itself runs ``code`` differently from the CPU (None: it does not).
    ``aarch64_insn_is_steppable`` keeps literal loads out of the slot through
    ``aarch64_insn_uses_literal``, whose ``ldr_lit`` mask (0xBF000000) only takes the
    general-register forms: an FP/SIMD ``ldr`` (literal) is single-stepped in the slot and
    reads the literal at slot + offset (6.1 and 6.12 alike)."""
    w = int.from_bytes(code[:4], "little")
    if len(code) >= 4 and w & SIMD_LDR_LITERAL[0] == SIMD_LDR_LITERAL[1] and w >> 30 != 3:
        return "simd-literal-stepped-in-slot"
    # simulate_ldr_literal / simulate_ldrsw_literal read the live text: a literal overlapping
    # the probed word reads the BRK the probe put there, the CPU the original instruction
    literal = w & 0x3B000000 == 0x18000000  # ldr/ldrsw/prfm/ldr (SIMD) literal
    if len(code) >= 4 and literal and ((w >> 5) & 0x7FFFF) in (0, 0x7FFFF):
        return "literal-reads-the-probed-word"
    return None


def after_slot(slot: Slot, trap_site: int) -> int:
    """``kprobe_breakpoint_ss_handler`` -> ``post_kprobe_handler``: PC = ``ainsn.api.restore``."""
    return slot.addr + 4


# --- simulate-insn.c ------------------------------------------------------------------------
def _sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _xreg(regs: Mapping[str, int], r: int) -> int:  # pt_regs_read_reg: x31 reads as 0
    return 0 if r == 31 else regs[f"x{r}"]


def _set(out: dict[str, int], r: int, v: int) -> None:  # pt_regs_write_reg: x31 is dropped
    if r != 31:
        out[f"x{r}"] = v & MASK64


# aarch32_opcode_cond_checks[] on pstate (N=31, Z=30, C=29, V=28)
def _cond(cond: int, pstate: int) -> bool:
    n, z, c, v = (pstate >> 31) & 1, (pstate >> 30) & 1, (pstate >> 29) & 1, (pstate >> 28) & 1
    base = [z, c, n, v, c and not z, n == v, not z and n == v, True][cond >> 1]
    return bool(base) != bool(cond & 1) if cond < 14 else True


def simulate(backend: "Arm64Backend", insn: bytes, addr: int, regs: Mapping[str, int],
             read: ReadMem) -> Effect:
    """The kernel's ``simulate_*`` for the instruction word ``insn`` at ``addr``."""
    op = int.from_bytes(insn[:4], "little")
    out: dict[str, int] = {}
    if op & 0xBF000000 == 0x18000000 or op & 0xFF000000 == 0x98000000:  # ldr/ldrsw literal
        rt = op & 0x1F
        at = (addr + _sext(((op >> 5) & 0x7FFFF) << 2, 21)) & MASK64
        if op & 0xFF000000 == 0x98000000:
            val = _sext(int.from_bytes(read(at, 4), "little"), 32) & MASK64
            size, fn = 4, "simulate_ldrsw_literal"
        elif op & (1 << 30):
            val, size, fn = int.from_bytes(read(at, 8), "little"), 8, "simulate_ldr_literal"
        else:
            val, size, fn = int.from_bytes(read(at, 4), "little"), 4, "simulate_ldr_literal"
        _set(out, rt, val)
        return Effect(addr + 4, out, loads=((f"x{rt}", at, size),), op=fn)
    if op & 0x1F000000 == 0x10000000:  # adr / adrp
        imm = _sext(((op >> 3) & 0x1FFFFC) | ((op >> 29) & 3), 21)
        val = (imm << 12) + (addr & ~0xFFF) if op & 0x80000000 else imm + addr
        _set(out, op & 0x1F, val)
        return Effect(addr + 4, out, op="simulate_adr_adrp")
    if op & 0x7C000000 == 0x14000000:  # b / bl
        if op & (1 << 31):
            _set(out, 30, addr + 4)
        return Effect((addr + _sext((op & 0x3FFFFFF) << 2, 28)) & MASK64, out, op="simulate_b_bl")
    if op & 0xFF000000 == 0x54000000:  # b.cond (and 6.12 bc.cond)
        taken = _cond(op & 0xF, regs["pstate"])
        disp = _sext(((op >> 5) & 0x7FFFF) << 2, 21) if taken else 4
        return Effect((addr + disp) & MASK64, op="simulate_b_cond")
    if op & 0x7E000000 == 0x34000000:  # cbz / cbnz
        r = op & 0x1F
        v = _xreg(regs, r) if op >> 31 else _xreg(regs, r) & 0xFFFFFFFF
        taken = (v != 0) if op & (1 << 24) else (v == 0)
        disp = _sext(((op >> 5) & 0x7FFFF) << 2, 21) if taken else 4
        return Effect((addr + disp) & MASK64, op="simulate_cbz_cbnz")
    if op & 0x7E000000 == 0x36000000:  # tbz / tbnz
        bit = ((op >> 26) & 0x20) | ((op >> 19) & 0x1F)
        set_ = (_xreg(regs, op & 0x1F) >> bit) & 1
        taken = bool(set_) if op & (1 << 24) else not set_
        disp = _sext(((op >> 5) & 0x3FFF) << 2, 16) if taken else 4
        return Effect((addr + disp) & MASK64, op="simulate_tbz_tbnz")
    if op & 0xFF9FFC1F == 0xD61F0000:  # br / blr / ret
        target = _xreg(regs, (op >> 5) & 0x1F)
        if (op >> 21) & 3 == 1:
            _set(out, 30, addr + 4)
        return Effect(target, out, op="simulate_br_blr_ret")
    raise ValueError(f"{op:#010x}: not a simulated instruction")


class Arm64SlotSupport(SlotSupport):
    """arm64 out-of-line execution: the module functions above as the backend's hooks."""

    TEXT_RANGE = (0xFFFF800008010000, 0x1000000)  # (start, size) of a typical kernel text
    MODULE_RANGE = (0xFFFF800000000000, 0x8000000)  # the module area: where slots go
    EXECUTABLE = True
    CPU = CPU
    SLOT_SIZE = SLOT_SIZE
    FLAGS_FIXED = FLAGS_FIXED
    BREAKPOINTS = BREAKPOINTS
    FAULT_CLASSES = {"interrupt 1": "undefined-instruction"}  # QEMU EXCP_UDEF
    default_slot_addr = staticmethod(default_slot_addr)
    build_slot = staticmethod(build_slot)
    simulate = staticmethod(simulate)
    after_slot = staticmethod(after_slot)
    kernel_divergent = staticmethod(kernel_divergent)


@functools.cache  # one per backend: Backend.slot_support() is asked often
def slot_support(backend: "Backend") -> Arm64SlotSupport:
    """The arm64 :class:`~kpatch_arch.base.SlotSupport` for ``backend``."""
    return Arm64SlotSupport(backend)
