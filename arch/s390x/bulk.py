"""Fast s390x classification for full-image analysis (kpatch_core.analyze).

``arch_prepare_kprobe`` on s390 (arch/s390/kernel/kprobes.c, arch/s390/lib/probes.c) decides in
two steps:

* ``can_probe``: the address must be reached by walking the function from its kallsyms start by
  ``insn_length`` (top two bits of the first byte); a ``0x00xx`` halfword on the way stops the
  walk (-EINVAL).  :meth:`S390xBulkClassifier.walk` is that walk for every function of a
  buffer at once (:mod:`kpatch_arch.s390x.can_probe`: linear, no capstone), so every listed address with a length
  is one the kernel's walk reaches.  (Without ``walk`` the core would walk with capstone, whose
  s390x lengths are the kernel's; :meth:`~S390xBulkClassifier.fallback_length` then gives the
  length where capstone does not know the opcode and ends the walk at a ``0x00xx`` halfword.)
* ``probe_is_prohibited_opcode``: opcodes the in-kernel disassembler does not know
  (``is_known_insn``, the per-version table of :mod:`kpatch_arch.s390x.opcodes`) and the
  prohibited first bytes / halfwords (ex, exrl, diag, bsm, stosm, tbegin...) are -EINVAL; the rest
  is single-stepped out of line (the relative-long rewrite and PSW fixups only change how).

Here that decision is a numpy table lookup over all instructions at once, with tables built from
the backend's own (``opcode_table``, ``PROHIBITED_FIRST_BYTE``, ``PROHIBITED_HALFWORD``,
``insn_length``).  Addresses whose length is unknown (the walk's stop point, adjusted addresses)
or whose bytes run past the buffer are left to the backend's ``prepare`` (the code SLOW).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from kpatch_arch.base import BulkClassifier
from kpatch_core.bulk import SLOW, ok_code, refused_code
from kpatch_core.verdict import Method, Reason

from .can_probe import walk as can_probe_walk
from .insn import EXRL_FIRST, MAX_INSN_SIZE, PROHIBITED_FIRST_BYTE, PROHIBITED_HALFWORD, insn_length, opcode_source, opcode_table

if TYPE_CHECKING:
    from kpatch_core.image import Image
    from kpatch_core.symbols import KSym
    from kpatch_core.verdict import Execution, Refusal

    from .backend import S390xBackend


@functools.cache
def _tables(source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per first byte: instruction length, the byte holding the rest of the opcode and its mask
    (``find_insn``'s group); ``known[first, masked byte]``; per halfword: prohibited."""
    by_first, default = opcode_table(source)  # OPCODE_GROUPS[source]
    length = np.array([insn_length(b) for b in range(256)], np.int64)
    gbyte = np.zeros(256, np.int64)
    gmask = np.zeros(256, np.uint8)
    known = np.zeros((256, 256), bool)
    for b in range(256):
        g = by_first.get(b, default)
        gbyte[b], gmask[b] = g.byte, g.mask
        if g.byte >= length[b]:  # find_insn: the opcode byte is past the instruction
            continue
        for frag in g.names:
            if frag < 256:
                known[b, frag] = True
    bad = np.zeros(1 << 16, bool)  # probe_is_prohibited_opcode by halfword
    for first in PROHIBITED_FIRST_BYTE:
        bad[first << 8:(first + 1) << 8] = True
    bad[(EXRL_FIRST << 8) + np.arange(0, 256, 16)] = True  # exrl: second byte's low nibble 0
    bad[list(PROHIBITED_HALFWORD)] = True
    return length, gbyte, gmask, known, bad


@functools.cache
def _halfword_tables(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Per first halfword: ``classify``'s outcome when the halfword decides it, and whether the
    opcode byte further on (``find_insn``'s group byte 2 and up) must be read instead.  The
    halfword decides when it is prohibited, or when the group byte is the first or second
    byte, or lies past the instruction (then ``find_insn`` knows nothing: refused)."""
    length, gbyte, gmask, known, bad = _tables(source)
    hw = np.arange(1 << 16, dtype=np.int64)
    first = hw >> 8
    frag = np.where(gbyte[first] == 0, first, hw & 0xFF) & gmask[first]
    in_hw = (gbyte[first] <= 1) | (gbyte[first] >= length[first])
    refused = bad | (in_hw & ~known[first, frag])
    code = np.where(refused, refused_code(Reason.PROHIBITED_INSN),
                    ok_code(Method.SINGLESTEP)).astype(np.uint16)
    return code, ~refused & ~in_hw


class S390xBulkClassifier(BulkClassifier):
    """Vectorised ``arch_prepare_kprobe`` for one s390x image."""

    def __init__(self, backend: "S390xBackend", image: "Image") -> None:
        self.backend = backend
        self.image = image
        self.opcodes = opcode_source(image.features)
        self.length, self.gbyte, self.gmask, self.known, self.bad = _tables(self.opcodes)
        self.hw_code, self.hw_more = _halfword_tables(self.opcodes)

    def fallback_length(self, code: bytes) -> int:
        """``insn_length`` where capstone does not know the opcode; 0 (the walk ends there, as
        ``can_probe``'s does) at a ``0x00xx`` halfword or past the text."""
        if len(code) < 2 or code[0] == 0:
            return 0
        n = insn_length(code[0])
        return n if n <= len(code) else 0

    def walk(self, code: np.ndarray, starts: np.ndarray, ends: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``can_probe``'s walk from each function start, for all functions of a buffer at once
        (no capstone): ``code`` the runtime bytes, ``starts``/``ends`` the functions' sorted,
        disjoint ``[start, end)`` offsets into it.  Returns (offsets from the function start,
        lengths, instructions per function, offset where the walk stopped or -1): the
        instructions whose start the walk reaches before ``end``; a ``0x00xx`` halfword or an
        instruction running past the buffer stops it (listed with length 0).

        Linear in the buffer (:func:`kpatch_arch.s390x.can_probe.walk`: the walks are one chain
        of ``insn_length`` steps, followed block-parallel), not a Python step per instruction."""
        return can_probe_walk(code, starts, ends, self.length)

    def prepare_at(self, addr: int, func: "KSym") -> "Execution | Refusal":
        """``prepare`` for an address known to be reached by the walk: start the walk at it."""
        from kpatch_arch.base import PrepareContext
        from kpatch_core.symbols import KSym
        here = KSym(func.name, addr, max(func.end - addr, 1))
        return self.backend.prepare(PrepareContext(self.image, addr, here))

    def classify(self, code: np.ndarray, base: int, addrs: np.ndarray, rel: np.ndarray,
                 lens: np.ndarray) -> np.ndarray:
        """Outcome codes for the instructions at ``addrs`` (``rel`` = offsets into ``code``, the
        runtime bytes from ``base``; ``lens`` their decoded lengths, -1 when unknown, 0 where the
        walk stopped); SLOW where the backend's ``prepare`` must decide."""
        n = len(addrs)
        out = np.full(n, SLOW, np.uint16)
        if n == 0:
            return out
        size = len(code)
        if size < MAX_INSN_SIZE:
            return out
        inside = (rel >= 0) & (rel + 2 <= size)
        r = np.where(inside, rel, 0)
        k = base & 1  # the buffer's first even address
        if not ((r - k) & 1).any():  # every instruction at an even address: one halfword read
            hw = code[k:k + (size - k) // 2 * 2].view(">u2")[(r - k) >> 1].astype(np.intp)
            first = hw >> 8
        else:
            first = code[r].astype(np.intp)
            hw = (first << 8) | code[np.minimum(r + 1, size - 1)]
        length = self.length[first]
        # a boundary of the kernel's walk whose bytes are all present
        fast = inside & (lens == length) & (r + length <= size)
        res = self.hw_code[hw]  # probe_is_prohibited_opcode, find_insn by the first halfword
        more = np.flatnonzero(self.hw_more[hw])
        if len(more):  # find_insn's opcode byte further on
            f = first[more]
            frag = code[np.minimum(r[more] + self.gbyte[f], size - 1)] & self.gmask[f]
            res[more] = np.where(self.known[f, frag], ok_code(Method.SINGLESTEP),
                                 refused_code(Reason.PROHIBITED_INSN))
        out[fast] = res[fast]
        return out


def classifier(backend: "S390xBackend", image: "Image") -> S390xBulkClassifier:
    """The bulk classifier ``Backend.bulk_classifier`` finds for s390x."""
    return S390xBulkClassifier(backend, image)
