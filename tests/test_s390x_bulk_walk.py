"""The linear s390x ``can_probe`` walk (arch/s390x/can_probe.py) against the kernel's walk written
out one instruction at a time: on random code cut into functions (gaps, empty and odd-placed
functions, runs of one instruction length that never resynchronise, tiny blocks so every
function crosses block edges), on the chain alone for random jumps, and on slices of the
cached real s390x kernels."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import real_vmlinux
from kpatch_arch.s390x import can_probe, insn_length

LENGTH = np.array([insn_length(b) for b in range(256)], np.int64)


def kernel_walk(code: bytes, starts: list[int], ends: list[int]
                ) -> tuple[list[int], list[int], list[int], list[int]]:
    """``can_probe``'s walk per function, one step at a time: (offsets, lengths, counts, fail)
    in the layout of :func:`can_probe.walk` (a stop, or bytes ending inside the instruction,
    listed with length 0)."""
    offs: list[int] = []
    lens: list[int] = []
    counts: list[int] = []
    fail: list[int] = []
    for s, e in zip(starts, ends):
        pos, k, stop = s, 0, -1
        while pos < e and pos < len(code):
            n = insn_length(code[pos])
            k += 1
            offs.append(pos - s)
            if code[pos] == 0 or pos + n > len(code):
                lens.append(0)
                stop = pos - s
                break
            lens.append(n)
            pos += n
        counts.append(k)
        fail.append(stop)
    return offs, lens, counts, fail


def _check(code: bytes, starts: list[int], ends: list[int], width: int) -> None:
    got = can_probe.walk(np.frombuffer(code, np.uint8), np.array(starts, np.int64),
                         np.array(ends, np.int64), LENGTH, width)
    want = kernel_walk(code, starts, ends)
    for g, w, what in zip(got, want, ("offsets", "lengths", "counts", "fail")):
        assert g.tolist() == w, what


@st.composite
def s390_code(draw: st.DrawFn) -> bytes:
    """Instructions of random lengths (0x00xx stops included), runs of one length (4-byte runs
    keep walks two bytes apart from ever meeting), and maybe a truncated tail."""
    out = b""
    for _ in range(draw(st.integers(1, 60))):
        if draw(st.integers(0, 4)) == 0:  # a run of one instruction
            first = draw(st.sampled_from([0x07, 0xA7, 0xC0, 0x47, 0x18]))
            out += (bytes([first]) + b"\x11" * 5)[:insn_length(first)] * draw(st.integers(2, 40))
            continue
        first = draw(st.one_of(st.sampled_from([0x00, 0x07, 0xA7, 0xC0, 0xE3, 0x47]),
                               st.integers(0, 255)))
        out += bytes([first]) + draw(st.binary(min_size=5, max_size=5))[:insn_length(first) - 1]
    return out + draw(st.binary(max_size=5))


@st.composite
def functions(draw: st.DrawFn, size: int, even: bool) -> tuple[list[int], list[int]]:
    """Sorted, disjoint ``[start, end)`` functions over ``size`` bytes: gaps, empty functions,
    the last one maybe running past the bytes."""
    cuts = sorted(set(draw(st.lists(st.integers(0, max(size, 1)), max_size=12))) | {0})
    if even:
        cuts = sorted({c & ~1 for c in cuts})
    starts: list[int] = []
    ends: list[int] = []
    for i, c in enumerate(cuts):
        nxt = cuts[i + 1] if i + 1 < len(cuts) else size + draw(st.integers(0, 8))
        starts.append(c)
        ends.append(draw(st.integers(c, nxt)) if draw(st.booleans()) else nxt)
    return starts, ends


@settings(max_examples=300, deadline=None)
@given(st.data(), s390_code(), st.booleans(), st.sampled_from([3, 6, 8, 17, 64, 1024]))
def test_walk_is_the_kernels_walk(data: st.DataObject, code: bytes, even: bool, width: int
                                  ) -> None:
    starts, ends = data.draw(functions(len(code), even))
    _check(code, starts, ends, width)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=400), st.integers(1, 6),
       st.sampled_from([1, 2, 6, 7, 50]))
def test_chain_is_the_sequential_chain(steps: list[int], phases: int, width: int) -> None:
    steps = [min(x, phases) for x in steps]
    jump = np.arange(len(steps)) + np.array(steps)
    want = np.zeros(len(steps), bool)
    q = 0
    while q < len(steps):
        want[q] = True
        q = int(jump[q])
    assert can_probe.chain(jump, phases, width).tolist() == want.tolist()


def test_walk_edge_cases() -> None:
    code = bytes([0xC0, 1, 2, 3, 4, 5, 0x07, 0x07, 0x00, 0x00, 0x47, 1, 2, 3])
    _check(code, [], [], 8)  # no functions
    _check(code, [0], [0], 8)  # one empty function
    _check(code, [4, 20], [12, 30], 8)  # a start inside an instruction; one past the bytes
    _check(code, [1, 5], [5, 14], 8)  # odd starts: byte positions
    _check(b"", [0], [4], 8)


@pytest.mark.realkernel
@pytest.mark.parametrize("name", ["s390x", "s390x-6.12", "7.2.13+deb14-s390x"])
def test_walk_on_real_kernel_slices(name: str) -> None:
    """Three slices of each cached kernel's text, walked both ways (the one-step walk in Python
    is slow: 1,500 functions per slice)."""
    from kpatch_core.analysis import TextSymbols
    from kpatch_core.image import Image
    image = Image.open(str(real_vmlinux(name)))
    syms = TextSymbols.build(image)
    n = len(syms)
    for lo in (0, n // 2, n - 1500):
        hi = min(lo + 1500, n)
        a = int(syms.addrs[lo])
        b = int(syms.addrs[hi - 1] + syms.sizes[hi - 1])
        code = image.backend.runtime_bytes(image, a, b + 32)
        starts = (syms.addrs[lo:hi] - np.uint64(a)).astype(np.int64).tolist()
        ends = [s + int(z) for s, z in zip(starts, syms.sizes[lo:hi].tolist())]
        _check(code, starts, ends, can_probe.WIDTH)
