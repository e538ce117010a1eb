"""Read a System.map (``nm -n vmlinux`` filtered by scripts/mksysmap): ``ADDR TYPE NAME`` lines.

Debian ships a one-line placeholder in /boot ("The real System.map is in the linux-image-<ver>-dbg
package"); :func:`read_system_map` returns None for it, so the kallsyms tables are used instead.

>>> m = read_system_map("/boot/System.map-6.1.0-50-amd64")    # doctest: +SKIP
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import InputError
from .synth_elf import Symbols

_LINE = re.compile(rb"^([0-9a-fA-F]{8,16}) ([a-zA-Z?]) (\S+)")


def looks_like_system_map(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) reads as System.map / nm output."""
    lines = head.split(b"\n")[:4]
    return bool(lines) and all(_LINE.match(ln) for ln in lines if ln) and bool(lines[0])


def read_system_map(path: str) -> Symbols | None:
    """The symbols of System.map ``path``; None when it is a placeholder without symbols."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read System.map ({e.strerror}); give the System.map of "
                         "this kernel with --system-map FILE") from None
    parsed = _parse_fast(raw)
    if parsed is None:  # irregular lines (comments, other widths): line by line
        addrs, types, names = [], [], []
        for line in raw.splitlines():
            m = _LINE.match(line)
            if not m:
                continue
            addrs.append(int(m.group(1), 16))
            types.append(m.group(2).decode())
            names.append(m.group(3).decode("latin-1"))
        parsed = np.array(addrs, np.uint64), "".join(types), names
    addr_arr, letters, names = parsed
    if len(names) <= 1:
        if b"System.map" in raw or b"-dbg" in raw:
            return None  # Debian's placeholder
        raise InputError(f"{path}: not a System.map (no 'ADDRESS TYPE NAME' lines); give the "
                         "System.map of this kernel with --system-map FILE")
    order = np.argsort(addr_arr, kind="stable")
    if np.all(order[1:] > order[:-1]):  # nm -n output is sorted already
        return Symbols(addr_arr, letters, names, f"System.map {path}")
    return Symbols(addr_arr[order], "".join(letters[i] for i in order.tolist()),
                   [names[i] for i in order.tolist()], f"System.map {path}")


_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def _parse_fast(raw: bytes) -> tuple[np.ndarray, str, list[str]] | None:
    """Every line ``ADDR T NAME`` with addresses of one width: (addresses, letters, names) with
    numpy; None when the file is not that regular."""
    toks = raw.split()
    if not toks or len(toks) % 3 or len(raw.splitlines()) * 3 != len(toks):
        return None
    a, t = toks[0::3], toks[1::3]
    width = len(a[0])
    letters = b"".join(t)
    if not 8 <= width <= 16 or len(letters) != len(t) or sum(map(len, a)) != width * len(a):
        return None
    digits = _HEX[np.frombuffer(b"".join(a), np.uint8)].reshape(-1, width)
    if (digits == 255).any() or not letters.isalpha():
        return None
    addrs = np.zeros(len(a), np.uint64)
    for k in range(width):
        addrs = (addrs << np.uint64(4)) | digits[:, k].astype(np.uint64)
    names = b"\n".join(toks[2::3]).decode("latin-1").split("\n")
    return addrs, letters.decode("latin-1"), names
