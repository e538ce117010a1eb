"""Recover the symbol table from the compressed kallsyms tables inside a kernel image.

The tables are written by scripts/kallsyms.c (``write_src``) and read by kernel/kallsyms.c
(``kallsyms_expand_symbol``, ``kallsyms_sym_address``):

- ``kallsyms_token_table``: 256 NUL-terminated tokens; every character that occurs in a symbol
  is its own token (``insert_real_symbols_in_table``), so ``"0\\0" .. "9\\0"`` lie in a row;
- ``kallsyms_token_index``: 256 ``u16`` offsets into the token table, right after it;
- ``kallsyms_num_syms`` (``.long``, 8-aligned) followed by ``kallsyms_names``: per symbol a
  length (one byte, or two when the first has bit 7 set: "big" symbols, 6.1+) and that many
  token numbers; the first character of the expansion is the ``nm`` type letter;
- ``kallsyms_markers``: the offset in ``kallsyms_names`` of every 256th symbol;
- ``kallsyms_offsets`` + ``kallsyms_relative_base`` (CONFIG_KALLSYMS_BASE_RELATIVE): before
  ``num_syms`` up to 6.1 (and 6.1 stable), after ``token_index`` from 6.2's reordering;
- the newest layout (Debian 7.2): ``kallsyms_names`` right after the ``.long`` num_syms (no
  padding), ``kallsyms_markers`` ending where the token table starts, and no
  ``kallsyms_relative_base``: each ``kallsyms_offsets`` entry is relative to its own place
  (address = &kallsyms_offsets[i] + offsets[i]), so the address of the table itself is needed
  (``vaddr_of``: the payload ELF's sections place it).

The same approach as vmlinux-to-elf, written from the kernel sources.

>>> syms = find_kallsyms(payload, "<")            # doctest: +SKIP
>>> syms.names[:2], hex(syms.addrs[0])            # doctest: +SKIP
"""
from __future__ import annotations

import codecs
from typing import Callable

import attrs
import numpy as np

from ..errors import InputError

_DIGITS = b"".join(bytes([c]) + b"\0" for c in b"0123456789")
_TYPE_LETTERS = frozenset(b"tTdDbBrRwWvVaAuUnNsSgGiI?")
_SEARCH_BACK = 24 << 20  # kallsyms_names of the largest kernels is ~4 MiB; offsets ~1 MiB


@attrs.frozen
class KallsymsTable:
    """Symbols as the kernel's kallsyms has them, in its order (sorted by address, aliases in
    ``compare_symbols`` order)."""

    addrs: np.ndarray  # uint64
    types: str  # one nm letter per symbol
    names: list[str]
    offset: int  # where kallsyms_token_table starts in the payload (for messages)
    addrs_from_payload: bool = False  # place-relative offsets read with payload offsets as addresses
    num_syms_at: int = -1  # where kallsyms_num_syms is in the payload


def _u32(data: "bytes | bytearray", at: int, e: str) -> int:
    return int.from_bytes(data[at:at + 4], "little" if e == "<" else "big")


def _token_table(data: "bytes | bytearray", e: str, start: int = 0) -> tuple[int, list[bytes], int]:
    """(start of kallsyms_token_table, the 256 tokens, start of kallsyms_token_index): the
    first at or after ``start``."""
    pos = start
    while True:
        p = data.find(_DIGITS, pos)
        if p < 0:
            raise InputError("no kallsyms tables in the image (CONFIG_KALLSYMS off?); "
                             "pass its System.map with --system-map FILE")
        pos = p + 1
        # tokens '0'..'9' are 48..57: walk forward to the end of token 255
        end = p
        for _ in range(256 - 48):
            end = data.find(b"\0", end) + 1
            if end <= 0:
                break
        else:
            for pad in range(16):
                ix = end + pad
                idx = np.frombuffer(data[ix:ix + 512], e + "u2")
                if len(idx) < 256 or idx[0] != 0:
                    continue
                start = p - int(idx[48])
                if start < 0 or not np.all(np.diff(idx.astype(np.int64)) > 0):
                    continue
                if start + int(idx[255]) >= ix:
                    continue
                raw = bytes(data[start:ix])
                toks = [raw[int(o):raw.find(b"\0", int(o))] for o in idx]
                if toks[48] == b"0" and toks[57] == b"9":
                    return start, toks, ix
    # unreachable


def _names_end(data: "bytes | bytearray", at: int, n: int) -> tuple[np.ndarray, int]:
    """Offsets of the token runs of the ``n`` names starting at ``at`` (start, length), parsed
    like kallsyms_expand_symbol; returns (array of [start, len] rows, end offset)."""
    out = np.empty((n, 2), np.int64)
    p = at
    d = data
    for i in range(n):
        ln = d[p]
        if ln & 0x80:  # "big" symbol: two-byte ULEB128 length
            ln = (ln & 0x7F) | (d[p + 1] << 7)
            p += 2
        else:
            p += 1
        out[i, 0] = p
        out[i, 1] = ln
        p += ln
    return out, p


def _first_types_ok(data: "bytes | bytearray", at: int, toks: list[bytes], count: int) -> bool:
    p = at
    for _ in range(count):
        if p >= len(data):
            return False
        ln = data[p]
        if ln & 0x80:
            ln = (ln & 0x7F) | (data[p + 1] << 7)
            p += 1
        if ln == 0:
            return False
        t = toks[data[p + 1]]
        if not t or t[0] not in _TYPE_LETTERS:
            return False
        p += 1 + ln
    return True


def _expand(data: "bytes | bytearray", runs: np.ndarray, toks: list[bytes]) -> tuple[str, list[str]]:
    """Expand every name (kallsyms_expand_symbol for all at once): (type letters, names). The
    token bytes of all names (their length bytes dropped) are decoded by one charmap decode
    whose table maps each token number to its characters; the names are cut from that text by
    the sum of their tokens' lengths."""
    if not len(runs):
        return "", []
    starts, lens = runs[:, 0], runs[:, 1]
    lo = int(starts[0]) - (2 if lens[0] > 127 else 1)
    hi = int(starts[-1] + lens[-1])
    region = np.frombuffer(data, np.uint8, hi - lo, lo)
    keep = np.ones(hi - lo, bool)
    keep[starts - lo - 1] = False  # the length byte(s) before each name's tokens
    keep[starts[lens > 127] - lo - 2] = False
    t = region[keep]
    del region  # (no view of ``data`` outlives the call: the stream appends to it)
    chars = {i: x.decode("latin-1") for i, x in enumerate(toks)}  # token number -> its text
    text = codecs.charmap_decode(t.tobytes(), "strict", chars)[0]
    tl = np.array([len(x) for x in toks], np.int64)[t]
    per_name = np.add.reduceat(tl, np.concatenate([[0], np.cumsum(lens)[:-1]]))
    b = np.concatenate([[0], np.cumsum(per_name)]).tolist()
    names = [text[i + 1:j] for i, j in zip(b, b[1:])]
    types = "".join([text[i] for i in b[:-1]])
    return types, names


def _addresses(data: "bytes | bytearray", at: int, n: int, base: int, e: str,
               absolute_percpu: bool | None) -> np.ndarray | None:
    """kallsyms_sym_address for every symbol; None when the values are not sorted."""
    off = np.frombuffer(data[at:at + 4 * n], e + "i4").astype(np.int64)
    if len(off) < n:
        return None
    modes = (absolute_percpu,) if absolute_percpu is not None else (False, True)
    for percpu in modes:
        if percpu:  # CONFIG_KALLSYMS_ABSOLUTE_PERCPU
            with np.errstate(over="ignore"):
                rel = np.uint64(base) - np.uint64(1) - off.astype(np.uint64)
            a = np.where(off >= 0, off.astype(np.uint64), rel)
        else:
            with np.errstate(over="ignore"):
                a = np.uint64(base) + (off & 0xFFFFFFFF).astype(np.uint64)
        # sorted (scripts/kallsyms.c sorts by address) and mostly distinct: zero padding or
        # another table read as offsets is sorted too, but all equal
        if np.all(a[1:] >= a[:-1]) and _distinct_sorted(a) > n // 2:
            return a
    return None


def _distinct_sorted(a: np.ndarray) -> int:
    """How many distinct values sorted ``a`` holds."""
    return int(len(a) > 0) + int(np.count_nonzero(a[1:] != a[:-1]))


def _place_relative(data: "bytes | bytearray", at: int, n: int, e: str, place: int) -> np.ndarray | None:
    """Addresses of the newest layout: ``place`` (the address of kallsyms_offsets) + 4*i +
    offsets[i]; None when not sorted."""
    off = np.frombuffer(data[at:at + 4 * n], e + "i4").astype(np.int64)
    if len(off) < n:
        return None
    with np.errstate(over="ignore"):
        a = (np.uint64(place) + (4 * np.arange(n, dtype=np.int64) + off).astype(np.uint64))
    if np.all(a[1:] >= a[:-1]) and _distinct_sorted(a) > n // 2:
        return a
    return None


def _markers_count(data: "bytes | bytearray", tt: int, e: str) -> int:
    """How many u32 words end right below the token table as an increasing run from 0 (the
    newest layout's kallsyms_markers), or 0."""
    for pad in (0, 4):
        end = tt - pad
        w = np.frombuffer(data[max(0, end - (1 << 20)):end], e + "u4")[::-1]
        dec = np.nonzero(w[1:] >= w[:-1])[0]  # walking down, markers decrease to markers[0]
        k = int(dec[0]) + 1 if len(dec) else len(w)
        if k > 1 and w[k - 1] == 0:
            return k
    return 0


def _candidates(data: "bytes | bytearray", tt: int, e: str) -> list[tuple[int, int, int]]:
    """(position of kallsyms_num_syms, its value, where kallsyms_names starts), nearest the token
    table first: the .long with 4 bytes of padding (up to 7.x), then the one names follow at
    once with the count the markers before the token table allow (the newest layout)."""
    lo = max(0, tt - _SEARCH_BACK) & ~7
    window = np.frombuffer(data, e + "u4", (tt - lo) // 8 * 2, lo)  # (a view: no copy)
    pairs = window.reshape(-1, 2)
    cand = np.nonzero((pairs[:, 0] > 0) & (pairs[:, 0] < 4_000_000) & (pairs[:, 1] == 0))[0]
    out = [(lo + 8 * k, int(pairs[k, 0]), lo + 8 * k + 8) for k in cand[::-1].tolist()]
    nmark = _markers_count(data, tt, e)
    if nmark:  # the markers say how many symbols there are, give or take 255
        out = [c for c in out if (c[1] + 255) // 256 == nmark]
        hit = np.nonzero((window > 256 * (nmark - 1)) & (window <= 256 * nmark))[0]
        out += [(lo + 4 * k, int(window[k]), lo + 4 * k + 4) for k in hit[::-1].tolist()]
    return out


def find_kallsyms(data: "bytes | bytearray", e: str, absolute_percpu: bool | None = None,
                  vaddr_of: "Callable[[int], int | None] | None" = None,
                  start: int = 0) -> KallsymsTable:
    """Locate and decode the kallsyms tables in ``data`` (an uncompressed kernel payload);
    ``e`` is the byte order (``"<"`` or ``">"``); ``vaddr_of`` maps a payload offset to its
    address (the newest layout needs it); ``start``: no token table lies before it (the search
    starts there). Raises :class:`InputError` when absent."""
    tt, toks, ti = _token_table(data, e, start)
    ti_end = ti + 512
    # kallsyms_num_syms: nearest candidate below the token table whose first names decode to
    # nm type letters and whose names end where the markers say
    for q, n, names_at in _candidates(data, tt, e):
        if not _first_types_ok(data, names_at, toks, min(n, 16)):
            continue
        try:
            runs, names_end = _names_end(data, names_at, n)
        except IndexError:
            continue
        if names_end > tt:
            continue
        nmark = (n + 255) // 256
        mk = (names_end + 7) & ~7
        markers = np.frombuffer(data[mk:mk + 4 * nmark], e + "u4").astype(np.int64)
        want = runs[::256, 0] - names_at - np.where(runs[::256, 1] > 127, 2, 1)
        if len(markers) != nmark or not np.array_equal(markers, want):
            mk = (names_end + 3) & ~3
            markers = np.frombuffer(data[mk:mk + 4 * nmark], e + "u4").astype(np.int64)
            if not np.array_equal(markers, want):
                continue
        addrs = None
        # 6.2+: kallsyms_offsets after kallsyms_token_index, then kallsyms_relative_base
        offs = (ti_end + 7) & ~7
        rb = (offs + 4 * n + 7) & ~7
        if rb + 8 <= len(data):
            base = int.from_bytes(data[rb:rb + 8], "little" if e == "<" else "big")
            addrs = _addresses(data, offs, n, base, e, absolute_percpu)
        relative = False
        if addrs is None and vaddr_of is not None:  # newest: place-relative offsets
            for o in (offs, (ti_end + 3) & ~3):
                place = vaddr_of(o)
                if place is not None and (addrs := _place_relative(data, o, n, e, place)) is not None:
                    relative = vaddr_of(0) == 0
                    break
        if addrs is None:  # up to 6.1: offsets, relative_base, num_syms
            rb = q - 8
            offs = (rb - 4 * n) & ~7
            for o in (rb - 4 * n, offs):
                base = int.from_bytes(data[rb:rb + 8], "little" if e == "<" else "big")
                addrs = _addresses(data, o, n, base, e, absolute_percpu)
                if addrs is not None:
                    break
        if addrs is None:
            raise InputError("kallsyms tables found but kallsyms_offsets not recognised "
                             "(CONFIG_KALLSYMS_BASE_RELATIVE off?); pass --system-map FILE")
        types, names = _expand(data, runs, toks)
        return KallsymsTable(addrs, types, names, tt, relative, q)
    raise InputError("kallsyms token table found but not kallsyms_names; pass --system-map FILE")
