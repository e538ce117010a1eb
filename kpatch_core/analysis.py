"""The result of a full analysis: the text symbols, one outcome code per instruction, and the
per-symbol facts (what the cache stores and the reports read).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import attrs
import numpy as np

from .outcome import OPTIMIZED, REFUSED_BASE, Outcome, decode_code
from .symbols import STT_FUNC, STT_OBJECT

if TYPE_CHECKING:
    from .image import Image

ANALYZER_VERSION = "5"  # bump when verdict logic changes: cached results are keyed by it

TYPE_NAMES = ("notype", "func", "object")


@attrs.define
class TextSymbols:
    """Every kallsyms symbol (first alias per address) in core text ``[_stext, _etext)``."""

    addrs: np.ndarray  # uint64, sorted
    sizes: np.ndarray  # uint64, the kernel's (distance to the next kallsyms address)
    names: list[str]
    types: np.ndarray  # uint8 index into TYPE_NAMES (func when any alias is one by evidence)

    @classmethod
    def build(cls, image: "Image", types: bool = True) -> "TextSymbols":
        """The text symbols of ``image``; ``types`` False leaves every type ``notype`` (the
        decode does not read them: :meth:`typed` adds them while it runs)."""
        ks = image.kallsyms
        t = image.tables
        m = (ks.uaddrs >= np.uint64(t.stext)) & (ks.uaddrs < np.uint64(t.etext))
        idx = np.nonzero(m)[0]
        sizes = ks.usizes[idx].copy()
        if len(idx):  # the last symbol in text ends at _etext at most for our purposes
            last = int(ks.uaddrs[idx[-1]])
            if sizes[-1] == 0 or last + int(sizes[-1]) > t.etext:
                sizes[-1] = np.uint64(max(t.etext - last, 0))
        names = list(map(ks.names.__getitem__, ks.ufirst[idx].tolist()))
        out = cls(ks.uaddrs[idx].copy(), sizes, names, np.zeros(len(idx), np.uint8))
        return out.typed(image) if types else out

    def typed(self, image: "Image") -> "TextSymbols":
        """These symbols with their types: func when any alias is one by the evidence a boot
        image holds too (names, BTF, __mcount_loc, entry words), not the ELF's, so the
        analysis of /boot files and of the debug vmlinux agree (issue 17); object likewise."""
        from .bootimage.symbol_types import evidence_types
        ks = image.kallsyms
        t = image.tables
        lo_hi = np.searchsorted(ks.addrs, np.array([t.stext, t.etext], np.uint64), side="left")
        stype = np.zeros(len(ks.names), np.uint8)
        stype[int(lo_hi[0]):int(lo_hi[1])] = evidence_types(image, int(lo_hi[0]), int(lo_hi[1]))
        is_func = (stype == STT_FUNC).astype(np.uint8)
        is_obj = (stype == STT_OBJECT).astype(np.uint8)
        any_func = np.maximum.reduceat(is_func, ks.ufirst) if len(ks.ufirst) else is_func
        any_obj = np.maximum.reduceat(is_obj, ks.ufirst) if len(ks.ufirst) else is_obj
        m = (ks.uaddrs >= np.uint64(t.stext)) & (ks.uaddrs < np.uint64(t.etext))
        idx = np.nonzero(m)[0]
        types = np.where(any_func[idx] > 0, 1, np.where(any_obj[idx] > 0, 2, 0)).astype(np.uint8)
        return TextSymbols(self.addrs, self.sizes, self.names, types)

    def __len__(self) -> int:
        return len(self.names)


@attrs.define
class Analysis:
    """The full analysis of one image: symbols, per-instruction outcomes, per-function facts."""

    meta: dict
    syms: TextSymbols
    lo: np.ndarray  # int64 index of each symbol's first instruction in the flat arrays
    counts: np.ndarray  # int64 instructions per symbol
    offs: np.ndarray  # uint32 instruction offset in its symbol
    lens: np.ndarray  # uint8
    codes: np.ndarray  # uint16 outcome codes
    # per symbol, the JSON fields that are not counts (None: made on first use by
    # ``facts_factory``; ``columns`` answer the summary's questions without them)
    _facts: list[dict] | None
    seconds: float = 0.0
    from_cache: bool = False
    runtime: list[bytes] | None = None  # per symbol, its runtime bytes (+16), when kept
    _by_name: dict[str, list[int]] | None = None
    columns: dict[str, Any] | None = None  # per-symbol facts known without ``facts``: area, fill
    facts_factory: Callable[[], list[dict]] | None = None

    def __len__(self) -> int:
        return len(self.syms)

    @property
    def facts(self) -> list[dict]:
        """Per symbol, the JSON fields that are not counts (made now when they were deferred)."""
        if self._facts is None:
            if self.facts_factory is None:
                raise ValueError("analysis without per-symbol facts")
            self._facts = self.facts_factory()
            self.facts_factory = None
        return self._facts

    def column(self, field: str) -> list | np.ndarray:
        """One per-symbol fact for every symbol (from ``columns`` when there, else the facts)."""
        if self.columns is not None and field in self.columns:
            return self.columns[field]
        return [f.get(field) for f in self.facts]

    def index(self, name: str) -> list[int]:
        """Indexes of the symbols called ``name`` (several for duplicate names)."""
        if self._by_name is None:
            d: dict[str, list[int]] = {}
            for i, n in enumerate(self.syms.names):
                d.setdefault(n, []).append(i)
            self._by_name = d
        return self._by_name.get(name, [])

    def insns(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, lengths, codes) of symbol ``i``'s instructions."""
        a, b = int(self.lo[i]), int(self.lo[i] + self.counts[i])
        return self.offs[a:b], self.lens[a:b], self.codes[a:b]

    def outcome_at(self, addr: int) -> Outcome | None:
        """The outcome recorded for the instruction starting at ``addr``, or None."""
        i = int(np.searchsorted(self.syms.addrs, np.uint64(addr), side="right")) - 1
        if i < 0:
            return None
        o, _, c = self.insns(i)
        k = int(np.searchsorted(o, np.uint32(addr - int(self.syms.addrs[i]))))
        if k < len(o) and int(o[k]) == addr - int(self.syms.addrs[i]):
            return decode_code(int(c[k]))
        return None

    def function_json(self, i: int) -> dict:
        """The ``--json`` object of symbol ``i`` (schema: README, JSON Lines schema)."""
        _, _, c = self.insns(i)
        d = dict(self.facts[i])
        vals, cnts = np.unique(c, return_counts=True)
        methods: dict[str, int] = {}
        refused: dict[str, int] = {}
        ok = 0
        for v, k in zip(vals.tolist(), cnts.tolist()):
            o = decode_code(v)
            if o.ok:
                ok += k
                methods[o.label] = methods.get(o.label, 0) + k
            else:
                refused[o.label] = refused.get(o.label, 0) + k
        d["insns"] = int(len(c))
        d["probeable"] = ok
        d["methods"] = methods
        d["refused"] = refused
        d["optimized"] = int(((c & np.uint16(OPTIMIZED)) != 0).sum()) \
            if self.meta.get("optimized") else None
        return d

    def ok_mask(self) -> np.ndarray:
        """Per instruction: accepted."""
        return (self.codes & np.uint16(0x7FFF)) < REFUSED_BASE

    def fill_mask(self) -> np.ndarray:
        """Per instruction: padding after its symbol's last real instruction (kpatch_core.fill)."""
        from .fill import fill_mask
        return fill_mask(self.counts, self._fill())

    def _fill(self) -> np.ndarray:
        """Per symbol: its trailing fill instructions."""
        fill = self.column("fill")
        if isinstance(fill, np.ndarray):
            return fill.astype(np.int64)
        return np.array([int(x or 0) for x in fill], np.int64) if len(fill) else \
            np.zeros(0, np.int64)

    def per_symbol(self) -> tuple[np.ndarray, np.ndarray]:
        """(instructions, probeable instructions) per symbol, fill left out."""
        counts = np.asarray(self.counts, np.int64)
        fill = self._fill()
        n = np.maximum(counts - np.minimum(fill, counts), 0)  # a symbol's fill is its tail
        return n, segment_sums(self.ok_mask(), np.asarray(self.lo, np.int64), n)

    def entry_codes(self) -> np.ndarray:
        """Per symbol: the outcome code of a probe on its first address (0 when none)."""
        out = np.zeros(len(self.counts), np.uint16)
        has = (self.counts > 0)
        idx = self.lo[has]
        first = self.offs[idx] == 0
        sel = np.nonzero(has)[0][first]
        out[sel] = self.codes[self.lo[sel]]
        return out

    def totals(self) -> dict:
        """Whole-image counts: instructions by outcome, functions, entries by outcome (a probe on
        each STT_FUNC symbol's address, as the summary always counted them).  Instruction
        counts and shares leave fill out (``fill``: padding instructions, ``fill_by_outcome``
        their verdicts)."""
        is_fill = self.fill_mask()
        fill_counts, real_counts = _split_counts(self.codes, is_fill)
        fill_by: dict[str, int] = {}
        for v in np.flatnonzero(fill_counts).tolist():
            lab = decode_code(v).label
            fill_by[lab] = fill_by.get(lab, 0) + int(fill_counts[v])
        present = np.flatnonzero(real_counts)
        by: dict[str, int] = {}
        ok = 0
        for v, k in zip(present.tolist(), real_counts[present].tolist()):
            o = decode_code(v)
            by[o.label] = by.get(o.label, 0) + int(k)
            ok += int(k) if o.ok else 0
        funcs = self.syms.types == 1
        ec = self.entry_codes()[funcs]
        entries: dict[str, int] = {}
        rejected: dict[tuple[str, str], int] = {}
        eok = 0
        for v, k in zip(*[x.tolist() for x in np.unique(ec, return_counts=True)]):
            if v == 0:
                rejected[("NOT_BOUNDARY", "-")] = rejected.get(("NOT_BOUNDARY", "-"), 0) + k
                continue
            o = decode_code(v)
            if o.ok:
                eok += k
                entries[o.label] = entries.get(o.label, 0) + k
            else:
                kk = (o.label, o.errno or "")
                rejected[kk] = rejected.get(kk, 0) + k
        opt = int(real_counts[(np.arange(len(real_counts)) & OPTIMIZED) != 0].sum()) \
            if self.meta.get("optimized") else None
        return {"insns": int(real_counts.sum()), "probeable_insns": ok, "optimized_insns": opt,
                "by_outcome": dict(sorted(by.items(), key=lambda x: -x[1])),
                "fill": int(fill_counts.sum()),
                "fill_by_outcome": dict(sorted(fill_by.items(), key=lambda x: -x[1])),
                "symbols": len(self.syms), "functions": int(funcs.sum()),
                "probeable_entries": eok,
                "entry_methods": dict(sorted(entries.items(), key=lambda x: -x[1])),
                "rejected_entries": [[r, e, c] for (r, e), c in
                                     sorted(rejected.items(), key=lambda x: -x[1])]}

    def groups(self, field: str) -> list[dict]:
        """Counts per value of a per-symbol fact (``area``, ``subsystem``): symbols,
        instructions, probeable instructions, function entries and probeable ones; largest
        first."""
        n, ok = self.per_symbol()
        ec = self.entry_codes()
        eok = ((ec & np.uint16(0x7FFF)) < REFUSED_BASE) & (ec != 0)
        col = self.column(field)
        # group of each symbol, numbered in order of first appearance (C-speed dict and map)
        ids = {v: g for g, v in enumerate(dict.fromkeys(col))}
        gid = np.fromiter(map(ids.__getitem__, col), np.int64, len(col))
        func = np.asarray(self.syms.types) == 1
        cols = [np.bincount(gid, weights=w, minlength=len(ids)).astype(np.int64).tolist()
                for w in (None, n, ok, func, func & eok)]
        rows = [{"name": k, "symbols": cols[0][g], "insns": cols[1][g], "probeable_insns": cols[2][g],
                 "functions": cols[3][g], "probeable_entries": cols[4][g]} for k, g in ids.items()]
        return sorted(rows, key=lambda r: -r["insns"])


COUNT_BLOCK = 1 << 18  # instructions per block of _split_counts (cache-sized temporaries)


def _split_counts(codes: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many instructions have each outcome code (65,536 counts) where ``mask`` holds and
    where it does not: one ``bincount`` of (mask, code) per block of instructions (keys made
    in the index type ``bincount`` counts in, so it makes no copy of its own)."""
    both = np.zeros(2 << 16, np.int64)
    for a in range(0, len(codes), COUNT_BLOCK):
        key = codes[a:a + COUNT_BLOCK].astype(np.intp)
        key |= mask[a:a + COUNT_BLOCK].view(np.uint8).astype(np.intp) << 16
        both += np.bincount(key, minlength=2 << 16)
    return both[1 << 16:], both[:1 << 16]


def segment_sums(mask: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per segment ``[starts[i], starts[i] + lengths[i])`` of ``mask`` (segments in order, not
    overlapping), how many of its elements hold: one ``add.reduceat`` over the segment bounds
    per block of about :data:`COUNT_BLOCK` elements (no running count over every element, and
    no int64 copy of the whole mask, which a fresh process pays for in page faults)."""
    out = np.zeros(len(starts), np.int64)
    seg = np.flatnonzero(lengths > 0)
    if not len(seg):
        return out
    s = np.asarray(starts, np.int64)[seg]
    e = s + np.asarray(lengths, np.int64)[seg]
    cuts = np.searchsorted(s, np.arange(int(s[0]), int(e[-1]), COUNT_BLOCK)[1:])
    blocks = [0, *sorted({int(c) for c in cuts.tolist() if 0 < c < len(seg)}), len(seg)]
    m8 = mask.view(np.uint8)
    for a, b in zip(blocks[:-1], blocks[1:]):
        lo, hi = int(s[a]), int(e[b - 1])
        bounds = np.empty(2 * (b - a), np.int64)
        bounds[0::2] = s[a:b] - lo
        bounds[1::2] = e[a:b] - lo
        if bounds[-1] >= hi - lo:  # the last segment ends the block: reduceat runs to its end
            bounds = bounds[:-1]
        out[seg[a:b]] = np.add.reduceat(m8[lo:hi], bounds, dtype=np.int64)[0::2]
    return out


def iter_insns(analysis: Analysis, i: int, image: "Image | None" = None) -> Iterator[dict]:
    """Each instruction of symbol ``i``: address, offset, bytes, mnemonic, outcome.  The bytes
    come from the analysis (cached runtime bytes) or, failing that, from ``image``."""
    a = int(analysis.syms.addrs[i])
    o, ln, c = analysis.insns(i)
    if not len(o):
        return
    if analysis.runtime is not None and analysis.runtime[i] is not None:
        code = bytes(analysis.runtime[i])
    elif image is not None:
        end = a + int(o[-1]) + max(int(ln[-1]), 1)
        code = image.backend.runtime_bytes(image, a, end + 16)
    else:
        code = b""
    cs = None
    arch, mode, little = (analysis.meta.get("capstone") or [0, 0, True])
    if arch:
        import capstone
        cs = capstone.Cs(arch, mode | (0 if little else capstone.CS_MODE_BIG_ENDIAN))
    for off, n, cc in zip(o.tolist(), ln.tolist(), c.tolist()):
        raw = code[off:off + n] if n else code[off:off + 1]
        mn = ""
        if cs is not None and n:
            for _, size, m, ops in cs.disasm_lite(code[off:off + max(n, 16)], a + off, 1):
                mn = f"{m} {ops}".strip()
        if not mn:
            mn = "(undecodable)" if n == 0 else "(no capstone decode)"
        yield {"address": a + off, "offset": off, "bytes": raw, "length": n, "mnemonic": mn,
               "outcome": decode_code(cc)}
