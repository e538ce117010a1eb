"""Runs of equal instructions classified once (kpatch_core.uniform) and the padding-run finder
(kpatch_core.decode.Runs.find): the shortcut gives the same arrays as the per-instruction path."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpatch_core import uniform
from kpatch_core.decode import Runs

KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache/kpatch-kernels"))


def naive_runs(code: np.ndarray, minimum: int) -> tuple[list[int], list[int]]:
    """Every maximal run of one byte value at least ``minimum`` long, byte by byte."""
    starts, ends = [], []
    i, n = 0, len(code)
    while i < n:
        j = i
        while j < n and code[j] == code[i]:
            j += 1
        if j - i >= minimum:
            starts.append(i)
            ends.append(j)
        i = j
    return starts, ends


pieces = st.lists(st.tuples(st.sampled_from([0x00, 0x90, 0xCC, 0x41]),
                            st.sampled_from([1, 2, 15, 16, 17, 127, 128, 129, 255, 256, 257, 700])),
                  max_size=12)


@settings(max_examples=300, deadline=None)
@given(pieces, st.sampled_from([16, 32, 256]))
def test_runs_find_is_every_long_run(parts: list[tuple[int, int]], minimum: int) -> None:
    code = np.concatenate([np.full(n, v, np.uint8) for v, n in parts]) if parts else \
        np.zeros(0, np.uint8)
    s, e = Runs.find(code, minimum)
    assert (s.tolist(), e.tolist()) == naive_runs(code, minimum)


def stream(layout: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, lengths) of instructions laid back to back: (length, count) pieces."""
    lens = np.concatenate([np.full(c, n, np.int64) for n, c in layout])
    offs = np.concatenate(([0], np.cumsum(lens)[:-1]))
    return offs, lens


BASE = 0x1000
INPUTS = (0, 30, np.zeros(0, np.uint64))


def stretches_of(code: np.ndarray, offs: np.ndarray, lens: np.ndarray, func: np.ndarray | None = None,
                 aa: np.ndarray | None = None, inputs: tuple = INPUTS, bl: bool = True
                 ) -> list[tuple[int, int]]:
    addrs = np.uint64(BASE) + offs.astype(np.uint64)
    func = np.zeros(len(offs), np.int64) if func is None else func
    runs = Runs.find(code, Runs.MIN)
    period = np.ones(len(runs[0]), np.int64)
    return uniform.shared_stretches((runs[0], runs[1], period), BASE, lens, func, addrs,
                                    addrs if aa is None else aa, np.array([bl] * (int(func.max()) + 1)),
                                    1, inputs)


def test_run_whose_first_bytes_an_immediate_holds() -> None:
    # mov $0xcccccccc, %eax (b8 cc cc cc cc) followed by int3 padding: the stretch starts where
    # the instructions are one-byte int3s, never inside the immediate
    code = np.concatenate((np.frombuffer(b"\xb8", np.uint8), np.full(3000, 0xCC, np.uint8)))
    offs, lens = stream([(1 + 4, 1), (1, 2996)])
    got = stretches_of(code, offs, lens)
    assert got
    for j0, j1 in got:
        assert int(offs[j0]) >= 5 and (lens[j0:j1] == 1).all()


def test_run_at_the_range_edge_keeps_its_windows_inside() -> None:
    code = np.full(3000, 0xCC, np.uint8)
    offs, lens = stream([(1, 3000)])
    got = stretches_of(code, offs, lens)
    assert got == [(0, 3000 - 30 + 1)]  # the last 29 bytes' windows run past the run


def test_change_points_moved_addresses_and_functions_split_stretches() -> None:
    code = np.full(4000, 0x90, np.uint8)
    offs, lens = stream([(1, 4000)])
    pts = np.array([BASE + 1500, BASE + 1501], np.uint64)  # one site: its own answer
    got = stretches_of(code, offs, lens, inputs=(0, 30, pts))
    assert (0, 1500) in got and (1501, 4000 - 29) in got
    aa = np.uint64(BASE) + offs.astype(np.uint64)
    aa[100] += np.uint64(4)  # 100 moves to 104 (arch_adjust_kprobe_addr)
    got = stretches_of(code, offs, lens, aa=aa)
    members = {j for j0, j1 in got for j in range(j0 + 1, j1)}
    assert not ({100, 104} & members)
    func = np.repeat([0, 1], 2000)  # a run across two functions: never one stretch
    got = stretches_of(code, offs, lens, func=func)
    assert all(func[j0] == func[j1 - 1] for j0, j1 in got)
    assert stretches_of(code, offs, lens, bl=False) == []  # blacklist decided per address


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x90, 0xCC, 0x00]), st.integers(1, 3000)), min_size=1,
                max_size=6), st.lists(st.integers(0, 9000), max_size=6))
def test_stretch_members_have_their_heads_inputs(parts: list[tuple[int, int]], pts: list[int]) -> None:
    code = np.concatenate([np.full(n, v, np.uint8) for v, n in parts])
    offs, lens = stream([(1, len(code))])
    points = np.unique(np.array(pts, np.uint64) + np.uint64(BASE))
    got = stretches_of(code, offs, lens, inputs=(0, 30, points))
    for j0, j1 in got:
        for j in (j0 + 1, (j0 + j1) // 2, j1 - 1):
            a, b = int(offs[j0]), int(offs[j])
            assert (code[a:a + 30] == code[b:b + 30]).all() and b + 30 <= len(code)
            assert np.searchsorted(points, BASE + a, "right") == np.searchsorted(points, BASE + b, "right")


@pytest.mark.parametrize("name", ["x86_64", "x86_64-6.12"])
def test_real_kernel_same_arrays_with_and_without_the_shortcut(name: str, monkeypatch) -> None:
    path = KERNELS / name / "vmlinux"
    if not path.exists():
        pytest.skip(f"{path} not cached (tests/data/oracle/fetch.sh)")
    from kpatch_core import fill
    from kpatch_core.analyze import analyze
    from kpatch_core.image import Image
    seen: list[int] = []
    real = uniform.shared_stretches

    def counted(*a, **k):
        got = real(*a, **k)
        seen.append(sum(j1 - j0 - 1 for j0, j1 in got))
        return got
    monkeypatch.setattr(uniform, "shared_stretches", counted)
    a = analyze(Image.open(path), jobs=1, facts=False)
    assert sum(seen) > 1_000_000  # the padding symbols' int3 runs were shared
    monkeypatch.setattr(uniform, "shared_stretches", lambda *a, **k: [])
    real_fill = fill.trailing_fill
    monkeypatch.setattr(fill, "trailing_fill",
                        lambda *a, **k: real_fill(*a[:6]))  # no stretches: every instruction
    b = analyze(Image.open(path), jobs=1, facts=False)
    for col in ("offs", "lens", "codes", "counts"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert np.array_equal(a.column("fill"), b.column("fill"))


x86_bytes = st.lists(st.one_of(st.binary(min_size=1, max_size=40),
                               st.tuples(st.sampled_from([0x90, 0xCC]), st.integers(250, 700))),
                     min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(x86_bytes, st.integers(0, 300))
def test_linear_decode_same_with_and_without_the_padding_run_steps(parts, cut: int) -> None:
    """decode_function steps long int3/nop runs without capstone (decode.Runs): the same
    boundaries as decoding them, whatever bytes come before a run (an immediate running into
    it), wherever the decoded range ends (inside or at the edge of a run)."""
    import ctypes

    import capstone

    from kpatch_core.decode import LinearDecoder, decode_function
    raw = b"".join(p if isinstance(p, bytes) else bytes([p[0]]) * p[1] for p in parts)
    size = max(1, len(raw) - cut)
    buf = ctypes.create_string_buffer(raw + bytes(32), len(raw) + 32)
    dec = LinearDecoder(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    code = np.frombuffer(raw, np.uint8)
    runs = Runs(code, dec)

    def walk(with_runs: bool) -> tuple[list[int], list[int], int | None]:
        o, s, f = decode_function(dec, ctypes.addressof(buf), 0, size, len(raw), 0x1000,
                                  lambda p: None, 1, None, runs if with_runs else None)
        return o.tolist(), s.tolist(), f
    assert walk(True) == walk(False)
