"""One kernel's column: open the image, ask :func:`kpatch_core.probe.check` about every probe.

:func:`evaluate` is a pure function of (image path, probe list): it is what each Dask task
runs, and what a single-machine caller can run directly.  Each cell is exactly the verdict of
a single ``check(image, probe)`` (every probe in isolation, as a tool attaching it alone), plus
the facts :mod:`.classify` needs to say why it differs between kernels: the function's
compiler clones in kallsyms, whether DWARF still names it, its BTF signature, and the probed
address's offset from the function start.

>>> col = evaluate("vmlinux", [Probe("kprobe", "vfs_read")])   # doctest: +SKIP
>>> col.cells[0].verdict["ok"], col.build_id                      # doctest: +SKIP
(True, '06f8bde3...')
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import KpatchError
from ..image import Image
from ..probe import check
from ..symbols import base_name
from .plan import Probe

if TYPE_CHECKING:
    from ..btf import Btf

COLUMN_SCHEMA = 1


@attrs.frozen
class Cell:
    """One (probe, kernel) verdict and the facts behind it."""

    verdict: dict[str, Any]  # Verdict.to_json(): ok, errno, reason, kernel_function, why, ...
    clones: tuple[str, ...] = ()  # kallsyms names NAME.isra.0, NAME.constprop.0, ... of the symbol
    in_dwarf: bool | None = None  # the name is in .debug_str (None: the image has no DWARF)
    signature: str | None = None  # BTF prototype (None: no BTF or no such function)
    func_offset: int | None = None  # resolved address - start of its function

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "clones": list(self.clones), "in_dwarf": self.in_dwarf,
                "signature": self.signature, "func_offset": self.func_offset}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        return cls(d["verdict"], tuple(d["clones"]), d["in_dwarf"], d["signature"],
                   d["func_offset"])


@attrs.frozen
class Column:
    """One kernel's verdicts for every probe, or why there are none (``error``)."""

    label: str
    path: str | None
    build_id: str | None = None
    arch: str | None = None
    version: str | None = None
    rules: str | None = None
    cells: tuple[Cell, ...] = ()
    error: str | None = None  # the column failed: corrupt image, worker died, fetch failed
    seconds: float = 0.0  # time spent computing the column (0 when read from the store)
    fetch_seconds: float = 0.0  # time spent downloading the image (Debian builds)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        return {"schema": COLUMN_SCHEMA, "label": self.label, "path": self.path,
                "build_id": self.build_id, "arch": self.arch, "version": self.version,
                "rules": self.rules, "error": self.error, "seconds": self.seconds,
                "fetch_seconds": self.fetch_seconds,
                "cells": [c.to_json() for c in self.cells]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Column:
        return cls(d["label"], d["path"], d["build_id"], d["arch"], d["version"], d["rules"],
                   tuple(Cell.from_json(c) for c in d["cells"]), d["error"], d["seconds"],
                   d.get("fetch_seconds", 0.0))


def failed_column(label: str, path: str | None, error: str) -> Column:
    """A column with no verdicts and the reason."""
    return Column(label, path, error=error)


class _Facts:
    """Per-image lookups shared by every probe of a column."""

    def __init__(self, image: Image) -> None:
        self.image = image

    @functools.cached_property
    def clones_by_base(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name in self.image.kallsyms.names:
            if "." in name:
                b = base_name(name)
                if b != name:
                    out.setdefault(b, []).append(name)
        return out

    @functools.cached_property
    def btf(self) -> Btf | None:
        from ..btf import Btf
        try:
            return Btf.from_image(self.image)
        except KpatchError:
            return None  # a malformed .BTF costs the signature facts, not the column

    def in_dwarf(self, name: str) -> bool | None:
        """Whether ``.debug_str`` holds the name (an inlined or declared function keeps its
        DWARF name; a removed one does not)."""
        s = self.image.section(".debug_str")
        if s is None or not s.size:
            return None
        needle = b"\0" + name.encode() + b"\0"
        return self.image.data.find(needle, s.offset - 1, s.offset + s.size) >= 0

    def signature(self, name: str) -> str | None:
        b = self.btf
        if b is None:
            return None
        proto = b.func(name)
        return None if proto is None else proto.signature()


def _cell(image: Image, facts: _Facts, probe: Probe) -> Cell:
    v = check(image, probe.kprobe_target)
    name = probe.symbol
    clones: tuple[str, ...] = ()
    in_dwarf = signature = None
    if name is not None:
        clones = tuple(sorted(facts.clones_by_base.get(name, ())))
        signature = facts.signature(name)
        if image.kallsyms.lookup(name) is None:
            in_dwarf = facts.in_dwarf(name)
    off = None
    if v.address is not None:
        f = image.kallsyms.containing(v.address)
        if f is not None:
            off = v.address - f.addr
    return Cell(v.to_json(), clones, in_dwarf, signature, off)


def evaluate_image(image: Image, probes: Sequence[Probe], label: str | None = None) -> Column:
    """The column of an opened image for ``probes``; an image that turns out unusable while
    reading gives a failed column with the one-line reason instead of raising."""
    t0 = time.monotonic()
    label = label or image.path
    try:
        facts = _Facts(image)
        cells = tuple(_cell(image, facts, p) for p in probes)
        return Column(label, os.path.abspath(image.path), image.build_id, image.backend.name,
                      str(image.version), image.version.rules, cells,
                      seconds=time.monotonic() - t0)
    except KpatchError as e:
        return failed_column(label, image.path, str(e))


def evaluate(path: str, probes: Sequence[Probe], label: str | None = None) -> Column:
    """The column of ``path`` (a vmlinux or a /boot directory) for ``probes``; an unusable
    image gives a failed column with the one-line reason instead of raising."""
    try:
        image = Image.open(path)
    except KpatchError as e:
        return failed_column(label or path, path, str(e))
    return evaluate_image(image, probes, label or path)
