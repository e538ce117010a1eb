"""The worker pool's shared result area (kpatch_core.pool.ResultArea): a range's arrays come
back equal through it, and a range that does not fit its slot comes back the usual way."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kpatch_core import analyze as A
from kpatch_core import pool
from kpatch_core.analysis import TextSymbols
from kpatch_core.image import Image
from kpatch_core.rules import Chunk

X86 = Path(__file__).resolve().parent.parent / "testdata" / "x86_64" / "vmlinux"


def _chunk(n: int) -> Chunk:
    rng = np.random.default_rng(n)
    return Chunk(rng.integers(0, 1 << 20, n).astype(np.uint32),
                 rng.integers(1, 16, n).astype(np.uint8),
                 rng.integers(0, 1 << 16, n).astype(np.uint16),
                 np.array([n], np.int64), np.array([-1], np.int64))


def test_area_round_trip_and_overflow():
    syms = TextSymbols(np.array([0x1000, 0x1010, 0x1100], np.uint64),
                       np.array([16, 0xF0, 8], np.uint64), ["a", "b", "c"],
                       np.array([1, 1, 1], np.uint8))
    parts = [(0, 2), (2, 3)]
    area = pool.ResultArea(syms, parts)
    assert int(area.slot[1]) == 0x100 + 2 and int(area.slot[2]) - int(area.slot[1]) == 8 + 1
    for idx, n in ((0, 0x102), (1, 9)):  # exactly a slot's size
        ch = _chunk(n)
        sent = area.put(idx, ch)
        assert len(sent.offs) == 0 and sent.in_area == n
        back = area.take(idx, sent)
        for k in ("offs", "lens", "codes"):
            assert np.array_equal(getattr(back, k), getattr(ch, k))
            assert getattr(back, k).dtype == getattr(ch, k).dtype
    big = _chunk(10)  # one more than slot 1 holds: sent whole
    assert area.put(1, big) is big and area.take(1, big) is big


def test_two_workers_equal_one_through_the_area():
    image = Image.open(str(X86))
    one = A.analyze(image, jobs=1)
    two = A.analyze(Image.open(str(X86)), jobs=2)
    for k in ("offs", "lens", "codes", "counts"):
        assert np.array_equal(getattr(one, k), getattr(two, k))
    assert not pool._AREA  # released after the pool


def test_rule_slices_cut_where_no_move_crosses():
    from kpatch_core import rules
    counts = np.array([5, 0, 700, 3, 40, 2000, 1], np.int64)
    n = int(counts.sum())
    old = rules.SLICE
    try:
        rules.SLICE = 64
        b = rules._slices(counts, n)
    finally:
        rules.SLICE = old
    assert b[0] == 0 and b[-1] == n and all(x < y for x, y in zip(b, b[1:]))
    starts = np.cumsum(counts) - counts
    for cut in b[1:-1]:
        f = int(np.searchsorted(np.cumsum(counts), cut, side="right"))
        assert cut == starts[f] or cut - starts[f] >= rules.SLICE_GUARD


def test_sliced_rule_pipeline_equals_one_pass(monkeypatch):
    from kpatch_core import rules
    whole = A.analyze(Image.open(str(X86)), jobs=1)
    monkeypatch.setattr(rules, "SLICE", 40)
    sliced = A.analyze(Image.open(str(X86)), jobs=1)
    for k in ("offs", "lens", "codes", "counts"):
        assert np.array_equal(getattr(whole, k), getattr(sliced, k))
    assert whole.facts == sliced.facts  # the trailing fill (stretches rejoined) included


def test_json_lines_forked_into_files_are_the_same_bytes(tmp_path, monkeypatch):
    import os

    from kpatch_core import json_lines as J
    a = A.analyze(Image.open(str(X86)), jobs=1)
    want = "".join(J.json_lines(a))
    for jobs in (2, 3):
        path = tmp_path / f"out{jobs}.jsonl"
        with open(path, "w") as out:
            out.write("head\n")  # buffered text before: written first
            J.write_json_lines(a, out, jobs=jobs, min_parallel=0)
            out.write("tail\n")
        assert path.read_text() == "head\n" + want + "tail\n"
    # a child that fails leaves its block to the parent
    parent = os.getpid()
    real = J.json_lines

    def failing(*args, **kw):
        if os.getpid() != parent:
            raise RuntimeError("child fails")
        return real(*args, **kw)
    monkeypatch.setattr(J, "json_lines", failing)
    path = tmp_path / "fallback.jsonl"
    with open(path, "w") as out:
        J.write_json_lines(a, out, jobs=2, min_parallel=0)
    assert path.read_text() == want
