"""s390x backend: 0x0002 breakpoints, length from the first byte, the disassembler's opcode table.

Facts first (pt_regs, register names, opcode patterns), then the decoder, then the hooks that
mirror arch/s390/kernel/kprobes.c and arch/s390/lib/probes.c.  s390 never emulates or boosts:
every accepted non-ftrace probe is single-stepped out of line (PER instruction-fetch event) from
a 6-byte slot and the PSW is fixed up afterwards (``probe_get_fixup_type``).  The kernel refuses
opcodes its disassembler does not know (``is_known_insn``); that table differs between 6.1 and
6.12 and is carried as data in :mod:`kpatch_arch.s390x.opcodes`.

Layout: ``backend.py`` (the Backend class), ``insn.py`` (instruction facts and decode
tables), ``bulk.py`` (full-analysis classifier), ``slot.py`` (out-of-line execution).
"""
from .backend import S390xBackend, _last_start
from .insn import (
    BREAKPOINT_INSTRUCTION,
    EC_BRANCH,
    EVENT_REGISTERS,
    EXRL_FIRST,
    KERNEL_IMAGE_BASE,
    MAX_INSN_SIZE,
    PROHIBITED_FIRST_BYTE,
    PROHIBITED_HALFWORD,
    PT_REGS,
    PT_REGS_SIZE,
    RELATIVE_LONG,
    SLOT_SIZE,
    Fixup,
    OpcodeGroup,
    find_insn,
    fixup_type,
    insn_length,
    is_relative_long,
    opcode_source,
    opcode_table,
    prohibited,
    relative_long_fixup,
)

__all__ = ['S390xBackend', '_last_start', 'BREAKPOINT_INSTRUCTION', 'MAX_INSN_SIZE', 'SLOT_SIZE', 'KERNEL_IMAGE_BASE', 'PT_REGS', 'PT_REGS_SIZE', 'EVENT_REGISTERS', 'Fixup', 'PROHIBITED_FIRST_BYTE', 'EXRL_FIRST', 'PROHIBITED_HALFWORD', 'RELATIVE_LONG', 'EC_BRANCH', 'OpcodeGroup', 'opcode_source', 'opcode_table', 'insn_length', 'find_insn', 'prohibited', 'fixup_type', 'is_relative_long', 'relative_long_fixup']
