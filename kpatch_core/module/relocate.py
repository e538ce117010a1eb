"""The arch-neutral half of module relocation: ``simplify_symbols`` (each symbol's final value:
section base + value, absolute, or an undefined symbol resolved against the kernel of the same
build and the modules it depends on) and ``apply_relocations`` (every SHT_RELA section whose
target is loaded, handed to the architecture's ``apply_relocate_add`` table, vectorised per
relocation type).

The per-architecture half lives in ``kpatch_arch.<arch>.module``: ``apply_relocate_add(sec,
state)`` over a :class:`RelaSection`, most often one call of :meth:`RelaSection.apply_table`
with the arch's ``RELOCATIONS`` (type -> rows with ``name``, ``width`` and
``compute(S, A, P, old) -> (new, overflow)``); riscv64 also pairs PCREL_LO12 with its HI20,
emits GOT/PLT entries and accumulates ADD/SUB/SET per location.

>>> rel = relocate(ko, layout, arch_module, resolve)        # doctest: +SKIP
>>> rel.sections[ko.section(".text").index][:5].hex()        # doctest: +SKIP
"""
from __future__ import annotations

from types import ModuleType
from typing import Callable

import attrs
import numpy as np

from ..errors import InputError
from .kofile import SHN_ABS, SHN_COMMON, SHN_LORESERVE, SHN_UNDEF, SHT_RELA, KoFile, rela_dtype
from .layout import PERCPU_SECTION, ModuleLayout, section_bytes

STB_WEAK = 2
PERCPU_BASE = 0  # per-cpu symbols are offsets into each CPU's area (no text lives there)


@attrs.frozen(eq=False)
class Relocated:
    """The module after ``apply_relocate_add``: per loaded section its bytes, the final value
    of every symbol, and what could not be resolved or applied."""

    sections: dict[int, bytes]
    sym_values: np.ndarray  # uint64 per .symtab entry
    unresolved: tuple[str, ...]  # undefined symbols neither the kernel nor a dependency has
    unsupported: dict[str, int]  # relocation type name -> count not applied
    overflow: dict[str, int]  # relocation type name -> count out of the field's range
    count: int  # relocations applied


def _names(strtab: bytes, offs: np.ndarray) -> list[str]:
    """The NUL-terminated names at ``offs`` in ``strtab`` (one split of the table)."""
    text = strtab.decode("latin-1")
    starts = np.concatenate(([0], np.flatnonzero(np.frombuffer(strtab, np.uint8) == 0) + 1))
    by_start = dict(zip(starts.tolist(), text.split("\0")))
    out = []
    for o in offs.tolist():
        n = by_start.get(o)
        if n is None:  # a suffix of another name (string tables may share tails)
            end = text.find("\0", o)
            n = text[o:end if end >= 0 else len(text)]
        out.append(n)
    return out


def simplify_symbols(ko: KoFile, layout: ModuleLayout, resolve: Callable[[str], int | None],
                     names: list[str] | None = None) -> tuple[np.ndarray, list[str], tuple[str, ...]]:
    """(value per symbol, names, unresolved names): ``simplify_symbols`` of
    kernel/module/main.c.  An unresolved strong symbol gets the value ``resolve`` gives for
    ``""`` (a placeholder in reach), and is listed."""
    syms, strtab = ko.symtab()
    if names is None:
        names = _names(strtab, syms["name"].astype(np.int64))
    shndx = syms["shndx"].astype(np.int64)
    vals = syms["value"].astype(np.uint64).copy()
    if (shndx == SHN_COMMON).any():
        raise InputError(f"{ko.path}: module has common symbols (load_module refuses it: "
                         "'Please compile with -fno-common')")
    pcpu = ko.section(PERCPU_SECTION)
    bases = np.zeros(len(ko.sections), np.uint64)
    for i, a in layout.address_of.items():
        bases[i] = a
    if pcpu is not None:  # mod->percpu: the module's per-cpu copy, beside the kernel's
        bases[pcpu.index] = np.uint64(resolve("__per_cpu_start") or PERCPU_BASE)
    regular = (shndx != SHN_UNDEF) & (shndx < SHN_LORESERVE) & (shndx < len(ko.sections))
    with np.errstate(over="ignore"):
        vals[regular] += bases[shndx[regular]]
    unresolved = []
    placeholder = resolve("") or 0
    for i in np.flatnonzero(shndx == SHN_UNDEF).tolist():
        if i == 0 or not names[i]:
            continue
        v = resolve(names[i])
        if v is None:
            if (int(syms["info"][i]) >> 4) == STB_WEAK:
                v = 0
            else:
                unresolved.append(names[i])
                v = placeholder
        vals[i] = np.uint64(v)
    _ = SHN_ABS  # absolute symbols keep st_value
    return vals, names, tuple(sorted(set(unresolved)))


@attrs.define(eq=False)
class RelaSection:
    """One SHT_RELA section as ``apply_relocate_add`` sees it, vectorised: per relocation its
    type, symbol index, S (symbol value), A (addend), P (place) and offset in the target
    section, the target's bytes (written in place), and the counters of what was applied.
    The architecture's ``apply_relocate_add(sec, state)`` works on it (``state``: a dict kept
    for the whole module, e.g. its GOT and PLT entries)."""

    ko: KoFile
    name: str  # the target section's name (for messages)
    types: np.ndarray  # int64
    symi: np.ndarray  # int64
    S: np.ndarray  # uint64
    A: np.ndarray  # uint64 (two's complement of the signed addend)
    P: np.ndarray  # uint64
    offs: np.ndarray  # int64
    buf: np.ndarray  # uint8, the target section's bytes
    layout: ModuleLayout
    unsupported: dict[str, int] = attrs.Factory(dict)
    overflow: dict[str, int] = attrs.Factory(dict)
    count: int = 0

    def read(self, offs: np.ndarray, width: int) -> np.ndarray:
        """The ``width``-byte fields at ``offs`` (uint64)."""
        self.check_bounds(offs, width)
        return _read(self.buf, offs, width, self.ko.little_endian)

    def write(self, offs: np.ndarray, vals: np.ndarray, width: int) -> None:
        """Store ``vals`` into the ``width``-byte fields at ``offs``."""
        self.check_bounds(offs, width)
        _write(self.buf, offs, vals, width, self.ko.little_endian)

    def check_bounds(self, offs: np.ndarray, width: int) -> None:
        """A field outside the target section is a malformed module."""
        if len(offs) and ((offs < 0).any() or (offs + width > len(self.buf)).any()):
            raise InputError(f"{self.ko.path}: malformed module (relocation past the end of "
                             f"{self.name})")

    def apply_table(self, table: dict, sel: np.ndarray | None = None,
                    S: np.ndarray | None = None, A: np.ndarray | None = None) -> None:
        """Apply the rows of ``table`` (type -> row with ``name``, ``width``,
        ``compute(S, A, P, old) -> (new, overflow mask or None)``) to the relocations ``sel``
        (all by default), each type at once; ``S``/``A`` replace the symbol values and addends
        (e.g. with what a paired relocation, a GOT or PLT entry gives)."""
        if sel is None:
            sel = np.ones(len(self.types), bool)
        Sv = self.S if S is None else S
        Av = self.A if A is None else A
        for t in np.unique(self.types[sel]).tolist():
            one = sel & (self.types == t)
            row = table.get(t)
            if row is None:
                self.unsupported[f"{t}"] = self.unsupported.get(f"{t}", 0) + int(one.sum())
                continue
            if row.width == 0:  # R_*_NONE, R_RISCV_RELAX
                continue
            o = self.offs[one]
            with np.errstate(over="ignore"):
                old = self.read(o, row.width)
                new, bad = row.compute(Sv[one], Av[one], self.P[one], old)
            if bad is not None and bad.any():
                self.overflow[row.name] = self.overflow.get(row.name, 0) + int(bad.sum())
            self.write(o, new, row.width)
            self.count += int(one.sum())


def relocate(ko: KoFile, layout: ModuleLayout, arch: ModuleType,
             resolve: Callable[[str], int | None], names: list[str] | None = None) -> Relocated:
    """``apply_relocations``: each SHT_RELA section targeting a loaded section, handed to the
    architecture's ``apply_relocate_add`` (most apply their ``RELOCATIONS`` table with
    :meth:`RelaSection.apply_table`)."""
    vals, _names_, unresolved = simplify_symbols(ko, layout, resolve, names)
    out = {i: section_bytes(ko, i) for i in layout.address_of}
    unsupported: dict[str, int] = {}
    overflow: dict[str, int] = {}
    state: dict = {}
    e = ko.endian
    count = 0
    parts = []  # (target section, types, symbol indices, addends, offsets) per RELA section
    for s in ko.sections:
        if s.type != SHT_RELA or s.info not in out:  # target not loaded (SHF_ALLOC clear)
            continue
        rel = np.frombuffer(ko.data, rela_dtype(e), count=s.size // 24, offset=s.offset)
        if not len(rel):
            continue
        symi = (rel["info"] >> np.uint64(32)).astype(np.int64)
        if (symi >= len(vals)).any():
            raise InputError(f"{ko.path}: malformed module (relocation in {s.name} names symbol "
                             f"{int(symi.max())} of {len(vals)})")
        parts.append((s.info, (rel["info"] & np.uint64(0xFFFFFFFF)).astype(np.int64), symi,
                      rel["addend"].astype(np.int64).astype(np.uint64),
                      rel["offset"].astype(np.int64)))
    if arch.RELOCATE_ACROSS_SECTIONS and parts:  # one pass over all of them (order-free table)
        todo = [_merged(ko, layout, arch.RELOCATIONS, out, parts, vals)]
    else:
        with np.errstate(over="ignore"):
            todo = [(RelaSection(ko, ko.sections[t].name, types, symi, vals[symi], addend,
                                 np.uint64(layout.address_of[t]) + offs.astype(np.uint64), offs,
                                 np.frombuffer(out[t], np.uint8), layout), {})
                    for t, types, symi, addend, offs in parts]
    for sec, spans in todo:
        arch.apply_relocate_add(sec, state)
        for i, (lo, hi) in spans.items():  # the merged buffer back into its sections
            out[i][:] = sec.buf[lo:hi].tobytes()
        for k, v in sec.unsupported.items():
            unsupported[k] = unsupported.get(k, 0) + v
        for k, v in sec.overflow.items():
            overflow[k] = overflow.get(k, 0) + v
        count += sec.count
    return Relocated({i: bytes(b) for i, b in out.items()}, vals, unresolved, unsupported,
                     overflow, count)


def _merged(ko: KoFile, layout: ModuleLayout, table: dict, out: dict[int, bytearray],
            parts: list, vals: np.ndarray) -> tuple[RelaSection, dict[int, tuple[int, int]]]:
    """Every RELA section's relocations as one :class:`RelaSection` over the target sections
    laid end to end in one buffer (their spans returned); each field is first checked to lie
    inside its own section."""
    targets = sorted({p[0] for p in parts})
    spans, pos = {}, 0
    for t in targets:
        spans[t] = (pos, pos + len(out[t]))
        pos += len(out[t])
    big = np.zeros(pos, np.uint8)
    for t, (lo, hi) in spans.items():
        big[lo:hi] = np.frombuffer(out[t], np.uint8)
    lut = np.zeros(max(table) + 1, np.int64)
    for k, row in table.items():
        lut[k] = row.width
    for t, types, _, _, offs in parts:
        w = np.where((types >= 0) & (types < len(lut)), lut[np.clip(types, 0, len(lut) - 1)], 0)
        if (offs < 0).any() or (offs + w > len(out[t])).any():
            raise InputError(f"{ko.path}: malformed module (relocation past the end of "
                             f"{ko.sections[t].name})")
    types = np.concatenate([p[1] for p in parts])
    symi = np.concatenate([p[2] for p in parts])
    offs = np.concatenate([p[4] + spans[p[0]][0] for p in parts])
    with np.errstate(over="ignore"):
        P = np.concatenate([np.uint64(layout.address_of[p[0]]) + p[4].astype(np.uint64)
                            for p in parts])
        sec = RelaSection(ko, "the module's sections", types, symi, vals[symi],
                          np.concatenate([p[3] for p in parts]), P, offs, big, layout)
    return sec, spans


def _read(buf: np.ndarray, offs: np.ndarray, width: int, le: bool) -> np.ndarray:
    v = np.zeros(len(offs), np.uint64)
    for k in range(width):
        shift = 8 * k if le else 8 * (width - 1 - k)
        v |= buf[offs + k].astype(np.uint64) << np.uint64(shift)
    return v


def _write(buf: np.ndarray, offs: np.ndarray, vals: np.ndarray, width: int, le: bool) -> None:
    vals = vals.astype(np.uint64)
    for k in range(width):
        shift = 8 * k if le else 8 * (width - 1 - k)
        buf[offs + k] = ((vals >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.uint8)
