"""ppc64le backend: ``tw 31,0,0`` breakpoints, ELFv2 entry points, emulate-or-single-step.

Facts first (pt_regs, register names, opcode classes), then the decoder, then the hooks that
mirror arch/powerpc/kernel/kprobes.c, arch/powerpc/include/asm/probes.h (``can_single_step``)
and arch/powerpc/kernel/optprobes.c.  powerpc has no boundary decoding: every 4-byte-aligned
word is judged alone (``.text`` holds tens of thousands of data words that no decoder knows,
and the kernel does not care); only a prefixed (ISA 3.1, 8-byte) instruction's suffix word is
refused.  Whether ``emulate_step`` emulates an accepted instruction or it is single-stepped is
approximated by opcode class from arch/powerpc/lib/sstep.c (``analyse_instr``): see
:func:`analyse_class`.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import capstone

from kpatch_core.verdict import Execution, Method, Reason, Refusal

from ..base import Backend, PrepareContext, PtRegsField

if TYPE_CHECKING:
    from kpatch_core.image import Image, KernelVersion

# --- facts -----------------------------------------------------------------------------------
BREAKPOINT_INSTRUCTION = 0x7FE00008  # PPC_RAW_TRAP(): tw 31,0,0
NOP = 0x60000000  # ori r0,r0,0
INSN_SIZE = 4
PREFIXED_SIZE = 8
OP_PREFIX = 1
PAGE_SIZE = 0x10000  # Debian ppc64le: CONFIG_PPC_64K_PAGES=y
FTRACE_ENTRY_WINDOW = 16  # kprobe_lookup_name: ftrace_location_range(addr, addr + 16)
BRANCH_RANGE = (-0x2000000, 0x1FFFFFC)  # is_offset_in_branch_range (I-form b)
ARCH_BLACKLIST_AREA = ("_stext", "__head_end")  # arch_within_kprobe_blacklist: exception vectors

# struct pt_regs, arch/powerpc/include/asm/ptrace.h (ppc64: 384 bytes, 6.1 and 6.12)
PT_REGS = (
    *(PtRegsField(f"gpr{n}", 8 * n) for n in range(32)),
    PtRegsField("nip", 256), PtRegsField("msr", 264), PtRegsField("orig_gpr3", 272),
    PtRegsField("ctr", 280), PtRegsField("link", 288), PtRegsField("xer", 296),
    PtRegsField("ccr", 304), PtRegsField("softe", 312), PtRegsField("trap", 320),
    PtRegsField("dar", 328), PtRegsField("dsisr", 336), PtRegsField("result", 344),
    PtRegsField("ppr", 352), PtRegsField("exit_result", 360), PtRegsField("kuap", 368),
    PtRegsField("iamr", 376),
)
PT_REGS_SIZE = 384
# regoffset_table (arch/powerpc/kernel/ptrace/ptrace-view.c): GPR_OFFSET_NAME gives r<n> and
# gpr<n>; then nip msr ctr link xer ccr softe trap dar dsisr
EVENT_REGISTERS = (*(f"r{n}" for n in range(32)), *(f"gpr{n}" for n in range(32)),
                   "nip", "msr", "ctr", "link", "xer", "ccr", "softe", "trap", "dar", "dsisr")
REGISTER_ALIASES = {f"r{n}": f"gpr{n}" for n in range(32)}

# can_single_step (arch/powerpc/include/asm/probes.h): primary opcodes and XO (bits 1-10)
NOT_STEPPABLE_OP = {2: "tdi", 3: "twi", 17: "sc"}
NOT_STEPPABLE_XO19 = {18: "rfid", 38: "rfmci", 39: "rfdi", 50: "rfi", 51: "rfci", 82: "rfscv",
                      274: "hrfid", 306: "urfid", 370: "stop", 402: "doze", 434: "nap",
                      466: "sleep", 498: "rvwinkle"}
NOT_STEPPABLE_XO31 = {4: "tw", 68: "td", 146: "mtmsr", 178: "mtmsrd"}

# analyse_instr (arch/powerpc/lib/sstep.c), by opcode class.  REGS: fully done in registers
# (returns 1: COMPUTE/BRANCH/BARRIER); MEM: loads/stores and cache ops, done by
# emulate_loadstore / emulate_step; other words are single-stepped.
REGS_OPS = frozenset({7, 8, 10, 11, 12, 13, 14, 15, 16, 18, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30})
REGS_XO19 = frozenset({0, 16, 33, 129, 150, 193, 225, 257, 289, 417, 449, 528, 560})  # + addpcis
REGS_XO31 = frozenset({
    0, 32, 508, 19, 128, 144,  # cmp cmpl cmpb mfcr setb mtcrf
    8, 9, 10, 11, 40, 73, 75, 104, 136, 138, 200, 202, 232, 233, 234, 235, 265, 266, 267, 457,
    459, 489, 491, 425, 393, 755, 777, 779,  # integer arithmetic (XO form, OE=0)
    26, 58, 28, 60, 122, 124, 154, 186, 252, 284, 316, 378, 412, 444, 476, 506, 538, 570, 922,
    954, 986,  # logical, count, extend
    24, 536, 792, 824, 27, 539, 794, 826, 827, 890, 891,  # shifts
    598, 854,  # sync/lwsync/ptesync, eieio
})
XO31_ARITH_OE = frozenset(x | 0x200 for x in (8, 10, 40, 104, 136, 138, 200, 202, 232, 233, 234,
                                               235, 457, 459, 489, 491, 425, 393))
MFSPR, MTSPR = 339, 467
SPR_REGS = frozenset({1, 8, 9})  # XER, LR, CTR: mfspr/mtspr done in registers
MFMSR = 83
CACHE_XO31 = frozenset({54, 86, 246, 278, 982, 1014})  # dcbst dcbf dcbtst dcbt icbi dcbz
MEM_XO31 = frozenset({
    20, 150, 84, 214, 52, 694, 116, 726, 276, 182, 23, 55, 87, 119, 7, 39, 71, 103, 359, 135,
    167, 199, 231, 487, 21, 53, 149, 181, 151, 183, 215, 247, 279, 311, 341, 373, 343, 375, 407,
    439, 532, 533, 534, 597, 535, 567, 599, 631, 663, 695, 727, 759, 791, 855, 887, 919, 983, 660,
    661, 662, 725, 790, 918, 12, 76, 140, 268, 269, 301, 332, 333, 364, 396, 397, 429, 461, 524,
    588, 652, 716, 780, 781, 812, 813, 844, 876, 908, 909, 940, 941, 972, 1004})
MEM_OPS = frozenset(range(32, 63)) - {59, 60}  # D/DS/DQ-form loads and stores (lwz..stq)
MADD_XO4 = frozenset({48, 49, 51})  # maddhd maddhdu maddld (ISA 3.0)
# optprobes.c is_conditional_branch: bc (primary 16); bclr, bcctr, bctar (19 with these XO)
BC_OP = 16
BRANCH_COND_XO19 = frozenset({16, 528, 560})
OPTINSN_SLOT = "optinsn_slot"  # the detour buffer optprobes use (in vmlinux)


class Analysis(enum.Enum):
    """What ``analyse_instr`` + ``emulate_step`` make of one instruction (approximation)."""

    REGS = "regs"  # analyse_instr returns 1: emulated, optimizable unless a conditional branch
    MEM = "mem"  # load/store/cache op/mfmsr: emulated by emulate_step, not optimizable
    STEP = "step"  # anything else: single-stepped out of line (MSR_SE)


# --- decoder ---------------------------------------------------------------------------------
def primary_opcode(word: int) -> int:
    """``get_op``: bits 0-5."""
    return word >> 26


def xo(word: int) -> int:
    """``get_xop``: the 10-bit extended opcode (bits 21-30)."""
    return (word >> 1) & 0x3FF


def is_prefixed(word: int) -> bool:
    """``ppc_inst_prefixed``: primary opcode 1 (ISA 3.1 prefix word)."""
    return primary_opcode(word) == OP_PREFIX


def not_steppable(word: int) -> str | None:
    """``can_single_step`` is false: the instruction's name; else None."""
    op = primary_opcode(word)
    if op in NOT_STEPPABLE_OP:
        return NOT_STEPPABLE_OP[op]
    if op == 19:
        return NOT_STEPPABLE_XO19.get(xo(word))
    if op == 31:
        return NOT_STEPPABLE_XO31.get(xo(word))
    return None


def analyse_class(word: int) -> Analysis:
    """``analyse_instr``/``emulate_step`` by opcode class (documented approximation of sstep.c:
    register-only integer, CR, branch and barrier forms -> REGS; loads, stores (incl. FP, VMX,
    VSX, larx/stcx., prefixed), cache ops, mfmsr -> MEM; FP/vector arithmetic, SPRs other than
    LR/CTR/XER, TLB/SLB and other privileged forms -> STEP)."""
    op = primary_opcode(word)
    if op == OP_PREFIX:
        return Analysis.MEM  # prefixed loads/stores (and paddi) are emulated on ISA 3.1 CPUs
    if op in REGS_OPS:
        return Analysis.REGS
    if op == 19:
        if xo(word) in REGS_XO19 or (word >> 1) & 0x1F == 2:  # addpcis
            return Analysis.REGS
        return Analysis.STEP
    if op == 4:
        return Analysis.REGS if word & 0x3F in MADD_XO4 else Analysis.STEP
    if op == 31:
        x = xo(word)
        if x in REGS_XO31 or x in XO31_ARITH_OE:
            return Analysis.REGS
        if x in (MFSPR, MTSPR):
            spr = ((word >> 16) & 0x1F) | ((word >> 6) & 0x3E0)
            return Analysis.REGS if spr in SPR_REGS else Analysis.STEP
        if x in MEM_XO31 or x in CACHE_XO31 or x == MFMSR:
            return Analysis.MEM
        return Analysis.STEP
    if op in MEM_OPS:
        if op == 58 and word & 3 == 3 or op == 62 and word & 3 == 3:
            return Analysis.STEP  # reserved DS-form variants
        return Analysis.MEM
    return Analysis.STEP


def is_conditional_branch(word: int) -> bool:
    """optprobes.c ``is_conditional_branch``: bc*, bclr*, bcctr*, bctar*."""
    op = primary_opcode(word)
    return op == BC_OP or (op == 19 and xo(word) in BRANCH_COND_XO19)


def ppc_function_entry_offset(word0: int, word1: int) -> int:
    """``ppc_function_entry``: 8 when the function starts with the TOC setup
    (``addis r2,r12,X`` or ``lis r2,X``; then ``addi r2,r2,Y``), else 0."""
    if (word0 & 0xFFFF0000) in (0x3C4C0000, 0x3C400000) and (word1 & 0xFFFF0000) == 0x38420000:
        return 8
    return 0


def local_entry_offset(st_other: int) -> int:
    """ELFv2 local entry offset encoded in ``st_other`` (PPC64_LOCAL_ENTRY_OFFSET): 0, 0, 4, 8,
    16, 32, 64 for values 0..6.  The kernel does not read it; it decodes the code instead."""
    return ((1 << ((st_other >> 5) & 7)) >> 2) << 2


class Ppc64leBackend(Backend):
    """The ppc64le architecture (arch/powerpc/kernel/kprobes.c, optprobes.c, lib/sstep.c)."""

    name = "ppc64le"
    elf_machine = "EM_PPC64"
    little_endian = True
    capstone_arch = capstone.CS_ARCH_PPC
    capstone_mode = capstone.CS_MODE_64 | capstone.CS_MODE_LITTLE_ENDIAN
    relative_reloc_type = 22  # R_PPC64_RELATIVE
    absolute_reloc_type = 38  # R_PPC64_ADDR64
    breakpoint = BREAKPOINT_INSTRUCTION.to_bytes(4, "little")
    insn_align = INSN_SIZE
    extable_entry_size = 8  # s32 insn, s32 fixup
    static_call_inline = False
    kretprobe_blacklist = ()
    have_kprobes_on_ftrace = True
    have_optprobes = True
    pt_regs_size = PT_REGS_SIZE
    pt_regs = PT_REGS
    arg_regs = tuple(f"gpr{n}" for n in range(3, 11))  # regs_get_kernel_argument (6.12 only)
    retval_reg = "gpr3"
    stack_reg = "gpr1"
    syscall_prefix = "sys_"  # the wrapper keeps the sys_ names; the argument is pt_regs * in r3
    event_registers = EVENT_REGISTERS

    def __init__(self) -> None:
        self._cs = capstone.Cs(self.capstone_arch, self.capstone_mode)

    # -- facts by version ---------------------------------------------------------------------
    adjust_window = FTRACE_ENTRY_WINDOW + 1  # arch_kprobe_on_func_entry: offset <= 16

    def fetch_args_supported(self, version: "KernelVersion") -> bool:
        """``$argN`` in kprobe_events: HAVE_FUNCTION_ARG_ACCESS_API only from 6.12 (not 6.1)."""
        return version.rules != "6.1"

    def register(self, name: str) -> PtRegsField | None:
        """``regs_query_register_offset`` (regoffset_table): ``r3`` and ``gpr3`` are the same
        field; pt_regs members without a table name (orig_gpr3, result...) give None."""
        if name not in EVENT_REGISTERS:
            return None
        return super().register(REGISTER_ALIASES.get(name, name))

    # -- hooks --------------------------------------------------------------------------------
    def within_arch_blacklist(self, image: "Image", addr: int) -> bool:
        # arch_within_kprobe_blacklist: also [_stext, __head_end) (exception vectors)
        start, end = (image.symtab.value(s) for s in ARCH_BLACKLIST_AREA)
        return start is not None and end is not None and start <= addr < end

    def jump_label_size(self, image: "Image", code: int) -> int:
        return 4

    def ftrace_call_adjust(self, image: "Image", record: int) -> int:
        # 6.1 (-mprofile-kernel): the record is the `bl _mcount` itself.  6.12
        # (trace/ftrace.c): records in .exit.text are dropped (0), and with
        # ARCH_USING_PATCHABLE_FUNCTION_ENTRY (record = first of two NOPs) the site is record + 4
        if image.version.rules == "6.1":
            return record
        begin, end = image.symtab.value("__exittext_begin"), image.symtab.value("__exittext_end")
        if begin is not None and end is not None and begin <= record < end:
            return 0
        if self._word(image, record) == NOP:
            return record + INSN_SIZE
        return record

    def _word(self, image: "Image", addr: int) -> int | None:
        raw = image.read(addr, 4)
        return int.from_bytes(raw, "little") if len(raw) == 4 else None

    def lookup_name(self, image: "Image", name: str, offset: int = 0) -> int | None:
        # kprobe_lookup_name (ELFv2): SYM+0 moves to the ftrace site within the first 16 bytes
        # (KPROBES_ON_FTRACE), else to the local entry point (ppc_function_entry)
        addr = image.kallsyms.lookup(name)
        if addr is None or offset:
            return addr
        if image.config.enabled("KPROBES_ON_FTRACE"):
            sites = image.tables.ftrace_sites_in(addr, addr + FTRACE_ENTRY_WINDOW + 1)
            if sites:
                return int(sites[0])
        w0, w1 = self._word(image, addr), self._word(image, addr + 4)
        if w0 is None or w1 is None:
            return addr
        return addr + ppc_function_entry_offset(w0, w1)

    def adjust_kprobe_addr(self, image: "Image", sym_addr: int, offset: int) -> tuple[int, bool]:
        # arch_adjust_kprobe_addr: the address is not moved (kprobe_lookup_name already moved
        # SYM+0); arch_kprobe_on_func_entry: up to 16 bytes past the global entry (8 without
        # KPROBES_ON_FTRACE) still count as the entry, so `r SYM+4..16` are valid kretprobes and
        # (6.12) $argN read the entry registers there
        limit = 16 if image.config.enabled("KPROBES_ON_FTRACE") else 8
        return sym_addr + offset, offset <= limit

    def mnemonic(self, code: bytes, addr: int) -> str:
        """Text of the instruction (capstone), or the word in hex when capstone cannot."""
        for _, _, mn, ops in self._cs.disasm_lite(code, addr, 1):
            return f"{mn} {ops}".strip()
        return f".long {int.from_bytes(code[:4], 'little'):#010x}"

    # -- arch_prepare_kprobe ------------------------------------------------------------------
    def prepare(self, ctx: PrepareContext) -> Execution | Refusal:
        image, addr = ctx.image, ctx.addr
        word = self._word(image, addr)
        if word is None:
            return Refusal(Reason.UNDECODABLE, "no text at the address")
        why = not_steppable(word)  # can_single_step
        if why is not None:
            return Refusal(Reason.PROHIBITED_INSN, f"{why} cannot be single-stepped")
        if addr % PAGE_SIZE:  # the word before, unless addr starts a page
            prev = self._word(image, addr - 4)
            if prev is not None and is_prefixed(prev):
                return Refusal(Reason.PREFIX_SUFFIX, f"prefix word {prev:#010x} at {addr - 4:#x}")
        size = PREFIXED_SIZE if is_prefixed(word) else INSN_SIZE
        insn = image.read(addr, size)
        text = self.mnemonic(insn, addr)
        if size == PREFIXED_SIZE and addr % 64 == 60:
            text += " [prefixed insn crosses a 64-byte boundary]"
        cls = analyse_class(word)
        method = Method.SINGLESTEP if cls is Analysis.STEP else Method.EMULATE
        return Execution(method, insn, text)

    def optimizable(self, ctx: PrepareContext) -> bool:
        """optprobes.c ``can_optimize``: a kernel address whose instruction ``analyse_instr``
        does fully in registers (returns 1) and that is not a conditional branch; the detour
        (in vmlinux's ``optinsn_slot``) and the return address must be within branch range."""
        image, addr = ctx.image, ctx.addr
        word = self._word(image, addr)
        if word is None or is_prefixed(word) or is_conditional_branch(word):
            return False
        if analyse_class(word) is not Analysis.REGS:
            return False
        slot = image.symtab.value(OPTINSN_SLOT)
        if slot is None:
            return False
        lo, hi = BRANCH_RANGE
        return lo <= slot - addr <= hi
