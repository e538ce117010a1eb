"""Padding is not code: the fill instructions at the end of each text symbol.

The linker and the assembler pad text with one instruction repeated (x86 ``int3`` and nops,
arm64 ``udf #0``/``nop``, ppc64le ``nop``, s390x ``nopr``, riscv ``c.nop``, zeros); kallsyms
sizes run to the next symbol, so every symbol's padding is counted with it, and linker marker
symbols (``__kprobes_text_end``, ``__entry_text_end``) span nothing but padding.  On Debian's
x86_64 6.1 kernel such fill is 57% of the boundaries the analysis walks.

A symbol's *fill* is the run of instructions after its last real instruction whose encodings
are one of the backend's :attr:`~kpatch_arch.base.Backend.fill_encodings` (the whole symbol when
it has no real instruction).  The verdicts of fill instructions are unchanged (a kprobe there is
still accepted or refused as the kernel would); the headline shares leave them out.

>>> counts = trailing_fill(image, syms, lo, counts, offs, lens)    # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .analysis import TextSymbols
    from .image import Image

__all__ = ["annotate", "fill_instructions", "fill_mask", "trailing_fill"]


_WORDS: list = []  # (the buffer _words was last asked for, held so its id stays its own; words)


def _words(code: np.ndarray) -> np.ndarray:
    """The 8 bytes from each offset of ``code`` as one little-endian integer (zeros past its
    end); kept for the buffer last asked about (trailing_fill asks for one buffer many times)."""
    if _WORDS and _WORDS[0] is code:
        return _WORDS[1]
    pad = np.zeros(len(code) + 8, np.uint8)
    pad[:len(code)] = code
    word = np.ndarray((len(code),), "<u8", pad.data, 0, (1,))  # 8 bytes from each offset
    _WORDS[:] = [code, word]
    return word


def fill_instructions(code: np.ndarray, starts: np.ndarray, lens: np.ndarray,
                      encodings: tuple[bytes, ...], align: int = 1) -> np.ndarray:
    """Per instruction: its bytes (``code[starts:starts+lens]``) are one of ``encodings``.
    An undecodable instruction (length 0) is taken as ``align`` bytes."""
    n = len(starts)
    out = np.zeros(n, bool)
    if not n or not encodings or not len(code):
        return out
    first = np.zeros(256, bool)  # only instructions starting with a fill encoding's first byte
    first[[e[0] for e in encodings if e]] = True
    starts = starts.astype(np.int64)
    pick = np.flatnonzero(first[code[np.minimum(starts, len(code) - 1)]])
    if len(pick) < n:
        out[pick] = fill_instructions(code, starts[pick], lens[pick], encodings, align)
        return out
    ln = np.where(lens == 0, max(align, 1), lens).astype(np.int64)
    short = [e for e in encodings if 0 < len(e) <= 8]
    keys = [int.from_bytes(e, "little") for e in short]
    if short and len(set(keys)) == len(keys):  # each encoding of <= 8 bytes is one integer
        order = np.argsort(np.array(keys, np.uint64))
        vals = np.array(keys, np.uint64)[order]
        vlen = np.array([len(e) for e in short], np.int64)[order]
        word = _words(code)
        masks = np.array([0, *((1 << (8 * k)) - 1 for k in range(1, 9))], np.uint64)
        sel = np.flatnonzero((ln <= 8) & (starts + ln <= len(code)))
        key = word[starts[sel]] & masks[ln[sel]]
        j = np.minimum(np.searchsorted(vals, key), len(vals) - 1)
        out[sel] = (vals[j] == key) & (vlen[j] == ln[sel])
        longer = tuple(e for e in encodings if len(e) > 8)
        lg = np.flatnonzero(ln > 8)
        if longer and len(lg):
            out[lg] = fill_instructions(code, starts[lg], ln[lg], longer, align)
        return out
    by_len: dict[int, list[bytes]] = {}
    for e in encodings:
        by_len.setdefault(len(e), []).append(e)
    for size, encs in by_len.items():
        idx = np.flatnonzero((ln == size) & (starts + size <= len(code)))
        if not len(idx):
            continue
        # (k, size) matrix of the bytes of each instruction of this length
        win = code[starts[idx][:, None] + np.arange(size)[None, :]]
        hit = np.zeros(len(idx), bool)
        for e in encs:
            hit |= (win == np.frombuffer(e, np.uint8)[None, :]).all(axis=1)
        out[idx[hit]] = True
    return out


def trailing_fill(image: Image, syms: TextSymbols, lo: np.ndarray, counts: np.ndarray,
                  offs: np.ndarray, lens: np.ndarray, stretches: np.ndarray | None = None,
                  text: tuple[int, bytes] | None = None) -> np.ndarray:
    """Per symbol: how many of its last instructions are fill (all of them for a symbol that
    has no real instruction), from the runtime bytes the verdicts were computed on.
    ``stretches`` (``[j0, j1)`` rows of instructions that repeat one byte value: the analysis'
    padding runs, kpatch_core.uniform) near a symbol's end are judged by their first
    instruction once their bytes are checked to be that one value.  ``text``: (address, the
    runtime bytes from there) already read by the caller, used when they cover the symbols
    (all file bytes: one section)."""
    nsym = len(counts)
    out = np.zeros(nsym, np.int64)
    backend = image.backend
    encodings = tuple(getattr(backend, "fill_encodings", ()))
    if not nsym or not len(offs) or not encodings:
        return out
    base = int(syms.addrs.min())
    end = int((syms.addrs + syms.sizes).max()) + 16
    if text is not None and text[0] == base and len(text[1]) >= end - base:
        code = np.frombuffer(text[1], np.uint8, end - base)
        valid = np.ones(end - base, bool)
    else:
        code, valid = _text_bytes(image, base, end)
    sym_base = (syms.addrs - np.uint64(base)).astype(np.int64)
    counts = np.asarray(counts, np.int64)
    ends = np.asarray(lo, np.int64) + counts  # one past each symbol's last instruction
    # the trailing run, read backwards from each symbol's end in blocks that double (most
    # symbols end in a few padding bytes; a padding symbol is read once, in ~20 blocks): an
    # instruction is looked at only when every one after it in its symbol is fill
    if stretches is not None and len(stretches):
        _stretch_fill(code, valid, sym_base, ends, offs, lens, stretches, encodings,
                      backend.insn_align, out)
    active = np.flatnonzero((counts > 0) & (out < counts))
    width = TRAIL_BLOCK
    while len(active):
        w = np.minimum(width, counts[active] - out[active])
        total = int(w.sum())
        block = np.repeat(np.arange(len(active)), w)
        back = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(w) - w, w)  # 0 = last
        idx = np.repeat(ends[active] - out[active] - 1, w) - back
        starts = sym_base[active][block] + offs[idx].astype(np.int64)
        is_fill = fill_instructions(code, starts, lens[idx], encodings, backend.insn_align)
        is_fill &= valid[np.minimum(starts, len(valid) - 1)]
        # per symbol: fill instructions before the first real one of its block (from the end)
        first_real = np.minimum.reduceat(np.where(is_fill, total, back), np.cumsum(w) - w)
        stop = first_real < w
        out[active] += np.where(stop, first_real, w)
        active = active[~stop & (out[active] < counts[active])]
        width *= 2
    return out.astype(np.int64)


TRAIL_BLOCK = 8  # instructions read per symbol in trailing_fill's first round
STRETCH_TAIL = 64  # most instructions after a stretch to its symbol's end (_stretch_fill)


def _stretch_fill(code: np.ndarray, valid: np.ndarray, sym_base: np.ndarray, ends: np.ndarray,
                  offs: np.ndarray, lens: np.ndarray, stretches: np.ndarray,
                  encodings: tuple[bytes, ...], align: int, out: np.ndarray) -> None:
    """Where a stretch of instructions repeating one byte value, and every instruction after it
    to its symbol's end, are fill, that symbol's trailing fill starts at the stretch (``out``,
    in place): its instructions' bytes are all that value (checked here), so each is fill
    exactly when the first is."""
    j0, j1 = stretches[:, 0].astype(np.int64), stretches[:, 1].astype(np.int64)
    sym = np.searchsorted(ends, j0, side="right")  # the symbol whose instructions hold j0
    ok = (sym < len(ends)) & (j1 <= ends[np.minimum(sym, len(ends) - 1)])
    ok &= ends[np.minimum(sym, len(ends) - 1)] - j1 <= STRETCH_TAIL
    for q in np.flatnonzero(ok).tolist():
        f, a, b = int(sym[q]), int(j0[q]), int(j1[q])
        e = int(ends[f])
        idx = np.concatenate(([a], np.arange(b, e, dtype=np.int64)))
        starts = sym_base[f] + offs[idx].astype(np.int64)
        is_fill = fill_instructions(code, starts, lens[idx], encodings, align)
        is_fill &= valid[np.minimum(starts, len(valid) - 1)]
        lo_b = int(starts[0])
        hi_b = int(sym_base[f] + int(offs[b - 1]) + int(lens[b - 1]))
        span = code[lo_b:hi_b]
        if not (is_fill.all() and len(span) == hi_b - lo_b and bool((span == span[0]).all())
                and bool(valid[lo_b:hi_b].all())):
            continue
        out[f] = max(int(out[f]), e - a)


def _text_bytes(image: Image, base: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """The runtime bytes of ``[base, end)`` and where they are file bytes (a read stops at its
    section's end, so each allocated section is read on its own)."""
    code = np.zeros(end - base, np.uint8)
    valid = np.zeros(end - base, bool)
    from .image import SHF_ALLOC, SHT_NOBITS
    for s in image.sections:
        if not (s.flags & SHF_ALLOC) or s.type == SHT_NOBITS or s.end <= base or s.addr >= end:
            continue
        a, b = max(base, s.addr), min(end, s.end)
        raw = np.frombuffer(image.backend.runtime_bytes(image, a, b), np.uint8)[:b - a]
        code[a - base:a - base + len(raw)] = raw
        valid[a - base:a - base + len(raw)] = True
    return code, valid


def annotate(image: Image, syms: TextSymbols, lo: np.ndarray, counts: np.ndarray,
             offs: np.ndarray, lens: np.ndarray, facts: list[dict],
             fill: np.ndarray | None = None) -> None:
    """Add ``fill`` (trailing fill instructions) to each symbol's facts (``fill``: those counts
    when already known, e.g. counted by the analysis workers)."""
    if fill is None or len(fill) != len(facts):
        fill = trailing_fill(image, syms, lo, counts, offs, lens)
    for d, n in zip(facts, fill.tolist()):
        d["fill"] = int(n)


def fill_mask(counts: np.ndarray, facts: "list[dict] | np.ndarray") -> np.ndarray:
    """Per instruction of the flat analysis arrays: it is fill (its symbol's last ``fill``);
    ``facts``: the per-symbol facts, or their ``fill`` counts as an array."""
    counts = counts.astype(np.int64)
    if isinstance(facts, np.ndarray):
        fill = facts.astype(np.int64)
    else:
        fill = np.array([int(d.get("fill") or 0) for d in facts], np.int64) if len(facts) else \
            np.zeros(0, np.int64)
    if not fill.any():
        return np.zeros(int(counts.sum()), bool)
    tail = np.minimum(np.maximum(fill, 0), counts)
    runs = np.empty(2 * len(counts), np.int64)  # per symbol: its real run, then its fill run
    runs[0::2] = counts - tail
    runs[1::2] = tail
    return np.repeat(np.tile(np.array([False, True]), len(counts)), runs)
