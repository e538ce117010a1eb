"""s390 ``can_probe``'s boundary walk (arch/s390/kernel/kprobes.c) for every function of a buffer
at once, in time linear in the buffer.

The kernel walks from the function's kallsyms start by ``insn_length`` (the top two bits of the
first byte: 2, 4 or 6 bytes) and stops at a ``0x00xx`` halfword.  Every position has one
successor, so the walks of all functions are pieces of ONE chain through the buffer once each
jump is capped at the next function start (a walk that would jump over the next start is over
anyway: it left its function; the chain then lands exactly on that start, where the next walk
begins).  :func:`chain` finds that chain without a Python step per instruction: the buffer is cut
into blocks of ``width`` positions; a chain enters a block at one of its first ``phases``
positions (no jump is longer), so every block is walked from each of those entry phases at once
(all blocks in lockstep, ``width`` numpy steps over ``blocks x phases`` lanes), each lane's exit
phase gives the next block's entry, and a pass over the blocks picks the lane the chain really
takes.  Cost: O(phases x buffer) element operations and ``width`` numpy calls per operation,
instead of pointer doubling's one pass over the buffer per doubling step.
"""
from __future__ import annotations

import numpy as np

WIDTH = 1024  # positions per block (halfwords): numpy steps per lane walk


def chain(jump: np.ndarray, phases: int, width: int = WIDTH) -> np.ndarray:
    """The positions the chain ``0 -> jump[0] -> ...`` visits, as a bool array over the
    ``len(jump)`` positions.  Every ``jump[q]`` must lie in ``(q, q + phases]`` (values at or
    past the end leave the buffer).

    First every block is walked from its first position (one lane per block, in lockstep); then
    from each other entry phase only until that walk meets the first one (walks from nearby
    positions meet within a few instructions: from there on the block's marks are shared)."""
    m = len(jump)
    if m == 0:
        return np.zeros(0, bool)
    p = max(int(phases), 1)
    w = max(int(width), p)
    nb = -(-m // w)
    size = nb * w + p + 1
    nxt = np.empty(size, np.intp)  # past the positions: one step on (never in the result)
    nxt[:m] = jump
    nxt[m:] = np.arange(m + 1, size + 1)
    nxt[size - 1] = size - 1
    block = np.arange(nb, dtype=np.intp) * w
    bend = block + w
    # block b's marks at b * (w + p) + (q - b * w) = q + b * p: its positions, then p overflow
    # slots a lane that left the block marks again while the others finish
    shift = np.arange(nb, dtype=np.intp) * p
    marks = np.zeros(nb * (w + p), bool)
    cur = block.copy()
    exit0 = np.zeros(nb, np.intp)
    lane = np.arange(nb, dtype=np.intp)  # the blocks still walking (compacted as they finish)
    lshift, lend = shift, bend
    live = np.ones(nb, bool)
    for _ in range(w // 16 + 2):  # every step moves a lane on: w steps leave any block
        if not len(cur):
            break
        for _ in range(16):
            marks[cur + lshift] = True
            np.copyto(cur, nxt[cur], where=live)
            np.less(cur, lend, out=live)
        done = ~live
        k = int(np.count_nonzero(live))
        if 4 * k < 3 * len(cur):  # (k == 0 ends the loop)
            exit0[lane[done]] = cur[done] - lend[done]
            lane, cur, lshift, lend = lane[live], cur[live], lshift[live], lend[live]
            live = np.ones(k, bool)
    if len(cur):
        raise RuntimeError("s390x can_probe walk: a jump that does not move forward")
    # the other entry phases, each walked until it meets the block's first walk or leaves
    exits = np.zeros((nb, p), np.intp)
    exits[:, 0] = exit0
    meet = np.full((nb, p), -1, np.intp)  # where phase k's walk meets the first one
    meet[:, 0] = block
    lb = np.repeat(np.arange(nb, dtype=np.intp), p - 1)
    lk = np.tile(np.arange(1, p, dtype=np.intp), nb)
    cur = block[lb] + lk
    own_b: list[np.ndarray] = []  # positions of a lane's own walk before it meets (block, phase)
    own_k: list[np.ndarray] = []
    own_q: list[np.ndarray] = []
    while len(cur):
        out = cur >= bend[lb]
        met = ~out & marks[cur + shift[lb]]
        if out.any():
            exits[lb[out], lk[out]] = cur[out] - bend[lb[out]]
        if met.any():
            exits[lb[met], lk[met]] = exit0[lb[met]]
            meet[lb[met], lk[met]] = cur[met]
        go = ~(out | met)
        lb, lk, cur = lb[go], lk[go], cur[go]
        own_b.append(lb)
        own_k.append(lk)
        own_q.append(cur)
        cur = nxt[cur]
    ex = exits.tolist()
    entry = [0] * nb
    k = 0
    for b in range(nb):  # the chain enters block 0 at its first position
        entry[b] = k
        k = ex[b][k]
    ent = np.array(entry, np.intp)
    # block b's positions: the first walk's from where the real walk met it, plus its own
    start = meet[np.arange(nb), ent]
    start = np.where(start < 0, bend, start)
    on = marks.reshape(nb, w + p)[:, :w] & (np.arange(w)[None, :] >= (start - block)[:, None])
    on = on.reshape(-1)
    if own_q:
        ob, ok, oq = np.concatenate(own_b), np.concatenate(own_k), np.concatenate(own_q)
        sel = ent[ob] == ok
        on[oq[sel]] = True
    return on[:m]


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The integers of every ``[lo[i], hi[i])`` (empty ones skipped), concatenated."""
    size = np.maximum(hi - lo, 0)
    keep = size > 0
    lo, size = lo[keep], size[keep]
    total = int(size.sum())
    if not total:
        return np.zeros(0, np.int64)
    first = np.cumsum(size) - size
    return np.arange(total, dtype=np.int64) - np.repeat(first - lo, size)


def walk(code: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: np.ndarray,
         width: int = WIDTH) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``can_probe``'s walk from each function start (``S390xBulkClassifier.walk``): ``code``
    the runtime bytes, ``starts``/``ends`` the functions' sorted, disjoint ``[start, end)``
    offsets into it, ``length`` the instruction length per first byte.  Returns (offsets from
    the function start, lengths, instructions per function, offset where the walk stopped or
    -1): the instructions whose start the walk reaches before ``end``; a ``0x00xx`` halfword or
    an instruction running past the buffer stops it (listed with length 0)."""
    n, nf = len(code), len(starts)
    starts = np.asarray(starts, np.int64)
    ends = np.asarray(ends, np.int64)
    live = (starts < ends) & (starts < n)
    empty = np.zeros(0, np.int64)
    if not live.any():
        return empty, empty, np.zeros(nf, np.int64), np.full(nf, -1, np.int64)
    # positions are halfwords when every walked start is even (s390 code always is)
    s = 2 if not (starts[live] & 1).any() else 1
    p = 6 // s  # the longest instruction, in positions
    m = (n + s - 1) // s
    first = code[::s] if s > 1 else code
    steps = (np.asarray(length) // s).astype(np.uint8)[first]  # positions per instruction
    cut = -(-np.minimum(starts, n) // s)  # each function's first position
    bounds = np.concatenate((cut, [m]))
    # each function's end as a position: s * q < end  <=>  q < ceil(end / s)
    end_pos = np.minimum(np.maximum(-(-ends // s), cut), bounds[1:])
    # a jump over the next function start lands on it: the walks are one chain.  Only the
    # p - 1 positions before a start can jump over it (the nearest start wins)
    jump = np.arange(m, dtype=np.int32)
    jump += steps
    edge = np.unique(cut)
    for d in range(p - 1, 0, -1):
        e = edge[edge >= d]
        np.minimum.at(jump, e - d, e.astype(np.int32))
    on = chain(jump, p, width)
    # not walked: before the first function, between a function's end and the next start
    on[:int(cut[0])] = False
    on[_ranges(end_pos, bounds[1:])] = False
    # the walk ends at the first stop: a 0x00xx halfword, or the bytes end inside the insn
    ends_here = on & (first == 0)
    last = np.arange(max(m - p, 0), m)
    ends_here[last] |= on[last] & (s * last + s * steps[last].astype(np.int64) > n)
    stop_at = np.flatnonzero(ends_here)
    fail = np.full(nf, -1, np.int64)
    if len(stop_at):
        fs = np.searchsorted(bounds, stop_at, side="right") - 1
        firsts = np.concatenate(([True], fs[1:] != fs[:-1]))
        stop_at, fs = stop_at[firsts], fs[firsts]
        on[_ranges(stop_at + 1, end_pos[fs])] = False  # the rest of the function
        fail[fs] = s * stop_at - starts[fs]
    at = np.flatnonzero(on)
    counts = np.diff(np.searchsorted(at, bounds)).astype(np.int64)
    offs = s * at - np.repeat(starts, counts)
    lens = s * steps[at].astype(np.int64)
    if len(stop_at):
        lens[np.searchsorted(at, stop_at)] = 0
    return offs, lens, counts, fail
