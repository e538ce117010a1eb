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

import numpy as np

from kpatch_arch.base import BulkClassifier
from kpatch_core.bulk import SLOW, member_hits, ok_code, refused_code
from kpatch_core.verdict import Method, Reason

from .insn import ENDBR, INT3, JMP32_INSN_SIZE, MAX_INSN_SIZE
from .opcode_fields import (EMULATED_1, EMULATION_REFUSED_1, EXCEPTION_1, EXCEPTION_0F, group_tables,
                            boostable_bytes, opcode_fields)

if TYPE_CHECKING:
    from kpatch_core.image import Image
    from kpatch_core.symbols import KSym
    from kpatch_core.verdict import Execution, Refusal

    from .backend import X86_64Backend


_ROW_SLOW = 255  # _opcode_table's row for "prepare decides"
_ENDBR_WORDS = np.array([int.from_bytes(e, "little") for e in ENDBR], np.uint32)


class X86BulkClassifier(BulkClassifier):
    backend: "X86_64Backend"
    """Vectorised ``arch_prepare_kprobe`` for one x86_64 image."""

    # per-instance caches (class defaults: built on first use)
    _table: np.ndarray | None = None  # _opcode_table, and its rows
    _refused = _method = np.zeros(0, np.uint16)
    _boostable = np.zeros(0, bool)
    _ud1_code: np.ndarray | None = None  # length_fixups' buffer, and where 0f b9 stands in it
    _ud1_at = np.zeros(0, np.int64)

    def __init__(self, backend: "X86_64Backend", image: "Image") -> None:
        self.backend = backend
        self.image = image
        self.features = image.features
        self.preemption = image.config.enabled("PREEMPTION")
        self.ibt = image.config.enabled("X86_KERNEL_IBT")
        self.extable = image.tables.extable
        self.is_group, self.group_regs = group_tables(self.features.has("X86_CAN_BOOST_GROUP_REGS"))

    def fallback_length(self, code: bytes) -> int:
        """Length where capstone gives up (CAPSTONE_GAPS); 0 stops the walk like ``can_probe``."""
        return self.backend.insn_length(code)

    def length_fixup(self, code: np.ndarray, offs: np.ndarray, sizes: np.ndarray
                     ) -> tuple[int, int] | None:
        """The first instruction whose kernel length differs from capstone's (UD1 reads a ModRM
        byte in the kernel's decoder, see ``_ud1_size``), as (index, kernel length)."""
        ks, news = self.length_fixups(code, offs, sizes)
        return (int(ks[0]), int(news[0])) if len(ks) else None

    def length_fixups(self, code: np.ndarray, offs: np.ndarray, sizes: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Every instruction whose kernel length differs from capstone's, ascending: (indexes,
        kernel lengths).  A bare ``0f b9`` (capstone's UD1 without ModRM) is measured here with
        ``_ud1_size``'s arithmetic on the ModRM/SIB bytes; prefixed ones by the backend."""
        n = len(code)
        cand = self._ud1_candidates(code, offs, sizes)
        if not len(cand):
            return cand, cand
        e = offs[cand] + sizes[cand]
        bare = (sizes[cand] == 2) & (e < n)
        modrm = code[np.minimum(e, n - 1)].astype(np.int64)
        sib = code[np.minimum(e + 1, n - 1)].astype(np.int64)
        mod, rm = modrm >> 6, modrm & 7
        has_sib = (mod != 3) & (rm == 4)
        extra = 1 + has_sib + 4 * (has_sib & (mod == 0) & (e + 1 < n) & ((sib & 7) == 5))
        extra = extra + 4 * (~has_sib & (mod == 0) & (rm == 5))
        extra = extra + np.where(mod == 1, 1, np.where(mod == 2, 4, 0))
        new = np.where(bare, sizes[cand] + extra, 0)
        for q in np.flatnonzero(~bare).tolist():  # prefixed or at the buffer end: the backend
            o = int(offs[cand[q]])
            new[q] = self.backend.insn_length(code[o:o + 2 * MAX_INSN_SIZE].tobytes())
        diff = (new != 0) & (new != sizes[cand])
        return cand[diff], new[diff]

    def _ud1_candidates(self, code: np.ndarray, offs: np.ndarray, sizes: np.ndarray
                        ) -> np.ndarray:
        """The instructions (ascending indexes) whose last two bytes are ``0f b9``: found from
        where that pair stands in ``code`` (searched once per buffer), not by looking at every
        instruction."""
        n = len(code)
        if self._ud1_code is not code:  # where ``0f b9`` stands in this buffer (held: one id)
            self._ud1_code = code
            self._ud1_at = np.flatnonzero((code[:-1] == 0x0F) & (code[1:] == 0xB9)) \
                if n > 1 else np.zeros(0, np.int64)
        none = np.zeros(0, np.int64)
        if not len(offs):
            return none
        # the instruction before the next start ends with the pair, or the last one does
        last_end = int(offs[-1] + sizes[-1])
        at = self._ud1_at
        at = at[np.searchsorted(at, int(offs[0]) - 1):np.searchsorted(at, last_end - 2, side="right")]
        if not len(at):
            return none
        k = np.searchsorted(offs, at + 2)
        inner = k < len(offs)
        hit = np.zeros(len(at), bool)
        hit[inner] = offs[k[inner]] == at[inner] + 2
        tail = [len(offs) - 1] if int(at[-1]) + 2 == last_end else []
        cand = np.concatenate((k[hit] - 1, np.array(tail, np.int64))).astype(np.int64)
        return cand[cand >= 0]

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
        hit = j[np.isin(words, _ENDBR_WORDS)]
        out[hit] = fstart[hit] + np.uint64(4)
        return out

    def entry_adjust(self, addrs: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``backend.adjust_kprobe_addr`` for ``SYM + shift`` of many symbols at once: with
        IBT and an ENDBR at SYM, +0 moves past it and +4 still counts as the entry."""
        moved = addrs + shifts.astype(np.uint64)
        if not self.ibt:
            return moved, shifts == 0
        endbr = np.isin(self.image.read_u32_at(addrs), _ENDBR_WORDS)
        adj = np.where(endbr & (shifts == 0), addrs + np.uint64(4), moved)
        return adj, np.where(endbr, (shifts == 0) | (shifts == 4), shifts == 0)

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
        # the opcode's row of the decision table: one-byte opcode b or 0F b1, then ModRM.mod/reg
        key = np.where(f.two, f.b1.astype(np.int32) + 256, f.b) * 32 + (f.modrm >> 3)
        table = self._opcode_table()
        row = table[key]
        slow = f.slow | (row == _ROW_SLOW)
        refused = self._refused[row]
        # can_boost: the opcode's answer, then the prefixes 2e/67, the exception table, PREEMPTION
        # and the room for the jump back (MAX_INSN_SIZE - len >= JMP32_INSN_SIZE)
        use_boost = self._boostable[row] & ~(f.one & f.has_2e67)
        if self.preemption:
            use_boost[:] = False
        else:
            use_boost &= MAX_INSN_SIZE - lens >= JMP32_INSN_SIZE
            if len(self.extable):  # search the (small) table into the addresses
                use_boost[member_hits(self.extable, addrs)] = False
        method = np.where(use_boost, ok_code(Method.BOOST), self._method[row])
        res = np.where(refused != 0, refused, method).astype(np.uint16)
        fast = ~slow
        out[fast] = res[fast]
        return out

    def _opcode_table(self) -> np.ndarray:
        """Per key (one-byte opcode b, or 256 + the byte after 0F; times 32; plus ModRM >> 3):
        a row of ``_refused``, ``_method`` and ``_boostable`` (:data:`_ROW_SLOW`: ``prepare``
        decides), built once from :meth:`_decide` over every key."""
        if self._table is None:
            keys = np.arange(512 * 32)
            op, mr = keys // 32, keys % 32
            two = op >= 256
            byte = (op % 256).astype(np.uint8)
            reg, mod = (mr & 7).astype(np.uint8), (mr >> 3).astype(np.uint8)
            refused, method, boost, slow = self._decide(~two, two, byte, byte, reg, mod)
            cols = np.stack([refused.astype(np.int64), method.astype(np.int64),
                             boost.astype(np.int64)], axis=1)
            uniq, row = np.unique(cols, axis=0, return_inverse=True)
            if len(uniq) >= _ROW_SLOW:
                raise RuntimeError("x86 opcode table: too many distinct decisions")
            self._refused = np.zeros(_ROW_SLOW + 1, np.uint16)
            self._method = np.zeros(_ROW_SLOW + 1, np.uint16)
            self._boostable = np.zeros(_ROW_SLOW + 1, bool)
            self._refused[:len(uniq)] = uniq[:, 0]
            self._method[:len(uniq)] = uniq[:, 1]
            self._boostable[:len(uniq)] = uniq[:, 2] != 0
            self._table = np.where(slow, _ROW_SLOW, row.reshape(-1)).astype(np.uint8)
        return self._table

    def _decide(self, one: np.ndarray, two: np.ndarray, b: np.ndarray, b1: np.ndarray,
                reg: np.ndarray, mod: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``prepare``'s answer from the opcode alone (b: the one-byte opcode, b1: the byte
        after 0F; ModRM reg/mod): (refusal code or 0, method code, can_boost from the opcode,
        slow: ``prepare`` decides)."""
        slow = one & (b == 0xFF) & (reg >= 2) & (reg <= 5)  # call/jmp through ModRM
        # prepare(): exception insns (can_probe), int3, exception-masking moves
        refused = np.zeros(len(b), np.uint16)
        if self.features.has("X86_CAN_PROBE_EXCEPTION_INSN"):
            exc = (one & EXCEPTION_1[b]) | (two & EXCEPTION_0F[b1])
            refused = np.where(exc & (refused == 0), refused_code(Reason.EXCEPTION_INSN), refused)
        refused = np.where(one & (b == INT3) & (refused == 0), refused_code(Reason.BREAKPOINT_INSN),
                           refused)
        mask_exc = one & ((b == 0x17) | ((b == 0x8E) & (reg == 2)))
        refused = np.where(mask_exc & (refused == 0), refused_code(Reason.PROHIBITED_INSN), refused)
        # prepare_emulation
        emul_ref = (one & EMULATION_REFUSED_1[b]) | (two & (b1 == 0x01) & (reg == 0) & (mod == 3))
        refused = np.where(emul_ref & (refused == 0), refused_code(Reason.EMULATE_UNSUPPORTED),
                           refused)
        emulated = (one & EMULATED_1[b]) | (two & ((b1 & 0xF0) == 0x80))
        method = np.where(emulated, ok_code(Method.EMULATE), ok_code(Method.SINGLESTEP))
        # can_boost from the opcode (without the 2e/67 prefixes: the caller's)
        boost = boostable_bytes(two, b, b1, reg, np.zeros(len(b), bool), self.is_group,
                                self.group_regs)
        return refused, method, boost, slow

    def uniform_inputs(self) -> tuple[int, int, np.ndarray]:
        """What :meth:`classify` reads of an address: ``opcode_fields`` reads from it at most
        MAX_INSN_SIZE + 2 bytes (prefixes, REX, 2 opcode bytes, ModRM) and whether those fit the
        buffer; ``can_boost`` whether it has an exception-table entry (membership changes at
        each entry and the byte after it).  Everything else is a per-image fact."""
        ex = np.asarray(self.extable, np.uint64)
        return 0, 2 * MAX_INSN_SIZE, np.unique(np.concatenate((ex, ex + np.uint64(1))))

    def optimized(self, code: np.ndarray, base: int, addrs: np.ndarray, lens: np.ndarray,
                  func: np.ndarray, fstart: np.ndarray, fend: np.ndarray, cand: np.ndarray,
                  aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[OPTIMIZED]`` for the accepted instructions ``cand`` (see bulk_opt.py)."""
        from .bulk_opt import optimized
        return optimized(self, code, base, addrs, lens, func, fstart, fend, cand, aa)


def classifier(backend: "X86_64Backend", image: "Image") -> X86BulkClassifier:
    """The bulk classifier ``Backend.bulk_classifier`` finds for x86_64."""
    return X86BulkClassifier(backend, image)
