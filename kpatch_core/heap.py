"""glibc ``mallopt`` settings for the full analysis: freed array memory stays in the heap.

The full analysis allocates and frees arrays of tens of MB per function range (offsets,
lengths, outcome codes of a few hundred thousand instructions).  With glibc's defaults, blocks
that large are served by ``mmap`` and returned to the kernel on ``free``; the next range's
arrays are then faulted in page by page again (about 0.3 s of system time on an x86_64 6.12
kernel).  Raising the mmap and trim thresholds keeps them in the heap for reuse; forked
workers inherit the setting.  Elsewhere than glibc this does nothing.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

# (parameter, value): blocks up to 256 MiB from the heap; keep up to 1 GiB of free heap top;
# grow the heap 64 MiB at a time (fewer brk calls)
SETTINGS = ((M_MMAP_THRESHOLD, 256 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))

_done = False


def keep_freed_memory() -> bool:
    """Apply :data:`SETTINGS` once per process; True when glibc accepted all of them."""
    global _done
    if _done:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = all([mallopt(p, v) == 1 for p, v in SETTINGS])
    return _done
