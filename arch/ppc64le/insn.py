"""ppc64le instruction facts: breakpoint and prefixed encodings, the not-single-steppable
opcodes, ``analyse_instr`` classes and the ELFv2 local entry point.

The ppc64le backend (backend.py) reads these; they are data, so nothing here imports it.
"""
from __future__ import annotations

import enum

from ..base import PtRegsField
from .emulate import WORD_DECLINED, WORD_MEM, WORD_REFUSED, WORD_REGS, analyse_word


# --- facts -----------------------------------------------------------------------------------
BREAKPOINT_INSTRUCTION = 0x7FE00008  # PPC_RAW_TRAP(): tw 31,0,0
NOP = 0x60000000  # ori r0,r0,0
INSN_SIZE = 4
PREFIXED_SIZE = 8
OP_PREFIX = 1
PAGE_SIZE = 0x10000  # Debian ppc64le: CONFIG_PPC_64K_PAGES=y
FTRACE_ENTRY_WINDOW = 16  # kprobe_lookup_name: ftrace_location_range(addr, addr + 16)
DYN_FTRACE_SIZE = 24  # struct dyn_ftrace { ip; flags; struct dyn_arch_ftrace { ool_stub; } }
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

# optprobes.c is_conditional_branch: bc (primary 16); bclr, bcctr, bctar (19 with these XO)
BC_OP = 16
BRANCH_COND_XO19 = frozenset({16, 528, 560})
OPTINSN_SLOT = "optinsn_slot"  # the detour buffer optprobes use (in vmlinux)
TEMPLATE_ENTRY, TEMPLATE_END = "optprobe_template_entry", "optprobe_template_end"
PAGE_ALIGNED_SECTION = ".data..page_aligned"  # sh_addralign == PAGE_SIZE (4K or 64K kernels)


class Analysis(enum.Enum):
    """What ``analyse_instr`` + ``emulate_step`` make of one word, whatever the registers
    (:func:`kpatch_arch.ppc64le.emulate.analyse_word`)."""

    REGS = "regs"  # analyse_instr returns 1: emulated, optimizable unless a conditional branch
    MEM = "mem"  # load/store/cache op/mfmsr: emulated by emulate_step, not optimizable
    STEP = "step"  # emulate_step returns 0 by the word alone: single-stepped out of line (MSR_SE)
    REFUSED = "refused"  # emulate_step < 0 (sc, rfid, mtmsr[d]): can_single_step refuses them


_ANALYSIS = {WORD_REGS: Analysis.REGS, WORD_MEM: Analysis.MEM, WORD_DECLINED: Analysis.STEP,
             WORD_REFUSED: Analysis.REFUSED}


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
    """``analyse_instr``/``emulate_step`` (arch/powerpc/lib/sstep.c) for ``word`` on the oracle
    kernel's CPU (POWER9, ISA 3.0), decided by the word alone: the model's
    :func:`~kpatch_arch.ppc64le.emulate.analyse_word` (emulated when it is for some register
    state the word cannot rule out; STEP for unknown opcodes, OE=1 arithmetic, bctar, invalid
    forms such as update forms with rA=0 or rA=rT, and prefixed words without ISA 3.1)."""
    return _ANALYSIS[analyse_word(word)]


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
