"""A file-like view of an in-memory buffer (an mmap of a vmlinux, a decoded boot payload) for
pyelftools, which seeks and reads headers; ``io.BytesIO`` would copy the buffer whole."""
from __future__ import annotations

import mmap


class BufferStream:
    """Seek, tell and read over ``data`` without copying more than each read returns."""

    def __init__(self, data: "bytes | bytearray | mmap.mmap") -> None:
        self._d = data
        self._pos = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        """Move to ``pos`` (from the start, the current position or the end)."""
        self._pos = pos if whence == 0 else (self._pos + pos if whence == 1 else len(self._d) + pos)
        return self._pos

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left when ``n`` < 0) from the current position."""
        end = len(self._d) if n < 0 else self._pos + n
        out = self._d[self._pos:end]
        self._pos += len(out)
        return out if isinstance(out, bytes) else bytes(out)
