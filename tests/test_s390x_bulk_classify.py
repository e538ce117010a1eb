"""The s390x classifier's halfword tables (arch/s390x/bulk.py ``_halfword_tables``) against the
per-byte form of ``probe_is_prohibited_opcode`` + ``find_insn`` they replace: every first
halfword, with random bytes after it, at even and odd buffer addresses, for both opcode tables."""
from __future__ import annotations

import numpy as np
import pytest

from kpatch_arch.s390x.bulk import S390xBulkClassifier, _halfword_tables, _tables
from kpatch_arch.s390x.opcodes import OPCODE_GROUPS
from kpatch_core.bulk import SLOW, ok_code, refused_code
from kpatch_core.verdict import Method, Reason


def per_byte(code: np.ndarray, rel: np.ndarray, lens: np.ndarray, source: str) -> np.ndarray:
    """The classifier's outcome computed byte by byte (the first byte's length and group byte,
    ``known[first, byte & mask]``, the prohibited halfwords)."""
    length, gbyte, gmask, known, bad = _tables(source)
    size = len(code)
    first = code[rel].astype(np.int64)
    hw = (first << 8) | code[rel + 1]
    frag = code[np.minimum(rel + gbyte[first], size - 1)] & gmask[first]
    refused = ~known[first, frag] | bad[hw]
    res = np.where(refused, refused_code(Reason.PROHIBITED_INSN), ok_code(Method.SINGLESTEP))
    fast = (lens == length[first]) & (rel + length[first] <= size)
    return np.where(fast, res, SLOW).astype(np.uint16)


@pytest.mark.parametrize("source", sorted(OPCODE_GROUPS))
@pytest.mark.parametrize("odd", [0, 1])
def test_halfword_tables_are_the_per_byte_rules(source: str, odd: int) -> None:
    rng = np.random.default_rng(15 + odd)
    hw = np.arange(1 << 16, dtype=np.uint32)
    insns = np.zeros((len(hw), 6), np.uint8)
    insns[:, 0], insns[:, 1] = hw >> 8, hw & 0xFF
    insns[:, 2:] = rng.integers(0, 256, (len(hw), 4), dtype=np.uint8)
    code = np.concatenate((np.zeros(odd, np.uint8), insns.reshape(-1), np.zeros(8, np.uint8)))
    rel = odd + 6 * np.arange(len(hw), dtype=np.int64)
    length = _tables(source)[0]
    lens = length[code[rel]]
    lens[::7] = -1  # unknown length: left to prepare
    clf = S390xBulkClassifier.__new__(S390xBulkClassifier)
    clf.length, clf.gbyte, clf.gmask, clf.known, clf.bad = _tables(source)
    clf.hw_code, clf.hw_more = _halfword_tables(source)
    base = 0x10000 + odd  # the buffer's address: instructions at even addresses
    got = clf.classify(code, base - odd, np.uint64(base) + rel.astype(np.uint64), rel, lens)
    assert got.tolist() == per_byte(code, rel, lens, source).tolist()
    # the byte-wise path (instructions at odd addresses) gives the same
    got2 = clf.classify(code, base - odd + 1, np.uint64(base) + rel.astype(np.uint64), rel, lens)
    assert got2.tolist() == got.tolist()
