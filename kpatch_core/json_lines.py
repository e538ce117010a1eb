"""The ``--json`` JSON Lines of a full analysis, written from the column arrays: the per-symbol
outcome counts come from one ``bincount`` over (symbol, outcome) pairs instead of one
``np.unique`` per symbol, and each line is the facts object (one C-encoder call) followed by the
count fields as text.  The bytes are those of ``json.dumps(analysis.function_json(i),
separators=(",", ":"))`` for every symbol ``i`` (tests/test_analyze.py compares them).
"""
from __future__ import annotations

import json
import json.encoder
import os
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .outcome import OPTIMIZED, decode_code

if TYPE_CHECKING:
    from .analysis import Analysis

__all__ = ["compact_encoder", "outcome_counts", "json_lines", "write_json_lines"]


def compact_encoder() -> Callable[[object], str]:
    """``json.dumps(o, separators=(",", ":"))`` without building an encoder per call (the C
    encoder when the interpreter has it)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        enc = json.JSONEncoder(separators=(",", ":"))
        return enc.encode
    it = make({}, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ":", ",",
              False, False, True)
    return lambda o: "".join(it(o, 0))


def outcome_counts(counts: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct outcome codes ascending, a symbols x codes matrix of instruction counts)."""
    nsym = len(counts)
    present = np.zeros(1 << 16, bool)
    present[codes] = True
    vals = np.flatnonzero(present)
    col = np.zeros(1 << 16, np.int64)
    col[vals] = np.arange(len(vals))
    k = max(len(vals), 1)
    sym_of = np.repeat(np.arange(nsym, dtype=np.int64), np.asarray(counts, np.int64))
    mat = np.bincount(sym_of * k + col[codes], minlength=nsym * k).reshape(nsym, k)
    return vals, mat


def json_lines(a: "Analysis", image_key: bool = False, batch: int = 2048,
               symbols: tuple[int, int] | None = None) -> Iterator[str]:
    """The JSON Lines of ``a`` (of its symbols ``[lo, hi)`` when ``symbols`` is given) in
    batches of ``batch`` lines (one string per batch); with ``image_key`` each object starts
    with ``"image"`` (several images in one run)."""
    enc = compact_encoder()
    s_lo, s_hi = symbols if symbols is not None else (0, len(a))
    n = max(s_hi - s_lo, 0)
    first = int(a.lo[s_lo]) if n else 0
    sym_counts = np.asarray(a.counts[s_lo:s_hi], np.int64)
    vals, mat = outcome_counts(sym_counts, a.codes[first:first + int(sym_counts.sum())])
    outs = [decode_code(int(v)) for v in vals.tolist()]
    ok_col = np.array([o.ok for o in outs], bool)
    label = [enc(o.label) for o in outs]
    is_ok = ok_col.tolist()
    probeable = (mat[:, ok_col].sum(axis=1) if len(vals) else np.zeros(n, np.int64)).tolist()
    opt_cols = (vals & OPTIMIZED) != 0
    optimized = (mat[:, opt_cols].sum(axis=1).tolist() if a.meta.get("optimized")
                 else None)
    rows, cols = np.nonzero(mat)
    cnt = mat[rows, cols].tolist()
    bounds = np.searchsorted(rows, np.arange(n + 1)).tolist()
    cols_l = cols.tolist()
    insns = sym_counts.tolist()
    facts = a.facts
    prefix = '{"image":' + enc(a.meta["path"]) + "," if image_key else "{"
    lines: list[str] = []
    for i in range(n):
        methods: dict[str, int] = {}
        refused: dict[str, int] = {}
        for j in range(bounds[i], bounds[i + 1]):
            c = cols_l[j]
            d = methods if is_ok[c] else refused
            lab = label[c]
            d[lab] = d.get(lab, 0) + cnt[j]
        head = enc(facts[s_lo + i])
        m = ",".join(f"{k}:{v}" for k, v in methods.items())
        r = ",".join(f"{k}:{v}" for k, v in refused.items())
        opt = "null" if optimized is None else str(optimized[i])
        tail = (f'"insns":{insns[i]},"probeable":{probeable[i]},"methods":{{{m}}},'
                f'"refused":{{{r}}},"optimized":{opt}}}\n')
        body = head[1:-1]
        lines.append(prefix + body + ("," if body else "") + tail)
        if len(lines) >= batch:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


_SHARED: list = []  # (analysis, image_key) for the forked formatters


def _format_block(block: tuple[int, int]) -> str:
    a, image_key = _SHARED[0]
    return "".join(json_lines(a, image_key, symbols=block))


def write_json_lines(a: "Analysis", out, image_key: bool = False, jobs: int | None = None,
                     min_parallel: int = 20000) -> None:
    """Write the JSON Lines of ``a`` to ``out``: with several cores, forked processes format
    the later blocks of symbols while this one formats and writes the first (same bytes, in
    order)."""
    jobs = jobs or os.cpu_count() or 1
    n = len(a)
    if jobs <= 1 or n < min_parallel:
        for text in json_lines(a, image_key):
            out.write(text)
        return
    import multiprocessing as mp
    parts = jobs * 2
    cuts = [n * k // parts for k in range(parts + 1)]
    blocks = list(zip(cuts[:-1], cuts[1:]))
    _SHARED[:] = [(a, image_key)]
    try:
        with mp.get_context("fork").Pool(jobs - 1) as pool:
            own = parts // jobs  # this process formats the first blocks, the pool the rest
            later = pool.imap(_format_block, blocks[own:])
            for text in json_lines(a, image_key, symbols=(0, cuts[own])):
                out.write(text)
            for text in later:
                out.write(text)
    finally:
        _SHARED.clear()
