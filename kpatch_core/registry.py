"""Find the backend for an image through the ``kpatch_core.backends`` entry-point group.

Each entry point names a Backend class; the class says which ELF machine and endianness it
reads.  The core never names an architecture: a new backend only registers an entry point.

>>> backend_for("EM_X86_64", True).name       # doctest: +SKIP
'x86_64'
"""
from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from kpatch_arch.base import Backend

GROUP = "kpatch_core.backends"


_broken: dict[str, str] = {}
_loaded: dict[tuple[str, str], "Backend"] = {}  # (entry-point name, target) -> its instance


def _load(ep: EntryPoint) -> "Backend | None":
    """The instance of entry point ``ep``'s backend (made once), None when it fails to load."""
    key = (ep.name, ep.value)
    if key not in _loaded:
        try:
            _loaded[key] = ep.load()()
        except Exception as e:  # a third-party plug-in may fail in any way
            _broken[ep.name] = f"{type(e).__name__}: {e}"
            return None
    return _loaded[key]


def _registered() -> list[EntryPoint]:
    return sorted(entry_points(group=GROUP), key=lambda e: e.name)


@functools.cache
def backends() -> tuple["Backend", ...]:
    """One instance of every registered backend that loads, in entry-point name order.

    A backend that fails to import is skipped (and named in the error if its image is opened),
    so one broken plug-in does not take the others down.
    """
    return tuple(b for ep in _registered() if (b := _load(ep)) is not None)


def broken_backends() -> dict[str, str]:
    """Entry points of the group that failed to load, with the error (empty when all load)."""
    backends()
    return dict(_broken)


def backend_named(name: str) -> "Backend":
    """The backend whose ``name`` is ``name`` (e.g. ``'arm64'``)."""
    for b in backends():
        if b.name == name:
            return b
    if name in _broken:
        raise InputError(f"the {name} backend failed to load: {_broken[name]}")
    known = ", ".join(b.name for b in backends()) or "none"
    raise InputError(f"unknown architecture {name!r}; known: {known}")


def backend_for(machine: str, little_endian: bool, path: str = "image") -> "Backend":
    """The backend that reads ELF ``machine`` (pyelftools name, e.g. ``EM_AARCH64``): the
    first in entry-point name order, the backends after it not loaded (opening an image loads
    its own backend package, not all five)."""
    for ep in _registered() if backends.cache_info().currsize == 0 else ():
        b = _load(ep)
        if b is not None and b.elf_machine == machine and b.little_endian == little_endian:
            return b
    for b in backends():
        if b.elf_machine == machine and b.little_endian == little_endian:
            return b
    known = ", ".join(b.name for b in backends()) or "none (is kpatch-core installed?)"
    if _broken:
        known += "; failed to load: " + ", ".join(f"{k} ({v})" for k, v in _broken.items())
    end = "little" if little_endian else "big"
    raise InputError(f"{path}: unsupported architecture {machine} ({end}-endian); "
                     f"supported: {known}")
