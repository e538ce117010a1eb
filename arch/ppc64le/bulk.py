"""Fast ppc64le classification for full-image analysis (kpatch_core.analyze).

``arch_prepare_kprobe`` on powerpc (arch/powerpc/kernel/kprobes.c) judges each 4-byte word alone:
``can_single_step`` refuses traps, rfid/hrfid/..., mtmsr(d) and sc (-EINVAL); a word right after
a prefix word (ISA 3.1 suffix) is refused unless it starts a page (-EINVAL); the rest is
accepted and either emulated (``emulate_step``) or single-stepped, as the model of sstep.c says
of the word (the backend's ``analyse_class`` = ``emulate.analyse_word``).  Here that decision is
vectorised over all words at once: a key table computed from the model itself (primary opcode
and, for the opcodes that have them, bits 0-10), then analyse_instr's few register-field rules
(update forms, quadword pairs, lmw, darn, mfspr/mtspr of XER/LR/CTR) as array tests.

The full analysis's per-word cost is one lookup in :func:`word_tables` (outcome per key: primary
opcode and bits 0-10), the register-field rules only for the few keys that have one.  Per
symbol, ``kprobe_lookup_name`` (:meth:`Ppc64leBulkClassifier.lookup_shifts`,
:mod:`kpatch_arch.ppc64le.lookup_name`) and ``arch_kprobe_on_func_entry``
(:meth:`~Ppc64leBulkClassifier.entry_adjust`) are vectorised too.

Also vectorised: ``arch_adjust_kprobe_addr`` (it never moves a probe on ppc64: the local-entry
move happens in ``kprobe_lookup_name``, for ``SYM+0`` targets only), the ranges of
``arch_within_kprobe_blacklist`` (``[_stext, __head_end)``) and optprobes' ``can_optimize``
(``[OPTIMIZED]``), so the core need not ask the backend per address; the "walk" lists every
word (no capstone pass).  Words whose bytes (or the previous word) lie outside the buffer are
left to the backend's ``prepare`` (the code SLOW).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from kpatch_arch.base import BulkClassifier
from kpatch_core.bulk import SLOW, fixed_width_walk, ok_code, refused_code
from kpatch_core.verdict import Method, Reason

from .lookup_name import kprobe_lookup_names
from .insn import ARCH_BLACKLIST_AREA, BC_OP, BRANCH_COND_XO19, BRANCH_RANGE, INSN_SIZE, NOT_STEPPABLE_OP, NOT_STEPPABLE_XO19, NOT_STEPPABLE_XO31, OP_PREFIX, OPTINSN_SLOT, PAGE_SIZE
from .emulate import (DFORM_MEM, FP_XO_UPDATE, SPRN_CTR, SPRN_LR, SPRN_XER, UPDATE, WORD_DECLINED,
                      WORD_MEM, WORD_REFUSED, WORD_REGS, XFORM_MEM, analyse_word)

if TYPE_CHECKING:
    from kpatch_core.image import Image

    from .backend import Ppc64leBackend


def _table(size: int, values: Iterable[int]) -> np.ndarray:
    t = np.zeros(size, bool)
    t[list(values)] = True
    return t


# can_single_step
_NOSTEP_OP = _table(64, NOT_STEPPABLE_OP)
_NOSTEP_XO19 = _table(1024, NOT_STEPPABLE_XO19)
_NOSTEP_XO31 = _table(1024, NOT_STEPPABLE_XO31)
_COND_XO19 = _table(1024, BRANCH_COND_XO19)  # optprobes.c is_conditional_branch


def _words(code: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """The little-endian 32-bit words at offsets ``rel`` of ``code``."""
    return (code[rel].astype(np.uint32) | (code[rel + 1].astype(np.uint32) << 8)
            | (code[rel + 2].astype(np.uint32) << 16) | (code[rel + 3].astype(np.uint32) << 24))


# analyse_word's answers as small codes
REGS, MEM, DECLINED, REFUSED = 0, 1, 2, 3
_CODE = {WORD_REGS: REGS, WORD_MEM: MEM, WORD_DECLINED: DECLINED, WORD_REFUSED: REFUSED}
# Primary opcodes whose analysis reads bits 0-10 (extended opcode, DS/DQ/XX form bits); the
# others are decided by the primary opcode and the register fields alone.
SUBOP_OPS = (4, 19, 30, 31, 57, 58, 61, 62)
# The register fields the key table is computed with (rT=8, rA=4, rB=6; SPR 4|6<<5 = 196): a
# valid form for every register-field rule of analyse_instr that :func:`classes` applies
# (rA != 0, rA != rT, rA < rT, rT even, rT != rB, rA & 3 != 3).
CANONICAL_FIELDS = (8 << 21) | (4 << 16) | (6 << 11)
SPR_EMULATED = (SPRN_XER, SPRN_LR, SPRN_CTR)  # mfspr/mtspr analyse_instr does in registers
_SPR_OK = _table(1024, SPR_EMULATED)
# analyse_instr's register-field rules (sstep.c), by form
_X_UPDATE = _table(1024, (x for x, (_, _, f) in XFORM_MEM.items() if f & UPDATE))
_X_UPDATE_LOAD = _table(1024, (x for x, (k, _, f) in XFORM_MEM.items()
                               if f & UPDATE and k == "load"))
_X_FP_UPDATE = _table(1024, FP_XO_UPDATE)
_D_UPDATE = _table(64, (op + 1 for op in DFORM_MEM))  # lwzu lbzu stwu stbu lhzu lhau sthu
_D_UPDATE_LOAD = _table(64, (op + 1 for op, (k, _, _) in DFORM_MEM.items() if k == "load"))
_D_FP_UPDATE = _table(64, (49, 51, 53, 55))  # lfsu lfdu stfsu stfdu
XO_MFSPR, XO_MTSPR, XO_LQARX, XO_STQCX, XO_DARN = 339, 467, 276, 182, 755
OP_LMW, OP_LQ, OP_LFDP, OP_LD, OP_STD = 46, 56, 57, 58, 62


def model_key_table() -> np.ndarray:
    """:func:`~kpatch_arch.ppc64le.emulate.analyse_word` (as REGS/MEM/DECLINED/REFUSED codes)
    for every key ``op << 11 | low 11 bits`` (low bits only for :data:`SUBOP_OPS`, else 0),
    with the register fields :data:`CANONICAL_FIELDS`, computed from the model (~16k words,
    ~0.15 s)."""
    table = np.full(64 << 11, DECLINED, np.uint8)
    for op in range(64):
        lows = range(2048) if op in SUBOP_OPS else (0,)
        for low in lows:
            word = (op << 26) | CANONICAL_FIELDS | low
            table[(op << 11) | low] = _CODE[analyse_word(word)]
    return table


def key_table_fingerprint() -> str:
    """sha256 of what :func:`model_key_table` depends on: the model's source (emulate.py) and
    the key parameters of this module."""
    h = hashlib.sha256(Path(inspect.getfile(analyse_word)).read_bytes())  # emulate.py
    h.update(repr((SUBOP_OPS, CANONICAL_FIELDS, sorted(_CODE.items()))).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def key_table() -> np.ndarray:
    """:func:`model_key_table`, once per process: read from :mod:`.key_table_data` when that
    was generated from the same model (:func:`key_table_fingerprint`), else computed.  The
    model is the one source of truth; regenerate the data after changing it with
    ``python -m kpatch_arch.ppc64le.bulk``."""
    from .key_table_data import FINGERPRINT, TABLE
    if FINGERPRINT == key_table_fingerprint():
        raw = zlib.decompress(base64.b85decode(TABLE))
        return np.frombuffer(raw, np.uint8).copy()
    return model_key_table()


def write_key_table_data(path: str) -> None:
    """Write :mod:`.key_table_data` (the model's key table, compressed, with its fingerprint)."""
    text = base64.b85encode(zlib.compress(model_key_table().tobytes(), 9)).decode()
    lines = [text[i:i + 96] for i in range(0, len(text), 96)]
    body = "\n".join(f'    "{x}"' for x in lines)
    with open(path, "w") as f:
        f.write(f'''"""The ppc64le key table (:func:`kpatch_arch.ppc64le.bulk.model_key_table`: analyse_word's
class per opcode key), precomputed: zlib + base85 of the uint8 array.  Generated by
``python -m kpatch_arch.ppc64le.bulk``; used only while FINGERPRINT matches the model's
source (:func:`kpatch_arch.ppc64le.bulk.key_table_fingerprint`), else the model is run.
"""
FINGERPRINT = "{key_table_fingerprint()}"
TABLE = (
{body}
)
''')


_SUBOP = _table(64, SUBOP_OPS)


def analysis_codes(words: np.ndarray) -> np.ndarray:
    """:func:`~kpatch_arch.ppc64le.emulate.analyse_word` of every uint32 word, vectorised
    (REGS/MEM/DECLINED/REFUSED codes): the key table, then analyse_instr's register-field
    rules (which only ever decline, except mfspr/mtspr of XER/LR/CTR)."""
    w = words.astype(np.uint32)
    op = (w >> 26).astype(np.intp)
    low = (w & 0x7FF).astype(np.intp)
    cls = key_table()[(op << 11) | np.where(_SUBOP[op], low, 0)]
    x = (low >> 1) & 0x3FF
    rd, ra, rb = (w >> 21) & 0x1F, (w >> 16) & 0x1F, (w >> 11) & 0x1F
    o31 = op == 31
    k = w & 3
    odd = (rd & 1) == 1
    bad = (
        # update forms: rA = 0, or a load with rA = rT (sstep.c: "invalid form")
        (o31 & _X_UPDATE[x] & ((ra == 0) | (_X_UPDATE_LOAD[x] & (ra == rd))))
        | (_D_UPDATE[op] & ((ra == 0) | (_D_UPDATE_LOAD[op] & (ra == rd))))
        | ((op == OP_LD) & (k == 1) & ((ra == 0) | (ra == rd)))  # ldu
        | ((op == OP_STD) & (k == 1) & (ra == 0))  # stdu
        | (o31 & _X_FP_UPDATE[x] & (ra == 0)) | (_D_FP_UPDATE[op] & (ra == 0))  # FP update
        # quadword pairs: an even rT not overlapping the address registers
        | (o31 & (x == XO_LQARX) & (odd | (rd == ra) | (rd == rb)))
        | (o31 & (x == XO_STQCX) & odd)
        | ((op == OP_LQ) & (odd | (rd == ra)))
        | ((op == OP_STD) & (k == 2) & odd)  # stq
        | ((op == OP_LFDP) & (k == 0) & odd)  # lfdp
        | ((op == OP_LMW) & (ra >= rd))  # lmw: rA in the loaded range
        | (o31 & (x == XO_DARN) & ((ra & 3) == 3)))  # darn L=3
    cls = np.where(bad, DECLINED, cls)
    spr = ((w >> 16) & 0x1F) | ((w >> 6) & 0x3E0)
    is_spr = o31 & ((x == XO_MFSPR) | (x == XO_MTSPR))
    return np.where(is_spr, np.where(_SPR_OK[spr.astype(np.intp)], REGS, DECLINED),
                    cls).astype(np.uint8)


def classes(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(``can_single_step`` is false, ``analyse_class`` is REGS, ``analyse_class`` is STEP) for
    each uint32 word: the vectorised :func:`kpatch_arch.ppc64le.not_steppable` and
    :func:`~kpatch_arch.ppc64le.analyse_class`."""
    w = words.astype(np.uint32)
    op = (w >> 26).astype(np.intp)
    x = ((w >> 1) & 0x3FF).astype(np.intp)
    nostep = _NOSTEP_OP[op] | ((op == 19) & _NOSTEP_XO19[x]) | ((op == 31) & _NOSTEP_XO31[x])
    cls = analysis_codes(w)
    return nostep, cls == REGS, cls == DECLINED


def step_class(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``can_single_step`` is false, single-stepped rather than emulated) for each word."""
    nostep, _, step = classes(words)
    return nostep, step


# analyse_instr's register-field rules of analysis_codes, by key: the words they may change
_X_FIELD_RULES = _table(1024, (XO_LQARX, XO_STQCX, XO_DARN, XO_MFSPR, XO_MTSPR))


def _keys(words: np.ndarray) -> np.ndarray:
    """``op << 11 | low 11 bits`` of each uint32 word (every opcode: the :func:`word_tables`
    index)."""
    return ((words >> 15) & 0x1F800) | (words & 0x7FF)


@functools.lru_cache(maxsize=None)
def word_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key ``op << 11 | low 11 bits`` (all 2**17): ``classify``'s outcome code for a word
    no register-field rule applies to (refused by ``can_single_step``, else single-stepped when
    ``analyse_class`` declines, else emulated), ``can_single_step`` is false, and whether one of
    :func:`analysis_codes`' register-field rules applies (then the word's own fields decide).
    Built from :func:`key_table` and the same tables :func:`classes` reads."""
    key = np.arange(64 << 11, dtype=np.uint32)
    op = (key >> 11).astype(np.intp)
    low = (key & 0x7FF).astype(np.intp)
    x = (low >> 1) & 0x3FF
    k = low & 3
    cls = key_table()[(op << 11) | np.where(_SUBOP[op], low, 0)]
    nostep = _NOSTEP_OP[op] | ((op == 19) & _NOSTEP_XO19[x]) | ((op == 31) & _NOSTEP_XO31[x])
    fields = (((op == 31) & (_X_UPDATE[x] | _X_FP_UPDATE[x] | _X_FIELD_RULES[x]))
              | _D_UPDATE[op] | _D_FP_UPDATE[op] | (op == OP_LQ) | (op == OP_LMW)
              | ((op == OP_LD) & (k == 1)) | ((op == OP_STD) & ((k == 1) | (k == 2)))
              | ((op == OP_LFDP) & (k == 0)))
    code = np.where(nostep, refused_code(Reason.PROHIBITED_INSN),
                    np.where(cls == DECLINED, ok_code(Method.SINGLESTEP),
                             ok_code(Method.EMULATE))).astype(np.uint16)
    return code, nostep, fields


def aligned_words(code: np.ndarray, base: int, rel: np.ndarray) -> np.ndarray | None:
    """The little-endian words at offsets ``rel`` of ``code`` (bytes from ``base``), read
    through one uint32 view of the buffer when every offset is at a 4-byte aligned address;
    None otherwise (or when one runs past the buffer)."""
    k = (-base) % INSN_SIZE
    nw = (len(code) - k) // INSN_SIZE
    if nw <= 0 or not len(rel):
        return None
    q = rel - k
    if (q & (INSN_SIZE - 1)).any() or q.min() < 0 or q.max() >= INSN_SIZE * nw:
        return None
    view = code[k:k + INSN_SIZE * nw].view("<u4")
    return view[q >> 2]


class Ppc64leBulkClassifier(BulkClassifier):
    """Vectorised ``arch_prepare_kprobe`` for one ppc64le image."""

    def __init__(self, backend: "Ppc64leBackend", image: "Image") -> None:
        self.backend = backend
        self.image = image
        word_tables()  # built once, before the full analysis forks its workers

    def walk(self, code: np.ndarray, starts: np.ndarray, ends: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The instructions of every function of a buffer at once: each 4-byte word from the
        function start that has bytes in ``code`` (the kernel decodes no boundaries and judges
        every word alone; capstone 5 knows no prefixed instructions, so its walk would list
        every word too).  Returns (offsets from the function start, lengths, words per
        function, -1 per function: no walk stops)."""
        return fixed_width_walk(INSN_SIZE, code, starts, ends)

    def lookup_shifts(self, names: list[str], addrs: np.ndarray) -> np.ndarray:
        """``backend.lookup_name(image, NAME, 0) - SYM`` for many symbols (``NAME`` at ``SYM``)
        at once (:func:`kpatch_arch.ppc64le.lookup_name.kprobe_lookup_names`): 0 where the name
        has no kallsyms address."""
        ks = self.image.kallsyms
        first = [ks.lookup(name) for name in names]
        known = np.array([a is not None for a in first], bool)
        base = np.array([0 if a is None else a for a in first], np.uint64)
        moved = kprobe_lookup_names(self.image, base[known])
        shifts = np.zeros(len(names), np.int64)
        shifts[known] = (moved - np.asarray(addrs, np.uint64)[known]).view(np.int64)
        return shifts

    def entry_adjust(self, addrs: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``backend.adjust_kprobe_addr(SYM, shift)`` for many symbol addresses at once: the
        address is not moved; ``arch_kprobe_on_func_entry`` holds up to the function's first
        ftrace site (7.x: ``PPC_KPROBE_ENTRY_BY_FTRACE_LOCATION``; 8 bytes without one), else
        up to 16 bytes (8 without KPROBES_ON_FTRACE)."""
        addrs = np.asarray(addrs, np.uint64)
        shifts = np.asarray(shifts, np.int64)
        moved = addrs + shifts.astype(np.uint64)
        image = self.image
        if not image.features.has("PPC_KPROBE_ENTRY_BY_FTRACE_LOCATION"):
            limit = 16 if image.config.enabled("KPROBES_ON_FTRACE") else 8
            return moved, shifts <= limit
        # the kallsyms symbol at SYM (its size), else one byte: ftrace_location_range's window
        ks = image.kallsyms
        size = np.ones(len(addrs), np.uint64)
        if len(ks.uaddrs):
            j = np.searchsorted(ks.uaddrs, addrs, side="right").astype(np.int64) - 1
            jj = np.maximum(j, 0)
            at_sym = (j >= 0) & (ks.uaddrs[jj] == addrs)
            size = np.where(at_sym, np.maximum(ks.usizes[jj], np.uint64(1)), size)
        sites = image.tables.ftrace_sites
        upto = np.full(len(addrs), 8, np.int64)
        if len(sites):
            k = np.searchsorted(sites, addrs, side="left")
            first = sites[np.minimum(k, len(sites) - 1)]
            found = (k < len(sites)) & (first < addrs + size)
            upto = np.where(found, (first - addrs).astype(np.int64), upto)
        return moved, shifts <= upto

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
        nostep, regs, _ = classes(word)
        op = word >> 26
        cond = (op == BC_OP) | ((op == 19) & _COND_XO19[((word >> 1) & 0x3FF).astype(np.intp)])
        dist = (np.uint64(slot) - at).view(np.int64)  # slot - addr, two's complement
        lo, hi = BRANCH_RANGE
        opt = ~slow & ~nostep & regs & (op != OP_PREFIX) & ~cond & (dist >= lo) & (dist <= hi)
        return opt, slow

    def classify(self, code: np.ndarray, base: int, addrs: np.ndarray, rel: np.ndarray,
                 lens: np.ndarray) -> np.ndarray:
        """Outcome codes for the words at ``addrs`` (``rel`` = offsets into ``code``, the runtime
        bytes from ``base``; ``lens`` is not needed: every word is judged alone); SLOW where the
        backend's ``prepare`` must decide.

        One lookup per word in :func:`word_tables` (the key's outcome); the register-field rules
        only for the words whose key has one; the prefix-suffix rule only after prefix words."""
        n = len(addrs)
        out = np.full(n, SLOW, np.uint16)
        if n == 0:
            return out
        rel = np.asarray(rel, np.int64)
        if len(code) < INSN_SIZE:
            return out
        # the word and the one before (prefix check) in the buffer
        fast = (rel >= INSN_SIZE) & (rel + INSN_SIZE <= len(code))
        at = rel if fast.all() else rel[fast]
        word = aligned_words(code, base, at)
        if word is None:
            word = _words(code, at)
        table, nostep, fields = word_tables()
        key = _keys(word)
        res = table[key]
        fx = np.flatnonzero(fields[key])
        if len(fx):  # analyse_instr's register-field rules decide these words
            step = analysis_codes(word[fx]) == DECLINED
            res[fx] = np.where(nostep[key[fx]], refused_code(Reason.PROHIBITED_INSN),
                               np.where(step, ok_code(Method.SINGLESTEP), ok_code(Method.EMULATE)))
        # a word right after a prefix word (ISA 3.1 suffix), unless it starts a page
        after = np.flatnonzero((code[at - 1] >> 2) == OP_PREFIX)  # the previous (LE) word's op
        if len(after):
            a = np.asarray(addrs, np.uint64)[fast][after] if not fast.all() else \
                np.asarray(addrs, np.uint64)[after]
            suffix = after[((a % np.uint64(PAGE_SIZE)) != 0) & ~nostep[key[after]]]
            res[suffix] = refused_code(Reason.PREFIX_SUFFIX)
        out[fast] = res
        return out


def classifier(backend: "Ppc64leBackend", image: "Image") -> Ppc64leBulkClassifier:
    """The bulk classifier ``Backend.bulk_classifier`` finds for ppc64le."""
    return Ppc64leBulkClassifier(backend, image)


if __name__ == "__main__":  # regenerate key_table_data.py next to this file
    write_key_table_data(str(Path(__file__).with_name("key_table_data.py")))
