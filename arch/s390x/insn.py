"""s390x instruction facts: breakpoint, pt_regs, prohibited opcodes, the relative-long
fixups and the in-kernel disassembler's opcode lookup (``find_insn``).

The s390x backend (backend.py) reads these; they are data, so nothing here imports it.
"""
from __future__ import annotations

import enum
import functools

import attrs

from kpatch_core.features import FeatureSet

from ..base import PtRegsField
from .opcodes import OPCODE_GROUPS


# --- facts -----------------------------------------------------------------------------------
BREAKPOINT_INSTRUCTION = 0x0002  # arch/s390/include/asm/kprobes.h
MAX_INSN_SIZE = 6  # 3 halfwords (kprobe_opcode_t is u16)
SLOT_SIZE = 6
KERNEL_IMAGE_BASE = 0x3FFE0000000  # arch/s390/Kconfig default of CONFIG_KERNEL_IMAGE_BASE (6.10+)

# struct pt_regs, arch/s390/include/asm/ptrace.h (200 bytes, 6.1 and 6.12)
PT_REGS = (
    PtRegsField("args0", 0),
    PtRegsField("psw.mask", 8),
    PtRegsField("psw.addr", 16),
    *(PtRegsField(f"r{n}", 24 + 8 * n) for n in range(16)),
    PtRegsField("orig_gpr2", 152),
    PtRegsField("int_code", 160, 4),
    PtRegsField("int_parm", 164, 4),
    PtRegsField("int_parm_long", 168),
    PtRegsField("flags", 176),
    PtRegsField("cr1", 184),
    PtRegsField("last_break", 192),
)
PT_REGS_SIZE = 200
# regs_query_register_offset (arch/s390/kernel/ptrace.c): only "r<decimal 0-15>" is accepted
EVENT_REGISTERS = tuple(f"r{n}" for n in range(16))


class Fixup(enum.IntFlag):
    """``probe_get_fixup_type`` flags (arch/s390/include/asm/kprobes.h FIXUP_*)."""

    PSW_NORMAL = 0x08
    BRANCH_NOT_TAKEN = 0x04
    RETURN_REGISTER = 0x02
    NOT_REQUIRED = 0x01


# probe_is_prohibited_opcode (arch/s390/lib/probes.c)
PROHIBITED_FIRST_BYTE = {0x0C: "bassm", 0x0B: "bsm", 0x83: "diag", 0x44: "ex", 0xAC: "stnsm",
                         0xAD: "stosm"}
EXRL_FIRST = 0xC6  # exrl: 0xc6 with the low nibble of the second byte 0 (RIL-b, op 0)
PROHIBITED_HALFWORD = {0x0101: "pr", 0xB25A: "bsa", 0xB240: "bakr", 0xB258: "bsg", 0xB218: "pc",
                       0xB228: "pt", 0xB98D: "epsw", 0xE560: "tbegin", 0xE561: "tbeginc",
                       0xB2F8: "tend"}
# probe_is_insn_relative_long: RIL-b/RIL-c formats whose displacement copy_instruction rewrites
RELATIVE_LONG = {0xC0: frozenset({0x0}),  # larl
                 0xC4: frozenset({0x2, 0x4, 0x5, 0x6, 0x7, 0x8, 0xB, 0xC, 0xD, 0xE, 0xF}),
                 0xC6: frozenset({0x2, 0x4, 0x5, 0x6, 0x7, 0x8, 0xA, 0xC, 0xD, 0xE, 0xF})}
# probe_get_fixup_type: last-byte opcodes of 6-byte compare-and-branch insns (0xec).  Both 6.1
# and 6.12 list 0xe6 for cgrb, whose opcode is 0xe4: a real cgrb gets the PSW_NORMAL default.
EC_BRANCH = frozenset({0xE5, 0xE6, 0xF6, 0xF7, 0xFC, 0xFD, 0xFE, 0xFF})


@attrs.frozen
class OpcodeGroup:
    """One ``opcode_offset[]`` entry of the in-kernel disassembler."""

    first: int
    byte: int  # which instruction byte holds the rest of the opcode
    mask: int
    names: dict[int, str]  # opfrag -> mnemonic


def opcode_source(features: "FeatureSet") -> str:
    """Which generated opcodes.txt table (:data:`OPCODE_GROUPS` key, the kernel tree it was read
    from) a kernel with ``features`` has: the one with the arch15 instructions, or the older."""
    return "6.12" if features.has("S390_OPCODES_ARCH15") else "6.1"


@functools.cache
def opcode_table(source: str) -> tuple[dict[int, OpcodeGroup], OpcodeGroup]:
    """(groups by first byte, default group) of the disassembler table ``OPCODE_GROUPS[source]``."""
    groups = []
    for first, byte, mask, body in OPCODE_GROUPS[source]:
        names: dict[int, str] = {}
        for item in body.split():
            frag, name = item.split(":")
            names.setdefault(int(frag, 16), name)  # find_insn returns the first match
        groups.append(OpcodeGroup(first, byte, mask, names))
    by_first: dict[int, OpcodeGroup] = {}
    for g in groups:
        by_first.setdefault(g.first, g)
    return by_first, groups[-1]


# --- decoder ---------------------------------------------------------------------------------
def insn_length(first_byte: int) -> int:
    """``insn_length``: 2, 4 or 6 bytes from the two top bits of the first byte."""
    return ((((first_byte + 64) >> 7) + 1) << 1)


def find_insn(code: bytes, source: str) -> str | None:
    """``find_insn``: the mnemonic the kernel's disassembler table gives ``code``, or None."""
    if not code:
        return None
    by_first, default = opcode_table(source)
    g = by_first.get(code[0], default)
    if g.byte >= len(code):
        return None
    return g.names.get(code[g.byte] & g.mask)


def prohibited(code: bytes, source: str) -> str | None:
    """``probe_is_prohibited_opcode`` with opcode table ``source`` (:func:`opcode_source`): why
    the kernel refuses ``code``, or None."""
    name = find_insn(code, source)
    if name is None:
        return "unknown opcode (not in the kernel's opcode table)"
    first = code[0]
    hw = int.from_bytes(code[:2], "big")
    if first in PROHIBITED_FIRST_BYTE:
        return PROHIBITED_FIRST_BYTE[first]
    if first == EXRL_FIRST and hw & 0x0F == 0:
        return "exrl"
    if hw in PROHIBITED_HALFWORD:
        return PROHIBITED_HALFWORD[hw]
    return None


def fixup_type(code: bytes) -> Fixup:
    """``probe_get_fixup_type``: how ``resume_execution`` corrects the PSW after the step."""
    hw0 = int.from_bytes(code[:2], "big")
    last = code[5] if len(code) >= 6 else 0  # insn[2] & 0xff
    first = hw0 >> 8
    fixup = Fixup.PSW_NORMAL
    if first in (0x05, 0x0D):  # balr, basr
        fixup = Fixup.RETURN_REGISTER
        if hw0 & 0x0F == 0:  # r2 = 0: no branch
            fixup |= Fixup.BRANCH_NOT_TAKEN
    elif first in (0x06, 0x07, 0x47, 0x46, 0x86, 0x87):  # bctr bcr bc bct bxh bxle
        fixup = Fixup.BRANCH_NOT_TAKEN
    elif first in (0x45, 0x4D):  # bal, bas
        fixup = Fixup.RETURN_REGISTER
    elif first == 0x82 or (first == 0xB2 and hw0 & 0xFF == 0xB2):  # lpsw, lpswe
        fixup = Fixup.NOT_REQUIRED
    elif first in (0xA7, 0xC0) and hw0 & 0x0F == 0x05:  # bras, brasl
        fixup |= Fixup.RETURN_REGISTER
    elif (first == 0xEB and last in (0x44, 0x45)) or (first == 0xE3 and last == 0x46):
        fixup = Fixup.BRANCH_NOT_TAKEN  # bxhg, bxleg, bctg
    elif first == 0xEC and last in EC_BRANCH:
        fixup = Fixup.BRANCH_NOT_TAKEN
    return fixup


def is_relative_long(code: bytes) -> bool:
    """``probe_is_insn_relative_long``: a RIL-b/RIL-c instruction whose displacement is patched."""
    return len(code) >= 2 and code[1] & 0x0F in RELATIVE_LONG.get(code[0], ())


def relative_long_fixup(code: bytes, addr: int, slot: int) -> bytes | None:
    """``copy_instruction``'s slot copy of a relative-long instruction: displacement rewritten to
    ``((addr + 2*d) - slot) / 2``; None when that does not fit the signed 32-bit field (the kernel
    assumes it does: its slots lie within 2 GiB (6.1) / 4 GiB (6.12) of the kernel)."""
    disp = int.from_bytes(code[2:6], "big", signed=True)
    new = (addr + 2 * disp - slot) // 2
    if not -(1 << 31) <= new < (1 << 31):
        return None
    return code[:2] + (new & 0xFFFFFFFF).to_bytes(4, "big")
