"""arm64 backend: BRK breakpoints, fixed 4-byte instructions, the decode-insn.c decision table.

Facts first (BRK encodings, pt_regs, the ``__AARCH64_INSN_FUNCS`` mask/value pairs), then the
decoder, then the hooks that mirror arch/arm64/kernel/probes/{kprobes.c,decode-insn.c}.

The kernel decides from a few opcode bits, so does the decoder here: one ordered table of
``(mask, value, class, outcome)`` rows per kernel rule set, first match wins.  The table is data,
so :func:`decode_words` applies it to a whole function at once with numpy; capstone is used only
to print mnemonics.  The kernel judges its patched text: boot-time alternatives are applied for
the CPU features assumed by the runtime facts (``RUNTIME_LSE_ATOMICS``).

Layout: ``backend.py`` (the Backend class), ``insn.py`` (instruction facts and decode
tables), ``bulk.py`` (full-analysis classifier), ``slot.py`` (out-of-line execution).
"""
from .backend import Arm64Backend
from .insn import (
    _HINT,
    AARCH64_BREAK_MON,
    AARCH64_INSN_SIZE,
    AARCH64_INSN_SPCLREG_DAIF,
    ALT_INSTR,
    ARM64_CB_BIT,
    BRK64_OPCODE_KPROBES,
    BRK64_OPCODE_KPROBES_SS,
    BRK64_OPCODE_UPROBES,
    EVENT_REGISTERS,
    EXTABLE_ENTRY_SIZE,
    KPROBE_BREAKPOINT,
    KPROBE_SS_BREAKPOINT,
    LOAD_EX,
    LSE_ATOMIC_OPS,
    MAX_ATOMIC_CONTEXT_SIZE,
    MAX_INSN_SIZE,
    PT_REGS,
    PT_REGS_SIZE,
    R_AARCH64_RELATIVE,
    REGISTER_ALIASES,
    REJ,
    RUNTIME_LSE_ATOMICS,
    SIM,
    STEP,
    STEPPABLE_HINTS,
    STORE_EX,
    UPROBE_BREAKPOINT,
    Alternatives,
    DecodeRow,
    Outcome,
    _table,
    brk,
    decode_table,
    decode_word,
    decode_words,
    is_probed_address_atomic,
)

__all__ = ['Arm64Backend', 'AARCH64_INSN_SIZE', 'AARCH64_BREAK_MON', 'brk', 'BRK64_OPCODE_KPROBES', 'BRK64_OPCODE_UPROBES', 'BRK64_OPCODE_KPROBES_SS', 'KPROBE_BREAKPOINT', 'KPROBE_SS_BREAKPOINT', 'UPROBE_BREAKPOINT', 'MAX_INSN_SIZE', 'MAX_ATOMIC_CONTEXT_SIZE', 'AARCH64_INSN_SPCLREG_DAIF', 'R_AARCH64_RELATIVE', 'EXTABLE_ENTRY_SIZE', 'ALT_INSTR', 'ARM64_CB_BIT', 'LSE_ATOMIC_OPS', 'RUNTIME_LSE_ATOMICS', 'PT_REGS', 'REGISTER_ALIASES', 'EVENT_REGISTERS', 'PT_REGS_SIZE', 'Outcome', 'DecodeRow', 'REJ', 'SIM', 'STEP', '_HINT', 'STEPPABLE_HINTS', '_table', 'decode_table', 'LOAD_EX', 'STORE_EX', 'decode_word', 'decode_words', 'Alternatives', 'is_probed_address_atomic']
