"""The x86 kernel decoder's opcode view (``kernel_opcode``) of many instructions at once, and
``can_boost`` from it: the tables the bulk classifier (bulk.py) and the vectorised
``[OPTIMIZED]`` (bulk_opt.py) share.
"""
from __future__ import annotations

import attrs
import numpy as np

from .insn import EMULATED, EMULATION_REFUSED, EXCEPTION_OPCODES_0F, EXCEPTION_OPCODES_1, GROUP_BOOSTABLE, LEGACY_PREFIXES, MAX_INSN_SIZE, NOT_BOOSTABLE, TWOBYTE_BOOSTABLE


def byte_table(values) -> np.ndarray:
    t = np.zeros(256, bool)
    t[list(values)] = True
    return t


LEGACY = byte_table(LEGACY_PREFIXES)
VEX_EVEX = byte_table((0xC4, 0xC5, 0x62))  # in 64-bit mode always VEX / EVEX (insn_get_prefixes)
EMULATED_1 = byte_table(EMULATED)
EMULATION_REFUSED_1 = byte_table(EMULATION_REFUSED)
EXCEPTION_1 = byte_table(EXCEPTION_OPCODES_1)
EXCEPTION_0F = byte_table(EXCEPTION_OPCODES_0F)
NOT_BOOSTABLE_1 = byte_table(NOT_BOOSTABLE)
BOOSTABLE_0F = byte_table(TWOBYTE_BOOSTABLE)


def group_tables(group_regs: bool) -> tuple[np.ndarray, np.ndarray]:
    """(is group opcode, bitmask of boostable ModRM.reg values) per one-byte opcode, with or
    without X86_CAN_BOOST_GROUP_REGS."""
    is_group = np.zeros(256, bool)
    regs = np.zeros(256, np.uint8)
    for op, allowed in GROUP_BOOSTABLE[group_regs].items():
        is_group[op] = True
        for r in allowed:
            regs[op] |= 1 << r
    return is_group, regs


@attrs.frozen
class OpcodeFields:
    """The kernel decoder's view of many instructions at once (``kernel_opcode``): after the
    legacy prefixes and REX, the first opcode byte ``b`` (and ``b1`` after 0F), the byte after
    the opcode read as ModRM (``reg``/``mod``; meaningful only for opcodes that have one), and
    ``slow`` where this table view does not apply (prefix runs, VEX/EVEX, 3-byte opcodes, ud2,
    unknown lengths)."""

    slow: np.ndarray
    p: np.ndarray  # offset of the opcode (after prefixes and REX)
    op_end: np.ndarray  # offset just after the opcode bytes
    b: np.ndarray
    b1: np.ndarray
    two: np.ndarray
    one: np.ndarray
    modrm: np.ndarray
    reg: np.ndarray
    mod: np.ndarray
    has_2e67: np.ndarray
    has_66: np.ndarray


def opcode_fields(code: np.ndarray, rel: np.ndarray, lens: np.ndarray) -> OpcodeFields:
    """:class:`OpcodeFields` of the instructions at offsets ``rel`` of ``code`` (lengths ``lens``,
    -1 or 0 when unknown: those are ``slow``)."""
    limit = len(code) - 1
    slow = (lens <= 0) | (lens >= MAX_INSN_SIZE) | (rel + MAX_INSN_SIZE > limit)
    rel = np.where(slow, 0, rel)
    # kernel_opcode: legacy prefixes, REX, VEX, 0F escapes (within MAX_INSN_SIZE bytes)
    p = rel.copy()
    has_2e67 = np.zeros(len(rel), bool)
    has_66 = np.zeros(len(rel), bool)
    b = code[p]
    prefixed = np.flatnonzero(LEGACY[b])  # only instructions with prefixes loop
    act = prefixed
    for _ in range(MAX_INSN_SIZE):
        if not len(act):
            break
        pa = p[act]
        act = act[pa - rel[act] < MAX_INSN_SIZE - 4]
        pa = p[act]
        bb = code[pa]
        has_2e67[act] |= (bb == 0x2E) | (bb == 0x67)
        has_66[act] |= bb == 0x66
        p[act] = pa + 1
        act = act[LEGACY[code[pa + 1]]]
    if len(prefixed):  # where the prefixes moved the opcode: its byte again
        b[prefixed] = code[p[prefixed]]
        slow[prefixed] |= LEGACY[b[prefixed]]  # prefix run too long for the table path
    rex = np.flatnonzero((b & 0xF0) == 0x40)
    p[rex] += 1
    b[rex] = code[p[rex]]
    slow |= VEX_EVEX[b]  # VEX / EVEX
    two = b == 0x0F
    b1 = code[p + 1]
    slow |= two & ((b1 == 0x38) | (b1 == 0x3A))  # 3-byte opcodes
    slow |= two & (b1 == 0x0B) & (p == rel)  # ud2, Xen/KVM emulate prefix
    op_end = p + 1 + two
    modrm = code[np.minimum(op_end, limit)]
    return OpcodeFields(slow, p, op_end, b, b1, two, ~two, modrm, (modrm >> 3) & 7, modrm >> 6,
                        has_2e67, has_66)


def boostable_opcode(f: OpcodeFields, is_group: np.ndarray, group_regs: np.ndarray) -> np.ndarray:
    """``can_boost`` from the opcode alone (the exception-table test is the caller's)."""
    return boostable_bytes(f.two, f.b, f.b1, f.reg, f.has_2e67, is_group, group_regs)


def boostable_bytes(two: np.ndarray, b: np.ndarray, b1: np.ndarray, reg: np.ndarray,
                    has_2e67: np.ndarray | bool, is_group: np.ndarray, group_regs: np.ndarray
                    ) -> np.ndarray:
    """:func:`boostable_opcode` from the fields themselves (``two``: a 0F opcode, ``b1`` the
    byte after it; ``b`` the one-byte opcode; ``has_2e67``: a 2e or 67 prefix)."""
    boost1 = ~has_2e67 & ~NOT_BOOSTABLE_1[b] & np.where(
        is_group[b], (group_regs[b] >> reg) & 1 == 1, True)
    return np.where(two, BOOSTABLE_0F[b1], boost1)
