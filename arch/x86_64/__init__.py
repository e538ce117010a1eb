"""x86_64 backend: int3 breakpoints, boundary check by decoding, emulation and boosting rules.

Facts first (pt_regs, register names, opcode tables), then the decoder, then the hooks that
mirror arch/x86/kernel/kprobes/core.c.  Rules that changed between 6.1 and 6.12 are chosen from
the image's kernel features (``Image.features``, :mod:`kpatch_core.features`).

Layout: ``backend.py`` (the Backend class), ``insn.py`` (instruction facts and decode
tables), ``bulk.py`` (full-analysis classifier), ``slot.py`` (out-of-line execution).
"""
from .backend import X86_64Backend, _is_exception_insn, _overlay, _overlay_many, _ud1_size, add_nops
from .insn import (
    ALT_FLAG_DIRECT_CALL,
    ALT_FLAG_NOT,
    ALT_INSTR,
    CAPSTONE_GAPS,
    EMULATED,
    EMULATION_REFUSED,
    ENDBR,
    EXCEPTION_OPCODES_0F,
    EXCEPTION_OPCODES_1,
    GROUP_BOOSTABLE,
    INT3,
    JMP32_INSN_SIZE,
    LEGACY_PREFIXES,
    MAX_INSN_SIZE,
    NOP5,
    NOT_BOOSTABLE,
    PARAVIRT_NATIVE_CODE,
    PARAVIRT_SITE_SIZE,
    PT_REGS,
    RET_INT3,
    TWOBYTE_BOOSTABLE,
    X86_NOPS,
    XEN_KVM_EMULATE_PREFIXES,
    KInsn,
    _bitmap,
    kernel_opcode,
)

__all__ = ['X86_64Backend', '_is_exception_insn', '_ud1_size', 'add_nops', '_overlay_many', '_overlay', 'INT3', 'MAX_INSN_SIZE', 'JMP32_INSN_SIZE', 'NOP5', 'RET_INT3', 'X86_NOPS', 'PARAVIRT_SITE_SIZE', 'ALT_INSTR', 'ALT_FLAG_NOT', 'ALT_FLAG_DIRECT_CALL', 'PARAVIRT_NATIVE_CODE', 'ENDBR', 'PT_REGS', 'LEGACY_PREFIXES', 'XEN_KVM_EMULATE_PREFIXES', '_bitmap', 'TWOBYTE_BOOSTABLE', 'NOT_BOOSTABLE', 'GROUP_BOOSTABLE', 'EMULATED', 'EMULATION_REFUSED', 'EXCEPTION_OPCODES_1', 'EXCEPTION_OPCODES_0F', 'CAPSTONE_GAPS', 'KInsn', 'kernel_opcode']
