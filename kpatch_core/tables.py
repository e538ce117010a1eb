"""The kernel's special tables, located by their linker symbols (not section names).

In a linked vmlinux most of these live inside .rodata/.init.data/.text; only the bounding
symbols remain.  Each table is parsed once, on first use, into sorted numpy arrays.

>>> t = image.tables                                      # doctest: +SKIP
>>> t.is_ftrace_site(addr), t.blacklist_hit(addr)          # doctest: +SKIP
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Iterator

import attrs
import numpy as np

from .symbols import base_name
from .verdict import Reason

if TYPE_CHECKING:
    from .image import Image


@attrs.frozen
class BlacklistEntry:
    """One ``/sys/kernel/debug/kprobes/blacklist`` line: ``[start, end)`` and where it came from."""

    start: int
    end: int
    symbol: str
    source: str  # "NOKPROBE_SYMBOL", ".kprobes.text", ".noinstr.text", or an arch area


def relative_targets(rel: np.ndarray, base: int, stride: int) -> np.ndarray:
    """Addresses of ``.long target - .`` fields: entry i sits at ``base + i*stride`` and holds
    ``rel[i]``; computed modulo 2**64 so kernel addresses above 2**63 work."""
    n = len(rel)
    at = np.uint64(base) + np.arange(n, dtype=np.uint64) * np.uint64(stride)
    with np.errstate(over="ignore"):
        return at + rel.astype(np.int64).astype(np.uint64)


def relative_table(image: "Image", start: int, end: int, stride: int) -> np.ndarray:
    """Sorted targets of the s32 self-relative field at +0 of each ``stride``-byte entry."""
    n = (end - start) // stride
    raw = image.read_words(start, start + n * stride, "i4")
    return np.sort(relative_targets(raw[0::stride // 4][:n], start, stride))


class KernelTables:
    """Parsed kernel tables of one image."""

    def __init__(self, image: "Image") -> None:
        self.image = image
        sym = image.symtab.value
        stext, etext = sym("_stext"), sym("_etext")
        if stext is None or etext is None:
            from .errors import InputError
            raise InputError(f"{image.path}: no _stext/_etext symbols; this is not a Linux vmlinux")
        # core text starts in a loaded section and spans no more than the file's loaded bytes
        # (plus alignment gaps): a hostile _etext must not make every reader walk terabytes
        loaded = sum(s.size for s in image._alloc) + (64 << 20)
        if image.section_at(stext) is None or not stext < etext <= stext + loaded:
            from .errors import InputError
            raise InputError(f"{image.path}: malformed vmlinux (_stext {stext:#x} .. _etext "
                             f"{etext:#x} is not loaded text); give a vmlinux image")
        self.stext: int = stext
        self.etext: int = etext
        self.sinittext = sym("_sinittext")
        self.einittext = sym("_einittext")

    # -- text ---------------------------------------------------------------------------------
    def is_core_text(self, addr: int) -> bool:
        """``core_kernel_text`` after boot: ``[_stext, _etext)``."""
        return self.stext <= addr < self.etext

    def is_init_text(self, addr: int) -> bool:
        """``[_sinittext, _einittext)``: freed after boot."""
        return self.sinittext is not None and self.sinittext <= addr < (self.einittext or 0)

    def _range(self, start: str, end: str) -> tuple[int, int] | None:
        s, e = self.image.symtab.value(start), self.image.symtab.value(end)
        if s is None or e is None or e < s:
            return None
        return s, e

    def area(self, start: str, end: str) -> tuple[int, int] | None:
        """``[start, end)`` from two linker symbols, or None when the image lacks them."""
        return self._range(start, end)

    # -- ftrace -------------------------------------------------------------------------------
    @functools.cached_property
    def mcount_records(self) -> np.ndarray:
        """The raw ``__mcount_loc`` records (before ftrace_call_adjust; zeroed ones included)."""
        r = self._range("__start_mcount_loc", "__stop_mcount_loc")
        return self.image.read_pointers(*r) if r else np.zeros(0, np.uint64)

    @functools.cached_property
    def ftrace_sites(self) -> np.ndarray:
        """Sorted ftrace call-site addresses in core text (``__mcount_loc`` + ftrace_call_adjust).

        Records in init text are freed after boot (ftrace_free_init_mem), so they are dropped.
        """
        recs = self.mcount_records
        if not len(recs):
            return np.zeros(0, np.uint64)
        sites = self.image.backend.ftrace_call_adjust_many(self.image, recs)
        sites = np.sort(sites[(sites >= self.stext) & (sites < self.etext)])
        # unique (np.unique would import numpy.ma: 60 ms of a cold start)
        return sites[np.concatenate(([True], sites[1:] != sites[:-1]))] if len(sites) else sites

    def is_ftrace_site(self, addr: int) -> bool:
        """``ftrace_location(addr) == addr``."""
        s = self.ftrace_sites
        i = int(np.searchsorted(s, np.uint64(addr)))
        return i < len(s) and int(s[i]) == addr

    def ftrace_sites_in(self, start: int, end: int) -> list[int]:
        """ftrace sites in ``[start, end)``."""
        s = self.ftrace_sites
        lo, hi = np.searchsorted(s, [np.uint64(max(start, 0)), np.uint64(end)])
        return s[lo:hi].tolist()

    def has_ftrace_record(self, start: int, size: int) -> bool:
        """``ftrace_location_range(start, start + size - 1)`` is non-zero."""
        return bool(self.ftrace_sites_in(start, start + max(size, 1)))

    @functools.cache
    def ftrace_pages(self, page_size: int, entry_size: int) -> tuple[np.ndarray, ...]:
        """The record arrays of the ``ftrace_page`` groups after boot: ftrace_process_locs
        fills groups of ``PAGE_SIZE << order`` bytes (ftrace_allocate_records, order from the
        whole ``__mcount_loc`` count, zero records included) with the non-zero adjusted records
        in order; ftrace_free_mem then drops the init-text records (memmove within a group)."""
        recs = self.mcount_records.tolist()
        cap, n = [], len(recs)
        while n > 0:
            pages = -(-n // (page_size // entry_size))
            order = min(max(pages.bit_length() - 1, 0), 10)  # fls(pages) - 1, MAX_PAGE_ORDER
            cap.append((page_size << order) // entry_size)
            n -= min(cap[-1], n)
        groups: list[list[int]] = [[] for _ in cap]
        adjusted, i = self.image.backend.ftrace_call_adjust_many(self.image, self.mcount_records), 0
        for r, a in zip(recs, adjusted.tolist()):
            a = a if r else 0
            if not a:
                continue  # skipped (zeroed weak records, dropped exit text)
            if len(groups[i]) >= cap[i]:
                i += 1
            groups[i].append(a)
        out = []
        for g in groups:
            arr = np.array(g, dtype=np.uint64)
            arr = arr[(arr >= self.stext) & (arr < self.etext)]  # init text freed
            if len(arr):
                out.append(arr)
        return tuple(out)

    def lookup_rec(self, start: int, end: int, page_size: int, entry_size: int,
                   insn_size: int) -> int:
        """``ftrace_location_range(start, end)`` as the kernel answers it (lookup_rec: the first
        group whose range overlaps, then bsearch with ftrace_cmp_recs): with several records in
        ``[start, end]`` it is the one the binary search meets first, not the lowest; 0 if none."""
        for g in self.ftrace_pages(page_size, entry_size):
            if end < int(g[0]) or start >= int(g[-1]) + insn_size:
                continue
            base, num = 0, len(g)
            while num > 0:  # lib/bsearch.c
                pivot = base + (num >> 1)
                ip = int(g[pivot])
                if end < ip:
                    pass
                elif start >= ip + insn_size:
                    base, num = pivot + 1, num - 1
                else:
                    return ip
                num >>= 1
        return 0

    # -- blacklist ----------------------------------------------------------------------------
    @functools.cached_property
    def nokprobe_list(self) -> np.ndarray:
        """Addresses in ``_kprobe_blacklist`` (NOKPROBE_SYMBOL / _ASM_NOKPROBE)."""
        r = self._range("__start_kprobe_blacklist", "__stop_kprobe_blacklist")
        return self.image.read_pointers(*r) if r else np.zeros(0, np.uint64)

    @functools.cached_property
    def blacklist(self) -> tuple[BlacklistEntry, ...]:
        """The kprobe blacklist as ``populate_kprobe_blacklist`` builds it at boot."""
        ks = self.image.kallsyms
        out: list[BlacklistEntry] = []

        def add_ksym(entry: int, source: str) -> int:
            # kprobe_add_ksym_blacklist: needs kernel text and a kallsyms symbol; adds [entry, entry+size)
            if not (self.is_core_text(entry) or self.is_init_text(entry)):
                return -1
            s = ks.containing(entry)
            if s is None:
                return -1
            out.append(BlacklistEntry(entry, entry + s.size, s.name, source))
            return s.size

        for entry in self.nokprobe_list.tolist():
            add_ksym(int(entry), "NOKPROBE_SYMBOL")
        areas = [("__kprobes_text_start", "__kprobes_text_end", ".kprobes.text"),
                 ("__noinstr_text_start", "__noinstr_text_end", ".noinstr.text")]
        areas += [(s, e, s.strip("_").replace("_start", "")) for s, e in
                  self.image.backend.blacklist_areas(self.image.features)]
        for start_sym, end_sym, source in areas:
            r = self._range(start_sym, end_sym)
            if r is None:
                continue
            e = r[0]
            while e < r[1]:  # kprobe_add_area_blacklist
                n = add_ksym(e, source)
                if n < 0:
                    break
                e += max(n, 1)
        return tuple(out)

    @functools.cached_property
    def _blacklist_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bl = sorted(self.blacklist, key=lambda b: b.start)
        starts = np.array([b.start for b in bl], dtype=np.uint64)
        ends = np.array([b.end for b in bl], dtype=np.uint64)
        # running max of ends lets one searchsorted answer "inside any range"
        maxend = np.maximum.accumulate(ends) if len(ends) else ends
        self._bl_sorted = bl
        return starts, ends, maxend

    def _in_list(self, addr: int) -> BlacklistEntry | None:
        starts, ends, maxend = self._blacklist_arrays
        i = int(np.searchsorted(starts, np.uint64(addr), side="right")) - 1
        if i < 0 or int(maxend[i]) <= addr:
            return None
        while i >= 0:
            if int(starts[i]) <= addr < int(ends[i]):
                return self._bl_sorted[i]
            i -= 1
        return None

    def _within_blacklist_direct(self, addr: int) -> tuple[Reason, str] | None:
        r = self._range("__kprobes_text_start", "__kprobes_text_end")
        if r and r[0] <= addr < r[1]:  # arch_within_kprobe_blacklist (weak)
            return Reason.BLACKLIST_AREA, ".kprobes.text"
        if self.image.backend.within_arch_blacklist(self.image, addr):
            return Reason.BLACKLIST_AREA, "arch area"
        hit = self._in_list(addr)
        if hit is None:
            return None
        if hit.source == "NOKPROBE_SYMBOL":
            return Reason.BLACKLIST_NOKPROBE, hit.symbol
        return Reason.BLACKLIST_AREA, f"{hit.source} ({hit.symbol})"

    def blacklist_hit(self, addr: int) -> tuple[Reason, str] | None:
        """``within_kprobe_blacklist``: (reason, detail) when ``addr`` is blacklisted."""
        direct = self._within_blacklist_direct(addr)
        if direct:
            return direct
        s = self.image.kallsyms.containing(addr)
        if s is None or "." not in s.name:
            return None
        base = self.image.backend.lookup_name(self.image, base_name(s.name))
        if base is None:
            return None
        via = self._within_blacklist_direct(base)
        if via is None:
            return None
        return Reason.BLACKLIST_SUFFIX, f"{base_name(s.name)}: {via[1]}"

    # -- reserved text ------------------------------------------------------------------------
    @functools.cached_property
    def jump_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted site starts, ends) of ``__jump_table`` entries (s32 code, s32 target, long key)."""
        r = self._range("__start___jump_table", "__stop___jump_table")
        if r is None:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        code = relative_table(self.image, r[0], r[1], 16)
        code = code[(code >= self.stext) & (code < self.etext)]
        sizes = np.asarray(self.image.backend.jump_label_sizes(self.image, code), np.uint64)
        return code, code + sizes

    def jump_label_hit(self, addr: int) -> int | None:
        """``jump_label_text_reserved``: the site start when ``addr`` is inside a site."""
        starts, ends = self.jump_labels
        i = int(np.searchsorted(starts, np.uint64(addr), side="right")) - 1
        while i >= 0 and int(starts[i]) + 8 > addr:
            if int(starts[i]) <= addr < int(ends[i]):
                return int(starts[i])
            i -= 1
        return None

    @functools.cached_property
    def static_call_sites(self) -> np.ndarray:
        """Sorted ``.static_call_sites`` call sites (s32 addr, s32 key)."""
        r = self._range("__start_static_call_sites", "__stop_static_call_sites")
        if r is None or not self.image.backend.static_call_inline:
            return np.zeros(0, np.uint64)
        return relative_table(self.image, r[0], r[1], 8)

    def static_call_hit(self, addr: int) -> int | None:
        """``static_call_text_reserved``: the site when ``site <= addr < site + 5``."""
        s = self.static_call_sites
        i = int(np.searchsorted(s, np.uint64(addr), side="right")) - 1
        if i >= 0 and int(s[i]) <= addr < int(s[i]) + 5:
            return int(s[i])
        return None

    @functools.cached_property
    def bug_sites(self) -> np.ndarray:
        """Sorted ``__bug_table`` trap addresses (relative bug_addr_disp at +0)."""
        r = self._range("__start___bug_table", "__stop___bug_table")
        if r is None:
            return np.zeros(0, np.uint64)
        return relative_table(self.image, r[0], r[1], self.image.config.bug_entry_size)

    def is_bug_site(self, addr: int) -> bool:
        """``find_bug(addr)`` (exact match)."""
        s = self.bug_sites
        i = int(np.searchsorted(s, np.uint64(addr)))
        return i < len(s) and int(s[i]) == addr

    @functools.cached_property
    def extable(self) -> np.ndarray:
        """Sorted instruction addresses that have an ``__ex_table`` fixup."""
        r = self._range("__start___ex_table", "__stop___ex_table")
        if r is None:
            return np.zeros(0, np.uint64)
        return relative_table(self.image, r[0], r[1], self.image.backend.extable_entry_size)

    def has_extable(self, addr: int) -> bool:
        """``search_exception_tables(addr)`` finds an entry."""
        s = self.extable
        i = int(np.searchsorted(s, np.uint64(addr)))
        return i < len(s) and int(s[i]) == addr

    def extable_in(self, start: int, end: int) -> Iterator[int]:
        """Exception-table instruction addresses in ``[start, end)``."""
        s = self.extable
        lo, hi = np.searchsorted(s, [np.uint64(start), np.uint64(end)])
        yield from s[lo:hi].tolist()
