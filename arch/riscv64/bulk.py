"""Fast riscv64 classification for full-image analysis (kpatch_core.analyze).

``arch_prepare_kprobe`` on riscv64 checks the address is even, that ``arch_check_kprobe``'s walk
from the symbol start (``GET_INSN_LENGTH`` steps: 4 bytes when the low two bits are ``11``, else
2) lands on it, then decodes the u32 read there with ``riscv_probe_decode_insn``
(:func:`decode_table`).  Here the three are numpy operations over every address of a chunk at
once, on the same runtime bytes (ftrace nops and 6.12 alternatives applied) and with the same
tables the backend's :meth:`~kpatch_arch.riscv64.Riscv64Backend.prepare` uses.

The walk needs no loop: a halfword right after a halfword whose low bits are not ``11`` always
starts an instruction (either that halfword was a 2-byte instruction, or it was the second half
of a 4-byte one), so every address is a boundary exactly when its distance to the last such
synchronising point (or to the symbol start, if later) is a multiple of 4 bytes.

An instruction cut by the end of the section is UNDECODABLE, as in ``prepare``.  Addresses whose
symbol start is outside the chunk's bytes, or whose containing symbol is unusual (none, zero
size, odd start), are left to ``prepare`` (the code SLOW); the analysis produces none of these
on the Debian kernel.  ``fallback_length`` and ``length_fixup`` keep the analysis' capstone walk
on ``GET_INSN_LENGTH`` boundaries.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kpatch_arch.base import BulkClassifier
from kpatch_core.bulk import SLOW, classify_inputs, ok_code, refused_code
from kpatch_core.verdict import Method, Reason

from .insn import OTHER, DecodeRow, Outcome, decode_table, decode_words, insn_length

if TYPE_CHECKING:
    from kpatch_core.image import Image

    from .backend import Riscv64Backend

# enum probe_insn -> outcome code of arch_prepare_kprobe
_OUTCOME_CODE = {Outcome.REJECTED: refused_code(Reason.PROHIBITED_INSN),
                 Outcome.GOOD_NO_SLOT: ok_code(Method.SIMULATE),
                 Outcome.GOOD: ok_code(Method.SINGLESTEP)}


def row_codes(table: tuple[DecodeRow, ...]) -> np.ndarray:
    """Outcome code per row of ``table`` (:func:`decode_table`), then one for :data:`OTHER`, so that
    :func:`decode_words`' ``-1`` (no row: INSN_GOOD) indexes the last entry."""
    rows = (*table, OTHER)
    return np.array([_OUTCOME_CODE[r.outcome] for r in rows], np.uint16)


def u32_at(code: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Little-endian 32-bit words of ``code`` at byte offsets ``rel`` (any alignment)."""
    b = [code[rel + i].astype(np.uint32) for i in range(4)]
    return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)


class Riscv64BulkClassifier(BulkClassifier):
    """Vectorised ``arch_prepare_kprobe`` for one riscv64 image."""

    def __init__(self, backend: "Riscv64Backend", image: "Image") -> None:
        self.backend = backend
        self.image = image
        self.table = decode_table(image.features)
        self.codes = row_codes(self.table)

    def fallback_length(self, code: bytes) -> int:
        """Where capstone cannot decode, the kernel's ``GET_INSN_LENGTH`` (so the walk stays
        on the kernel's boundaries, e.g. over extensions capstone does not know)."""
        return insn_length(code[0]) if code else 0

    def length_fixup(self, code: np.ndarray, offs: np.ndarray, sizes: np.ndarray
                     ) -> tuple[int, int] | None:
        """The first instruction whose capstone length is not ``GET_INSN_LENGTH``'s, as (index,
        kernel length): the analysis then walks exactly the kernel's boundaries."""
        kernel = np.where((code[offs] & 3) == 3, 4, 2)
        bad = np.nonzero(kernel != sizes)[0]
        return (int(bad[0]), int(kernel[bad[0]])) if len(bad) else None

    def classify(self, code: np.ndarray, base: int, addrs: np.ndarray, rel: np.ndarray,
                 lens: np.ndarray) -> np.ndarray:
        """Outcome codes for the addresses ``addrs`` (``rel``: offsets into ``code``, the
        runtime bytes from ``base``); SLOW where ``prepare`` must decide."""
        out = np.full(len(addrs), SLOW, np.uint16)
        if len(addrs) == 0:
            return out
        code, addrs, rel, fstart, fast = classify_inputs(self.image, code, addrs, rel)
        size = len(code)  # the chunk's bytes end early only where the image's section does
        rel_fs = rel - (addrs - np.minimum(fstart, addrs)).astype(np.int64)
        # prepare reads [symbol start, addr + 4): from the same section as the chunk
        fast &= (rel_fs >= 0) & (rel_fs < size) & (rel <= size)
        fast &= (fstart % np.uint64(2) == 0) & (addrs % np.uint64(2) == 0)
        r = np.where(fast, rel, 0)
        code = np.concatenate((code, np.zeros(8, np.uint8)))  # the walk steps 2 past the end
        # arch_check_kprobe, on the halfword grid of the chunk: sync[k] = halfword k starts an
        # instruction of any walk that began at or before k - 1
        g0 = base % 2
        nh = (len(code) - g0) // 2
        half = np.ascontiguousarray(code[g0:g0 + 2 * nh]).view("<u2")
        sync = np.empty(nh, bool)
        sync[0] = True
        sync[1:] = (half[:-1] & 3) != 3
        last_sync = np.maximum.accumulate(np.where(sync, np.arange(nh, dtype=np.int64), 0))
        k = np.where(fast, (r - g0) // 2, 0)
        k_fs = np.where(fast, (rel_fs - g0) // 2, 0)
        boundary = (k - np.maximum(last_sync[k], k_fs)) % 2 == 0
        # riscv_probe_decode_insn on the u32 at the address (zero-padded like prepare's read)
        res = self.codes[decode_words(u32_at(code, r), self.table)]
        res = np.where(r + 2 > size, refused_code(Reason.UNDECODABLE), res)
        res = np.where(boundary, res, refused_code(Reason.NOT_BOUNDARY))
        out[fast] = res[fast]
        return out


def classifier(backend: "Riscv64Backend", image: "Image") -> Riscv64BulkClassifier:
    """The bulk classifier ``Backend.bulk_classifier`` finds for riscv64."""
    return Riscv64BulkClassifier(backend, image)
