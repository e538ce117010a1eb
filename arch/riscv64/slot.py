"""riscv64 out-of-line execution: the single-step slot, the simulated instructions, CPU facts.

Slot [arch/riscv/kernel/probes/kprobes.c: arch_prepare_ss_slot]: the instruction (2 or 4
bytes) then the 32-bit ``ebreak`` (__BUG_INSN_32); after the second trap the PC is
``addr + len`` (``ainsn.api.restore``).  jal/jalr/auipc/branches (and, in 6.12, the
compressed jumps and branches) get no slot: they are simulated [simulate-insn.c].
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Mapping

import unicorn
import unicorn.riscv_const as ur

from kpatch_arch.base import Backend, SlotSupport
from kpatch_core.slot import CpuFacts, Effect, ReadMem, Slot
from kpatch_core.verdict import Execution, Method, Refusal

from .insn import C_EBREAK, EBREAK, EBREAK_BYTES, insn_length

if TYPE_CHECKING:
    from kpatch_core.executor import Machine
    from kpatch_core.image import Image

    from .backend import Riscv64Backend

SZ_2G = 1 << 31
MODULES_DEFAULT = 0xFFFFFFFF01000000  # MODULES_VADDR = PFN_ALIGN(_end) - SZ_2G, for a ~16 MiB image
SLOT_SIZE = 8  # kprobe_insn_slots.insn_size: MAX_INSN_SIZE (2) u32 words
MASK64 = (1 << 64) - 1

# pt_regs name -> unicorn register; x0 (zero) is not in pt_regs
_UC = {"epc": ur.UC_RISCV_REG_PC, "ra": ur.UC_RISCV_REG_RA, "sp": ur.UC_RISCV_REG_SP,
       "gp": ur.UC_RISCV_REG_GP, "tp": ur.UC_RISCV_REG_TP,
       **{f"t{i}": getattr(ur, f"UC_RISCV_REG_T{i}") for i in range(7)},
       **{f"s{i}": getattr(ur, f"UC_RISCV_REG_S{i}") for i in range(12)},
       **{f"a{i}": getattr(ur, f"UC_RISCV_REG_A{i}") for i in range(8)}}
CPU = CpuFacts(
    uc_arch=unicorn.UC_ARCH_RISCV, uc_mode=unicorn.UC_MODE_RISCV64,
    regs=_UC, pc="epc", sp="sp", link="ra", rebase=0,
    breakpoint_pc_advance=False, interrupt_numbers=(),  # ebreak reaches us as INSN_INVALID
    flags_mask={},
)
FLAGS_FIXED: dict[str, int] = {}
BREAKPOINTS = (EBREAK_BYTES, C_EBREAK.to_bytes(2, "little"))  # every encoding that must trap
TEST_KERNEL = (6, 12)  # the rule set property tests use (the Debian riscv64 kernel is 6.12)
# x1..x31 in the order of struct pt_regs after epc (regs[i] is xi: ra=x1, sp=x2, ...)
XREG = ("zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 s2 s3 s4 s5 s6 s7 s8 s9 "
        "s10 s11 t3 t4 t5 t6").split()


def default_slot_addr(image: "Image | None" = None) -> int:
    """The first insn slot: the module area (``_end`` - 2 GiB) when the image says where."""
    end = image.symtab.value("_end") if image is not None and hasattr(image, "symtab") else None
    if end:
        return ((end + 0xFFF) & ~0xFFF) - SZ_2G
    return MODULES_DEFAULT


def breakpoint_for(insn: bytes) -> bytes:
    """``arch_arm_kprobe``: c.ebreak over a compressed instruction, else ebreak."""
    return EBREAK_BYTES if insn and insn_length(insn[0]) == 4 else C_EBREAK.to_bytes(2, "little")


def build_slot(backend: "Riscv64Backend", execution: Execution, addr: int,
               slot_addr: int) -> Slot | Refusal:
    """``arch_prepare_ss_slot`` (instruction + ebreak) or no slot (``arch_prepare_simulate``)."""
    n = insn_length(execution.insn[0])
    insn = execution.insn[:n]
    if execution.method == Method.SIMULATE:
        return Slot(addr, slot_addr, insn, b"", Method.SIMULATE, addr + n, None,
                    execution.mnemonic, "simulated: no slot")
    return Slot(addr, slot_addr, insn, insn + EBREAK_BYTES, Method.SINGLESTEP, addr + n, n,
                execution.mnemonic, "single-step ends on ebreak")


def after_slot(slot: Slot, trap_site: int) -> int:
    """``post_kprobe_handler``: PC = ``ainsn.api.restore`` (addr + len)."""
    return slot.resume


def on_insn_invalid(machine: "Machine") -> int | None:
    """unicorn reports ebreak / c.ebreak as an invalid instruction: the trap site, or None."""
    pc = machine.pc
    raw = machine.read(pc, 4)
    if int.from_bytes(raw, "little") == EBREAK or int.from_bytes(raw[:2], "little") == C_EBREAK:
        return pc
    return None


# --- simulate-insn.c -------------------------------------------------------------------------
def _sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _get(regs: Mapping[str, int], i: int) -> int:  # rv_insn_reg_get_val: x0 reads 0
    return 0 if i == 0 else regs[XREG[i]]


def _set(out: dict[str, int], i: int, v: int) -> None:  # rv_insn_reg_set_val: x0 ignored
    if i:
        out[XREG[i]] = v & MASK64


def simulate(backend: "Riscv64Backend", insn: bytes, addr: int, regs: Mapping[str, int],
             read: ReadMem) -> Effect:
    """The kernel's ``simulate_*`` for ``insn`` at ``addr``."""
    out: dict[str, int] = {}
    if insn_length(insn[0]) == 2:
        op = int.from_bytes(insn[:2], "little")
        if op & 0xE003 == 0xA001:  # c.j
            off = (((op >> 3) & 7) << 1 | ((op >> 11) & 1) << 4 | ((op >> 2) & 1) << 5
                   | ((op >> 7) & 1) << 6 | ((op >> 6) & 1) << 7 | ((op >> 9) & 3) << 8
                   | ((op >> 8) & 1) << 10 | ((op >> 12) & 1) << 11)
            return Effect((addr + _sext(off, 12)) & MASK64, op="simulate_c_j")
        if op & 0xF07F in (0x8002, 0x9002) and op & 0x0F80:  # c.jr / c.jalr (rs1 != 0)
            rs1 = (op >> 7) & 0x1F
            target = _get(regs, rs1)
            if op & 0xF07F == 0x9002:
                _set(out, 1, addr + 2)
            return Effect(target, out, op="simulate_c_jr_jalr")
        if op & 0xE003 in (0xC001, 0xE001):  # c.beqz / c.bnez
            v = _get(regs, 8 | ((op >> 7) & 7))
            bnez = op & 0xE003 == 0xE001
            if (v != 0) == bnez:
                off = (((op >> 3) & 3) << 1 | ((op >> 10) & 3) << 3 | ((op >> 2) & 1) << 5
                       | ((op >> 5) & 3) << 6 | ((op >> 12) & 1) << 8)
                return Effect((addr + _sext(off, 9)) & MASK64, op="simulate_c_bnez_beqz")
            return Effect(addr + 2, op="simulate_c_bnez_beqz")
        raise ValueError(f"{op:#06x}: not a simulated compressed instruction")
    op = int.from_bytes(insn[:4], "little")
    opc = op & 0x7F
    if opc == 0x6F:  # jal
        imm = ((op >> 21) & 0x3FF) << 1 | ((op >> 20) & 1) << 11 | ((op >> 12) & 0xFF) << 12 \
            | ((op >> 31) & 1) << 20
        _set(out, (op >> 7) & 0x1F, addr + 4)
        return Effect((addr + _sext(imm, 21)) & MASK64, out, op="simulate_jal")
    if op & 0x707F == 0x67:  # jalr
        base = _get(regs, (op >> 15) & 0x1F)
        _set(out, (op >> 7) & 0x1F, addr + 4)
        return Effect((base + _sext(op >> 20, 12)) & MASK64 & ~1, out, op="simulate_jalr")
    if opc == 0x17:  # auipc
        _set(out, (op >> 7) & 0x1F, addr + _sext(op & 0xFFFFF000, 32))
        return Effect(addr + 4, out, op="simulate_auipc")
    if opc == 0x63:  # branch
        a, b = _get(regs, (op >> 15) & 0x1F), _get(regs, (op >> 20) & 0x1F)
        sa, sb = _sext(a, 64), _sext(b, 64)
        f3 = (op >> 12) & 7
        cond = {0: a == b, 1: a != b, 4: sa < sb, 5: sa >= sb, 6: a < b, 7: a >= b}.get(f3)
        if cond is None:
            raise ValueError("simulate_branch: reserved funct3 (the kernel returns false)")
        imm = ((op >> 8) & 0xF) << 1 | ((op >> 25) & 0x3F) << 5 | ((op >> 7) & 1) << 11 \
            | ((op >> 31) & 1) << 12
        return Effect((addr + (_sext(imm, 13) if cond else 4)) & MASK64, op="simulate_branch")
    raise ValueError(f"{op:#010x}: not a simulated instruction")


def kernel_divergent_state(code: bytes, regs: Mapping[str, int]) -> str | None:
    """simulate_c_jr_jalr sets the PC to the register's value as it is (6.1 and 6.12); the CPU
    (like simulate_jalr, which masks ``& ~1``) clears bit 0: with an odd target register
    c.jr/c.jalr land one byte apart."""
    if len(code) < 2 or code[0] & 3 != 2:
        return None
    h = int.from_bytes(code[:2], "little")
    rs1, rs2 = (h >> 7) & 0x1F, (h >> 2) & 0x1F
    if h >> 13 != 0b100 or rs2 != 0 or rs1 == 0:  # c.jr (funct4 1000) / c.jalr (1001), rs2 = 0
        return None
    if regs.get(XREG[rs1], 0) & 1:
        return "c-jr-jalr-target-keeps-bit-0"
    return None


class Riscv64SlotSupport(SlotSupport):
    """riscv64 out-of-line execution: the module functions above as the backend's hooks."""

    TEXT_RANGE = (0xFFFFFFFF80002000, 0x1000000)  # (start, size) of a typical kernel text
    MODULE_RANGE = (0xFFFFFFFF01000000, 0x7F000000)  # the module area: where slots go
    EXECUTABLE = True
    CPU = CPU
    SLOT_SIZE = SLOT_SIZE
    FAULT_CLASSES = {"interrupt 2": "illegal-instruction",  # RISCV_EXCP_ILLEGAL_INST
                     "interrupt 5": "memory", "interrupt 7": "memory",  # load/store access
                     "interrupt 13": "memory", "interrupt 15": "memory"}  # page faults
    FLAGS_FIXED = FLAGS_FIXED
    BREAKPOINTS = BREAKPOINTS
    TEST_KERNEL = TEST_KERNEL
    default_slot_addr = staticmethod(default_slot_addr)
    build_slot = staticmethod(build_slot)
    simulate = staticmethod(simulate)
    on_insn_invalid = staticmethod(on_insn_invalid)
    after_slot = staticmethod(after_slot)
    breakpoint_for = staticmethod(breakpoint_for)
    kernel_divergent_state = staticmethod(kernel_divergent_state)


@functools.cache  # one per backend: Backend.slot_support() is asked often
def slot_support(backend: "Backend") -> Riscv64SlotSupport:
    """The riscv64 :class:`~kpatch_arch.base.SlotSupport` for ``backend``."""
    return Riscv64SlotSupport(backend)
