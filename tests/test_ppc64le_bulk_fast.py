"""The ppc64le full-analysis fast paths (arch/ppc64le/bulk.py, arch/ppc64le/lookup_name.py)
against the per-word and per-symbol forms they replace: ``classify`` by key table against the
word-at-a-time classes (every key, random words, prefix suffixes, page starts, unaligned
buffers), ``entry_adjust`` against ``backend.adjust_kprobe_addr``, ``lookup_shifts`` against
``backend.lookup_name`` and the lockstep ``lookup_rec`` against ``KernelTables.lookup_rec``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import real_vmlinux
from kpatch_arch.ppc64le import bulk as ppc_bulk
from kpatch_arch.ppc64le.insn import OP_PREFIX, PAGE_SIZE
from kpatch_arch.ppc64le.lookup_name import lookup_rec_many
from kpatch_core.analysis import TextSymbols
from kpatch_core.bulk import SLOW, ok_code, refused_code
from kpatch_core.image import Image
from kpatch_core.verdict import Method, Reason

ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGES = [ROOT / "testdata" / "ppc64le" / n for n in ("vmlinux", "vmlinux-6.12")]
REAL = ["ppc64le", "ppc64le-6.12", "7.2.13+deb14-powerpc64le", "7.2.13+deb14-powerpc64le-64k"]


def reference_classify(code: np.ndarray, addrs: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """One word at a time: ``can_single_step``, the suffix rule, ``analyse_class``."""
    out = np.full(len(addrs), SLOW, np.uint16)
    for i, (a, r) in enumerate(zip(addrs.tolist(), rel.tolist())):
        if r < 4 or r + 4 > len(code):
            continue
        word = np.array([int.from_bytes(bytes(code[r:r + 4]), "little")], np.uint32)
        nostep, step = ppc_bulk.step_class(word)
        if nostep[0]:
            out[i] = refused_code(Reason.PROHIBITED_INSN)
        elif code[r - 1] >> 2 == OP_PREFIX and a % PAGE_SIZE:
            out[i] = refused_code(Reason.PREFIX_SUFFIX)
        else:
            out[i] = ok_code(Method.SINGLESTEP if step[0] else Method.EMULATE)
    return out


def _classifier() -> ppc_bulk.Ppc64leBulkClassifier:
    return ppc_bulk.Ppc64leBulkClassifier(None, None)  # type: ignore[arg-type]


def test_key_table_data_is_the_models() -> None:
    """The committed key table was generated from this model (else: regenerate it with
    ``python -m kpatch_arch.ppc64le.bulk``), and reads back as the model computes it."""
    from kpatch_arch.ppc64le import key_table_data
    assert key_table_data.FINGERPRINT == ppc_bulk.key_table_fingerprint(), \
        "stale arch/ppc64le/key_table_data.py: run python -m kpatch_arch.ppc64le.bulk"
    assert (ppc_bulk.key_table() == ppc_bulk.model_key_table()).all()


def test_word_tables_hold_for_every_key_whatever_the_register_fields() -> None:
    """Where no register-field rule applies, the key's outcome is every word's outcome."""
    table, nostep, fields = ppc_bulk.word_tables()
    rng = np.random.default_rng(15)
    keys = np.arange(64 << 11, dtype=np.uint32)
    for _ in range(4):
        regs = rng.integers(0, 1 << 15, len(keys), dtype=np.uint32) << np.uint32(11)
        words = ((keys >> 11) << 26) | regs | (keys & 0x7FF)
        assert (ppc_bulk._keys(words) == keys).all()
        ns, step = ppc_bulk.step_class(words)
        want = np.where(ns, refused_code(Reason.PROHIBITED_INSN),
                        np.where(step, ok_code(Method.SINGLESTEP), ok_code(Method.EMULATE)))
        assert (nostep == ns).all()
        plain = ~fields
        assert (table[plain] == want[plain]).all()
    assert fields.sum() < len(keys) // 4  # the per-word rules stay the exception


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=600), st.integers(0, 3), st.integers(0, 7),
       st.sampled_from([0, PAGE_SIZE - 64, 0x1000]))
def test_classify_is_the_word_at_a_time_rules(raw: bytes, misalign: int, prefix_every: int,
                                              page: int) -> None:
    buf = bytearray(raw)
    if prefix_every:  # prefix words (primary opcode 1) so suffixes occur
        for i in range(0, len(buf) - 3, 4 * prefix_every):
            buf[i + 3] = (OP_PREFIX << 2) | (buf[i + 3] & 3)
    code = np.frombuffer(bytes(buf), np.uint8)
    base = page + misalign
    rel = np.arange(-4, len(code) + 4, 4, dtype=np.int64) + ((-base) % 4)
    addrs = (np.int64(base) + rel).astype(np.uint64)
    got = ppc_bulk.Ppc64leBulkClassifier.classify(_classifier(), code, base, addrs, rel, rel * 0)
    assert got.tolist() == reference_classify(code, addrs, rel).tolist()


def test_classify_suffix_rule_at_a_page_start() -> None:
    """A word after a prefix word is refused, unless it starts a page (then it is judged alone)."""
    nop, prefix = 0x60000000, (OP_PREFIX << 26) | 0x123
    words = np.array([nop, prefix, nop, prefix, nop, nop], np.uint32)
    code = words.view(np.uint8)
    base = PAGE_SIZE - 16  # the word at rel 16 starts a page
    rel = np.arange(0, len(code), 4, dtype=np.int64)
    addrs = np.uint64(base) + rel.astype(np.uint64)
    got = ppc_bulk.Ppc64leBulkClassifier.classify(_classifier(), code, base, addrs, rel, rel * 0)
    assert got[2] == refused_code(Reason.PREFIX_SUFFIX)
    assert got[4] == ok_code(Method.EMULATE)  # after a prefix, but at the page start
    assert got.tolist() == reference_classify(code, addrs, rel).tolist()


@pytest.mark.parametrize("path", TEST_IMAGES, ids=lambda p: p.name)
def test_classify_on_test_images(path: Path) -> None:
    image = Image.open(str(path))
    clf = image.backend.bulk_classifier(image)
    syms = TextSymbols.build(image)
    a, b = int(syms.addrs[0]), int(syms.addrs[-1] + syms.sizes[-1])
    code = np.frombuffer(image.backend.runtime_bytes(image, a, b), np.uint8)
    rel = np.arange(0, len(code), 4, dtype=np.int64)
    addrs = np.uint64(a) + rel.astype(np.uint64)
    assert clf.classify(code, a, addrs, rel, rel * 0).tolist() == \
        reference_classify(code, addrs, rel).tolist()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(1, 8), min_size=1, max_size=40), min_size=1, max_size=5),
       st.lists(st.integers(-8, 1300), min_size=1, max_size=60))
def test_lookup_rec_many_is_lookup_rec(groups: list[list[int]], starts: list[int]) -> None:
    """Records 4-32 bytes apart (several in one 16-byte window: which one the binary search
    meets first matters), split into page groups."""
    from kpatch_core.tables import KernelTables
    recs = 64 + np.cumsum(np.concatenate([4 * np.array(g) for g in groups])).astype(np.uint64)
    starts = [64 + x for x in starts]
    cut = np.cumsum([len(g) for g in groups])[:-1]
    gs = list(np.split(recs, cut))

    class _T:
        def ftrace_pages(self, page_size: int, entry_size: int) -> list[np.ndarray]:
            return gs
    s = np.array(starts, np.uint64)
    got = lookup_rec_many(gs, s, s + np.uint64(16), 4)
    want = [KernelTables.lookup_rec(_T(), int(x), int(x) + 16, 0, 0, 4)  # type: ignore[arg-type]
            for x in starts]
    assert got.tolist() == want


def _per_symbol(image: Image) -> tuple[TextSymbols, list[int], list[tuple[int, bool]]]:
    syms = TextSymbols.build(image)
    b = image.backend
    la = [b.lookup_name(image, n, 0) for n in syms.names]
    shifts = [0 if x is None else x - a for x, a in zip(la, syms.addrs.tolist())]
    adj = [b.adjust_kprobe_addr(image, a, s) for a, s in zip(syms.addrs.tolist(), shifts)]
    return syms, shifts, adj


def _check_symbols(image: Image) -> None:
    clf = image.backend.bulk_classifier(image)
    syms, shifts, adj = _per_symbol(image)
    assert clf.lookup_shifts(syms.names, syms.addrs).tolist() == shifts
    got, flag = clf.entry_adjust(syms.addrs, np.array(shifts, np.int64))
    assert got.tolist() == [x for x, _ in adj] and flag.tolist() == [f for _, f in adj]
    # offsets around the entry window (kretprobe on SYM+off)
    addrs = np.repeat(syms.addrs[::25], 7)
    offs = np.tile(np.array([-4, 0, 4, 8, 12, 16, 20], np.int64), len(syms.addrs[::25]))
    got, flag = clf.entry_adjust(addrs, offs)
    want = [image.backend.adjust_kprobe_addr(image, a, o) for a, o in zip(addrs.tolist(),
                                                                        offs.tolist())]
    assert got.tolist() == [x for x, _ in want] and flag.tolist() == [f for _, f in want]


@pytest.mark.parametrize("path", TEST_IMAGES, ids=lambda p: p.name)
def test_symbol_hooks_on_test_images(path: Path) -> None:
    _check_symbols(Image.open(str(path)))


@pytest.mark.realkernel
@pytest.mark.parametrize("name", REAL)
def test_symbol_hooks_on_real_kernels(name: str) -> None:
    _check_symbols(Image.open(str(real_vmlinux(name))))
