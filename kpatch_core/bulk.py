"""What a backend's bulk classifier (``kpatch_arch.base.BulkClassifier``) uses from the core:
outcome codes, range marking over sorted address arrays, the fixed-width walk, and the typed
inputs of ``classify``.  Small on purpose: a backend imports this module, never the analysis.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .outcome import OPTIMIZED, REFUSED_BASE, SLOW, ok_code, outcome_code, refused_code

if TYPE_CHECKING:
    from .image import Image

__all__ = ["OPTIMIZED", "REFUSED_BASE", "SLOW", "ok_code", "outcome_code", "refused_code",
           "mark_ranges", "member", "range_hits", "member_hits", "spans_hits", "span_indexes",
           "classify_inputs",
           "fixed_width_walk"]


def mark_ranges(aa: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per element of the sorted array ``aa``: inside any ``[starts[i], ends[i])``.  Costs
    O(k log n) searches for k ranges plus one pass over ``aa`` (not n searches)."""
    n = len(aa)
    if not len(starts) or not n:
        return np.zeros(n, bool)
    if n > 1 and bool((aa[1:] < aa[:-1]).any()):  # an arch adjustment broke the order
        order = np.argsort(aa, kind="stable")
        out = np.empty(n, bool)
        out[order] = mark_ranges(aa[order], starts, ends)
        return out
    lo = np.searchsorted(aa, starts, side="left")
    hi = np.searchsorted(aa, ends, side="left")
    keep = hi > lo
    d = np.zeros(n + 1, np.int32)
    np.add.at(d, lo[keep], 1)
    np.add.at(d, hi[keep], -1)
    return np.cumsum(d[:n], dtype=np.int32) > 0


def range_hits(aa: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               in_order: bool | None = None) -> np.ndarray:
    """The indexes (ascending) of the elements of ``aa`` inside any ``[starts[i], ends[i])``
    (``starts`` sorted): :func:`mark_ranges` as indexes, in O(k log n + hits) for a sorted
    ``aa`` (only the ranges that reach ``aa``'s span are searched).  ``in_order``: whether
    ``aa`` is sorted, when the caller knows."""
    n = len(aa)
    if not len(starts) or not n:
        return np.zeros(0, np.int64)
    if in_order is None:
        in_order = n < 2 or not bool((aa[1:] < aa[:-1]).any())
    if not in_order:  # an arch adjustment broke the order
        return np.flatnonzero(mark_ranges(aa, starts, ends))
    # ranges starting after the last address cannot hold one; ends need not be sorted
    k = int(np.searchsorted(starts, aa[-1], side="right"))
    lo = np.searchsorted(aa, starts[:k], side="left")
    hi = np.searchsorted(aa, ends[:k], side="left")
    idx = span_indexes(lo, hi - lo)
    if len(idx) > 1 and bool((idx[1:] <= idx[:-1]).any()):  # overlapping ranges
        idx = np.unique(idx)
    return idx


def member_hits(sorted_arr: np.ndarray, aa: np.ndarray, in_order: bool | None = None
                ) -> np.ndarray:
    """The indexes (ascending) of the elements of ``aa`` equal to some element of
    ``sorted_arr``: :func:`member` as indexes."""
    if not len(sorted_arr) or not len(aa):
        return np.zeros(0, np.int64)
    return range_hits(aa, sorted_arr, sorted_arr + np.uint64(1), in_order)


def spans_hits(group: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The indexes (ascending) of the elements of the ascending ``group`` (each element's
    group number, e.g. its function) whose group is in ``chosen`` (ascending, unique)."""
    if not len(chosen) or not len(group):
        return np.zeros(0, np.int64)
    lo = np.searchsorted(group, chosen, side="left")
    return span_indexes(lo, np.searchsorted(group, chosen, side="right") - lo)


def span_indexes(lo: np.ndarray, cnt: np.ndarray) -> np.ndarray:
    """``lo[k], lo[k] + 1, ... lo[k] + cnt[k] - 1`` for every k, one after the other (a count
    of 0 or less adds nothing), as int64."""
    cnt = np.maximum(np.asarray(cnt, np.int64), 0)
    total = int(cnt.sum())
    if not total:
        return np.zeros(0, np.int64)
    first = np.cumsum(cnt) - cnt
    return np.repeat(np.asarray(lo, np.int64) - first, cnt) + np.arange(total, dtype=np.int64)


def member(sorted_arr: np.ndarray, aa: np.ndarray) -> np.ndarray:
    """Per element of the sorted array ``aa``: equal to some element of ``sorted_arr``."""
    if not len(sorted_arr) or not len(aa):
        return np.zeros(len(aa), bool)
    return mark_ranges(aa, sorted_arr, sorted_arr + np.uint64(1))


def classify_inputs(image: "Image", code: np.ndarray, addrs: np.ndarray, rel: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A bulk classifier's inputs as typed arrays, plus each address's symbol start and whether
    one exists (``Kallsyms.containing_starts``): (code, addrs, rel, fstart, has_symbol)."""
    addrs = np.asarray(addrs, np.uint64)
    fstart, found = image.kallsyms.containing_starts(addrs)
    return np.asarray(code, np.uint8), addrs, np.asarray(rel, np.int64), fstart, found


def fixed_width_walk(step: int, code: np.ndarray, starts: np.ndarray, ends: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A classifier's ``walk`` for arches whose kernel judges every ``step``-byte word alone
    (no boundary walk): each word from each function start that has bytes in ``code``.
    Returns (offsets from the function start, lengths, words per function, -1 per function:
    no walk stops)."""
    starts = np.asarray(starts, np.int64)
    size = np.maximum(np.minimum(np.asarray(ends, np.int64), len(code)) - starts, 0)
    counts = (size + step - 1) // step
    total = int(counts.sum())
    first = np.repeat(np.cumsum(counts) - counts, counts)
    offs = (np.arange(total, dtype=np.int64) - first) * step
    return offs, np.full(total, step, np.int64), counts, np.full(len(starts), -1, np.int64)
