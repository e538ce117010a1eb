"""One kernel's column: open the image, ask the kernel's rules about every probe.

:func:`evaluate` is a pure function of (image path, probe list): it is what each Dask task
runs, and what a single-machine caller can run directly.  Each cell is exactly the verdict of
a single ``check`` of that probe (:func:`kpatch_core.attach.check_one` of the target as the
tool spelled it, every probe in isolation; a glob: one verdict per function it matches), plus
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

from ..attach import check_one
from ..errors import KpatchError
from ..image import Image
from ..spec import expand
from ..symbols import base_name
from ..target import Target
from .plan import Probe

if TYPE_CHECKING:
    from ..btf import Btf

COLUMN_SCHEMA = 2


@attrs.frozen
class Cell:
    """One (probe, kernel) verdict and the facts behind it."""

    verdict: dict[str, Any]  # Verdict.to_json(): ok, errno, reason, kernel_function, why, ...
    clones: tuple[str, ...] = ()  # kallsyms names NAME.isra.0, NAME.constprop.0, ... of the symbol
    in_dwarf: bool | None = None  # the name is in .debug_str (None: the image has no DWARF)
    signature: str | None = None  # BTF prototype (None: no BTF or no such function)
    func_offset: int | None = None  # resolved address - start of its function
    has_symbol: bool | None = None  # the name is in kallsyms (None: an address target)
    # a glob: (name, verdict) of every function it matched here; ``verdict`` is the first
    # refused one (else the first), or a no-match verdict
    matches: tuple[tuple[str, dict[str, Any]], ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "clones": list(self.clones), "in_dwarf": self.in_dwarf,
                "signature": self.signature, "func_offset": self.func_offset,
                "has_symbol": self.has_symbol,
                "matches": None if self.matches is None else [list(m) for m in self.matches]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        m = d.get("matches")
        return cls(d["verdict"], tuple(d["clones"]), d["in_dwarf"], d["signature"],
                   d["func_offset"], d.get("has_symbol"),
                   None if m is None else tuple((str(n), v) for n, v in m))


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
        if d.get("schema") != COLUMN_SCHEMA:
            raise ValueError(f"column schema {d.get('schema')} (this code reads {COLUMN_SCHEMA})")
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


def single_verdict(image: Image, target: Target) -> dict[str, Any]:
    """``check`` of one already-expanded target of any attach type, as JSON."""
    return check_one(image, target).to_json()


def _no_match(target: Target, rules: str) -> dict[str, Any]:
    """The verdict of a glob that matched no function (the tool attaches nothing)."""
    return {"target": str(target), "kind": target.kind, "ok": False, "errno": None,
            "message": None, "reason": "NO_MATCH", "kernel_function": None,
            "why": "the pattern matches no function on this kernel", "address": None,
            "symbol": None, "method": None, "flags": [], "rules": rules}


def _cell(image: Image, facts: _Facts, probe: Probe) -> Cell:
    t = probe.kprobe_target
    got = expand(image, t)
    if t.is_pattern:
        matches = tuple((str(e.symbol), single_verdict(image, e)) for e in got)
        rep = next((v for _, v in matches if not v["ok"]), None) or \
            (matches[0][1] if matches else _no_match(t, image.version.rules))
        return Cell(rep, has_symbol=bool(matches), matches=matches)
    v = single_verdict(image, got[0])
    name = got[0].symbol
    clones: tuple[str, ...] = ()
    in_dwarf = signature = has_symbol = None
    if name is not None:
        clones = tuple(sorted(facts.clones_by_base.get(name, ())))
        signature = facts.signature(name)
        has_symbol = image.kallsyms.lookup(name) is not None
        if not has_symbol:
            in_dwarf = facts.in_dwarf(name)
    off = None
    if v.get("address"):
        addr = int(v["address"], 16)
        f = image.kallsyms.containing(addr)
        if f is not None:
            off = addr - f.addr
    return Cell(v, clones, in_dwarf, signature, off, has_symbol)


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
