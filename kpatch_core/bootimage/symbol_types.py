"""ELF symbol types (STT_FUNC / STT_OBJECT / STT_NOTYPE) for symbols that come without them.

kallsyms and System.map give a name, an address and an ``nm`` letter; the engine also asks the
ELF type (is this text symbol a function or an assembler label? is ``__foo_start`` a linker
symbol?). The evidence, in order: a ``BTF_KIND_FUNC`` record of that name (a C function), a
compiler suffix (``.isra.0``, ``.cold``...), the function prefixes the compiler emits
(``__pfx_``/``__cfi_``, static-call trampolines ``__SCT__``), linker-script symbol names
(include/asm-generic/vmlinux.lds.h: ``__start_X``, ``__X_text_start``), an ``__mcount_loc``
record at the entry (only functions are instrumented); otherwise an assembler label.

>>> symbol_info("T", "vfs_read", True, True, True) == (1 << 4) | 2    # doctest: +SKIP
True
"""
from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..image import Image

STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2

# include/asm-generic/vmlinux.lds.h and arch vmlinux.lds.S symbols: never functions
LINKER_SCRIPT = re.compile(r"^(__start_|__stop_|__end_)|^__\w*_text_(start|end)$|^_(s|e)?(init)?text$"
                           r"|^_(s|e)data$|^_end$|^__\w+_(start|end)$")
FUNCTION_PREFIXES = ("__pfx_", "__cfi_", "__SCT__",
                     "__raw_callee_save_",  # x86 PV_CALLEE_SAVE_REGS_THUNK: .type @function
                     # functions TRACE_EVENT defines (include/linux/tracepoint.h, trace/bpf_probe.h,
                     # trace/perf.h, trace/trace_events.h): a tracepoint named foo_start gives
                     # __traceiter_foo_start, which is no linker symbol
                     "__traceiter_", "__probestub_", "__bpf_trace_", "perf_trace_",
                     "trace_event_raw_event_", "trace_raw_output_")
# the compiler's names for function parts and clones (foo.isra.0, foo.cold, foo.llvm.123)
COMPILER_SUFFIX = re.compile(r"\.(isra|constprop|part|cold|llvm|lto_priv|localalias|clone|\d)")
# arm64 aliases of kernel symbols for the position-independent code and the nVHE hypervisor
ALIAS_PREFIXES = ("__pi_", "__kvm_nvhe_")
# per ELF machine: instructions only a function's entry holds (arm64: PACIASP and BTI C, the
# prologue -mbranch-protection gives every C function; assembler labels rarely start with one)
FUNCTION_ENTRY_WORDS: dict[int, tuple[int, ...]] = {183: (0xD503233F, 0xD503245F)}
# where an __mcount_loc record may sit relative to its function's entry: patchable-function-
# entry NOPs before it (arm64 CALL_OPS: entry - 8) up to after a BTI/ENDBR and a mov (x86: +4)
MCOUNT_WINDOW = (-8, 16)


def symbol_info(letter: str, name: str, in_text: bool, in_btf: bool, entry_evidence: bool,
                own_record: bool = False) -> int:
    """st_info of a symbol known by its ``nm`` letter and name: local for lower case, weak for
    w/W/v/V; the type from the evidence listed in the module docstring. A name shaped like a
    linker symbol (``__delayacct_blkio_start`` is a C function) is a function only with
    ``own_record``: an ``__mcount_loc`` record at its very address and no other symbol there (a
    linker symbol such as ``__sched_text_start`` shares the address of the first function)."""
    bind = STB_WEAK if letter in "wWvV" else (STB_LOCAL if letter.islower() else STB_GLOBAL)
    if letter in "aA":
        typ = STT_NOTYPE
    elif letter in "tTwW" and in_text:
        base = name
        for p in ALIAS_PREFIXES:
            base = base.removeprefix(p)
        if name.startswith(FUNCTION_PREFIXES) or COMPILER_SUFFIX.search(name):
            typ = STT_FUNC
        elif LINKER_SCRIPT.match(base) and not in_btf:
            typ = STT_FUNC if own_record else STT_NOTYPE
        elif in_btf or COMPILER_SUFFIX.search(name):
            typ = STT_FUNC
        elif LINKER_SCRIPT.match(name):
            typ = STT_NOTYPE
        else:
            typ = STT_FUNC if entry_evidence else STT_NOTYPE
    elif LINKER_SCRIPT.match(name) and not name.startswith(FUNCTION_PREFIXES):
        typ = STT_NOTYPE  # (__bpf_trace_tp_map_foo_start is a tracepoint's data, not a bound)
    elif letter in "dDbBrRvVgGsS":
        typ = STT_OBJECT
    else:
        typ = STT_NOTYPE
    return (bind << 4) | typ


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` as uint64, without sorting again what is sorted and unique already."""
    a = np.asarray(a, np.uint64)
    return a if len(a) < 2 or bool((a[1:] > a[:-1]).all()) else np.unique(a)


def near_mcount(addrs: np.ndarray, mcount: np.ndarray) -> np.ndarray:
    """Per address: is there an ``__mcount_loc`` record in its MCOUNT_WINDOW?"""
    if not len(mcount):
        return np.zeros(len(addrs), bool)
    rec = _sorted_unique(mcount)
    with np.errstate(over="ignore"):
        lo = np.asarray(addrs, np.uint64) - np.uint64(-MCOUNT_WINDOW[0])
    i = np.searchsorted(rec, lo, side="left")
    i = np.minimum(i, len(rec) - 1)
    return (rec[i] >= lo) & (rec[i] < np.asarray(addrs, np.uint64) + np.uint64(MCOUNT_WINDOW[1]))


# the names symbol_info reads beyond their letter: compiler suffixes anywhere, and the
# linker-script and alias forms, which all start with "_" (checked with an anchored match)
_SUFFIX = re.compile(r"\.(isra|constprop|part|cold|llvm|lto_priv|localalias|clone|\d)")
_UNDERSCORE = re.compile(r"(__start_|__stop_|__end_|__pi_|__kvm_nvhe_)|_(s|e)?(init)?text$"
                         r"|_(s|e)data$|_end$|__\w+_(start|end)$")


def own_records(addrs: np.ndarray, mcount: np.ndarray) -> np.ndarray:
    """Per address (sorted, aliases repeated): an ``__mcount_loc`` record at exactly the address,
    no other symbol there and none in the next MCOUNT_WINDOW[1] bytes (see :func:`symbol_info`:
    a linker symbol at the end of an area lies a few padding bytes before the next function's
    record, so no window; where the patchable entry precedes the function, riscv64 7.x, a linker
    symbol at the start of an area is where the first function's record is, 8 bytes before it)."""
    addrs = np.asarray(addrs, np.uint64)
    if not len(mcount) or not len(addrs):
        return np.zeros(len(addrs), bool)
    rec = _sorted_unique(mcount)
    i = np.minimum(np.searchsorted(rec, addrs, side="left"), len(rec) - 1)
    hit = rec[i] == addrs
    sole = np.ones(len(addrs), bool)
    same = addrs[1:] == addrs[:-1]
    sole[1:] &= ~same
    sole[:-1] &= ~same
    nxt = np.append(addrs[1:], np.uint64(2**64 - 1))
    return hit & sole & (nxt - addrs >= np.uint64(MCOUNT_WINDOW[1]))


def symbol_infos(letters: str, names: list[str], in_text: "list[bool] | np.ndarray",
                 in_btf: "list[bool] | np.ndarray", evidence: "list[bool] | np.ndarray",
                 own_record: "np.ndarray | None" = None,
                 shapes: "NameShapes | None" = None) -> np.ndarray:
    """:func:`symbol_info` for every symbol (uint8 st_info). A plain identifier or a name with a
    function prefix takes the answer of its (letter, kind, evidence) class, computed once per
    class; the others (compiler suffixes, linker symbols: they start with "_" or hold a ".")
    take the answer of their class by what :func:`symbol_info` reads of the name (suffix,
    linker-symbol shapes). The name shapes are found by running each pattern once over all the
    names (one per line), not name by name."""
    n = len(names)
    if not n:
        return np.zeros(0, np.uint8)
    if shapes is None or shapes.names is not names:  # (made beforehand from these very names)
        shapes = NameShapes(names)
    pfx, odd = shapes.pfx, (shapes.underscore | shapes.dot) & ~shapes.pfx
    lt = np.frombuffer(letters.encode("latin-1"), np.uint8).astype(np.int64)
    key = (lt << 4) | (pfx.astype(np.int64) << 3) | (np.asarray(in_text, bool).astype(np.int64) << 2) \
        | (np.asarray(in_btf, bool).astype(np.int64) << 1) | np.asarray(evidence, bool).astype(np.int64)
    table = np.zeros(256 << 4, np.uint8)  # key -> st_info, for the keys present (small ints)
    for k in np.flatnonzero(np.bincount(key, minlength=len(table))).tolist():
        table[k] = symbol_info(chr(k >> 4), "__pfx_f" if k & 8 else "plain", bool(k & 4),
                               bool(k & 2), bool(k & 1))
    out = table[key]
    # a name with a compiler suffix that is no "_"-name of a linker shape: as "f.isra.0"
    shaped = odd & ((shapes.underscore & shapes.under) | ~shapes.suffix)
    memo = odd & ~shaped
    if memo.any():
        for k in np.flatnonzero(np.bincount(key[memo], minlength=len(table))).tolist():
            table[k] = symbol_info(chr(k >> 4), "f.isra.0", bool(k & 4), bool(k & 2), bool(k & 1))
        out[memo] = table[key[memo]]
    if shaped.any():
        own = np.asarray(own_record, bool) if own_record is not None else np.zeros(n, bool)
        sk = (key << 4) | (own.astype(np.int64) << 3) | (shapes.suffix.astype(np.int64) << 2) \
            | (shapes.linker_base.astype(np.int64) << 1) | shapes.linker.astype(np.int64)
        idx = np.nonzero(shaped)[0]
        u, first, inv = np.unique(sk[idx], return_index=True, return_inverse=True)
        vals = []
        for k, i in zip(u.tolist(), idx[first].tolist()):  # one name of each class answers
            kk = k >> 4
            vals.append(symbol_info(letters[i], names[i], bool(kk & 4), bool(kk & 2), bool(kk & 1),
                                    bool(k & 8)))
        out[idx] = np.array(vals, np.uint8)[inv.reshape(-1)]
    return out


def _at_line_start(alternatives: str, first: str = "") -> "re.Pattern[str]":
    """``alternatives`` (each anchored with ``^``, or meant for ``match``) as a pattern that
    matches at the NUL that starts each line of :class:`NameShapes`'s text: that literal first
    character lets the regex engine jump from line to line instead of trying every position;
    ``first``, a lookahead all alternatives share, fails at once on the other lines."""
    body = re.sub(r"(^|\|)\^", r"\1", alternatives)
    return re.compile("\0" + first + "(?:" + body + ")", re.M)


_PREFIX_LINE = _at_line_start("|".join("^" + re.escape(p) for p in FUNCTION_PREFIXES))
# every alternative of both starts with "_"
_LINKER_LINE = _at_line_start(LINKER_SCRIPT.pattern, "(?=_)")
_UNDERSCORE_LINE = _at_line_start(_UNDERSCORE.pattern, "(?=_)")


class NameShapes:
    """What :func:`symbol_info` reads of each name, for all the names at once: the names are
    one text, each on a line of its own that starts with a NUL (names hold neither), so each
    pattern runs once over all of them (``$`` matches at the line end; ``\\w`` and the suffixes
    never cross it) and its matches are mapped to lines."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.text = "\0" + "\n\0".join(names) + "\n"
        lens = np.fromiter(map(len, names), np.int64, len(names))
        self.starts = np.concatenate([[0], np.cumsum(lens + 2)[:-1]]).astype(np.int64)
        self.pfx = self._at(self._find(_PREFIX_LINE, self.text))  # x.startswith(FUNCTION_PREFIXES)
        tb = np.frombuffer(self.text.encode("latin-1"), np.uint8)
        self.underscore = tb[self.starts + 1] == 0x5F  # the name starts with "_"
        self.dot = self._at(np.flatnonzero(tb == 0x2E))  # a "." in the name
        self.suffix = self._at(self._find(_SUFFIX, self.text))  # COMPILER_SUFFIX: the same
        # the linker-symbol shapes all start with "_": looked for among those names only
        self.linker = np.zeros(len(names), bool)
        self.under = np.zeros(len(names), bool)
        us = np.nonzero(self.underscore & ~self.pfx)[0]
        if len(us):
            sub = [names[i] for i in us.tolist()]
            sub_lens = np.fromiter(map(len, sub), np.int64, len(sub))
            sub_starts = np.concatenate([[0], np.cumsum(sub_lens + 2)[:-1]]).astype(np.int64)
            text = "\0" + "\n\0".join(sub) + "\n"
            for out, pattern in ((self.linker, _LINKER_LINE), (self.under, _UNDERSCORE_LINE)):
                out[us[np.searchsorted(sub_starts, self._find(pattern, text), side="right") - 1]] = True
        self.linker_base = self.linker.copy()
        for i in np.nonzero(self.under)[0].tolist():  # the alias prefixes are "under": few
            if names[i].startswith(ALIAS_PREFIXES):
                base = names[i]
                for p in ALIAS_PREFIXES:
                    base = base.removeprefix(p)
                self.linker_base[i] = bool(LINKER_SCRIPT.match(base))

    @staticmethod
    def _find(pattern: "re.Pattern[str]", text: str) -> np.ndarray:
        return np.array([m.start() for m in pattern.finditer(text)], np.int64)

    def _at(self, pos: np.ndarray) -> np.ndarray:
        """Per name: is one of the text positions ``pos`` on its line?"""
        out = np.zeros(len(self.starts), bool)
        out[np.searchsorted(self.starts, pos, side="right") - 1] = True
        return out


def btf_string_names(raw: bytes | memoryview) -> frozenset[str]:
    """Names in the string section of a ``.BTF`` blob (include/uapi/linux/btf.h: header, then
    ``str_off``/``str_len`` after ``hdr_len``): every BTF_KIND_FUNC name is there. Reading the
    strings instead of walking the types is five times faster; a name that is only a member or
    parameter name counts too, which the types it decides (function or label) rarely meet."""
    if len(raw) < 24:
        return frozenset()
    e = "<" if bytes(raw[:2]) == b"\x9f\xeb" else ">"
    _magic, _ver, _flags, hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from(e + "HBBIIIII", raw, 0)
    strs = bytes(raw[hdr_len + str_off:hdr_len + str_off + str_len]).decode("latin-1")
    return frozenset(strs.split("\0")) - {""}


def btf_names_among(raw: bytes | memoryview, names: list[str]) -> set[str]:
    """Those of ``names`` that are strings of the ``.BTF`` blob ``raw`` (:func:`btf_string_names`
    without a set of every BTF string: the strings are only looked up in the set of ``names``)."""
    if len(raw) < 24:
        return set()
    e = "<" if bytes(raw[:2]) == b"\x9f\xeb" else ">"
    _magic, _ver, _flags, hdr_len, _toff, _tlen, str_off, str_len = struct.unpack_from(e + "HBBIIIII", raw, 0)
    strs = bytes(raw[hdr_len + str_off:hdr_len + str_off + str_len]).decode("latin-1")
    return set(names).intersection(strs.split("\0")) - {""}


def evidence_types(image: "Image", lo: int, hi: int) -> np.ndarray:
    """ELF type (STT_FUNC or STT_NOTYPE) by :func:`symbol_info`'s evidence for the kallsyms
    entries ``[lo, hi)`` of ``image``, all of them text: from the names, the ``.BTF`` strings, the
    ``__mcount_loc`` records and the entry words, which a debug vmlinux and the synthetic ELF of
    its boot image hold alike (the ELF's own types, which a boot image lacks, are not read), so
    the full analysis reports the same ``type`` from both."""
    ks = image.kallsyms
    names = ks.names[lo:hi]
    addrs = np.asarray(ks.addrs[lo:hi], np.uint64)
    s = image.section(".BTF")
    mcount = _sorted_unique(image.tables.mcount_records)  # (sorted once for both uses)
    mcount = mcount[mcount != 0]
    evidence = near_mcount(addrs, mcount) if len(mcount) else np.zeros(len(addrs), bool)
    machine = int.from_bytes(image.data[18:20], "little" if image.little_endian else "big")
    words = FUNCTION_ENTRY_WORDS.get(machine)
    if words:
        evidence |= np.isin(image.read_u32_at(addrs), np.array(words, np.uint32))
    shapes = NameShapes(names)
    # a BTF name decides only a text name without a function prefix or a compiler suffix that
    # starts with "_" (linker shapes) or has no entry evidence (symbol_info): looked up for those
    need = np.flatnonzero(~shapes.pfx & ~shapes.suffix & (shapes.underscore | ~evidence))
    in_btf = np.zeros(len(names), bool)
    if s is not None and len(need):
        asked = [names[i] for i in need.tolist()]
        found = btf_names_among(image.data[s.offset:s.offset + s.size], asked)
        in_btf[need] = np.fromiter(map(found.__contains__, asked), bool, len(asked))
    info = symbol_infos("t" * len(names), names, np.ones(len(names), bool), in_btf, evidence,
                        own_records(addrs, mcount), shapes)
    out = info & np.uint8(0xF)
    return out
