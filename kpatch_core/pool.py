"""The worker pool of the full analysis: function ranges of about equal size, handed out to one
forked process per core as workers free up (the shared state is built before the fork).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import attrs
import numpy as np

from .analysis import TextSymbols
from .rules import Chunk, register_kprobes
from .rules import concat_checks as rules_concat_checks


def indexed_worker(arg: tuple[int, tuple[int, int]]) -> tuple[int, Chunk]:
    return arg[0], register_kprobes(*arg[1])


def filled_worker(arg: tuple[int, tuple[int, int]]) -> tuple[int, Chunk, np.ndarray]:
    """A range through :func:`register_kprobes`, with its symbols' trailing fill counted
    (kpatch_core.fill) in the same worker; its per-instruction arrays go back through the
    shared :class:`ResultArea` when there is one (the message stays small)."""
    idx, (lo, hi) = arg
    ch = register_kprobes(lo, hi)
    fill = chunk_fill(lo, hi, ch)
    area = _AREA[0] if _AREA else None
    if area is not None:
        ch = area.put(idx, ch)
    return idx, ch, fill


class ResultArea:
    """Anonymous shared memory (mapped before the fork) where each worker writes its range's
    per-instruction arrays (offsets u32, lengths u8, codes u16) in the range's own slot, so a
    worker never waits for the parent to read megabytes through a pipe (on a 2-core machine
    the parent is often not running: each pipe-buffer-full of a result waited for it).  A
    range has at most one instruction per byte plus one stop entry per symbol: its slot holds
    that many; a range that would not fit is sent the usual way."""

    def __init__(self, syms: TextSymbols, parts: list[tuple[int, int]]) -> None:
        import mmap
        sizes = [_range_bytes(syms, p) + (p[1] - p[0]) for p in parts]
        self.slot = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        total = int(self.slot[-1]) + 1
        total += total & 1  # the u16 view starts on an even offset
        self.total = total
        self._mm = mmap.mmap(-1, 7 * total)
        self.offs = np.frombuffer(self._mm, np.uint32, total, 0)
        self.lens = np.frombuffer(self._mm, np.uint8, total, 4 * total)
        self.codes = np.frombuffer(self._mm, np.uint16, total, 5 * total)

    def put(self, idx: int, ch: Chunk) -> Chunk:
        """(worker) ``ch``'s arrays written to slot ``idx``: the chunk without them, with their
        length in ``in_area`` (``ch`` itself when they do not fit)."""
        a, b = int(self.slot[idx]), int(self.slot[idx + 1])
        n = len(ch.offs)
        if n > b - a:
            return ch
        self.offs[a:a + n] = ch.offs
        self.lens[a:a + n] = ch.lens
        self.codes[a:a + n] = ch.codes
        empty = np.zeros(0, np.uint8)
        return attrs.evolve(ch, offs=empty.astype(np.uint32), lens=empty,
                            codes=empty.astype(np.uint16), in_area=n)

    def take(self, idx: int, ch: Chunk) -> Chunk:
        """(parent) ``ch`` with its arrays as views of slot ``idx`` (when it was put there)."""
        if ch.in_area < 0:
            return ch
        a = int(self.slot[idx])
        n = ch.in_area
        return attrs.evolve(ch, offs=self.offs[a:a + n], lens=self.lens[a:a + n],
                            codes=self.codes[a:a + n], in_area=-1)


_AREA: list[ResultArea] = []  # the shared result area of the running pool (forked workers)


def chunk_fill(lo: int, hi: int, ch: Chunk) -> np.ndarray:
    """Per symbol of ``[lo, hi)``: its trailing fill instructions (fill.trailing_fill)."""
    from .fill import trailing_fill
    from .rules import STATE
    syms: TextSymbols = STATE["syms"]
    sub = TextSymbols(syms.addrs[lo:hi], syms.sizes[lo:hi], syms.names[lo:hi], syms.types[lo:hi])
    first = np.concatenate(([0], np.cumsum(ch.counts)[:-1])).astype(np.int64) \
        if len(ch.counts) else ch.counts
    return trailing_fill(STATE["image"], sub, first, ch.counts, ch.offs, ch.lens, ch.stretches,
                         STATE.get("range_bytes"))


def run_filled(syms: TextSymbols, jobs: int | None, progress: Callable[[int, int], None] | None,
               meanwhile: Callable[[], Any]
               ) -> tuple[list[Chunk], Any, np.ndarray]:
    """:func:`run`, with each symbol's trailing fill counted by the workers (so no process
    counts it after they finish): (chunks, meanwhile's result, fill per symbol)."""
    fills: list[np.ndarray] = []
    chunks, extra = run(syms, jobs, progress, meanwhile, fills)
    fill = np.concatenate(fills) if fills else np.zeros(0, np.int64)
    return chunks, extra, fill


PARTS_PER_JOB = 16  # ranges handed out per worker process (smaller last ranges: the workers end together)
MIN_PARTS = 16  # ranges at least (cache-sized arrays; see run)


def _range_bytes(syms: TextSymbols, part: tuple[int, int]) -> int:
    """Bytes of text symbols ``[a, b)`` span."""
    a, b = part
    return int(syms.addrs[b - 1] + syms.sizes[b - 1] - syms.addrs[a])


def split(syms: TextSymbols, parts: int) -> list[tuple[int, int]]:
    """Function ranges of about equal byte size."""
    n = len(syms)
    if n == 0:
        return []
    cum = np.cumsum(syms.sizes.astype(np.int64))
    total = int(cum[-1]) or 1
    bounds = [0]
    for k in range(1, parts):
        bounds.append(int(np.searchsorted(cum, total * k // parts)))
    bounds.append(n)
    bounds = sorted(set(bounds))
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def run(syms: TextSymbols, jobs: int | None, progress: Callable[[int, int], None] | None,
        meanwhile: Callable[[], Any], fills: list[np.ndarray] | None = None
        ) -> tuple[list[Chunk], Any]:
    """Every function of ``syms`` through :func:`register_kprobes` (the shared state is ready):
    in ``jobs`` forked workers (default: every core), or in this process for one job.
    ``meanwhile()`` runs while the workers decode; its result is returned with the chunks.
    ``fills``, when given, receives each chunk's trailing fill counts (:func:`chunk_fill`)."""
    jobs = jobs or os.cpu_count() or 1
    # small ranges even in one process: each range's arrays stay cache-sized (one range of the
    # whole text costs twice the CPU in page faults and memory traffic, and 1 GB of RSS)
    parts = split(syms, max(PARTS_PER_JOB * jobs, MIN_PARTS))
    chunks: list[Chunk] = []
    if jobs > 1 and len(parts) > 1:
        import multiprocessing as mp

        import numpy.ma  # noqa: F401  (np.unique imports it on first use: once, not per worker)
        ctx = mp.get_context("fork")
        # small ranges handed out as workers free up, so no worker idles at the end
        done: dict[int, Chunk] = {}
        done_fill: dict[int, np.ndarray] = {}
        area = ResultArea(syms, parts) if fills is not None else None
        _AREA[:] = [area] if area is not None else []
        try:
            with ctx.Pool(jobs) as pool:
                worker: Callable[[tuple[int, tuple[int, int]]], tuple[Any, ...]] = \
                    indexed_worker if fills is None else filled_worker
                # largest ranges first (a range cannot cut a symbol: the padding symbols at the
                # end of text make one range several times the others), so none is left for last
                order = sorted(enumerate(parts), key=lambda ip: -_range_bytes(syms, ip[1]))
                it = pool.imap_unordered(worker, order, chunksize=1)
                extra = meanwhile()
                for k, got in enumerate(it):
                    done[got[0]] = area.take(got[0], got[1]) if area is not None else got[1]
                    if fills is not None:
                        done_fill[got[0]] = got[2]
                    if progress:
                        progress(k + 1, len(parts))
        finally:
            _AREA.clear()
        chunks = [done[i] for i in range(len(parts))]
        if fills is not None:
            fills.extend(done_fill[i] for i in range(len(parts)))
    else:
        for k, p in enumerate(parts):
            chunks.append(register_kprobes(*p))
            if fills is not None:
                fills.append(chunk_fill(p[0], p[1], chunks[-1]))
            if progress:
                progress(k + 1, len(parts))
        extra = meanwhile()
    return chunks, extra


def concat_checks(chunks: list[Chunk]) -> dict[str, np.ndarray]:
    """The chunks' function checks (kpatch_core.rules.function_checks) joined."""
    return rules_concat_checks([c.func_facts for c in chunks])


def concat(chunks: list[Chunk]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                         np.ndarray, np.ndarray]:
    """The chunks' arrays joined: (lo, counts, offs, lens, codes, fail); ``lo`` is each
    symbol's first instruction in the flat arrays."""
    if chunks:
        offs = np.concatenate([c.offs for c in chunks])
        lens = np.concatenate([c.lens for c in chunks])
        codes = np.concatenate([c.codes for c in chunks])
        counts = np.concatenate([c.counts for c in chunks])
        fail = np.concatenate([c.fail for c in chunks])
    else:
        offs = np.zeros(0, np.uint32)
        lens = np.zeros(0, np.uint8)
        codes = np.zeros(0, np.uint16)
        counts = np.zeros(0, np.int64)
        fail = np.zeros(0, np.int64)
    lo = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64) if len(counts) else counts
    return lo, counts, offs, lens, codes, fail
