"""x86_64 instruction facts: the kernel's opcode tables (boostable, emulated, exception
opcodes), boot-time patch encodings and ``kernel_opcode`` (the insn decoder's view).

The x86_64 backend (backend.py) reads these; they are data, so nothing here imports it.
"""
from __future__ import annotations


import attrs
import numpy as np

from ..base import PtRegsField


# --- facts -----------------------------------------------------------------------------------
INT3 = 0xCC
MAX_INSN_SIZE = 15  # arch/x86/include/asm/kprobes.h
JMP32_INSN_SIZE = 5
NOP5 = bytes.fromhex("0f1f440000")  # x86_nops[5]: what __recover_probed_insn shows for ftrace sites
RET_INT3 = bytes.fromhex("c3cccccccc")  # patch_return() without X86_FEATURE_RETHUNK
X86_NOPS = {1: "90", 2: "6690", 3: "0f1f00", 4: "0f1f4000", 5: "0f1f440000", 6: "660f1f440000",
            7: "0f1f8000000000", 8: "0f1f840000000000"}  # x86_nops[] (BYTES_NOP1..8)
# k8_nops[] (K8_NOP1..8, arch/x86/include/asm/nops.h up to 5.14): what add_nops pads with on a
# CPU for which arch_init_ideal_nops picks them (AMD family <= 0xf, e.g. QEMU TCG `-cpu max`;
# Intel family 6 models 0x0f-0x2f); each is 1-2 instructions of 0x66-prefixed 0x90
K8_NOPS = {1: "90", 2: "6690", 3: "666690", 4: "66666690", 5: "6666906690", 6: "666690666690",
           7: "66666690666690", 8: "6666669066666690"}
PARAVIRT_SITE_SIZE = 16  # struct paravirt_patch_site { u8 *instr; u8 type; u8 len; }
# struct alt_instr (packed)  [arch/x86/include/asm/alternative.h]; ft_flags = cpuid | flags << 16
ALT_INSTR = np.dtype([("instr", "<i4"), ("repl", "<i4"), ("ft_flags", "<u4"),
                      ("instrlen", "u1"), ("replacementlen", "u1")])
ALT_FLAG_NOT = 1 << 0  # apply when the CPU lacks the feature
ALT_FLAG_DIRECT_CALL = 1 << 1  # indirect pv call -> direct call (alt_replace_call)
# native_patch (X86_PARAVIRT_NATIVE_PATCH): the code inlined for a pv op whose native function is
# this one (patch_data_xxl / patch_data_lock, arch/x86/kernel/paravirt_patch.c; the lock ops
# when pv_is_native_spin_unlock / _vcpu_is_preempted, as on a guest without KVM/Xen)
PARAVIRT_NATIVE_CODE = {
    "native_irq_disable": b"\xfa",  # cli
    "native_irq_enable": b"\xfb",  # sti
    "native_save_fl": b"\x9c\x58",  # pushf; pop %rax
    "native_restore_fl": b"\x57\x9d",  # push %rdi; popf
    "native_read_cr2": b"\x0f\x20\xd0",  # mov %cr2, %rax
    "__native_read_cr3": b"\x0f\x20\xd8",  # mov %cr3, %rax
    "native_write_cr3": b"\x0f\x22\xdf",  # mov %rdi, %cr3
    "native_wbinvd": b"\x0f\x09",  # wbinvd
    "_paravirt_ident_64": b"\x48\x89\xf8",  # mov %rdi, %rax (paravirt_patch_ident_64)
    "__raw_callee_save___native_queued_spin_unlock": b"\xc6\x07\x00",  # movb $0, (%rdi)
    "__raw_callee_save___native_vcpu_is_preempted": b"\x31\xc0",  # xor %eax, %eax
}
ENDBR = (bytes.fromhex("f30f1efa"), bytes.fromhex("f30f1efb"), bytes.fromhex("660f1f00"))

# struct pt_regs, arch/x86/include/asm/ptrace.h; names from regoffset_table (arch/x86/kernel/ptrace.c)
PT_REGS = tuple(PtRegsField(n, 8 * i) for i, n in enumerate(
    "r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss".split()))

LEGACY_PREFIXES = frozenset({0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67})
XEN_KVM_EMULATE_PREFIXES = (bytes.fromhex("0f0b78656e"), bytes.fromhex("0f0b6b766d"))  # emulate_prefix.h


def _bitmap(rows: list[str]) -> frozenset[int]:
    out = set()
    for hi, row in enumerate(rows):
        for lo, bit in enumerate(row.split()):
            if bit == "1":
                out.add(hi * 16 + lo)
    return frozenset(out)


# twobyte_is_boostable[] (core.c), identical in 6.1 and 6.12; row = high nibble
TWOBYTE_BOOSTABLE = _bitmap([
    "0 0 1 1 0 0 1 0 1 1 0 0 0 0 0 0", "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1",
    "1 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0", "0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
    "1 1 1 1 1 1 1 1 1 1 1 1 0 0 1 1", "0 0 0 0 1 1 1 1 0 0 0 0 0 0 1 1",
    "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 0 1 1 1 0 0 1 1 0 1 1 1 0 1", "1 1 1 1 1 1 1 1 0 0 0 1 1 1 1 1",
    "1 1 0 0 0 0 0 0 1 1 1 1 1 1 1 1", "0 1 1 1 0 1 0 0 1 1 0 1 1 1 0 1",
    "0 1 1 0 0 1 0 0 1 1 0 1 1 1 0 1", "0 1 1 1 0 1 0 0 1 1 1 0 1 1 1 0",
])
# can_boost(): one-byte opcodes never boosted, both versions
NOT_BOOSTABLE = frozenset([0x62, *range(0x70, 0x80), 0x9A, 0xCC, 0xCD, 0xCE, 0xD6, *range(0xD8, 0xE4),
                           0xE8, 0xE9, 0xEB, 0xF0, 0xF1, 0xF2, 0xF3, 0xF4])
# can_boost(): group opcodes -> ModRM.reg values that are boostable; keyed by whether the
# kernel has X86_CAN_BOOST_GROUP_REGS (False: only FF /4)
GROUP_BOOSTABLE = {
    False: {0xC0: (), 0xC1: (), 0xD0: (), 0xD1: (), 0xD2: (), 0xD3: (), 0xF6: (), 0xF7: (),
            0xFE: (), 0xFF: (4,)},
    True: {**{op: (0, 1, 2, 3, 4, 5, 7) for op in (0xC0, 0xC1, 0xD0, 0xD1, 0xD2, 0xD3)},
             0xF6: (0, 2, 3, 4, 5, 6, 7), 0xF7: (0, 2, 3, 4, 5, 6, 7), 0xFE: (0, 1), 0xFF: (0, 1, 4)},
}
# prepare_emulation(): emulated one-byte opcodes (name for the report)
EMULATED = {0xFA: "cli", 0xFB: "sti", 0x9C: "pushf", 0x9D: "popf", 0xC2: "ret", 0xC3: "ret",
            0xCA: "lret", 0xCB: "lret", 0xE8: "call", 0xEB: "jmp", 0xE9: "jmp",
            **{op: "jcc" for op in range(0x70, 0x80)},
            0xE0: "loopne", 0xE1: "loope", 0xE2: "loop", 0xE3: "jcxz"}
EMULATION_REFUSED = {0x9A: "far call", 0xEA: "far jmp", 0xCC: "int3", 0xCF: "iret"}
EXCEPTION_OPCODES_1 = frozenset({0xCC, 0xCD, 0xCE, 0xF1})  # is_exception_insn (X86_CAN_PROBE_EXCEPTION_INSN)
EXCEPTION_OPCODES_0F = frozenset({0xFF, 0xB9, 0x0B})
# capstone 5 cannot decode a few system instructions the kernel decoder knows (lengths from the SDM)
CAPSTONE_GAPS = {bytes.fromhex("0f01e8"): 3,  # serialize
                 bytes.fromhex("f30f01fe"): 4,  # rmpadjust
                 bytes.fromhex("f20f01ff"): 4,  # pvalidate
                 bytes.fromhex("c4e27849c0"): 5}  # tilerelease


@attrs.frozen
class KInsn:
    """The fields of the kernel's ``struct insn`` that the kprobe rules read."""

    length: int
    opcode: bytes  # insn->opcode.bytes[0..nbytes)
    prefixes: bytes  # legacy prefixes
    rex: int  # REX byte or 0
    modrm: int | None
    addr_bytes: int
    vex: bool
    rip_relative: bool
    disp_offset: int
    mnemonic: str

    @property
    def reg(self) -> int:
        return ((self.modrm or 0) >> 3) & 7

    @property
    def mod(self) -> int:
        return ((self.modrm or 0) >> 6) & 3


def kernel_opcode(code: bytes) -> tuple[bytes, bytes, int, bool, int]:
    """Split ``code`` like the kernel's insn decoder: (opcode bytes, prefixes, rex, vex, index).

    VEX/EVEX-encoded instructions keep one opcode byte (the one after the VEX payload), as in
    ``insn_get_opcode``; that byte is what ``prepare_emulation``/``can_boost`` switch on.
    """
    i = 0
    while i < len(code) and code[i] in LEGACY_PREFIXES:
        i += 1
    prefixes = code[:i]
    rex = 0
    if i < len(code) and 0x40 <= code[i] <= 0x4F:
        rex = code[i]
        i += 1
    if i < len(code) and code[i] in (0xC4, 0xC5, 0x62) and not rex:
        vlen = {0xC4: 3, 0xC5: 2, 0x62: 4}[code[i]]
        j = i + vlen
        return code[j:j + 1], prefixes, rex, True, j + 1
    if i < len(code) and code[i] == 0x0F:
        if i + 1 < len(code) and code[i + 1] in (0x38, 0x3A):
            return code[i:i + 3], prefixes, rex, False, i + 3
        return code[i:i + 2], prefixes, rex, False, i + 2
    return code[i:i + 1], prefixes, rex, False, i + 1
