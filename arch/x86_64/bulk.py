"""Fast x86_64 classification for full-image analysis (kpatch_core.analyze).

``arch_prepare_kprobe`` on x86 depends only on the instruction's kernel opcode (legacy prefixes,
REX, 1/2-byte opcode, ModRM.reg/mod), its length, whether it has an exception-table entry, and the
PREEMPTION fact.  Here that decision is a numpy table lookup over all instructions at once, with
the same tables the backend uses (TWOBYTE_BOOSTABLE, NOT_BOOSTABLE, GROUP_BOOSTABLE, EMULATED...).
Everything unusual (VEX/EVEX, 3-byte opcodes, indirect call/jmp through ModRM, UD2 and the Xen/KVM
emulate prefix, capstone gaps, 15-byte instructions, odd prefix runs) is left to the backend's
``prepare`` (the code SLOW), so the two paths cannot drift on rare encodings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import numpy as np

from kpatch_arch.base import BulkClassifier
from kpatch_core.bulk import SLOW, mark_ranges, ok_code, refused_code
from kpatch_core.verdict import Method, Reason

from . import (EMULATED, EMULATION_REFUSED, ENDBR, EXCEPTION_OPCODES_0F, EXCEPTION_OPCODES_1,
               GROUP_BOOSTABLE, INT3, JMP32_INSN_SIZE, LEGACY_PREFIXES, MAX_INSN_SIZE,
               NOT_BOOSTABLE, TWOBYTE_BOOSTABLE)

if TYPE_CHECKING:
    from kpatch_core.image import Image
    from kpatch_core.symbols import KSym
    from kpatch_core.verdict import Execution, Refusal

    from . import X86_64Backend


def _table(values) -> np.ndarray:
    t = np.zeros(256, bool)
    t[list(values)] = True
    return t


_LEGACY = _table(LEGACY_PREFIXES)
_EMUL1 = _table(EMULATED)
_EMUL_REFUSED1 = _table(EMULATION_REFUSED)
_EXC1 = _table(EXCEPTION_OPCODES_1)
_EXC2 = _table(EXCEPTION_OPCODES_0F)
_NOTBOOST1 = _table(NOT_BOOSTABLE)
_BOOST2 = _table(TWOBYTE_BOOSTABLE)


def _group_tables(group_regs: bool) -> tuple[np.ndarray, np.ndarray]:
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
    act = np.nonzero(_LEGACY[code[p]])[0]  # only instructions with prefixes loop
    for _ in range(MAX_INSN_SIZE):
        if not len(act):
            break
        pa = p[act]
        act = act[pa - rel[act] < MAX_INSN_SIZE - 4]
        pa = p[act]
        b = code[pa]
        has_2e67[act] |= (b == 0x2E) | (b == 0x67)
        has_66[act] |= b == 0x66
        p[act] = pa + 1
        act = act[_LEGACY[code[pa + 1]]]
    slow |= _LEGACY[code[p]]  # prefix run too long for the table path
    b = code[p]
    rex = (b & 0xF0) == 0x40
    p = p + rex
    b = code[p]
    slow |= (b == 0xC4) | (b == 0xC5) | (b == 0x62)  # VEX / EVEX
    two = b == 0x0F
    b1 = code[p + 1]
    slow |= two & ((b1 == 0x38) | (b1 == 0x3A))  # 3-byte opcodes
    slow |= two & (b1 == 0x0B) & (p == rel)  # ud2, Xen/KVM emulate prefix
    op_end = np.where(two, p + 2, p + 1)
    modrm = code[np.minimum(op_end, limit)]
    return OpcodeFields(slow, p, op_end, b, b1, two, ~two, modrm, (modrm >> 3) & 7, modrm >> 6,
                        has_2e67, has_66)


def boostable_opcode(f: OpcodeFields, is_group: np.ndarray, group_regs: np.ndarray) -> np.ndarray:
    """``can_boost`` from the opcode alone (the exception-table test is the caller's)."""
    boost1 = ~f.has_2e67 & ~_NOTBOOST1[f.b] & np.where(
        is_group[f.b], (group_regs[f.b] >> f.reg) & 1 == 1, True)
    return np.where(f.two, _BOOST2[f.b1], boost1)


class X86BulkClassifier(BulkClassifier):
    """Vectorised ``arch_prepare_kprobe`` for one x86_64 image."""

    def __init__(self, backend: "X86_64Backend", image: "Image") -> None:
        self.backend = backend
        self.image = image
        self.features = image.features
        self.preemption = image.config.enabled("PREEMPTION")
        self.ibt = image.config.enabled("X86_KERNEL_IBT")
        self.extable = image.tables.extable
        self.is_group, self.group_regs = _group_tables(self.features.has("X86_CAN_BOOST_GROUP_REGS"))

    def fallback_length(self, code: bytes) -> int:
        """Length where capstone gives up (CAPSTONE_GAPS); 0 stops the walk like ``can_probe``."""
        return self.backend.insn_length(code)

    def length_fixup(self, code: np.ndarray, offs: np.ndarray, sizes: np.ndarray
                     ) -> tuple[int, int] | None:
        """The first instruction whose kernel length differs from capstone's (UD1 reads a ModRM
        byte in the kernel's decoder, see ``_ud1_size``), as (index, kernel length)."""
        end = offs + sizes
        cand = np.nonzero((code[np.maximum(end - 2, 0)] == 0x0F) & (code[end - 1] == 0xB9))[0]
        for k in cand.tolist():
            o = int(offs[k])
            n = self.backend.insn_length(code[o:o + 2 * MAX_INSN_SIZE].tobytes())
            if n and n != int(sizes[k]):
                return k, n
        return None

    def prepare_at(self, addr: int, func: "KSym") -> "Execution | Refusal":
        """``prepare`` for an address known to be an instruction boundary: x86's prepare uses
        ``func`` only as the start of the can_probe walk, so start the walk at ``addr``."""
        from kpatch_arch.base import PrepareContext
        from kpatch_core.symbols import KSym
        here = KSym(func.name, addr, max(func.end - addr, 1))
        return self.backend.prepare(PrepareContext(self.image, addr, here))

    def adjust(self, fstart: np.ndarray, offs: np.ndarray, aa: np.ndarray) -> np.ndarray:
        """``arch_adjust_kprobe_addr`` for many addresses: with IBT, SYM+0 moves past ENDBR."""
        if not self.ibt:
            return aa
        out = aa.copy()
        j = np.nonzero(offs == 0)[0]
        words = self.image.read_u32_at(fstart[j])
        hit = j[np.isin(words, np.array([int.from_bytes(e, "little") for e in ENDBR], np.uint32))]
        out[hit] = fstart[hit] + np.uint64(4)
        return out

    def classify(self, code: np.ndarray, base: int, addrs: np.ndarray, rel: np.ndarray,
                 lens: np.ndarray) -> np.ndarray:
        """Outcome codes for the instructions at ``addrs`` (``rel`` = offsets into ``code``,
        the runtime bytes from ``base``; ``lens`` their lengths, -1 when unknown); SLOW where
        the backend's ``prepare`` must decide."""
        n = len(addrs)
        out = np.full(n, SLOW, np.uint16)
        if n == 0:
            return out
        f = opcode_fields(code, rel, lens)
        slow, b, b1, two, one, reg, mod = f.slow, f.b, f.b1, f.two, f.one, f.reg, f.mod
        slow = slow | (one & (b == 0xFF) & (reg >= 2) & (reg <= 5))  # call/jmp through ModRM
        fast = ~slow
        # prepare(): exception insns (can_probe), int3, exception-masking moves
        refused = np.zeros(n, np.uint16)
        if self.features.has("X86_CAN_PROBE_EXCEPTION_INSN"):
            exc = (one & _EXC1[b]) | (two & _EXC2[b1])
            refused = np.where(exc & (refused == 0), refused_code(Reason.EXCEPTION_INSN), refused)
        refused = np.where(one & (b == INT3) & (refused == 0), refused_code(Reason.BREAKPOINT_INSN),
                           refused)
        mask_exc = one & ((b == 0x17) | ((b == 0x8E) & (reg == 2)))
        refused = np.where(mask_exc & (refused == 0), refused_code(Reason.PROHIBITED_INSN), refused)
        # prepare_emulation
        emul_ref = (one & _EMUL_REFUSED1[b]) | (two & (b1 == 0x01) & (reg == 0) & (mod == 3))
        refused = np.where(emul_ref & (refused == 0), refused_code(Reason.EMULATE_UNSUPPORTED),
                           refused)
        emulated = (one & _EMUL1[b]) | (two & ((b1 & 0xF0) == 0x80))
        # can_boost
        has_ex = np.zeros(n, bool)
        if len(self.extable):  # search the (small) table into the addresses
            has_ex = mark_ranges(addrs, self.extable, self.extable + np.uint64(1))
        boostable = ~has_ex & boostable_opcode(f, self.is_group, self.group_regs)
        use_boost = boostable & (not self.preemption) & (MAX_INSN_SIZE - lens >= JMP32_INSN_SIZE)
        method = np.where(use_boost, ok_code(Method.BOOST),
                          np.where(emulated, ok_code(Method.EMULATE), ok_code(Method.SINGLESTEP)))
        res = np.where(refused != 0, refused, method).astype(np.uint16)
        out[fast] = res[fast]
        return out


    def optimized(self, code: np.ndarray, base: int, addrs: np.ndarray, lens: np.ndarray,
                  func: np.ndarray, fstart: np.ndarray, fend: np.ndarray, cand: np.ndarray,
                  aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[OPTIMIZED]`` for the accepted instructions ``cand`` (see bulk_opt.py)."""
        from .bulk_opt import optimized
        return optimized(self, code, base, addrs, lens, func, fstart, fend, cand, aa)


def classifier(backend: "X86_64Backend", image: "Image") -> X86BulkClassifier:
    """The bulk classifier ``Backend.bulk_classifier`` finds for x86_64."""
    return X86BulkClassifier(backend, image)
