"""Fast ppc64le classification for full-image analysis (kpatch_core.analyze).

``arch_prepare_kprobe`` on powerpc (arch/powerpc/kernel/kprobes.c) judges each 4-byte word alone:
``can_single_step`` refuses traps, rfid/hrfid/..., mtmsr(d) and sc (-EINVAL); a word right after
a prefix word (ISA 3.1 suffix) is refused unless it starts a page (-EINVAL); the rest is
accepted and either emulated (``emulate_step``) or single-stepped, by opcode class (the backend's
``analyse_class``).  Here that decision is vectorised over all words at once, with lookup arrays
built from the backend's own tables (NOT_STEPPABLE_*, REGS_*, MEM_*, CACHE_XO31, SPR_REGS...).

Also vectorised: ``arch_adjust_kprobe_addr`` (it never moves a probe on ppc64: the local-entry
move happens in ``kprobe_lookup_name``, for ``SYM+0`` targets only), the ranges of
``arch_within_kprobe_blacklist`` (``[_stext, __head_end)``) and optprobes' ``can_optimize``
(``[OPTIMIZED]``), so the core need not ask the backend per address; the "walk" lists every
word (no capstone pass).  Words whose bytes (or the previous word) lie outside the buffer are
left to the backend's ``prepare`` (the code SLOW).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from kpatch_core.analyze import SLOW, fixed_width_walk, ok_code, refused_code
from kpatch_core.verdict import Method, Reason

from . import (ARCH_BLACKLIST_AREA, BC_OP, BRANCH_COND_XO19, BRANCH_RANGE, CACHE_XO31, INSN_SIZE,
               MADD_XO4, MEM_OPS, MEM_XO31, MFMSR, MFSPR, MTSPR, NOT_STEPPABLE_OP,
               NOT_STEPPABLE_XO19, NOT_STEPPABLE_XO31, OP_PREFIX, OPTINSN_SLOT, PAGE_SIZE, REGS_OPS,
               REGS_XO19, REGS_XO31, SPR_REGS, XO31_ARITH_OE)

if TYPE_CHECKING:
    from kpatch_core.image import Image

    from . import Ppc64leBackend


def _table(size: int, values: Iterable[int]) -> np.ndarray:
    t = np.zeros(size, bool)
    t[list(values)] = True
    return t


# can_single_step
_NOSTEP_OP = _table(64, NOT_STEPPABLE_OP)
_NOSTEP_XO19 = _table(1024, NOT_STEPPABLE_XO19)
_NOSTEP_XO31 = _table(1024, NOT_STEPPABLE_XO31)
# analyse_class
_REGS_OP = _table(64, REGS_OPS)
_MEM_OP = _table(64, MEM_OPS)
_REGS_XO19 = _table(1024, REGS_XO19)
_REGS_XO31 = _table(1024, REGS_XO31 | XO31_ARITH_OE)
_MEM_XO31 = _table(1024, MEM_XO31 | CACHE_XO31 | {MFMSR})
_MADD_XO4 = _table(64, MADD_XO4)
_SPR_REGS = _table(1024, SPR_REGS)
_COND_XO19 = _table(1024, BRANCH_COND_XO19)  # optprobes.c is_conditional_branch


def _words(code: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """The little-endian 32-bit words at offsets ``rel`` of ``code``."""
    return (code[rel].astype(np.uint32) | (code[rel + 1].astype(np.uint32) << 8)
            | (code[rel + 2].astype(np.uint32) << 16) | (code[rel + 3].astype(np.uint32) << 24))


def classes(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(``can_single_step`` is false, ``analyse_class`` is REGS, ``analyse_class`` is STEP) for
    each uint32 word: the vectorised :func:`kpatch_arch.ppc64le.not_steppable` and
    :func:`~kpatch_arch.ppc64le.analyse_class` (same tests in the same order)."""
    w = words.astype(np.uint32)
    op = (w >> 26).astype(np.intp)
    x = ((w >> 1) & 0x3FF).astype(np.intp)
    o19, o31, o4 = op == 19, op == 31, op == 4
    nostep = _NOSTEP_OP[op] | (o19 & _NOSTEP_XO19[x]) | (o31 & _NOSTEP_XO31[x])
    spr = (((w >> 16) & 0x1F) | ((w >> 6) & 0x3E0)).astype(np.intp)
    is_spr = (x == MFSPR) | (x == MTSPR)
    regs31 = _REGS_XO31[x] | (is_spr & _SPR_REGS[spr])
    mem31 = _MEM_XO31[x] & ~_REGS_XO31[x] & ~is_spr
    reserved_ds = ((op == 58) | (op == 62)) & ((w & 3) == 3)
    prefix = op == OP_PREFIX
    rest = ~prefix & ~_REGS_OP[op]  # neither of analyse_class's first two answers
    regs = (~prefix & _REGS_OP[op]) | (rest & (
        (o19 & (_REGS_XO19[x] | (((w >> 1) & 0x1F) == 2)))  # + addpcis
        | (o4 & _MADD_XO4[(w & 0x3F).astype(np.intp)])
        | (o31 & regs31)))
    mem = prefix | (rest & ((o31 & mem31) | (~o19 & ~o31 & ~o4 & _MEM_OP[op] & ~reserved_ds)))
    return nostep, regs, ~regs & ~mem


def step_class(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``can_single_step`` is false, single-stepped rather than emulated) for each word."""
    nostep, _, step = classes(words)
    return nostep, step


class Ppc64leBulkClassifier:
    """Vectorised ``arch_prepare_kprobe`` for one ppc64le image."""

    def __init__(self, backend: "Ppc64leBackend", image: "Image") -> None:
        self.backend = backend
        self.image = image

    def walk(self, code: np.ndarray, starts: np.ndarray, ends: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The instructions of every function of a buffer at once: each 4-byte word from the
        function start that has bytes in ``code`` (the kernel decodes no boundaries and judges
        every word alone; capstone 5 knows no prefixed instructions, so its walk would list
        every word too).  Returns (offsets from the function start, lengths, words per
        function, -1 per function: no walk stops)."""
        return fixed_width_walk(INSN_SIZE, code, starts, ends)

    def adjust(self, fstart: np.ndarray, offs: np.ndarray, aa: np.ndarray) -> np.ndarray:
        """``arch_adjust_kprobe_addr`` for many addresses: never moved on ppc64."""
        return aa

    def arch_blacklist_ranges(self) -> list[tuple[int, int]]:
        """``arch_within_kprobe_blacklist``'s arch part as ``[start, end)`` ranges: the addresses
        ``backend.within_arch_blacklist`` is true for (``[_stext, __head_end)``)."""
        start, end = (self.image.symtab.value(s) for s in ARCH_BLACKLIST_AREA)
        if start is None or end is None or end <= start:
            return []
        return [(start, end)]

    def optimized(self, code: np.ndarray, base: int, addrs: np.ndarray, lens: np.ndarray,
                  func: np.ndarray, fstart: np.ndarray, fend: np.ndarray, cand: np.ndarray,
                  aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[OPTIMIZED]`` for the accepted addresses ``aa[cand]`` (``backend.optimizable``,
        optprobes.c ``can_optimize``): a word ``analyse_instr`` does in registers, not prefixed,
        not a conditional branch, within branch range of ``optinsn_slot``.  Returns (optimized,
        left to the per-address hook), both over ``cand``."""
        at = aa[cand]
        slot = self.image.symtab.value(OPTINSN_SLOT)
        if slot is None:  # no detour buffer: nothing is optimized
            return np.zeros(len(cand), bool), np.zeros(len(cand), bool)
        rel = (at - np.uint64(base)).astype(np.int64)
        slow = (rel < 0) | (rel + INSN_SIZE > len(code))
        if len(code) < INSN_SIZE:
            return np.zeros(len(cand), bool), np.ones(len(cand), bool)
        word = _words(code, np.where(slow, 0, rel))
        _, regs, _ = classes(word)
        op = word >> 26
        cond = (op == BC_OP) | ((op == 19) & _COND_XO19[((word >> 1) & 0x3FF).astype(np.intp)])
        dist = (np.uint64(slot) - at).view(np.int64)  # slot - addr, two's complement
        lo, hi = BRANCH_RANGE
        opt = ~slow & regs & (op != OP_PREFIX) & ~cond & (dist >= lo) & (dist <= hi)
        return opt, slow

    def classify(self, code: np.ndarray, base: int, addrs: np.ndarray, rel: np.ndarray,
                 lens: np.ndarray) -> np.ndarray:
        """Outcome codes for the words at ``addrs`` (``rel`` = offsets into ``code``, the runtime
        bytes from ``base``; ``lens`` is not needed: every word is judged alone); SLOW where the
        backend's ``prepare`` must decide."""
        n = len(addrs)
        out = np.full(n, SLOW, np.uint16)
        if n == 0:
            return out
        rel = np.asarray(rel, np.int64)
        if len(code) < INSN_SIZE:
            return out
        # the word and the one before (prefix check) in the buffer
        fast = (rel >= INSN_SIZE) & (rel + INSN_SIZE <= len(code))
        r = np.where(fast, rel, 0)
        word = _words(code, r)
        prev_op = code[np.maximum(r - 1, 0)] >> 2  # primary opcode of the (LE) word before
        nostep, step = step_class(word)
        page_start = (addrs % np.uint64(PAGE_SIZE)) == 0
        suffix = (prev_op == OP_PREFIX) & ~page_start
        res = np.where(step, ok_code(Method.SINGLESTEP), ok_code(Method.EMULATE))
        res = np.where(suffix, refused_code(Reason.PREFIX_SUFFIX), res)
        res = np.where(nostep, refused_code(Reason.PROHIBITED_INSN), res)
        out[fast] = res[fast]
        return out


def classifier(backend: "Ppc64leBackend", image: "Image") -> Ppc64leBulkClassifier:
    """The bulk classifier ``Backend.bulk_classifier`` finds for ppc64le."""
    return Ppc64leBulkClassifier(backend, image)
