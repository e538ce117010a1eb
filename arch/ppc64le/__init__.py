"""ppc64le backend: ``tw 31,0,0`` breakpoints, ELFv2 entry points, emulate-or-single-step.

Facts first (pt_regs, register names, opcode classes), then the decoder, then the hooks that
mirror arch/powerpc/kernel/kprobes.c, arch/powerpc/include/asm/probes.h (``can_single_step``)
and arch/powerpc/kernel/optprobes.c.  powerpc has no boundary decoding: every 4-byte-aligned
word is judged alone (``.text`` holds tens of thousands of data words that no decoder knows,
and the kernel does not care); only a prefixed (ISA 3.1, 8-byte) instruction's suffix word is
refused.  Whether ``emulate_step`` emulates an accepted instruction or it is single-stepped is
what the model of arch/powerpc/lib/sstep.c (``analyse_instr``, :mod:`.emulate`) says of the
word: see :func:`analyse_class`.

Layout: ``backend.py`` (the Backend class), ``insn.py`` (instruction facts and decode
tables), ``bulk.py`` (full-analysis classifier), ``slot.py`` (out-of-line execution).
"""
from .backend import Ppc64leBackend
from .insn import (
    _ANALYSIS,
    ARCH_BLACKLIST_AREA,
    BC_OP,
    BRANCH_COND_XO19,
    BRANCH_RANGE,
    BREAKPOINT_INSTRUCTION,
    DYN_FTRACE_SIZE,
    EVENT_REGISTERS,
    FTRACE_ENTRY_WINDOW,
    INSN_SIZE,
    NOP,
    NOT_STEPPABLE_OP,
    NOT_STEPPABLE_XO19,
    NOT_STEPPABLE_XO31,
    OP_PREFIX,
    OPTINSN_SLOT,
    PAGE_ALIGNED_SECTION,
    PAGE_SIZE,
    PREFIXED_SIZE,
    PT_REGS,
    PT_REGS_SIZE,
    REGISTER_ALIASES,
    TEMPLATE_END,
    TEMPLATE_ENTRY,
    Analysis,
    analyse_class,
    is_conditional_branch,
    is_prefixed,
    local_entry_offset,
    not_steppable,
    ppc_function_entry_offset,
    primary_opcode,
    xo,
)

__all__ = ['Ppc64leBackend', 'BREAKPOINT_INSTRUCTION', 'NOP', 'INSN_SIZE', 'PREFIXED_SIZE', 'OP_PREFIX', 'PAGE_SIZE', 'FTRACE_ENTRY_WINDOW', 'DYN_FTRACE_SIZE', 'BRANCH_RANGE', 'ARCH_BLACKLIST_AREA', 'PT_REGS', 'PT_REGS_SIZE', 'EVENT_REGISTERS', 'REGISTER_ALIASES', 'NOT_STEPPABLE_OP', 'NOT_STEPPABLE_XO19', 'NOT_STEPPABLE_XO31', 'BC_OP', 'BRANCH_COND_XO19', 'OPTINSN_SLOT', 'TEMPLATE_ENTRY', 'TEMPLATE_END', 'PAGE_ALIGNED_SECTION', 'Analysis', '_ANALYSIS', 'primary_opcode', 'xo', 'is_prefixed', 'not_steppable', 'analyse_class', 'is_conditional_branch', 'ppc_function_entry_offset', 'local_entry_offset']
