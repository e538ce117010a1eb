"""Full analysis: every text symbol, every instruction boundary, the kernel's verdict for each.

``analyze(image)`` answers, for each instruction boundary of every kallsyms symbol in core text,
what ``check(image, "0xADDR")`` answers (accepted and how, or refused with which rule and errno),
plus per-function facts users ask about (notrace, blacklist and its source, compiler clones,
duplicate names, entry shift, syscall entry points, kretprobe eligibility).

How it is fast (6.5 M x86 instructions in a few seconds) while equal to :func:`probe.check`:

- per-function facts (notrace, blacklist) and per-address table rules (ftrace sites, jump labels,
  static calls, bug sites) are evaluated with numpy over sorted arrays, in the kernel's order;
- instruction boundaries come from capstone's C decoder (``cs_disasm`` without details, sizes read
  straight from the returned array), one call per function, over the runtime bytes
  (``backend.runtime_bytes`` once per range);
- the architecture step (``arch_prepare_kprobe``) is a table lookup when the backend ships a bulk
  classifier (``backend.bulk_classifier``); whatever the classifier does not cover, and every
  address of a backend without one, goes through ``backend.prepare`` exactly as ``check`` does;
- ranges of functions are analysed in parallel (fork, one process per core).

The parts, each in its own module: outcome codes (:mod:`kpatch_core.outcome`), decoding
(:mod:`kpatch_core.decode`), the rule pipeline (:mod:`kpatch_core.rules`, driven by the generic
check table of :mod:`kpatch_core.safety`), the worker pool (:mod:`kpatch_core.pool`), the result
(:mod:`kpatch_core.analysis`) and the report facts (:mod:`kpatch_core.facts`).  The results cache
is the caller's (:func:`kpatch_core.cache.cached_analysis`).

A backend's bulk classifier (``<backend package>/bulk.py`` with ``classifier(backend, image)``,
found by ``Backend.bulk_classifier``) may provide, all optional but ``classify``:

- ``classify(code, base, addrs, rel, lens) -> uint16 codes``: the outcome of
  ``arch_prepare_kprobe`` for sorted addresses (``code``: runtime bytes from ``base``, ``rel``
  offsets into it, ``lens`` instruction lengths or -1), :data:`SLOW` where ``prepare`` must decide;
- ``fallback_length(code) -> int``: a length where capstone stops (0 ends the walk there, as the
  kernel's decoder does); without it the walk steps over ``insn_align`` bytes;
- ``length_fixup(code, offs, sizes) -> (index, length) | None``: lengths the kernel decodes
  differently from capstone (x86 UD1);
- ``adjust(fstart, offs, aa) -> aa``: vectorised ``arch_adjust_kprobe_addr``;
- ``prepare_at(addr, func)``: ``prepare`` for an address known to be a boundary (no walk);
- ``walk(code, starts, ends) -> (offs, lens, counts, fail)``: the kernel's boundary walk from
  each function start, for all functions of a buffer at once (replaces capstone's);
- ``arch_blacklist_ranges() -> [(start, end)]``: where ``backend.within_arch_blacklist`` holds,
  so the blacklist is decided per function instead of per address.

>>> a = analyze(Image.open("vmlinux"))                        # doctest: +SKIP
>>> f = a.function("vfs_read"); [i.verdict for i in a.insns(f)][:2]   # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from . import fill, heap, pool, rules
from .analysis import ANALYZER_VERSION, TYPE_NAMES, Analysis, TextSymbols, iter_insns
from .bulk import classify_inputs, fixed_width_walk, mark_ranges
from .decode import LinearDecoder, Runs, decode_function
from .facts import (SUBSYSTEM_PREFIXES, StaticFacts, clone_kind, entry_facts, function_facts,
                    image_meta, paused_gc, static_facts, subsystem, symbol_areas, text_areas)
from .outcome import (ERRNOS, METHODS, OK_NO_METHOD, OPTIMIZED, REASONS, REFUSED_BASE, SLOW,
                      Outcome, decode_code, ok_code, outcome_code, refused_code)

if TYPE_CHECKING:
    from .image import Image

__all__ = ["ANALYZER_VERSION", "TYPE_NAMES", "Analysis", "TextSymbols", "iter_insns",
           "classify_inputs", "fixed_width_walk", "mark_ranges", "LinearDecoder", "Runs",
           "decode_function", "SUBSYSTEM_PREFIXES", "clone_kind", "image_meta", "subsystem",
           "text_areas", "ERRNOS", "METHODS", "OK_NO_METHOD", "OPTIMIZED", "REASONS",
           "REFUSED_BASE", "SLOW", "Outcome", "decode_code", "ok_code", "outcome_code",
           "refused_code", "analyze", "analyze_function"]


def analyze(image: "Image", jobs: int | None = None,
            progress: Callable[[int, int], None] | None = None,
            optimized: bool = False, facts: bool = True) -> Analysis:
    """The full analysis of ``image`` (always computed: the results cache is the caller's,
    :func:`kpatch_core.cache.cached_analysis`).

    ``jobs``: worker processes (default: every core); ``progress(done, total)`` is called as
    ranges finish; ``optimized``: also predict ``[OPTIMIZED]`` per accepted instruction
    (jump-optimized kprobes; vectorised where the backend's classifier supports it, else one
    ``can_optimize`` per address); ``facts``: False defers the per-symbol facts to their first
    use (``Analysis.facts``), with the area and fill columns the summary reads computed now.
    """
    t0 = time.perf_counter()
    heap.keep_freed_memory()  # range arrays reused from the heap, not faulted in again
    timing: dict[str, float] = {}
    with paused_gc():  # symbol tables: 100,000s of lists and dicts (resumed before the fork)
        untyped = TextSymbols.build(image, types=False)  # the types while the workers decode
        timing["symbols"] = time.perf_counter() - t0
        rules.prepare_state(image, untyped, optimized, func_facts=False)  # those in the workers
        timing["tables"] = time.perf_counter() - t0
    clf = rules.STATE["classifier"]
    syms = untyped

    def facts_meanwhile() -> StaticFacts | list[str]:  # computed while the workers decode
        nonlocal syms
        syms = untyped.typed(image)
        out = static_facts(image, syms, None, clf) if facts else symbol_areas(image, syms.addrs)
        timing["static_facts" if facts else "areas"] = time.perf_counter() - t0
        return out

    chunks, static, fill_counts = pool.run_filled(untyped, jobs, progress, facts_meanwhile)
    lo, counts, offs, lens, codes, fail = pool.concat(chunks)
    ff = pool.concat_checks(chunks)
    timing["decode"] = time.perf_counter() - t0
    if len(fill_counts) != len(syms):
        fill_counts = fill.trailing_fill(image, syms, lo, counts, offs, lens)

    def make_facts(static: StaticFacts) -> list[dict]:
        function_facts(image, static, ff)
        out = entry_facts(image, syms, static, lo, counts, offs, codes, fail)
        fill.annotate(image, syms, lo, counts, offs, lens, out, fill_counts)  # padding
        return out
    meta = image_meta(image)
    meta["analyzer"] = ANALYZER_VERSION
    meta["optimized"] = bool(optimized)
    if isinstance(static, StaticFacts):
        a = Analysis(meta, syms, lo, counts, offs, lens, codes, make_facts(static))
    else:  # the facts on first use; what the summary reads now
        a = Analysis(meta, syms, lo, counts, offs, lens, codes, None,
                     columns={"area": static, "fill": fill_counts},
                     facts_factory=lambda: make_facts(static_facts(image, syms, None, clf)))
    timing["facts"] = time.perf_counter() - t0
    meta["timing"] = {k: round(v, 3) for k, v in timing.items()}
    meta["worker_seconds"] = [round(c.seconds, 3) for c in chunks]
    a.seconds = time.perf_counter() - t0
    rules.STATE.clear()
    return a


def analyze_function(image: "Image", name: str) -> tuple[Analysis, list[int]]:
    """Analyse only the symbols called ``name`` (fast path for ``kpatch-analyze func``)."""
    from .errors import InputError
    syms = TextSymbols.build(image)
    idx = [i for i, n in enumerate(syms.names) if n == name]
    if not idx:
        if image.kallsyms.count(name):
            raise InputError(f"{name}: not a symbol in core text [_stext, _etext)")
        raise InputError(f"{name}: no such symbol in kallsyms")
    rules.prepare_state(image, syms)
    chunks = [rules.register_kprobes(i, i + 1) for i in idx]
    sel = TextSymbols(syms.addrs[idx], syms.sizes[idx], [syms.names[i] for i in idx], syms.types[idx])
    ff = {k: v[idx] for k, v in rules.STATE["func_facts"].items()}
    lo, counts, offs, lens, codes, fail = pool.concat(chunks)
    static = static_facts(image, sel, ff, rules.STATE["classifier"])
    facts = entry_facts(image, sel, static, lo, counts, offs, codes, fail)
    fill.annotate(image, sel, lo, counts, offs, lens, facts)
    rules.STATE.clear()
    meta = image_meta(image)
    return Analysis(meta, sel, lo, counts, offs, lens, codes, facts), list(range(len(idx)))


