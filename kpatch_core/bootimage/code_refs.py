"""Recover the linker symbols that bound the kernel tables from the code that loads them.

A kernel built without CONFIG_KALLSYMS_ALL keeps text symbols only in kallsyms (scripts/kallsyms.c
without ``--all-symbols``): ``__start_mcount_loc``, ``__start___jump_table`` and the other bounds
of the tables verdicts depend on are gone, but the functions that walk those tables are still
named. ``ftrace_init`` calls ``ftrace_process_locs(NULL, __start_mcount_loc, __stop_mcount_loc)``,
``init_kprobes`` calls ``populate_kprobe_blacklist(__start_kprobe_blacklist, ...)``, and so on:
their machine code forms both bounds PC-relatively (arm64 ``adrp`` + ``add``). So, as a reverse
engineer would: decode the addresses each named function forms (the arch's decoder), optionally
follow a small struct of pointers it references (arm64 ``kernel_alternatives``), and keep the one
(start, stop) pair whose bytes have the table's shape: a whole number of entries, every entry's
code field pointing into kernel text, sorted where the build sorts the table. No pair, or more
than one, and the table is not guessed: :func:`recover_tables` raises :class:`InputError`.

Per-arch facts (which function references which table, the entry shapes, how to decode an
address the code forms) are a :class:`CodeRefs` in ``kpatch_arch.<arch>.boot_refs``.

>>> found = recover_tables(BOOT_REFS, view, symbols)    # doctest: +SKIP
>>> hex(found["__start_mcount_loc"])                     # doctest: +SKIP
'0xffff800009781c68'
"""
from __future__ import annotations

import importlib
import struct
from typing import Callable, Iterable

import attrs
import numpy as np

from ..errors import InputError

MAX_FUNCTION = 64 << 10  # bytes decoded of one function at most
STRUCT_WORDS = 4  # pointer words read at a referenced address for ``via_struct`` tables
# entries whose field points into the image but not into kallsyms' text (arm64's
# .entry.tramp.text lies between .rodata and .init.text, past _etext): at most this share
OUTSIDE_TEXT = 0.05
SAMPLE = 16  # entries checked one by one before the whole candidate range is read


@attrs.frozen
class TableShape:
    """One kernel table bounded by two linker symbols, as the code that loads it sees it."""

    start: str  # "__start_mcount_loc"
    stop: str  # "__stop_mcount_loc"
    functions: tuple[str, ...]  # kernel functions whose code forms both bounds
    strides: tuple[int, ...]  # the entry sizes the kernels of this arch use
    pointer: bool  # fields are absolute pointers (else s32 self-relative offsets)
    fields: tuple[int, ...] = (0,)  # offsets of the fields that must point into kernel text
    sorted: bool = False  # sorted by the first field at build time (scripts/sorttable)
    zeros: bool = False  # zeroed entries are allowed (dropped records)
    via_struct: bool = False  # the bounds are pointers in a struct the function references
    blob: "Callable[[ImageView, int, int], bool] | None" = None  # one blob, not entries: its test
    # the bounds are weak (``extern char __weak __start_BTF[]``): a kernel without the section
    # links them as 0, so a function that loads two NULL words and no pair means no table
    weak: bool = False


@attrs.frozen
class CodeRefs:
    """An architecture's table references: the tables, and the decoder of the addresses a
    function's code forms PC-relatively (``decode(code, address) -> addresses``)."""

    tables: tuple[TableShape, ...]
    decode: Callable[[bytes, int], list[int]]
    absolute_relocs: tuple[int, ...] = ()  # S + A relocations against .dynsym the boot applies


@attrs.frozen
class ImageView:
    """Reads of the kernel image by address: ``read(addr, n)`` (None outside the image) and
    ``pointers(addr, n)``, the ``n`` pointer words at ``addr`` as the kernel sees them after its
    boot relocations (a word that an R_*_RELATIVE relocation writes reads as its addend)."""

    read: Callable[[int, int], "bytes | None"]
    pointers: Callable[[int, int], "np.ndarray | None"]
    little_endian: bool
    span: tuple[int, int]  # [first, last) address of the image's bytes


def code_refs_for(arch: str) -> CodeRefs | None:
    """The :class:`CodeRefs` of ``arch`` (``kpatch_arch.<arch>.boot_refs.BOOT_REFS``), or None
    when that architecture has none."""
    try:
        mod = importlib.import_module(f"kpatch_arch.{arch}.boot_refs")
    except ModuleNotFoundError:
        return None
    refs = getattr(mod, "BOOT_REFS", None)
    return refs if isinstance(refs, CodeRefs) else None


def relocated_pointers(read: Callable[[int, int], "bytes | None"], places: np.ndarray,
                       addends: np.ndarray, little: bool) -> Callable[[int, int], "np.ndarray | None"]:
    """``ImageView.pointers`` for an image whose boot relocations (``places`` sorted, with their
    ``addends``) are not applied in the file (arm64 links with --no-apply-dynamic-relocs)."""
    e = "<" if little else ">"

    def pointers(addr: int, n: int) -> np.ndarray | None:
        raw = read(addr, 8 * n)
        if raw is None or len(raw) < 8 * n:
            return None
        w = np.frombuffer(raw, e + "u8").astype(np.uint64)
        at = np.uint64(addr) + np.arange(n, dtype=np.uint64) * np.uint64(8)
        i = np.minimum(np.searchsorted(places, at), max(len(places) - 1, 0))
        hit = (places[i] == at) & (w == 0) if len(places) else np.zeros(n, bool)
        return np.where(hit, addends[i] if len(places) else w, w)
    return pointers


def _function_bounds(addrs: np.ndarray, names: list[str]) -> dict[str, tuple[int, int]]:
    """name -> (address, next distinct symbol address) for every symbol."""
    uniq = np.unique(addrs)
    nxt = np.searchsorted(uniq, addrs, side="right")
    end = np.where(nxt < len(uniq), uniq[np.minimum(nxt, len(uniq) - 1)], addrs)
    out: dict[str, tuple[int, int]] = {}
    for n, a, b in zip(names, addrs.tolist(), end.tolist()):
        out.setdefault(n, (int(a), int(b)))
    return out


def _in_text(v: np.ndarray, text: Iterable[tuple[int, int]]) -> np.ndarray:
    ok = np.zeros(len(v), bool)
    for lo, hi in text:
        ok |= (v >= np.uint64(lo)) & (v < np.uint64(hi))
    return ok


def _targets(view: ImageView, t: TableShape, start: int, n: int, stride: int) -> np.ndarray | None:
    """Per entry, the value of every field in ``t.fields`` (an (n, fields) array), or None."""
    cols = []
    if t.pointer:
        if stride != 8 or t.fields != (0,):
            return None
        w = view.pointers(start, n)
        return None if w is None else w.reshape(n, 1)
    raw = view.read(start, n * stride)
    if raw is None or len(raw) < n * stride:
        return None
    e = "<" if view.little_endian else ">"
    rows = np.frombuffer(raw, np.uint8).reshape(n, stride)
    at = np.uint64(start) + np.arange(n, dtype=np.uint64) * np.uint64(stride)
    for f in t.fields:
        rel = rows[:, f:f + 4].copy().view(e + "i4").reshape(-1).astype(np.int64)
        with np.errstate(over="ignore"):
            cols.append(at + np.uint64(f) + rel.astype(np.uint64))
    return np.stack(cols, axis=1)


def btf_blob(view: ImageView, start: int, stop: int) -> bool:
    """Is ``[start, stop)`` exactly one ``.BTF`` blob? (include/uapi/linux/btf.h struct btf_header:
    magic 0xeB9F, version 1, hdr_len, type_off/len, str_off/len; btf_parse_hdr: the data ends
    where the string section does)."""
    raw = view.read(start, 24)
    if raw is None or len(raw) < 24 or stop <= start:
        return False
    e = "<" if view.little_endian else ">"
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        struct.unpack_from(e + "HBBIIIII", raw)
    return (magic == 0xEB9F and version == 1 and hdr_len >= 24 and type_off + type_len <= str_off
            and hdr_len + str_off + str_len == stop - start)


def rodata_blob(view: ImageView, start: int, stop: int) -> bool:
    """Is ``[start, stop)`` the kernel's read-only data? (RO_DATA(PAGE_SIZE) in
    include/asm-generic/vmlinux.lds.h: page-aligned at both ends, and linux_banner in it)."""
    if start % 4096 or stop % 4096 or stop <= start or stop - start > 1 << 30:
        return False
    raw = view.read(start, stop - start)
    return raw is not None and raw.find(b"Linux version ") >= 0


def _has_shape(view: ImageView, t: TableShape, start: int, stop: int, stride: int,
               text: tuple[tuple[int, int], ...]) -> bool:
    """Do the bytes ``[start, stop)`` read as ``t``'s entries of ``stride`` bytes (or, for a
    ``blob``, pass its test)?"""
    if t.blob is not None:
        return t.blob(view, start, stop)
    size = stop - start
    if size <= 0 or size % stride:
        return False
    n = size // stride
    # cheap first: the first and last entries, then a sample of the others
    for i in sorted({0, n - 1, *np.linspace(0, n - 1, SAMPLE).astype(np.int64).tolist()}):
        v = _targets(view, t, start + i * stride, 1, stride)
        if v is None or not (_in_text(v.reshape(-1), (view.span,)).all() or (t.zeros and not v.any())):
            return False
    v = _targets(view, t, start, n, stride)
    if v is None:
        return False
    ok = _in_text(v.reshape(-1), text).reshape(v.shape).all(axis=1)
    inside = _in_text(v.reshape(-1), (view.span,)).reshape(v.shape).all(axis=1)
    if t.zeros:
        zero = (v == 0).all(axis=1)
        if zero.sum() * 2 > n:  # mostly zeros: not this table
            return False
        ok |= zero
        inside |= zero
    if not inside.all() or (~ok).sum() > OUTSIDE_TEXT * n:
        return False
    if t.sorted:
        first = v[:, 0]
        return bool(np.all(first[1:] >= first[:-1]))
    return True


def _candidates(view: ImageView, refs: CodeRefs, t: TableShape,
                bounds: dict[str, tuple[int, int]]) -> tuple[list[int], int] | None:
    """Addresses the functions of ``t`` form (and, ``via_struct``, the pointers stored at them)
    and how many of those addresses hold a NULL pointer; None when none of the functions is in
    kallsyms (the kernel lacks the table)."""
    seen = False
    out: set[int] = set()
    null: set[int] = set()
    for fn in t.functions:
        b = bounds.get(fn)
        if b is None:
            continue
        seen = True
        code = view.read(b[0], min(b[1] - b[0], MAX_FUNCTION))
        if not code:
            continue
        for a in refs.decode(code, b[0]):
            out.add(a)
            if t.via_struct:
                w = view.pointers(a, STRUCT_WORDS)
                if w is not None:
                    out.update(int(x) for x in w.tolist() if x)
                    if not w[0]:
                        null.add(a)
    return (sorted(out), len(null)) if seen else None


def recover_tables(refs: CodeRefs, view: ImageView, addrs: np.ndarray, names: list[str]
                   ) -> dict[str, int]:
    """``{linker symbol: address}`` of the table bounds in ``refs`` that the image's code shows.
    A table whose functions are all absent is left out (the kernel was built without it); one
    whose functions are there but give no pair of its shape, or more than one, raises
    :class:`InputError` (the evidence does not decide: never guess)."""
    addrs = np.asarray(addrs, np.uint64)
    bounds = _function_bounds(addrs, names)
    sym = {n: a for n, (a, _) in bounds.items()}
    text = tuple((sym[a], sym[b]) for a, b in (("_stext", "_etext"), ("_sinittext", "_einittext"))
                 if a in sym and b in sym and sym[a] < sym[b])
    if not text:
        raise InputError("kallsyms has no _stext/_etext: cannot tell text from data; pass "
                         "--system-map FILE")
    out: dict[str, int] = {}
    for t in refs.tables:
        found = _candidates(view, refs, t, bounds)
        if found is None:
            continue
        cand, nulls = found
        pairs = [(s, e, st) for i, s in enumerate(cand) for e in cand[i + 1:] for st in t.strides
                 if _has_shape(view, t, s, e, st, text)]
        if not pairs and t.weak and nulls >= 2:
            continue  # both weak bounds linked as 0: the kernel has no such section
        if len(pairs) != 1:
            what = "no" if not pairs else f"{len(pairs)}"
            raise InputError(f"{what} ({t.start}, {t.stop}) candidates of the table's shape in the "
                             f"code of {'/'.join(t.functions)}; pass --system-map FILE")
        out[t.start], out[t.stop] = pairs[0][0], pairs[0][1]
    return out


__all__ = ["CodeRefs", "ImageView", "TableShape", "btf_blob", "code_refs_for", "rodata_blob", "recover_tables",
           "relocated_pointers"]
