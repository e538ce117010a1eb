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
    addrs, types, names = [], [], []
    for line in raw.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        addrs.append(int(m.group(1), 16))
        types.append(m.group(2).decode())
        names.append(m.group(3).decode("latin-1"))
    if len(names) <= 1:
        if b"System.map" in raw or b"-dbg" in raw:
            return None  # Debian's placeholder
        raise InputError(f"{path}: not a System.map (no 'ADDRESS TYPE NAME' lines); give the "
                         "System.map of this kernel with --system-map FILE")
    order = np.argsort(np.array(addrs, np.uint64), kind="stable")
    return Symbols(np.array(addrs, np.uint64)[order], "".join(types[i] for i in order),
                   [names[i] for i in order], f"System.map {path}")
