"""x86_64 out-of-line execution: the instruction slot, the emulated operations, the CPU facts.

Slot layout [arch/x86/kernel/kprobes/core.c: arch_copy_kprobe, __copy_instruction,
prepare_singlestep]: the copied instruction with its RIP-relative displacement rewritten for
the slot address, then ``int3`` (single-step ends on a second trap) or, when boosted,
``jmp rel32`` back to ``addr + len``.  Emulated instructions still get a slot (the kernel
always copies) but never run it.  Emulation: core.c ``kprobe_emulate_*`` and
asm/text-patching.h ``int3_emulate_*``.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Mapping

import unicorn
import unicorn.x86_const as ux

from kpatch_arch.base import Backend, SlotSupport
from kpatch_core.slot import CpuFacts, Effect, ReadMem, Slot
from kpatch_core.verdict import Execution, Method, Reason, Refusal

from .insn import EMULATED, INT3, JMP32_INSN_SIZE, LEGACY_PREFIXES, MAX_INSN_SIZE, kernel_opcode

if TYPE_CHECKING:
    from .insn import KInsn
    import capstone
    from kpatch_core.image import Image

    from .backend import X86_64Backend

# --- facts -----------------------------------------------------------------------------------
MODULES_VADDR = 0xFFFFFFFFC0000000  # __START_KERNEL_map + KERNEL_IMAGE_SIZE: module_alloc area
JMP32_OPCODE = 0xE9
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1
MASK64 = (1 << 64) - 1

EFLAGS_CF, EFLAGS_PF, EFLAGS_ZF, EFLAGS_SF = 1 << 0, 1 << 2, 1 << 6, 1 << 7
EFLAGS_IF, EFLAGS_OF = 1 << 9, 1 << 11
# int3_emulate_jcc: jcc_mask[cc >> 1] for cc < 0xc
JCC_MASK = (EFLAGS_OF, EFLAGS_CF, EFLAGS_ZF, EFLAGS_CF | EFLAGS_ZF, EFLAGS_SF, EFLAGS_PF)
# addrmode_regoffs[] (core.c): ModRM.rm (+8 with REX.B) -> pt_regs field
ADDRMODE_REGS = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di",
                 "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

CPU = CpuFacts(
    uc_arch=unicorn.UC_ARCH_X86, uc_mode=unicorn.UC_MODE_64,
    regs={"r15": ux.UC_X86_REG_R15, "r14": ux.UC_X86_REG_R14, "r13": ux.UC_X86_REG_R13,
          "r12": ux.UC_X86_REG_R12, "bp": ux.UC_X86_REG_RBP, "bx": ux.UC_X86_REG_RBX,
          "r11": ux.UC_X86_REG_R11, "r10": ux.UC_X86_REG_R10, "r9": ux.UC_X86_REG_R9,
          "r8": ux.UC_X86_REG_R8, "ax": ux.UC_X86_REG_RAX, "cx": ux.UC_X86_REG_RCX,
          "dx": ux.UC_X86_REG_RDX, "si": ux.UC_X86_REG_RSI, "di": ux.UC_X86_REG_RDI,
          "ip": ux.UC_X86_REG_RIP, "flags": ux.UC_X86_REG_EFLAGS, "sp": ux.UC_X86_REG_RSP},
    pc="ip", sp="sp", link=None,
    # unicorn faults on fetches at >= 0xffff800000000000: run kernel text 2**47 lower
    rebase=0xFFFF800000000000,
    breakpoint_pc_advance=True, interrupt_numbers=(3,),
    # arithmetic flags + DF + IF (unicorn keeps the reserved bit 1 and RF/TF for itself)
    flags_mask={"flags": 0xED5 | EFLAGS_IF},
)


def default_slot_addr(image: "Image | None" = None) -> int:
    """The first instruction slot: a page at the start of the module area (module_alloc with
    nokaslr), within +/-2 GiB of kernel text as ``get_insn_slot`` guarantees."""
    return MODULES_VADDR


def _s64(v: int) -> int:
    v &= MASK64
    return v - (1 << 64) if v >> 63 else v


def _s32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def _rip_relative(k: "KInsn") -> bool:
    """``insn_rip_relative``: ModRM present with mod == 0 and rm == 5 (64-bit mode), whatever
    the address size -- so ``[eip + disp]`` (0x67 prefix) is relocated too."""
    return k.modrm is not None and (k.modrm & 0xC7) == 0x05


def relocate(backend: "X86_64Backend", insn: bytes, src: int, dest: int) -> bytes | Refusal:
    """``__copy_instruction``: ``insn`` (at ``src``) as it must read when it runs at ``dest``:
    a RIP-relative displacement becomes ``src + disp - dest`` and must fit in s32."""
    k = backend.decode(insn, src)
    if k is None:
        return Refusal(Reason.UNDECODABLE, insn[:4].hex())
    out = bytearray(insn[:k.length])
    if _rip_relative(k) and k.disp_offset:
        o = k.disp_offset
        disp = int.from_bytes(out[o:o + 4], "little", signed=True)
        newdisp = _s64(src + disp - dest)  # pointer arithmetic: wraps modulo 2**64
        if not S32_MIN <= newdisp <= S32_MAX:
            return Refusal(Reason.RIP_DISP_RANGE,
                           f"new displacement {newdisp:#x} does not fit into s32 "
                           f"(slot {dest:#x}, insn {src:#x})")
        out[o:o + 4] = _s32(newdisp)
    return bytes(out)


def synthesize_reljump(at: int, to: int) -> bytes:
    """``synthesize_reljump``: ``jmp rel32`` at ``at`` reaching ``to``."""
    return bytes([JMP32_OPCODE]) + _s32(to - (at + JMP32_INSN_SIZE))


def build_slot(backend: "X86_64Backend", execution: Execution, addr: int,
               slot_addr: int) -> Slot | Refusal:
    """``arch_copy_kprobe``: copied instruction (+RIP fix) then ``int3``, or ``jmp`` back when
    boosted (``prepare_singlestep``)."""
    insn = execution.insn
    code = relocate(backend, insn, addr, slot_addr)
    if isinstance(code, Refusal):
        return code
    n = len(code)
    if execution.method == Method.BOOST:
        rel = _s64(addr + n - (slot_addr + n + JMP32_INSN_SIZE))
        if not S32_MIN <= rel <= S32_MAX:
            return Refusal(Reason.RIP_DISP_RANGE, f"boost jump {rel:#x} does not fit into s32")
        return Slot(addr, slot_addr, insn, code + synthesize_reljump(slot_addr + n, addr + n),
                    Method.BOOST, addr + n, None, execution.mnemonic, "boosted: jmp back")
    if MAX_INSN_SIZE - n < 1:
        return Refusal(Reason.INSN_TOO_LONG, execution.mnemonic)
    note = "emulated in the int3 handler; slot copied but not run" \
        if execution.method == Method.EMULATE else "single-step ends on the trailing int3"
    return Slot(addr, slot_addr, insn, code + bytes([INT3]), execution.method, addr + n, n,
                execution.mnemonic, note)


# --- emulation (kprobe_emulate_*) -------------------------------------------------------------
def _jcc_taken(cc: int, flags: int) -> bool:
    """``int3_emulate_jcc``'s condition."""
    invert = cc & 1
    if cc < 0xC:
        match = bool(flags & JCC_MASK[cc >> 1])
    else:
        match = bool(flags & EFLAGS_SF) != bool(flags & EFLAGS_OF)
        if cc >= 0xE:
            match = match or bool(flags & EFLAGS_ZF)
    return match != bool(invert)


def _signed(raw: bytes) -> int:
    return int.from_bytes(raw, "little", signed=True)


def simulate(backend: "X86_64Backend", insn: bytes, addr: int, regs: Mapping[str, int],
             read: ReadMem) -> Effect:
    """The kernel's ``emulate_op`` for ``insn`` at ``addr`` (prepare_emulation's table)."""
    k = backend.decode(insn, addr)
    if k is None:
        raise ValueError(f"undecodable instruction {insn[:4].hex()}")
    opcode, _, rex, _, op_end = kernel_opcode(insn)
    n = k.length
    nxt = addr + n
    imm = insn[op_end:n]
    sp, flags = regs["sp"], regs["flags"]
    op0 = opcode[0]

    def push(val: int) -> tuple[int, tuple[int, bytes]]:  # int3_emulate_push
        new = (sp - 8) & MASK64
        return new, (new, (val & MASK64).to_bytes(8, "little"))

    if op0 in (0xFA, 0xFB, 0x9C, 0x9D):  # kprobe_emulate_ifmodifiers
        if op0 == 0xFA:
            return Effect(nxt, {"flags": flags & ~EFLAGS_IF}, op="kprobe_emulate_ifmodifiers")
        if op0 == 0xFB:
            return Effect(nxt, {"flags": flags | EFLAGS_IF}, op="kprobe_emulate_ifmodifiers")
        if op0 == 0x9C:
            new, st = push(flags)
            return Effect(nxt, {"sp": new}, (st,), op="kprobe_emulate_ifmodifiers")
        val = int.from_bytes(read(sp, 8), "little")
        return Effect(nxt, {"flags": val, "sp": (sp + 8) & MASK64}, loads=(("flags", sp, 8),),
                      op="kprobe_emulate_ifmodifiers")
    if op0 in (0xC2, 0xC3, 0xCA, 0xCB):  # kprobe_emulate_ret: every form is a plain near ret
        val = int.from_bytes(read(sp, 8), "little")
        return Effect(val, {"sp": (sp + 8) & MASK64}, loads=(("ip", sp, 8),),
                      op="kprobe_emulate_ret")
    if op0 == 0xE8:  # kprobe_emulate_call: pushes the original return address
        new, st = push(nxt)
        return Effect((nxt + _signed(imm)) & MASK64, {"sp": new}, (st,), op="kprobe_emulate_call")
    if op0 in (0xE9, 0xEB):
        return Effect((nxt + _signed(imm)) & MASK64, op="kprobe_emulate_jmp")
    if 0x70 <= op0 <= 0x7F or (op0 == 0x0F and len(opcode) > 1 and opcode[1] & 0xF0 == 0x80):
        cc = (op0 if op0 != 0x0F else opcode[1]) & 0xF
        rel = _signed(imm[:1]) if op0 != 0x0F else _signed(imm)  # 1-byte jcc: sign-extended s8
        return Effect((nxt + rel) & MASK64 if _jcc_taken(cc, flags) else nxt,
                      op="kprobe_emulate_jcc")
    if 0xE0 <= op0 <= 0xE3:  # kprobe_emulate_loop
        bits = k.addr_bytes * 8
        mask = (1 << bits) - 1
        cx = regs["cx"]
        out: dict[str, int] = {}
        typ = op0 & 3
        if typ != 3:
            match = (cx & mask) != 0
            out["cx"] = (cx & ~mask) | ((cx - 1) & mask)
        else:
            match = (cx & mask) == 0
        if typ == 0:
            match = match and not flags & EFLAGS_ZF
        elif typ == 1:
            match = match and bool(flags & EFLAGS_ZF)
        return Effect((nxt + _signed(imm[:1])) & MASK64 if match else nxt, out,
                      op="kprobe_emulate_loop")
    if op0 == 0xFF and k.reg in (2, 4) and k.mod == 3:
        reg = ADDRMODE_REGS[(k.modrm or 0) & 7 | (8 if rex & 1 else 0)]
        target = regs[reg]
        if k.reg == 2:  # kprobe_emulate_call_indirect
            new, st = push(nxt)
            return Effect(target, {"sp": new}, (st,), op="kprobe_emulate_call_indirect")
        return Effect(target, op="kprobe_emulate_jmp_indirect")
    raise ValueError(f"{k.mnemonic}: not an emulated instruction")


def after_slot(slot: Slot, trap_site: int) -> int:
    """``resume_singlestep``: the IP after the trailing int3 at ``trap_site`` in the slot,
    moved back to the original text (``regs->ip += orig_ip - copy_ip - 1``)."""
    return trap_site - slot.slot_addr + slot.addr


FLAGS_FIXED = {"flags": 0x202}  # reserved bit 1 and IF, as in kernel context
SLOT_SIZE = MAX_INSN_SIZE  # kprobe_insn_slots.insn_size


# x86 instructions whose result is not a function of registers and memory (time, randomness),
# or that change privilege, I/O, descriptor-table or hypervisor state: no two runs compare
NOT_COMPARABLE_MNEMONICS = frozenset("""
rdtsc rdtscp rdrand rdseed rdpmc rdpid hlt syscall sysret sysretq sysenter sysexit iret iretd iretq
int int1 into in insb insw insd out outsb outsw outsd swapgs wrmsr rdmsr lgdt lidt lldt ltr clts
invd wbinvd invlpg invlpga invpcid xsetbv xgetbv monitor mwait monitorx mwaitx vmcall vmlaunch
vmresume vmxoff vmxon vmclear vmptrld vmptrst vmread vmwrite vmfunc vmrun vmload vmsave vmmcall
stgi clgi skinit getsec rsm cpuid xbegin xabort xend xtest enclu encls enclv
pconfig wbnoinvd rdpkru wrpkru ud1 ud0 sgdt sidt sldt str smsw lsl lar verr verw lmsw
clac stac xsave xsaves xsavec xsaveopt xrstor xrstors xsave64 xsaves64 xsavec64 xsaveopt64
xrstor64 xrstors64 fxsave fxsave64 fxrstor fxrstor64 rdfsbase rdgsbase wrfsbase wrgsbase
fnstenv fstenv fldenv fnsave fsave frstor fninit finit emms femms fxch
""".split())
RELATIVE_BRANCH_OPCODES = frozenset([*(bytes([b]) for b in (*range(0x70, 0x80), 0xE0, 0xE1, 0xE2,
                                                           0xE3, 0xE8, 0xE9, 0xEB)),
                                     *(bytes([0x0F, b]) for b in range(0x80, 0x90))])


@functools.cache
def _capstone() -> "capstone.Cs":
    import capstone
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = True
    return cs


def kernel_divergent(code: bytes) -> str | None:
    """Why the kernel itself runs ``code`` differently from the CPU (None: it does not).
    ``prepare_emulation`` switches on ``insn->opcode.bytes[0]``, which for a VEX/EVEX-encoded
    instruction is the byte after the VEX payload: `vpsubd` (``c5 .. fa``) is emulated as
    `cli`, a VEX opcode byte 0x74 as `je`, and so on.  The int3_emulate_* helpers also ignore
    operand-size and address-size prefixes and immediates the CPU honours.  Such a probe does
    what the kernel does (our model follows it), not what the instruction does."""
    opcode, prefixes, _, vex, modrm_at = kernel_opcode(code)
    if vex and opcode[:1] and opcode[0] in EMULATED:
        return f"vex-emulated-as-{EMULATED[opcode[0]]}"
    if vex:
        return None
    # kprobe_emulate_ret: ret imm16 and lret (far) are emulated as a plain near ret
    if opcode in (b"\xc2", b"\xca", b"\xcb"):
        return "ret-imm16-or-lret-emulated-as-near-ret"
    p = set(prefixes)
    # kprobe_emulate_ifmodifiers / int3_emulate_push/pop: 8 bytes whatever 0x66 says
    if 0x66 in p and opcode in (b"\x9c", b"\x9d", b"\xc3"):
        return "66-stack-op-emulated-as-8-bytes"
    # int3_emulate_jmp/call/jcc, kprobe_emulate_loop: 64-bit targets and RCX whatever 0x66/0x67
    # say (the CPU truncates the target to 16 bits, 0x67 loop uses ECX)
    if p & {0x66, 0x67} and opcode in RELATIVE_BRANCH_OPCODES:
        return "prefixed-branch-emulated-as-64-bit"
    if 0x66 in p and opcode == b"\xff" and modrm_at < len(code) and (code[modrm_at] >> 3) & 7 in (2, 4):
        return "66-indirect-branch-emulated-as-64-bit"  # kprobe_emulate_call_indirect/jmp_indirect
    return None


def not_comparable(code: bytes) -> str | None:
    """Why two runs of ``code`` cannot be compared (privileged, I/O, time, randomness)."""
    import capstone.x86 as cx
    insn = next(_capstone().disasm(code, 0x1000, 1), None)
    if insn is None:
        return None
    if insn.mnemonic in NOT_COMPARABLE_MNEMONICS or insn.mnemonic.startswith(("vm", "xsave", "xrstor")):
        return f"state-outside-registers:{insn.mnemonic}"
    bad = {cx.X86_GRP_PRIVILEGE, cx.X86_GRP_INT, cx.X86_GRP_IRET, cx.X86_GRP_VM, cx.X86_GRP_SGX,
           cx.X86_GRP_RTM}
    if set(insn.groups) & bad:
        return f"state-outside-registers:{insn.mnemonic}"
    return None


# ins/outs, movs/cmps, stos/lods/scas: the string instructions a REP prefix repeats
STRING_OPCODES = frozenset(bytes([b]) for b in (0x6C, 0x6D, 0x6E, 0x6F, 0xA4, 0xA5, 0xA6, 0xA7,
                                                0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF))
LOOP_OPCODES = {b"\xe0": "loopne", b"\xe1": "loope", b"\xe2": "loop"}


# bt/bts/btr/btc with a register operand: with LOCK the CPU raises #UD (SIGILL, checked
# natively), unicorn 2.1.4's translator aborts the whole process (SIGABRT; qemu-x86_64 7.2: SIGSEGV)
LOCK_BIT_TEST = frozenset({b"\x0f\xa3", b"\x0f\xab", b"\x0f\xb3", b"\x0f\xbb"})


def _lock_bit_test_register(code: bytes) -> bool:
    i, lock = 0, False
    while i < len(code) and (code[i] in LEGACY_PREFIXES or 0x40 <= code[i] <= 0x4F):
        lock |= code[i] == 0xF0
        i += 1
    op, modrm = code[i:i + 2], code[i + 2] if i + 2 < len(code) else 0
    return lock and modrm >> 6 == 3 and (op in LOCK_BIT_TEST or op == b"\x0f\xba" and modrm & 0x20 != 0)


def oracle_defect(code: bytes) -> str | None:
    """Why unicorn cannot judge ``code``: it counts each iteration of a REP string instruction
    as one instruction, so a single step of the plain run is one iteration, not the instruction.
    (Read from the bytes: capstone drops a REP prefix that a REX byte follows.)  A LOCK bit
    test on a register aborts unicorn (never run: the whole process would die)."""
    if _lock_bit_test_register(code):
        return "unicorn-aborts-lock-bit-test-register"
    opcode, prefixes, _, vex, imm_at = kernel_opcode(code)
    if not vex and set(prefixes) & {0xF2, 0xF3} and opcode in STRING_OPCODES:
        return "unicorn-rep-string-one-iteration"
    # a relative branch to itself (rel == -len): one step ends where it started, which the
    # executor cannot tell from a step unicorn dropped, so it runs it again
    if not vex and opcode in RELATIVE_BRANCH_OPCODES and imm_at < len(code) and \
            int.from_bytes(code[imm_at:], "little", signed=True) == -len(code):
        return "branch-to-itself"
    return None


def kernel_divergent_state(code: bytes, regs: Mapping[str, int]) -> str | None:
    """kprobe_emulate_loop tests the count before decrementing it (``(regs->cx)-- != 0``, 6.1
    and 6.12), the CPU after: with a count of 0 or 1 the kernel's LOOP/LOOPE/LOOPNE branches
    the other way than the instruction does."""
    opcode, prefixes, _, vex, _ = kernel_opcode(code)
    if vex or opcode not in LOOP_OPCODES:
        return None
    mask = (1 << 32) - 1 if 0x67 in prefixes else (1 << 64) - 1  # loop.asize
    if regs.get("cx", regs.get("rcx", 2)) & mask in (0, 1):
        return f"{LOOP_OPCODES[opcode]}-tests-count-before-decrement"
    return None


def pc_relative_target(backend: "X86_64Backend", code: bytes, addr: int) -> int | None:
    """The absolute address a RIP-relative memory operand of ``code`` at ``addr`` names."""
    k = backend.decode(code, addr)
    if k is None or not _rip_relative(k) or not k.disp_offset:
        return None
    disp = int.from_bytes(code[k.disp_offset:k.disp_offset + 4], "little", signed=True)
    return (addr + k.length + disp) & MASK64


def reachable(target: int, slot_addr: int, length: int) -> bool:
    """Can a copy at ``slot_addr`` name ``target`` with a disp32?"""
    d = _s64(target - (slot_addr + length))
    return S32_MIN <= d <= S32_MAX


class X86SlotSupport(SlotSupport):
    """x86_64 out-of-line execution: the module functions above as the backend's hooks."""

    TEXT_RANGE = (0xFFFFFFFF81000000, 0x1000000)  # (start, size) of a typical kernel text
    MODULE_RANGE = (0xFFFFFFFFC0000000, 0x3F000000)  # the module area: where slots go
    EXECUTABLE = True
    CPU = CPU
    SLOT_SIZE = SLOT_SIZE
    FLAGS_FIXED = FLAGS_FIXED
    COPIES_PC_RELATIVE = True
    FAULT_CLASSES = {"interrupt 6": "undefined-instruction",  # #UD
                     "interrupt 13": "general-protection", "interrupt 0": "divide-error"}
    default_slot_addr = staticmethod(default_slot_addr)
    build_slot = staticmethod(build_slot)
    simulate = staticmethod(simulate)
    after_slot = staticmethod(after_slot)
    kernel_divergent = staticmethod(kernel_divergent)
    not_comparable = staticmethod(not_comparable)
    oracle_defect = staticmethod(oracle_defect)
    kernel_divergent_state = staticmethod(kernel_divergent_state)
    pc_relative_target = staticmethod(pc_relative_target)
    reachable = staticmethod(reachable)


@functools.cache  # one per backend: Backend.slot_support() is asked often
def slot_support(backend: "Backend") -> X86SlotSupport:
    """The x86_64 :class:`~kpatch_arch.base.SlotSupport` for ``backend``."""
    return X86SlotSupport(backend)
