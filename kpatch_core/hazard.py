"""Hazards: probes the kernel accepts that killed it once they were armed and hit.

The kernel's checks (``register_kprobe``, ``arch_prepare_kprobe``) accept these probes; the
kernel-oracle then saw the guest die when it armed them (``crash`` in
tests/data/oracle/<NAME>/results.jsonl.gz: confirmed on two fresh boots, bisected down to the
one probe).  Such a probe is not refused, so the verdict stays ``ok``; ``check`` adds a
``hazard`` note (the ``--json`` field ``"hazard"``, an indented ``hazard:`` line in text).

The facts are per architecture, in ``arch/<arch>/hazards.py`` (absent: no hazard known there):

- ``SITES``: the probes the oracle saw crash, each with the kernel build and what the guest
  printed (the evidence);
- ``PATTERNS``: the instruction class the sites share, with the kernel function whose behaviour
  explains it; it marks the same class elsewhere (a site is hit only if the code runs while armed,
  so the pattern says "may", the site says what happened).

>>> from kpatch_core.image import Image                      # doctest: +SKIP
>>> hazard(Image.open("vmlinux"), 0x14cec6)                  # doctest: +SKIP
'armed and hit, this probe killed the kernel (s390x 6.1.0-50 ...)'
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from .image import Image

Version = tuple[int, int]


@attrs.frozen
class HazardSite:
    """One probe a real kernel accepted and then died of when it was armed (oracle ``crash``)."""

    symbol: str
    offset: int
    versions: tuple[Version, ...]  # (major, minor) of the kernels where the oracle saw it
    evidence: str  # the kernel build and what its console showed


@attrs.frozen
class HazardPattern:
    """An instruction class the crash sites share: ``match(image, addr)`` is True on it."""

    name: str
    match: Callable[["Image", int], bool]
    why: str  # the kernel function (and behaviour) that makes a probe there dangerous


def _table(image: "Image") -> ModuleType | None:
    """``arch/<arch>/hazards.py`` of the image's backend (None: the arch has no table)."""
    package = type(image.backend).__module__.rpartition(".")[0]
    try:
        return importlib.import_module(f"{package}.hazards")
    except ModuleNotFoundError as e:
        if e.name != f"{package}.hazards":
            raise
        return None


def hazard(image: "Image", addr: int) -> str | None:
    """The hazard note for a kprobe the kernel accepts at ``addr``, or None.

    A site of the arch's table on this kernel version wins ("this probe killed the kernel");
    otherwise an instruction of a known crashing class ("may").
    """
    table = _table(image)
    if table is None:
        return None
    sym = image.kallsyms.containing(addr)
    version = (image.version.major, image.version.minor)
    sites: tuple[HazardSite, ...] = getattr(table, "SITES", ())
    if sym is not None:
        for s in sites:
            if s.symbol == sym.name and s.offset == addr - sym.addr and version in s.versions:
                return f"armed and hit, this probe killed the kernel ({s.evidence})"
    patterns: tuple[HazardPattern, ...] = getattr(table, "PATTERNS", ())
    for p in patterns:
        if p.match(image, addr):
            seen = ", ".join(f"{s.symbol}+{s.offset}" for s in sites)
            return f"{p.name}: {p.why}" + (f" (killed the oracle's kernels at {seen})" if seen else "")
    return None
