"""Fast arm64 classification for full-image analysis (kpatch_core.analyze).

``arch_prepare_kprobe`` on arm64 looks at the patched instruction word (``arm_kprobe_decode_insn``:
the first matching row of :func:`decode_table`), at the exception table
(``search_exception_tables``) and at the words before the address back to the symbol start or
32 instructions (``is_probed_address_atomic``).  Here all three are numpy operations over every
address of a chunk at once, on the same runtime bytes (LSE alternatives applied) and with the same
tables the backend's :meth:`~kpatch_arch.arm64.Arm64Backend.prepare` uses (a word cut by the end
of the section is UNDECODABLE, as there).  Addresses whose window starts outside the chunk's
bytes, or whose containing symbol is unusual (none, zero size, not word aligned), are left to
``prepare`` (the code SLOW); the analysis produces none of these on the Debian kernel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kpatch_arch.base import BulkClassifier
from kpatch_core.bulk import (SLOW, classify_inputs, fixed_width_walk, mark_ranges, ok_code,
                              refused_code)
from kpatch_core.verdict import Method, Reason

from .insn import AARCH64_INSN_SIZE, MAX_ATOMIC_CONTEXT_SIZE, DecodeRow, Outcome, decode_table, decode_words, exclusive_masks

if TYPE_CHECKING:
    from kpatch_core.image import Image

    from .backend import Arm64Backend

# enum probe_insn -> outcome code of arch_prepare_kprobe
_OUTCOME_CODE = {Outcome.REJECTED: refused_code(Reason.PROHIBITED_INSN),
                 Outcome.GOOD_NO_SLOT: ok_code(Method.SIMULATE),
                 Outcome.GOOD: ok_code(Method.SINGLESTEP)}


def row_codes(table: tuple[DecodeRow, ...]) -> np.ndarray:
    """Outcome code per row of ``table`` (index as :func:`decode_words` returns)."""
    return np.array([_OUTCOME_CODE[r.outcome] for r in table], np.uint16)


class Arm64BulkClassifier(BulkClassifier):
    """Vectorised ``arch_prepare_kprobe`` for one arm64 image."""

    def __init__(self, backend: "Arm64Backend", image: "Image") -> None:
        self.backend = backend
        self.image = image
        self.table = decode_table(image.features)
        self.codes = row_codes(self.table)
        self.extable = image.tables.extable

    def walk(self, code: np.ndarray, starts: np.ndarray, ends: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every word of every function: arm64 has no boundary walk (``arch_prepare_kprobe``
        judges each aligned word alone), so capstone's linear decode is not needed."""
        return fixed_width_walk(AARCH64_INSN_SIZE, code, starts, ends)

    def classify(self, code: np.ndarray, base: int, addrs: np.ndarray, rel: np.ndarray,
                 lens: np.ndarray) -> np.ndarray:
        """Outcome codes for the (4-byte aligned) addresses ``addrs`` (``rel``: offsets into
        ``code``, the runtime bytes from ``base``); SLOW where ``prepare`` must decide."""
        out = np.full(len(addrs), SLOW, np.uint16)
        if len(addrs) == 0:
            return out
        code, addrs, rel, fstart, fast = classify_inputs(self.image, code, addrs, rel)
        size = len(code)  # the chunk's bytes end early only where the image's section does
        fast &= addrs % np.uint64(AARCH64_INSN_SIZE) == 0
        # the atomic window [ws, addr): back to the symbol start when it is < 128 bytes away
        window = MAX_ATOMIC_CONTEXT_SIZE * AARCH64_INSN_SIZE
        back = np.minimum((addrs - np.minimum(fstart, addrs)).astype(np.int64), window)
        rel_ws = rel - back
        # prepare reads [ws, addr + 4): from the same section as the chunk when ws is inside it
        fast &= (rel_ws >= 0) & (rel_ws < size) & (rel <= size) & (back % AARCH64_INSN_SIZE == 0)
        undecodable = rel + AARCH64_INSN_SIZE > size
        r = np.where(fast, rel, 0)
        code = np.concatenate((code, np.zeros(2 * AARCH64_INSN_SIZE, np.uint8)))
        # is_probed_address_atomic over the word grid of the chunk: the nearest exclusive load
        # or store before each word (-1: none), and whether it is a load
        g0 = (-base) % AARCH64_INSN_SIZE
        nw = (len(code) - g0) // AARCH64_INSN_SIZE
        grid = np.ascontiguousarray(code[g0:g0 + AARCH64_INSN_SIZE * nw]).view("<u4")
        load_ex, store_ex = exclusive_masks(self.image.features)
        is_load = np.append((grid & np.uint32(load_ex[0])) == np.uint32(load_ex[1]), False)
        is_store = (grid & np.uint32(store_ex[0])) == np.uint32(store_ex[1])
        last_ex = np.maximum.accumulate(
            np.where(is_load[:nw] | is_store, np.arange(nw, dtype=np.int64), -1))
        last_ex = np.append(np.int64(-1), last_ex)  # last_ex[k] covers words [0, k)
        k = np.where(fast, (r - g0) // AARCH64_INSN_SIZE, 0)  # word index of each address
        kws = np.where(fast, (rel_ws - g0) // AARCH64_INSN_SIZE, 0)
        words = grid[k]  # addresses are word aligned: on the grid
        prev = last_ex[k]
        atomic = (prev >= kws) & is_load[prev]  # prev == -1 reads the appended False
        # prepare's order: exception table, decode table, atomic window
        res = self.codes[decode_words(words, self.table)]
        rejected = res == _OUTCOME_CODE[Outcome.REJECTED]
        res = np.where(~rejected & atomic, refused_code(Reason.EXCLUSIVE_WINDOW), res)
        if len(self.extable):
            has_ex = mark_ranges(addrs, self.extable, self.extable + np.uint64(1))
            res = np.where(has_ex, refused_code(Reason.EXTABLE), res)
        res = np.where(undecodable, refused_code(Reason.UNDECODABLE), res)
        out[fast] = res[fast]
        return out


def classifier(backend: "Arm64Backend", image: "Image") -> Arm64BulkClassifier:
    """The bulk classifier ``Backend.bulk_classifier`` finds for arm64."""
    return Arm64BulkClassifier(backend, image)
