"""s390x out-of-line execution: the slot copy, the PER single-step and its PSW fixups.

Slot [arch/s390/kernel/kprobes.c: copy_instruction]: the instruction, with the RI2 field of a
relative-long (RIL-b/RIL-c) instruction rewritten to ``((addr + 2*disp) - slot) / 2``.  It is
single-stepped by hardware (PER), so there is no trailing breakpoint; then
``resume_execution`` fixes the PSW address and, for bras/brasl/bas/basr, the return register
(``probe_get_fixup_type``).  Nothing is emulated.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Mapping

import unicorn
import unicorn.s390x_const as us

from kpatch_arch.base import Backend, SlotSupport
from kpatch_core.slot import CpuFacts, Effect, ReadMem, Slot
from kpatch_core.verdict import Execution, Method, Reason, Refusal

from .insn import Fixup, fixup_type, insn_length, is_relative_long

if TYPE_CHECKING:
    from kpatch_core.executor import Machine
    from kpatch_core.image import Image

    from .backend import S390xBackend

KPROBES_INSN_PAGE_DEFAULT = 0x00F1E000  # 6.1 vmlinux: kprobes_insn_page (in .text, < 2 GiB)
MODULES_LEN = 1 << 31  # arch/s390/include/asm/pgtable.h
SLOT_SIZE = 6  # MAX_INSN_SIZE halfwords * 2
MASK64 = (1 << 64) - 1
PSW_MASK_CC = 0x0000300000000000  # condition code bits 18-19 of the PSW mask

CPU = CpuFacts(
    uc_arch=unicorn.UC_ARCH_S390X, uc_mode=unicorn.UC_MODE_BIG_ENDIAN,
    regs={**{f"r{n}": getattr(us, f"UC_S390X_REG_R{n}") for n in range(16)},
          "psw.addr": us.UC_S390X_REG_PC, "psw.mask": us.UC_S390X_REG_PSWM},
    pc="psw.addr", sp="r15", link="r14", rebase=0,
    breakpoint_pc_advance=False, interrupt_numbers=(3,),  # 0x0002: operation exception at the site
    flags_mask={"psw.mask": PSW_MASK_CC},
    protect_text=False,  # unicorn 2.1 s390x raises UC_ERR_EXCEPTION fetching from r-x pages
)
PSW_MASK_64BIT = 0x0000000180000000  # EA + BA: the kernel runs in 64-bit addressing mode
# unicorn starts in 24-bit mode (BALR then stores ILC/CC in bits 32-39): keep EA/BA set
FLAGS_FIXED: dict[str, int] = {"psw.mask": PSW_MASK_64BIT}


def setup_cpu(uc: "unicorn.Uc") -> None:
    """64-bit addressing mode, as in the kernel."""
    uc.reg_write(us.UC_S390X_REG_PSWM, PSW_MASK_64BIT)


def trap_site(machine: "Machine", intno: int, pc: int) -> int | None:
    """unicorn raises interrupt 3 for every program check: ours only when the PSW points at
    the 0x0002 breakpoint (an operation exception).  unicorn s390x also raises it when an
    instruction fetch (up to 6 bytes from the PSW) touches an unmapped page, without calling
    UC_HOOK_MEM_UNMAPPED: such a page is mapped like any other lazily filled page and -1 says
    "not an event, run again"."""
    page = machine.cpu.page
    if machine.lazy:
        fresh = [p for p in {pc & ~(page - 1), (pc + 5) & ~(page - 1)} if p not in machine.mapped]
        if fresh:
            try:
                for p in fresh:
                    machine.map(p, 1)
            except unicorn.UcError:
                return None
            return -1
    try:
        return pc if machine.read(pc, 2) == b"\x00\x02" else None
    except unicorn.UcError:
        return None


def default_slot_addr(image: "Image | None" = None) -> int:
    """6.1: ``kprobes_insn_page`` in the kernel image (s390_get_insn_slot for kernel text);
    6.10+: ``alloc_insn_page`` -> execmem, whose range starts at MODULES_VADDR = the kernel's
    start (nokaslr) - MODULES_LEN (arch/s390/boot/startup.c, execmem_arch_setup)."""
    if image is not None and hasattr(image, "symtab"):
        if getattr(image, "load_offset", 0):
            return image.load_offset - MODULES_LEN
        a = image.symtab.value("kprobes_insn_page")
        if a is not None:
            return a
    return KPROBES_INSN_PAGE_DEFAULT


def build_slot(backend: "S390xBackend", execution: Execution, addr: int,
               slot_addr: int) -> Slot | Refusal:
    """``copy_instruction``: the copy, relative-long displacement rewritten for ``slot_addr``."""
    insn = execution.insn[:insn_length(execution.insn[0])]
    code = insn
    if is_relative_long(insn):
        moved = _relocate(insn, addr, slot_addr)
        if moved is None:
            return Refusal(Reason.RIP_DISP_RANGE,
                           f"relative-long displacement cannot reach {addr:#x} from {slot_addr:#x}")
        code = moved
    return Slot(addr, slot_addr, insn, code, Method.SINGLESTEP, addr + len(insn), None,
                execution.mnemonic, "PER single-step, then resume_execution fixups")


def _relocate(insn: bytes, addr: int, slot_addr: int) -> bytes | None:
    """``new_disp = ((addr + disp * 2) - new_addr) / 2`` in the kernel's u64/s64 arithmetic
    (wrapping), None when it does not fit the s32 RI2 field."""
    disp = int.from_bytes(insn[2:6], "big", signed=True)
    d = (addr + 2 * disp - slot_addr) & MASK64
    d = d - (1 << 64) if d >> 63 else d
    new = int(d / 2)  # C division truncates toward zero
    if not -(1 << 31) <= new < (1 << 31):
        return None
    return insn[:2] + (new & 0xFFFFFFFF).to_bytes(4, "big") + insn[6:]


def after_step(machine: "Machine", slot: Slot, pc: int) -> None:
    """``resume_execution``: PSW address and return-register fixups after the step."""
    ip = pc
    fix = fixup_type(slot.code)
    if fix & Fixup.PSW_NORMAL:
        ip += slot.addr - slot.slot_addr
    if fix & Fixup.BRANCH_NOT_TAKEN:
        ilen = insn_length(slot.code[0])
        if ip - slot.slot_addr == ilen:
            ip = slot.addr + ilen
    if fix & Fixup.RETURN_REGISTER:
        reg = (int.from_bytes(slot.code[:2], "big") & 0xF0) >> 4
        machine.set(f"r{reg}", (machine.get(f"r{reg}") + slot.addr - slot.slot_addr) & MASK64)
    machine.set("psw.addr", ip & MASK64)


def simulate(backend: "S390xBackend", insn: bytes, addr: int, regs: Mapping[str, int],
             read: ReadMem) -> Effect:
    """s390 emulates nothing: every accepted instruction is single-stepped."""
    raise ValueError("s390x kprobes never emulate")


# Encodings the execution oracle itself gets wrong, so a property run cannot judge them.
# RNSBG/ROSBG/RXSBG with the test-only bit (I3 bit 0): QEMU's op_rosbg (unicorn 2 and
# qemu-s390x 7.2 alike) operates on a fresh, uninitialised TCG temporary instead of R1, so the
# condition code depends on leftover state (measured: `rnsbg %r0,%r13,0xd5,0xa7,0x1c` with
# r0=0x91b7584a2265b1f5, r13=0xf gives CC 0 under qemu-s390x-static; the Principles of Operation
# give CC 1).  The kernel copies these unchanged into the slot like any other instruction.
ROSBG_TEST_ONLY = ((0xEC, 0x54), (0xEC, 0x56), (0xEC, 0x57))


# privileged / I/O / clock / service instructions whose effect is not a function of registers
# and memory under an emulator; sam24/sam31: the slot (above 16 MiB) leaves the mode's range,
# ex/exrl execute another instruction
NOT_COMPARABLE = frozenset("""stck stckf stcke stckc sck sckc spt stpt svc diag sie sigp ssm stnsm
stosm lpsw lpswe lpswey epsw spm ipm lctl lctlg stctl stctg ptlb ipte idte iske sske rrbe
stfl stfle stidp stap lra lrag tprot sac sacf mvcp mvcs pc pt pr bsa bakr bsg ssar esar
trap2 trap4 sclp stsi stcps tpi tsch ssch csch hsch rsch xsch msch stcrw chsc sal schm rchp
ex exrl sam24 sam31""".split())


def not_comparable(code: bytes) -> str | None:
    """Why two runs of ``code`` cannot be compared (privileged, I/O, clock, mode changes)."""
    import capstone
    cs = capstone.Cs(capstone.CS_ARCH_SYSZ, capstone.CS_MODE_BIG_ENDIAN)
    insn = next(cs.disasm(code, 0x1000, 1), None)
    if insn is not None and insn.mnemonic in NOT_COMPARABLE:
        return f"state-outside-registers:{insn.mnemonic}"
    return None


def oracle_defect(code: bytes) -> str | None:
    """Why the unicorn oracle cannot judge ``code`` (None: it can)."""
    if len(code) >= 6 and (code[0], code[5]) in ROSBG_TEST_ONLY and code[2] & 0x80:
        return "qemu-rosbg-test-only"
    return None


def pc_relative_target(backend: "S390xBackend", code: bytes, addr: int) -> int | None:
    """The target of a relative-long operand (RIL-b/c: ``addr + 2 * RI2``)."""
    if not is_relative_long(code):
        return None
    return (addr + 2 * int.from_bytes(code[2:6], "big", signed=True)) & MASK64


def reachable(target: int, slot_addr: int, length: int) -> bool:
    """Can a copy at ``slot_addr`` name ``target`` with a signed 32-bit halfword count?"""
    d = (target - slot_addr) & MASK64
    d = d - (1 << 64) if d >> 63 else d
    return -(1 << 31) <= int(d / 2) < (1 << 31)


class S390xSlotSupport(SlotSupport):
    """s390x out-of-line execution: the module functions above as the backend's hooks."""

    TEXT_RANGE = (0x100000, 0x1000000)  # (start, size) of a typical kernel text
    MODULE_RANGE = (0x1000000, 0x7F000000)  # the module area: where slots go
    EXECUTABLE = True
    CPU = CPU
    SLOT_SIZE = SLOT_SIZE
    FLAGS_FIXED = FLAGS_FIXED
    COPIES_PC_RELATIVE = True
    FAULT_CLASSES = {"interrupt 3": "program-interrupt"}  # QEMU EXCP_PGM
    default_slot_addr = staticmethod(default_slot_addr)
    build_slot = staticmethod(build_slot)
    simulate = staticmethod(simulate)
    setup_cpu = staticmethod(setup_cpu)
    trap_site = staticmethod(trap_site)
    after_step = staticmethod(after_step)
    oracle_defect = staticmethod(oracle_defect)
    not_comparable = staticmethod(not_comparable)
    pc_relative_target = staticmethod(pc_relative_target)
    reachable = staticmethod(reachable)


@functools.cache  # one per backend: Backend.slot_support() is asked often
def slot_support(backend: "Backend") -> S390xSlotSupport:
    """The s390x :class:`~kpatch_arch.base.SlotSupport` for ``backend``."""
    return S390xSlotSupport(backend)
