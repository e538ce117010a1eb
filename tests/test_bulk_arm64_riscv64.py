"""The arm64 and riscv64 bulk classifiers (arch/<arch>/bulk.py) against the backends' ``prepare``.

Two sources of instructions: every address of the committed test images (testdata/arm64 and
testdata/riscv64, 6.1 and 6.12 rule sets), and random instruction streams (hypothesis) biased
towards the decode-table rows, exclusive loads/stores and symbol starts, run through a minimal
stand-in image so that ``prepare`` and the classifier read exactly the same bytes.  A row applied
differently by the vectorised path, a wrong atomic window or a wrong ``arch_check_kprobe`` walk
gives a different outcome code at some address.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpatch_core import analyze as A
from kpatch_core.features import VERIFIED, FeatureSet
from kpatch_core.image import Image
from kpatch_core.symbols import Kallsyms
from kpatch_core.verdict import Reason

from kpatch_arch import arm64, riscv64
from kpatch_arch.base import PrepareContext

from conftest import open_image

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
ARM64_IMAGES = sorted((TESTDATA / "arm64").glob("vmlinux-*"))
RISCV_IMAGES = sorted((TESTDATA / "riscv64").glob("vmlinux-*"))
U32 = st.integers(0, 0xFFFFFFFF)


def _prepare_code(image, addr: int) -> int | None:
    func = image.kallsyms.containing(addr)
    if func is None:
        return None
    return A.outcome_code(image.backend.prepare(PrepareContext(image, addr, func)))


def _classify_range(image, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``insn_align`` address of ``[start, end)`` and the classifier's codes for them,
    given the runtime bytes from ``start`` as the analysis gives them."""
    backend = image.backend
    clf = backend.bulk_classifier(image)
    assert clf is not None, "no bulk classifier found for the backend"
    code = np.frombuffer(backend.runtime_bytes(image, start, end + 32), np.uint8)
    addrs = np.arange(start, end, backend.insn_align, dtype=np.uint64)
    rel = (addrs - np.uint64(start)).astype(np.int64)
    return addrs, clf.classify(code, start, addrs, rel, np.full(len(addrs), -1, np.int64))


def _compare_all(image, start: int, end: int) -> set[str]:
    """Asserts classifier == prepare at every address; returns the outcome labels seen."""
    addrs, got = _classify_range(image, start, end)
    labels = set()
    for a, g in zip(addrs.tolist(), got.tolist()):
        want = _prepare_code(image, a)
        if want is None:
            continue
        assert g != A.SLOW, f"{a:#x}: left to prepare although its bytes are all there"
        assert g == want, (hex(a), A.decode_code(g), A.decode_code(want))
        labels.add(A.decode_code(g).label)
    return labels


# --- the committed images: every address --------------------------------------------------------
@pytest.mark.parametrize("path", ARM64_IMAGES, ids=lambda p: p.name)
@pytest.mark.parametrize("lse", [True, False], ids=["lse", "llsc"])
def test_arm64_images_every_address(path: Path, lse: bool) -> None:
    image = open_image(path, RUNTIME_LSE_ATOMICS=lse)
    labels = _compare_all(image, image.tables.stext, image.tables.etext)
    assert {"simulate", "singlestep", "PROHIBITED_INSN", "EXTABLE", "EXCLUSIVE_WINDOW"} <= labels


@pytest.mark.parametrize("path", RISCV_IMAGES, ids=lambda p: p.name)
def test_riscv64_images_every_address(path: Path) -> None:
    image = Image.open(str(path))
    labels = _compare_all(image, image.tables.stext, image.tables.etext)
    assert {"simulate", "singlestep", "PROHIBITED_INSN", "NOT_BOUNDARY"} <= labels


@pytest.mark.parametrize("path", ARM64_IMAGES + RISCV_IMAGES,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_classifier_is_used_and_sparse_subsets_agree(path: Path) -> None:
    """The analysis finds the bulk module, and classifying a subset (as the analysis does, after
    the table rules) gives the same codes as classifying everything."""
    image = Image.open(str(path))
    t = image.tables
    addrs, every = _classify_range(image, t.stext, t.etext)
    clf = image.backend.bulk_classifier(image)
    code = np.frombuffer(image.backend.runtime_bytes(image, t.stext, t.etext + 32), np.uint8)
    pick = np.arange(1, len(addrs), 3)
    sub = clf.classify(code, t.stext, addrs[pick], (addrs[pick] - np.uint64(t.stext)).astype(
        np.int64), np.full(len(pick), -1))
    assert np.array_equal(sub, every[pick])


def test_riscv64_analysis_walks_kernel_boundaries() -> None:
    """With ``fallback_length`` the analysis lists the kernel's instruction starts: none of the
    listed addresses is refused as NOT_BOUNDARY."""
    for path in RISCV_IMAGES:
        a = A.analyze(Image.open(str(path)), jobs=1)
        labels = {A.decode_code(c).label for c in a.codes.tolist()}
        assert "NOT_BOUNDARY" not in labels and "singlestep" in labels


# --- random instruction streams through a stand-in image -----------------------------------------
class _Config:
    def __init__(self, facts: dict[str, bool]) -> None:
        self.facts = facts

    def enabled(self, name: str) -> bool:
        return self.facts.get(name, False)


class _Symtab:
    def value(self, name: str) -> None:
        return None


class _Tables:
    def __init__(self, extable: list[int]) -> None:
        self.extable = np.array(sorted(set(extable)), np.uint64)

    def has_extable(self, addr: int) -> bool:
        return addr in self.extable.tolist()

    def ftrace_sites_in(self, start: int, end: int) -> list[int]:
        return []


class _Kallsyms:
    """Symbols at ``starts`` (sorted, unique), each ending at the next; the real lookup."""

    containing = Kallsyms.containing
    containing_starts = Kallsyms.containing_starts

    def __init__(self, starts: list[int], end: int) -> None:
        s = sorted(set(starts))
        self.uaddrs = np.array(s, np.uint64)
        self.usizes = np.diff(np.array(s + [end], np.uint64))
        self.names = [f"f{i}" for i in range(len(s))]
        self.ufirst = np.arange(len(s))


class _Image:
    """Just what ``prepare``, ``runtime_bytes`` and the classifiers read."""

    def __init__(self, backend, version, base: int, data: bytes, starts: list[int],
                 extable: list[int]) -> None:
        self.backend = backend
        self.version = version
        self.features = FeatureSet.decide(version, backend.name)
        self.base = base
        self.data = data
        self.kallsyms = _Kallsyms(starts, base + len(data))
        self.tables = _Tables(extable)
        self.config = _Config({})
        self.symtab = _Symtab()

    def read(self, addr: int, n: int) -> bytes:
        lo = max(addr - self.base, 0)
        return self.data[lo:max(addr + n - self.base, lo)]


VERSIONS = {arch: {p.name.split("-")[1]: Image.open(str(p)).version
                   for p in (TESTDATA / arch).glob("vmlinux-6.1*") if p.name.count("-") == 1}
            for arch in ("arm64", "riscv64")}
BASE = 0xFFFF800008010000


def _biased_word(rows: list[tuple[int, int]]) -> st.SearchStrategy[int]:
    """A random word, or one matching a (mask, value) row with random other bits."""
    row = st.tuples(st.sampled_from(rows), U32).map(lambda t: t[0][1] | (t[1] & ~t[0][0]))
    return st.one_of(U32, row, row)


_ARM_ROWS = [(r.mask, r.value) for v in VERIFIED
             for r in arm64.decode_table(FeatureSet.decide(v, "arm64"))]
_ARM_ROWS += [arm64.LOAD_EX, arm64.STORE_EX] * 8  # exclusive windows often


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.sampled_from(["6.1", "6.12"]),
       words=st.lists(_biased_word(_ARM_ROWS), min_size=1, max_size=80),
       starts=st.lists(st.integers(0, 79), max_size=4),
       extable=st.lists(st.integers(0, 79), max_size=3),
       tail=st.binary(max_size=3))
def test_arm64_random_words(rules: str, words: list[int], starts: list[int],
                            extable: list[int], tail: bytes) -> None:
    """``tail``: a partial last word (the end of a section): UNDECODABLE there."""
    data = np.array(words, "<u4").tobytes() + tail
    n = len(words)
    image = _Image(arm64.Arm64Backend(), VERSIONS["arm64"][rules], BASE, data,
                   [BASE] + [BASE + 4 * (s % n) for s in starts],
                   [BASE + 4 * (e % n) for e in extable])
    _compare_all(image, BASE, BASE + len(data))


def _rv_rows(compressed: bool) -> list[tuple[int, int]]:
    rows = [(r.mask, r.value) for table in riscv64.DECODE_TABLES.values() for r in table]
    return [(m, v) for m, v in rows if (v & 3 != 3) == compressed]


_RV_PIECE = st.one_of(
    st.integers(0, 0xFFFF).map(lambda h: h.to_bytes(2, "little")),  # any halfword
    _biased_word(_rv_rows(True)).map(lambda w: (w & 0xFFFF).to_bytes(2, "little")),
    _biased_word(_rv_rows(False)).map(lambda w: (w | 3).to_bytes(4, "little")),
    U32.map(lambda w: (w | 3).to_bytes(4, "little")),  # a 4-byte instruction
    st.just(riscv64.NOP_BYTES),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.sampled_from(["6.1", "6.12"]),
       pieces=st.lists(_RV_PIECE, min_size=1, max_size=60),
       starts=st.lists(st.integers(0, 200), max_size=4),
       tail=st.binary(max_size=1))
def test_riscv64_random_stream(rules: str, pieces: list[bytes], starts: list[int],
                               tail: bytes) -> None:
    """``tail``: an odd last byte (the end of a section): UNDECODABLE there if on the walk."""
    data = b"".join(pieces) + tail
    nh = len(data) // 2
    image = _Image(riscv64.Riscv64Backend(), VERSIONS["riscv64"][rules], BASE, data,
                   [BASE] + [BASE + 2 * (s % nh) for s in starts], [])
    _compare_all(image, BASE, BASE + len(data))


def test_stand_in_reaches_every_outcome() -> None:
    """The stand-in image is not vacuous: hand-made streams give every outcome class."""
    ldxr, stxr, add = 0xC85F7C00, 0xC8007C00, 0x8B000000
    words = [add, ldxr, add, stxr, add, 0xD4000001, 0x14000000]
    data = np.array(words, "<u4").tobytes() + b"\0\0"  # a section ending mid-word
    image = _Image(arm64.Arm64Backend(), VERSIONS["arm64"]["6.1"], BASE, data, [BASE], [BASE + 16])
    _, got = _classify_range(image, BASE, BASE + len(data))
    labels = [A.decode_code(c).label for c in got.tolist()]
    assert labels == ["singlestep", "PROHIBITED_INSN", "EXCLUSIVE_WINDOW", "PROHIBITED_INSN",
                      "EXTABLE", "PROHIBITED_INSN", "simulate", "UNDECODABLE"]
    # riscv: c.addi (2), nop (4), jal (4), ecall (4), one byte at the end of the section
    stream = bytes.fromhex("0501") + riscv64.NOP_BYTES + (0x0000006F).to_bytes(4, "little") + \
        (0x00000073).to_bytes(4, "little") + b"\1"
    image = _Image(riscv64.Riscv64Backend(), VERSIONS["riscv64"]["6.12"], BASE, stream, [BASE], [])
    _, got = _classify_range(image, BASE, BASE + len(stream))
    labels = [A.decode_code(c).label for c in got.tolist()]
    assert labels == ["singlestep", "singlestep", "NOT_BOUNDARY", "simulate", "NOT_BOUNDARY",
                      "PROHIBITED_INSN", "NOT_BOUNDARY", "UNDECODABLE"]
    assert A.decode_code(int(got[2])).reason is Reason.NOT_BOUNDARY
