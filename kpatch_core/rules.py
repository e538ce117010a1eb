"""The rule pipeline of the full analysis: ``register_kprobe`` vectorised over every instruction
of a range of functions, in the kernel's order -- ``within_notrace_func`` (trace_kprobe),
``_kprobe_addr`` + ``arch_adjust_kprobe_addr``, ``check_kprobe_address_safe``, then
``arch_prepare_kprobe`` through the backend's bulk classifier (``backend.prepare`` where it answers
SLOW) and, opted in, ``[OPTIMIZED]``.  Per-function rules (notrace, blacklist) are decided once per
function by :func:`function_checks`.

The state the workers share (:data:`STATE`) is built by :func:`prepare_state` before the pool
forks (kpatch_core.pool).
"""
from __future__ import annotations

import ctypes
import time
from itertools import repeat
from typing import TYPE_CHECKING, Callable

import attrs
import numpy as np

from kpatch_arch.base import Backend, BulkClassifier, PrepareContext

from . import uniform
from .analysis import TextSymbols
from .bulk import member_hits, span_indexes
from .decode import LinearDecoder, Runs, decode_function
from .outcome import OPTIMIZED, REFUSED_BASE, SLOW, UNSET, ok_code, outcome_code, refused_code
from .safety import AddressArrays, check_kprobe_address_safe_vec
from .symbols import KSym
from .verdict import Method, Reason

if TYPE_CHECKING:
    from .image import Image
    from .tables import KernelTables


@attrs.define
class Chunk:
    offs: np.ndarray  # uint32 offset of the instruction in its function
    lens: np.ndarray  # uint8
    codes: np.ndarray  # uint16
    counts: np.ndarray  # int64 instructions per function
    fail: np.ndarray  # int64 per function: offset where decoding stopped, -1 none
    seconds: float = 0.0
    func_facts: dict[str, np.ndarray] = attrs.Factory(dict)  # function_checks of the range
    # (k, 2) int64: stretches [j0, j1) of equal instructions, each of one byte value
    # (uniform.py; the trailing fill reads them, fill.py)
    stretches: np.ndarray = attrs.Factory(lambda: np.zeros((0, 2), np.int64))
    # instructions left in the pool's shared result area (kpatch_core.pool.ResultArea), or -1
    in_area: int = -1


STATE: dict = {}


def prepare_state(image: "Image", syms: TextSymbols, optimized: bool = False,
                  func_facts: bool = True) -> None:
    """Build everything the workers share before forking (tables, classifier, notrace...);
    ``func_facts`` False leaves :func:`function_checks` to each range's worker (returned in its
    :class:`Chunk`), so the workers start sooner and share that work."""
    t = image.tables
    _ = (t.ftrace_sites, t._blacklist_arrays, t.jump_labels, t.static_call_sites, t.bug_sites,
         t.extable, image.config)
    # the names the workers look up (function_checks: the clones' base names), found in one
    # pass; the whole-table name dicts are left to the facts, which run in this process
    names = syms.names
    dotted = np.fromiter(map(str.__contains__, names, repeat(".")), bool, len(names))
    image.kallsyms.prefetch({names[i].partition(".")[0] for i in np.flatnonzero(dotted).tolist()})
    STATE.clear()
    STATE["dotted"] = dotted  # per symbol: a "." in its name (the workers' function_checks)
    STATE["image"] = image
    STATE["syms"] = syms
    STATE["optimized"] = optimized
    STATE["classifier"] = image.backend.bulk_classifier(image)
    STATE["func_facts"] = function_checks(image, syms, dotted) if func_facts else None
    if len(syms):  # fill the backend's per-image caches (patch sites) once, before forking
        a0 = int(syms.addrs[0])
        image.backend.runtime_bytes(image, a0, a0 + 16)


def function_checks(image: "Image", syms: TextSymbols,
                    dotted: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-function rule outcomes that hold for every address of the function (numpy; the
    compiler clones' base names looked up once per name, the blacklist asked per address only
    where a listed range or an area may hold the function's start); ``dotted``: per function,
    a "." in its name, when known."""
    t = image.tables
    n = len(syms)
    fs = t.ftrace_sites
    fa, fe = syms.addrs, syms.addrs + np.maximum(syms.sizes, np.uint64(1))
    nrec = (np.searchsorted(fs, fe) - np.searchsorted(fs, fa)).astype(np.int64)
    notrace = nrec == 0
    names = syms.names
    if dotted is None:
        dotted = np.fromiter(map(str.__contains__, names, repeat(".")), bool, n)
    bases: dict[str, int | None] = {}  # base name -> kprobe_lookup_name's address

    def lookup(b: str) -> int | None:
        if b not in bases:
            bases[b] = image.backend.lookup_name(image, b)
        return bases[b]
    # within_notrace_func: a clone without a record defers to its base function
    nd = np.flatnonzero(notrace & dotted)
    if len(nd):
        ba = [lookup(names[i].partition(".")[0]) for i in nd.tolist()]  # base_name
        has = np.array([bool(a) for a in ba], bool)  # `if base:` (0 and None alike)
        start, size, found = _containing(image, np.array([a or 0 for a in ba], np.uint64))
        rec = np.searchsorted(fs, start + np.maximum(size, np.uint64(1))) > np.searchsorted(fs, start)
        notrace[nd] = np.where(has, found & ~rec, True)
    # blacklist: one answer per function when no blacklist range starts or ends inside it
    bl_code = np.zeros(n, np.uint16)
    bl_uniform = np.ones(n, bool)
    starts, ends, maxend = t._blacklist_arrays
    kt = t._range("__kprobes_text_start", "__kprobes_text_end")
    arch_hook = type(image.backend).within_arch_blacklist is not Backend.within_arch_blacklist
    # the arch hook as [start, end) ranges when the bulk classifier knows them: then only
    # functions that straddle a range edge need the per-address answer
    clf = STATE.get("classifier")
    arch_ranges = clf.arch_blacklist_ranges() if arch_hook and clf is not None else None
    i_lo = np.searchsorted(starts, fa, side="right")
    i_hi = np.searchsorted(starts, fe, side="left")
    inner = i_hi > i_lo  # a range starts strictly inside
    cand = (i_lo > 0) & (maxend[np.maximum(i_lo - 1, 0)] > fa) if len(starts) else np.zeros(n, bool)
    cand |= inner
    if kt:
        cand |= (fa < np.uint64(kt[1])) & (fe > np.uint64(kt[0]))
    cand |= dotted
    straddle = np.zeros(n, bool)
    if arch_ranges is not None:
        for rs, re_ in arch_ranges:
            touch = (fa < np.uint64(re_)) & (fe > np.uint64(rs))
            cand |= touch
            straddle |= touch & ((fa < np.uint64(rs)) | (fe > np.uint64(re_)))
    elif arch_hook:
        cand[:] = True
    bl_detail = np.full(n, None, object)  # the blacklist_hit detail (report facts reuse it)
    # _within_blacklist_direct can answer at the start only where it may (else None)
    direct = _maybe_direct(image, fa, kt, arch_hook, arch_ranges)
    for i in np.flatnonzero(cand & direct).tolist():
        a, e = int(fa[i]), int(fe[i])
        uniform, hit = blacklist_answer(t, a, e, bool(inner[i]), kt, int(i_lo[i]) - 1, maxend,
                                        arch_hook and (arch_ranges is None or bool(straddle[i])))
        bl_uniform[i] = uniform
        if hit is not None:
            bl_code[i] = refused_code(hit[0])
            bl_detail[i] = hit[1]
    # the rest: blacklist_hit is None, or the suffix rule (a clone of a blacklisted base name)
    rest = np.flatnonzero(cand & ~direct)
    if len(rest):
        uni = ~inner[rest]
        if kt:
            k0, k1 = np.uint64(kt[0]), np.uint64(kt[1])
            ra, re_a = fa[rest], fe[rest]
            uni &= ~((ra < k1) & (re_a > k0) & ~((k0 <= ra) & (re_a <= k1)))
        if arch_hook:
            uni &= ~straddle[rest]  # (arch_ranges is known here: else every start is direct)
        bl_uniform[rest] = uni
        ks = image.kallsyms
        _, _, found = _containing(image, fa[rest])
        at = np.searchsorted(ks.uaddrs, fa[rest], side="right").astype(np.int64) - 1
        first = ks.ufirst[np.maximum(at, 0)].tolist()
        clones = [(i, ks.names[f].partition(".")[0]) for i, f, ok in  # base_name
                  zip(rest.tolist(), first, found.tolist()) if ok and "." in ks.names[f]]
        ub = list(dict.fromkeys(b for _, b in clones))  # unique base names, in order
        base_at = [lookup(b) for b in ub]
        known = [k for k, x in enumerate(base_at) if x is not None]
        via: dict[str, str] = {}
        if known:
            kaddrs = np.array([base_at[k] for k in known], np.uint64)
            maybe = _maybe_direct(image, kaddrs, kt, arch_hook, arch_ranges)
            for k in np.flatnonzero(maybe).tolist():
                hit = t._within_blacklist_direct(int(kaddrs[k]))
                if hit is not None:
                    via[ub[known[k]]] = hit[1]
        for i, b in clones:
            if b in via:
                bl_code[i] = refused_code(Reason.BLACKLIST_SUFFIX)
                bl_detail[i] = f"{b}: {via[b]}"
    cfi = np.fromiter(map(str.startswith, names, repeat(("__cfi_", "__pfx_"))), bool, n)
    return {"nrec": nrec, "notrace": notrace, "bl_code": bl_code, "bl_uniform": bl_uniform,
            "bl_detail": bl_detail, "cfi": cfi}


def _containing(image: "Image", addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``kallsyms.containing`` of many addresses: (start, size, found) per address."""
    ks = image.kallsyms
    if not len(ks.uaddrs):
        z = np.zeros(len(addrs), np.uint64)
        return z, z, np.zeros(len(addrs), bool)
    j = np.searchsorted(ks.uaddrs, addrs, side="right").astype(np.int64) - 1
    jj = np.maximum(j, 0)
    start, size = ks.uaddrs[jj], ks.usizes[jj]
    return start, size, (j >= 0) & ((size != 0) | (start == addrs))


def _maybe_direct(image: "Image", addrs: np.ndarray, kt: tuple[int, int] | None, arch_hook: bool,
                  arch_ranges: list[tuple[int, int]] | None) -> np.ndarray:
    """Per address: ``KernelTables._within_blacklist_direct`` may answer (in .kprobes.text, in
    an arch area, or under a blacklist entry's running end); False means it answers None."""
    t = image.tables
    starts, _, maxend = t._blacklist_arrays
    out = np.zeros(len(addrs), bool)
    if len(starts):
        i = np.searchsorted(starts, addrs, side="right").astype(np.int64) - 1
        out |= (i >= 0) & (maxend[np.maximum(i, 0)] > addrs)
    if kt:
        out |= (addrs >= np.uint64(kt[0])) & (addrs < np.uint64(kt[1]))
    if arch_hook and arch_ranges is None:
        out[:] = True
    for rs, re_ in arch_ranges or ():
        out |= (addrs >= np.uint64(rs)) & (addrs < np.uint64(re_))
    return out


def blacklist_answer(t: "KernelTables", a: int, e: int, inner: bool, kt: tuple[int, int] | None,
                     j: int, maxend: np.ndarray, arch_split: bool
                     ) -> tuple[bool, tuple[Reason, str] | None]:
    """One function ``[a, e)``'s blacklist answer for :func:`function_checks`: (the same for
    every address of it, ``blacklist_hit`` at its start).  ``inner``: a blacklist range starts
    strictly inside it; ``kt``: ``.kprobes.text``; ``j``: the last range starting at or before
    ``a`` (-1: none; ``maxend``: the running maximum of range ends); ``arch_split``: an arch
    blacklist area may cover part of it."""
    hit = t.blacklist_hit(a)
    uniform = not inner
    if kt and (a < kt[1] and e > kt[0]) and not (kt[0] <= a and e <= kt[1]):
        uniform = False
    if uniform and hit is not None and hit[0] != Reason.BLACKLIST_SUFFIX:
        ent = t._in_list(a)
        if hit[0] == Reason.BLACKLIST_NOKPROBE or (ent is not None and "(" in hit[1]):
            uniform = ent is not None and ent.end >= e
    if uniform and hit is None and len(maxend):
        uniform = j < 0 or int(maxend[j]) <= a
    if arch_split:
        uniform = False
    return uniform, hit


def range_checks(image: "Image", syms: TextSymbols, lo: int, hi: int) -> dict[str, np.ndarray]:
    """:func:`function_checks` of functions ``[lo, hi)`` (from the shared state when built)."""
    shared = STATE.get("func_facts")
    if shared is not None:
        return {k: v[lo:hi] for k, v in shared.items()}
    sub = TextSymbols(syms.addrs[lo:hi], syms.sizes[lo:hi], syms.names[lo:hi], syms.types[lo:hi])
    dotted = STATE.get("dotted")
    return function_checks(image, sub, dotted[lo:hi] if dotted is not None and
                           STATE.get("syms") is syms else None)


def concat_checks(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The :func:`function_checks` of consecutive ranges joined."""
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def section_runs(image: "Image", addrs: np.ndarray) -> list[tuple[int, int]]:
    """Index runs ``[a, b)`` of the sorted ``addrs`` that lie in one section (or in none)."""
    starts = np.array(image._alloc_starts, np.uint64)
    ends = np.array([s.end for s in image._alloc], np.uint64)
    k = np.searchsorted(starts, addrs, side="right") - 1
    sec = np.where((k >= 0) & (addrs < ends[np.maximum(k, 0)]), k, -1) if len(starts) else \
        np.full(len(addrs), -1)
    cut = (np.flatnonzero(sec[1:] != sec[:-1]) + 1).tolist()
    bounds = [0, *cut, len(addrs)]
    return list(zip(bounds[:-1], bounds[1:]))


def register_kprobes(lo: int, hi: int) -> Chunk:
    """Decode and classify functions ``[lo, hi)`` of the shared state."""
    t0 = time.perf_counter()
    image: Image = STATE["image"]
    syms: TextSymbols = STATE["syms"]
    clf = STATE["classifier"]
    backend = image.backend
    cfg = image.config
    if hi <= lo:
        z = np.zeros(0, np.int64)
        return Chunk(z.astype(np.uint32), z.astype(np.uint8), z.astype(np.uint16), z, z,
                     func_facts=range_checks(image, syms, lo, hi))
    runs_of = section_runs(image, syms.addrs[lo:hi])
    if len(runs_of) > 1:  # one byte buffer per section (image.read stops at a section's end)
        got = [register_kprobes(lo + a, lo + b) for a, b in runs_of]
        first = np.cumsum([0] + [len(c.offs) for c in got])  # each part's first instruction
        return Chunk(np.concatenate([c.offs for c in got]), np.concatenate([c.lens for c in got]),
                     np.concatenate([c.codes for c in got]), np.concatenate([c.counts for c in got]),
                     np.concatenate([c.fail for c in got]), time.perf_counter() - t0,
                     concat_checks([c.func_facts for c in got]),
                     np.concatenate([c.stretches + f for c, f in zip(got, first.tolist())]))
    ff = range_checks(image, syms, lo, hi)  # indexed by function - lo
    A = int(syms.addrs[lo])
    B = int(syms.addrs[hi - 1] + syms.sizes[hi - 1])
    code = backend.runtime_bytes(image, A, B + 32)
    STATE["range_bytes"] = (A, code)  # the range's trailing fill reads them (pool.chunk_fill)
    avail_total = len(code)
    cbuf = ctypes.create_string_buffer(code, avail_total)
    base_ptr = ctypes.addressof(cbuf)
    code_np = np.frombuffer(code, np.uint8)
    nf = hi - lo
    starts_rel = (syms.addrs[lo:hi] - np.uint64(A)).astype(np.int64)
    ends_rel = starts_rel + syms.sizes[lo:hi].astype(np.int64)
    walked = clf.walk(code_np, starts_rel, ends_rel)  # the arch's own boundary walk, vectorised
    dec = STATE.get("decoder")
    if dec is None and backend.capstone_arch and walked is None:
        dec = LinearDecoder(backend.capstone_arch, backend.capstone_mode, not backend.little_endian,
                            quiet=True)
        STATE["decoder"] = dec
    runs = Runs(code_np[:B - A], dec) if dec is not None else None

    def fixup_at(base_rel: int) -> Callable[[np.ndarray, np.ndarray], tuple[int, int] | None]:
        return lambda o, s: clf.length_fixup(code_np, o + base_rel, s)
    many = getattr(clf, "length_fixups", None)  # every fixup of a batch at once (x86 UD1)

    def fixups_at(base_rel: int) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
        return None if many is None else (lambda o, s: many(code_np, o + base_rel, s))

    def fallback(rel: int) -> int | None:
        return clf.fallback_length(code[rel:rel + 16])
    step = max(backend.insn_align, 1)
    total = B - A
    all_offs: list[np.ndarray] = []  # per function, offsets from the function start
    all_lens: list[np.ndarray] = []
    counts = np.zeros(nf, np.int64)
    fail = np.full(nf, -1, np.int64)
    i = 0
    if walked is not None:
        o, ln, counts, fail = walked
        all_offs, all_lens, i = [o], [ln], nf
    while i < nf:
        s0 = int(starts_rel[i])
        if dec is None:  # no decoder: every insn_align step is a candidate, prepare decides
            size = int(ends_rel[i]) - s0
            o = np.arange(0, size, step, dtype=np.int64)
            all_offs.append(o)
            all_lens.append(np.full(len(o), step, np.int64))
            counts[i] = len(o)
            i += 1
            continue
        # one linear decode covering function i and as many following ones as fit the window;
        # a following function is taken from the same stream only when it starts on a boundary
        # of the stream (then the kernel's walk from its start sees the same instructions)
        cap_end = max(int(ends_rel[i]), min(s0 + LinearDecoder.WINDOW, total))
        def fallback_at(p: int, r: int = s0) -> int | None:
            return fallback(r + p)
        o, ln, f = decode_function(dec, base_ptr + s0, s0, cap_end - s0, avail_total - s0, A + s0,
                                   fallback_at, step, fixup_at(s0), runs, fixups_at(s0))
        S = o + s0
        j_end = max(i + 1, int(np.searchsorted(ends_rel, cap_end, side="right")))
        j_end = min(j_end, nf)
        F = None if f is None else s0 + f
        if F is not None:
            jf = int(np.searchsorted(starts_rel, F, side="right")) - 1
            j_end = min(j_end, max(jf, i) + 1)
        if j_end > i + 1 and len(S):
            st = starts_rel[i + 1:j_end]
            k = np.minimum(np.searchsorted(S, st), len(S) - 1)
            bad = np.nonzero(S[k] != st)[0]
            if len(bad):
                j_end = i + 1 + int(bad[0])
                F = F if F is not None and F < int(ends_rel[j_end - 1]) else None
        elif j_end > i + 1:
            j_end = i + 1
        a_idx = np.searchsorted(S, starts_rel[i:j_end])
        b_idx = np.searchsorted(S, ends_rel[i:j_end])
        if F is None:  # no decode failure: every function's slice of the stream at once
            cnt = np.maximum(b_idx - a_idx, 0)
            take = span_indexes(a_idx, cnt)
            all_offs.append(S[take] - np.repeat(starts_rel[i:j_end], cnt))
            all_lens.append(ln[take])
            counts[i:j_end] = cnt
            i = j_end
            continue
        for q in range(i, j_end):
            x, y = int(a_idx[q - i]), int(b_idx[q - i])
            fo = S[x:y] - starts_rel[q]
            fl = ln[x:y]
            if F is not None and starts_rel[q] <= F < max(ends_rel[q], starts_rel[q] + 1):
                fo = np.append(fo, F - starts_rel[q])  # decoding stops here: prepare says why
                fl = np.append(fl, 0)
                fail[q] = F - starts_rel[q]
            all_offs.append(fo)
            all_lens.append(fl)
            counts[q] = len(fo)
        i = j_end
    offs = np.concatenate(all_offs) if all_offs else np.zeros(0, np.int64)
    lens = np.concatenate(all_lens) if all_lens else np.zeros(0, np.int64)
    # the rule pipeline over slices of the range's instructions (cache-sized temporaries: a
    # padding symbol of a megabyte is a million instructions), each slice cut where no
    # arch_adjust_kprobe_addr move can cross it; one slice for [OPTIMIZED] (whole functions)
    optimized = bool(STATE.get("optimized"))
    bounds = [0, len(offs)] if optimized else _slices(counts, len(offs))
    code_parts: list[np.ndarray] = []
    stretches: list[tuple[int, int]] = []
    fidx = addrs = aa = np.zeros(0, np.int64)
    for j0, j1 in zip(bounds[:-1], bounds[1:]):
        c, shared, (fidx, addrs, aa) = _rules_pass(image, clf, code, A, lo, ff, counts, offs,
                                                   lens, j0, j1, runs, step)
        code_parts.append(c)
        for x, y in shared:  # a stretch a slice cut in two is one again (its trailing fill: fill.py)
            if stretches and stretches[-1][1] == j0 + x == j0:
                stretches[-1] = (stretches[-1][0], j0 + y)
            else:
                stretches.append((j0 + x, j0 + y))
    codes = np.concatenate(code_parts) if len(code_parts) != 1 else code_parts[0]
    # 5. [OPTIMIZED] (opt-in): the classifier's bulk form when it has one (addresses it cannot
    # judge go the per-address way, where can_optimize decodes the whole function per address)
    if STATE.get("optimized") and cfg.enabled("OPTPROBES") and backend.have_optprobes and \
            type(backend).optimizable is not Backend.optimizable:
        cand = np.nonzero((codes < REFUSED_BASE) & (codes != ok_code(Method.FTRACE)))[0]
        per_address = cand
        if len(cand):
            f_end = syms.addrs[lo:hi] + syms.sizes[lo:hi].astype(np.uint64)
            opt, slow_opt = clf.optimized(code_np, A, addrs, lens, fidx - lo, syms.addrs[lo:hi],
                                          f_end, cand, aa)
            codes[cand[opt]] |= OPTIMIZED
            per_address = cand[slow_opt]
        for j in per_address.tolist():
            a = int(aa[j])
            owner = image.kallsyms.containing(a)
            if owner and backend.optimizable(PrepareContext(image, a, owner)):
                codes[j] |= OPTIMIZED
    return Chunk(offs.astype(np.uint32), np.minimum(lens, 255).astype(np.uint8), codes, counts,
                 fail, time.perf_counter() - t0, ff,
                 np.array(stretches, np.int64).reshape(-1, 2))


SLICE = 1 << 18  # instructions per pass of the rule pipeline (register_kprobes)
SLICE_GUARD = 16  # a cut inside a function keeps this many of its first instructions whole


def _slices(counts: np.ndarray, n: int) -> list[int]:
    """Bounds of the rule pipeline's slices of ``n`` instructions (``counts`` per function):
    about :data:`SLICE` each, cut at a function's start, or inside a function longer than a
    slice past its first :data:`SLICE_GUARD` instructions (an address adjustment moves an
    entry at most a few bytes, into the same slice)."""
    bounds = [0]
    if n <= SLICE:
        return [0, n]
    ends = np.cumsum(counts)
    starts = ends - counts
    while n - bounds[-1] > SLICE:
        t = bounds[-1] + SLICE
        f = int(np.searchsorted(ends, t, side="right"))  # the function holding instruction t
        s0 = int(starts[f])
        if t - s0 < SLICE_GUARD:
            t = s0 if s0 > bounds[-1] else s0 + SLICE_GUARD
        bounds.append(t)
    bounds.append(n)
    return bounds


def _rules_pass(image: "Image", clf: BulkClassifier, code: bytes, A: int, lo: int,
                ff: dict[str, np.ndarray], counts: np.ndarray, offs_all: np.ndarray,
                lens_all: np.ndarray, j0: int, j1: int, runs: "Runs | None", step: int
                ) -> tuple[np.ndarray, list[tuple[int, int]],
                           tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Stages 2-4 of ``register_kprobe`` for the range's instructions ``[j0, j1)`` (functions
    from ``lo``, ``counts`` instructions each): (outcome codes, stretches sharing an outcome
    (kpatch_core.uniform; slice indexes), (function index, address, adjusted address) of each
    instruction)."""
    syms: TextSymbols = STATE["syms"]
    ends = np.cumsum(counts)
    f0 = int(np.searchsorted(ends, j0, side="right"))
    f1 = int(np.searchsorted(ends, j1 - 1, side="right")) + 1 if j1 > j0 else f0
    cnt = counts[f0:f1].copy()
    if len(cnt):
        cnt[0] -= j0 - int(ends[f0] - counts[f0])
        cnt[-1] -= int(ends[f1 - 1]) - j1
    offs, lens = offs_all[j0:j1], lens_all[j0:j1]
    fidx = np.repeat(np.arange(lo + f0, lo + f1), cnt)
    lfidx = fidx - lo  # index into ff
    fstart = syms.addrs[fidx]
    addrs = fstart + offs.astype(np.uint64)
    # 2. _kprobe_addr + arch_adjust_kprobe_addr (every address: a move is never shared)
    aa = clf.adjust(fstart, offs, addrs)  # a new array where an address moves, else addrs
    # runs of equal instructions (padding): one classified per stretch (kpatch_core.uniform)
    stretches: list[tuple[int, int]] = []
    if runs is not None and len(runs.starts) and not STATE.get("optimized"):
        if "uniform_inputs" not in STATE:  # where the rules' per-address inputs change
            STATE["uniform_inputs"] = uniform.change_points(image, clf)
        stretches = uniform.shared_stretches((runs.starts, runs.ends, runs.period), A, lens,
                                             lfidx, addrs, aa, ff["bl_uniform"], step,
                                             STATE["uniform_inputs"])
    codes = None
    if stretches:
        keep = np.ones(len(addrs), bool)
        for a, b in stretches:
            keep[a + 1:b] = False
        sub = np.flatnonzero(keep)
        sub_codes, slow_sub = _outcomes(image, clf, code, A, lo, ff, offs[sub], lens[sub],
                                        fidx[sub], addrs[sub], aa[sub], step)
        codes = np.empty(len(addrs), np.uint16)
        codes[sub] = sub_codes
        heads = np.array([a for a, _ in stretches], np.int64)
        if not np.isin(heads, sub[slow_sub]).any():  # a per-address prepare answer: not shared
            for a, b in stretches:
                codes[a + 1:b] = codes[a]
        else:
            codes, stretches = None, []
    if codes is None:
        codes, _ = _outcomes(image, clf, code, A, lo, ff, offs, lens, fidx, addrs, aa, step)
    return codes, stretches, (fidx, addrs, aa)


def _outcomes(image: "Image", clf: BulkClassifier, code: bytes, A: int, lo: int,
              ff: dict[str, np.ndarray], offs: np.ndarray, lens: np.ndarray, fidx: np.ndarray,
              addrs: np.ndarray, aa: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Stages 1, 3 and 4 of ``register_kprobe`` for the instructions at sorted ``addrs``
    (adjusted: ``aa``; function ``fidx``, facts ``ff`` of the range from function ``lo``;
    ``code``: the runtime bytes from ``A``): (outcome codes, the indexes the per-address
    ``prepare`` answered)."""
    backend = image.backend
    tables = image.tables
    cfg = image.config
    syms: TextSymbols = STATE["syms"]
    lfidx = fidx - lo  # index into ff
    n = len(addrs)
    codes = np.zeros(n, np.uint16)

    # 1. within_notrace_func (trace_kprobe, before registration)
    if not cfg.enabled("KPROBE_EVENTS_ON_NOTRACE"):
        codes[ff["notrace"][lfidx]] = refused_code(Reason.NOTRACE)
    # 3. check_kprobe_address_safe: the generic check table, in the kernel's order
    in_order = n < 2 or not bool((aa[1:] < aa[:-1]).any())
    ftrace = member_hits(tables.ftrace_sites, aa, in_order)
    check_kprobe_address_safe_vec(AddressArrays(image, aa, lfidx, ff, ftrace, in_order), codes,
                                  UNSET)
    codes[ftrace[codes[ftrace] == UNSET]] = ok_code(Method.FTRACE)
    todo = codes == UNSET
    if step > 1:
        codes[todo & ((aa % np.uint64(step)) != 0)] = refused_code(backend.misaligned_reason)
        todo = codes == UNSET
    # 4. arch_prepare_kprobe: table lookup, the rest through backend.prepare
    sel = np.nonzero(todo)[0]
    if len(sel):
        aa_sel = aa[sel]
        rel_aa = (aa_sel - np.uint64(A)).astype(np.int64)
        # the length of the instruction at the (possibly adjusted) address, -1 when unknown
        sel_lens = lens[sel]
        if aa is not addrs:  # some addresses moved (arch_adjust_kprobe_addr)
            moved_all = np.flatnonzero(aa != addrs)
            at = np.minimum(np.searchsorted(sel, moved_all), len(sel) - 1)
            moved = at[sel[at] == moved_all]
            if len(moved):
                k = np.minimum(np.searchsorted(addrs, aa_sel[moved]), max(n - 1, 0))
                sel_lens[moved] = np.where(addrs[k] == aa_sel[moved], lens[k], -1)
        sub = clf.classify(np.frombuffer(code, np.uint8), A, aa_sel, rel_aa, sel_lens)
        codes[sel] = sub
    slow = np.nonzero((codes == UNSET) | (codes == SLOW))[0]
    for j in slow.tolist():
        a = int(aa[j])
        fi = int(fidx[j])
        func = KSym(syms.names[fi], int(syms.addrs[fi]), int(syms.sizes[fi]))
        if not (func.addr <= a < func.end):
            ks = image.kallsyms.containing(a)
            func = ks if ks is not None else func
        if lens[j] > 0 and a == int(addrs[j]):
            codes[j] = outcome_code(clf.prepare_at(a, func))  # a known boundary: no walk
        else:
            codes[j] = outcome_code(backend.prepare(PrepareContext(image, a, func)))
    return codes, slow
