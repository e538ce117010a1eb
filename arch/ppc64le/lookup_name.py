"""ppc64 ``kprobe_lookup_name`` (arch/powerpc/kernel/kprobes.c) for many symbols at once: where
``SYM+0`` lands once the kernel has moved it (the full analysis asks it of every text symbol).

The per-symbol form is ``Ppc64leBackend.lookup_name``: with KPROBES_ON_FTRACE the ftrace site in
the first 16 bytes (``ftrace_location_range(addr, addr + 16)``: on 7.x out-of-line ftrace
kernels the record the kernel's binary search meets, ``lookup_rec``), else the ELFv2 local entry
point (``ppc_function_entry``: 8 after the TOC setup pair).  Here the binary search runs for all
addresses in lockstep, one ftrace page group at a time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .insn import DYN_FTRACE_SIZE, FTRACE_ENTRY_WINDOW, INSN_SIZE, PAGE_ALIGNED_SECTION

if TYPE_CHECKING:
    from kpatch_core.image import Image

_TOC_HI = np.array([0x3C4C0000, 0x3C400000], np.uint32)  # addis r2,r12,X / lis r2,X
_TOC_LO = 0x38420000  # addi r2,r2,Y


def lookup_rec_many(groups: list[np.ndarray], start: np.ndarray, end: np.ndarray,
                    insn_size: int) -> np.ndarray:
    """``lookup_rec(start, end)`` for many ranges (``Tables.lookup_rec``): the first page group
    whose range overlaps, then lib/bsearch.c with ``ftrace_cmp_recs``; the record found, 0 for
    none."""
    found = np.zeros(len(start), np.uint64)
    todo = np.ones(len(start), bool)
    for g in groups:
        if not len(g) or not todo.any():
            continue
        g = np.asarray(g, np.uint64)
        q = np.flatnonzero(todo & ~((end < g[0]) | (start >= g[-1] + np.uint64(insn_size))))
        if not len(q):
            continue
        s, e = start[q], end[q]
        base = np.zeros(len(q), np.int64)
        num = np.full(len(q), len(g), np.int64)
        hit = np.zeros(len(q), np.uint64)
        live = num > 0
        while live.any():
            pivot = base + (num >> 1)
            ip = g[np.where(live, pivot, 0)]
            above = s >= ip + np.uint64(insn_size)
            here = live & ~(e < ip) & ~above
            hit[here] = ip[here]
            go_up = live & above & ~here
            base = np.where(go_up, pivot + 1, base)
            num = np.where(go_up, num - 1, num)
            num = np.where(here, 0, num >> 1)
            live = num > 0
        done = hit != 0
        found[q[done]] = hit[done]
        todo[q[done]] = False  # the others go on to the next overlapping group
    return found


def kprobe_lookup_names(image: "Image", addrs: np.ndarray) -> np.ndarray:
    """``Ppc64leBackend.lookup_name(image, NAME, 0)`` for symbols whose ``kallsyms_lookup_name``
    address is each of ``addrs``: the address the kernel probes for ``NAME+0``."""
    addrs = np.asarray(addrs, np.uint64)
    out = addrs.copy()
    todo = np.ones(len(addrs), bool)
    if image.config.enabled("KPROBES_ON_FTRACE"):
        if image.features.has("PPC_FTRACE_OUT_OF_LINE"):
            page = image.section_alignment(PAGE_ALIGNED_SECTION) or 4096
            groups = list(image.tables.ftrace_pages(page, DYN_FTRACE_SIZE))
            rec = lookup_rec_many(groups, addrs, addrs + np.uint64(FTRACE_ENTRY_WINDOW), INSN_SIZE)
            out = np.where(rec != 0, rec, out)
            todo &= rec == 0
        sites = image.tables.ftrace_sites
        if len(sites):  # the first site in [addr, addr + 16]
            k = np.searchsorted(sites, addrs, side="left")
            first = sites[np.minimum(k, len(sites) - 1)]
            hit = todo & (k < len(sites)) & (first <= addrs + np.uint64(FTRACE_ENTRY_WINDOW))
            out = np.where(hit, first, out)
            todo &= ~hit
    if todo.any():  # ppc_function_entry: the local entry after the TOC setup pair
        at = addrs[todo]
        w0 = image.read_u32_at(at)
        w1 = image.read_u32_at(at + np.uint64(INSN_SIZE))
        toc = np.isin(w0 & np.uint32(0xFFFF0000), _TOC_HI) & \
            ((w1 & np.uint32(0xFFFF0000)) == np.uint32(_TOC_LO))
        out[todo] = np.where(toc, at + np.uint64(8), at)
    return out
