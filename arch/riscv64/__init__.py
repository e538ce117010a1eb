"""riscv64 backend: ebreak / c.ebreak, 2- and 4-byte instructions, riscv_probe_decode_insn.

Facts first (encodings, pt_regs, the ``__RISCV_INSN_FUNCS`` mask/value pairs per kernel rule set),
then the decoder, then the hooks that mirror arch/riscv/kernel/probes/{kprobes.c,decode-insn.c}.

The kernel never disassembles: the instruction length comes from the low two bits
(``GET_INSN_LENGTH``: ``11`` -> 4 bytes, else 2) and the verdict from a mask/value table, first
match wins.  It judges its patched text: the ftrace entry as two 4-byte nops and, on 6.12, the
``.alternative`` entries for the CPU's extensions (facts ``RUNTIME_RISCV_<EXT>``).
The same tables are data here (:data:`DECODE_TABLES`), applied one word at a time
(:func:`decode_word`) or to whole arrays with numpy (:func:`decode_words`, :func:`insn_starts`).
capstone (with the compressed-instruction mode bit) only names the instruction in details.

Layout: ``backend.py`` (the Backend class), ``insn.py`` (instruction facts and decode
tables), ``bulk.py`` (full-analysis classifier), ``slot.py`` (out-of-line execution).
"""
from .backend import Riscv64Backend
from .insn import (
    _PT_NAMES,
    _RS1,
    ALT_ENTRY,
    ASSUMED_EXTENSIONS,
    AUIPC_T0,
    C_EBREAK,
    C_EBREAK_BYTES,
    CALL_OPS_SIZE,
    DECODE_TABLES,
    EBREAK,
    EBREAK_BYTES,
    EXT_FACT,
    EXTABLE_ENTRY_SIZE,
    ISA_EXT_IDS_612,
    MAX_INSN_SIZE,
    MCOUNT_AUIPC_SIZE,
    MCOUNT_INSN_SIZE,
    NOP,
    NOP_BYTES,
    OTHER,
    PT_REGS,
    PT_REGS_SIZE,
    R_RISCV_RELATIVE,
    REJ,
    SIM,
    STEP,
    DecodeRow,
    Outcome,
    _auipc_t0,
    decode_table,
    decode_word,
    decode_words,
    insn_length,
    insn_starts,
)

__all__ = ['Riscv64Backend', 'EBREAK', 'C_EBREAK', 'EBREAK_BYTES', 'C_EBREAK_BYTES', 'NOP', 'NOP_BYTES', 'MCOUNT_INSN_SIZE', 'MCOUNT_AUIPC_SIZE', 'AUIPC_T0', 'CALL_OPS_SIZE', 'MAX_INSN_SIZE', 'R_RISCV_RELATIVE', 'EXTABLE_ENTRY_SIZE', 'ALT_ENTRY', 'ISA_EXT_IDS_612', 'ASSUMED_EXTENSIONS', 'EXT_FACT', '_auipc_t0', 'insn_length', '_PT_NAMES', 'PT_REGS', 'PT_REGS_SIZE', 'Outcome', 'DecodeRow', 'REJ', 'SIM', 'STEP', '_RS1', 'DECODE_TABLES', 'OTHER', 'decode_table', 'decode_word', 'decode_words', 'insn_starts']
