"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress("analysing")`` is a callable ``(done, total)`` for :func:`analyze.analyze`."""

    def __init__(self, label: str, stream: TextIO | None = None, force: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = force or (hasattr(self.stream, "isatty") and self.stream.isatty())
        self.t0 = time.monotonic()
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        width = 30
        fill = int(width * done / total)
        el = time.monotonic() - self.t0
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                          f"{done}/{total} {el:5.1f}s")
        self.stream.flush()
        self._drawn = True
        if done >= total:
            self.close()

    def close(self) -> None:
        """End the bar's line (once)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
