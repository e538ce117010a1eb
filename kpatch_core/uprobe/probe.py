"""The uprobe pipeline in the kernel's order, then our own boundary check.

1. the tool's resolution (symbol or USDT note -> file offset, as libbpf/bpftrace/perf do);
2. ``__uprobe_register`` [kernel/events/uprobes.c]: offset within the file, aligned to
   ``UPROBE_SWBP_INSN_SIZE``, ``ref_ctr_offset`` aligned to a short;
3. ``prepare_uprobe`` when a process maps the file: ``copy_insn`` (-EIO at the end of the file),
   ``is_trap_insn`` (-ENOTSUPP), ``arch_uprobe_analyze_insn`` (the backend's ``uprobe`` module);
4. ours, as warnings (the kernel has none of these checks): the offset is an instruction
   boundary of its function, lies in an executable segment, is mapped at all.

>>> elf = UserElf.open("/bin/busybox")                            # doctest: +SKIP
>>> [v.to_json()["errno"] for v in check_uprobes(elf, "/bin/busybox:main+1")]  # doctest: +SKIP
[None]
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs

from ..errors import InputError
from ..features import FeatureSet
from .elf import Symbol, UserElf
from .target import UprobeTarget, parse_uprobe_target
from .usdt import find_usdt
from .verdict import (
    Analysis,
    UMethod,
    UprobeVerdict,
    UReason,
    URefusal,
    UWarning,
    WarningKind,
)

if TYPE_CHECKING:
    from kpatch_arch.base import Backend, UprobeSupport

DEFAULT_KERNEL = (6, 12)
XOL_VADDR_DEFAULT = 0x7FFFF7FF9000  # where xol_add_vma's get_unmapped_area typically lands


def uprobe_support(backend: Backend) -> UprobeSupport:
    """The backend's :class:`~kpatch_arch.base.UprobeSupport` (``arch/<arch>/uprobe.py``)."""
    support = backend.uprobe_support()
    if support is None:
        raise InputError(f"{backend.name}: no uprobe support for this architecture")
    return support


def features_for(backend: Backend, kernel: tuple[int, int] = DEFAULT_KERNEL) -> FeatureSet:
    """The named kernel features of ``kernel`` (major, minor) for ``backend``'s architecture."""
    return FeatureSet.decide(kernel, backend.name)


@attrs.frozen
class Site:
    """One resolved probe site: file offset, the address the process sees, its label."""

    offset: int | None
    vaddr: int | None
    ref_ctr_offset: int = 0
    label: str = ""
    refusal: URefusal | None = None


def resolve(elf: UserElf, t: UprobeTarget) -> list[Site]:
    """The probe sites a target names (several for a USDT probe inlined in several places)."""
    if t.usdt is not None:
        probes = find_usdt(elf, *t.usdt)
        if not probes:
            return [Site(None, None, label=":".join(x for x in t.usdt if x),
                         refusal=URefusal(UReason.NO_USDT, ":".join(x for x in t.usdt if x)))]
        return [Site(p.offset, p.vaddr, p.semaphore_offset or 0, p.label,
                     None if p.offset is not None else URefusal(UReason.NOT_MAPPED, hex(p.vaddr)))
                for p in probes]
    if t.symbol is not None:
        syms = elf.lookup(t.symbol)
        if not syms:
            return [Site(None, None, label=t.symbol, refusal=URefusal(UReason.NO_SYMBOL, t.symbol))]
        s = min(syms, key=lambda s: (s.kind not in ("func", "ifunc"), s.bind != "global"))
        vaddr = s.vaddr + t.sym_offset
        off = elf.vaddr_to_offset(vaddr)
        return [Site(off, vaddr, t.ref_ctr_offset, f"{s.name}+{t.sym_offset:#x}",
                     None if off is not None else URefusal(UReason.NOT_MAPPED, hex(vaddr)))]
    if t.vaddr is not None:
        off = elf.vaddr_to_offset(t.vaddr)
        return [Site(off, t.vaddr, t.ref_ctr_offset, hex(t.vaddr),
                     None if off is not None else URefusal(UReason.NOT_MAPPED, hex(t.vaddr)))]
    assert t.offset is not None
    return [Site(t.offset, elf.offset_to_vaddr(t.offset), t.ref_ctr_offset, hex(t.offset))]


def check_uprobes(elf: UserElf, target: UprobeTarget | str,
                  kernel: tuple[int, int] = DEFAULT_KERNEL,
                  xol_vaddr: int = XOL_VADDR_DEFAULT) -> list[UprobeVerdict]:
    """The kernel's verdict (plus our warnings) for every site of ``target`` on ``elf``."""
    t = parse_uprobe_target(target, elf.path) if isinstance(target, str) else target
    fs = features_for(elf.backend, kernel)
    return [check_site(elf, t, s, fs, xol_vaddr) for s in resolve(elf, t)]


def check_uprobe(elf: UserElf, target: UprobeTarget | str,
                 kernel: tuple[int, int] = DEFAULT_KERNEL) -> UprobeVerdict:
    """The verdict for the first site of ``target`` (see :func:`check_uprobes`)."""
    return check_uprobes(elf, target, kernel)[0]


def check_offset(elf: UserElf, offset: int, fs: FeatureSet, kind: str = "p",
                 xol_vaddr: int = XOL_VADDR_DEFAULT) -> UprobeVerdict:
    """The verdict for a uprobe at file ``offset`` (``PATH:0xOFFSET``)."""
    t = UprobeTarget(elf.path, kind, offset=offset, text=f"{elf.path}:{offset:#x}")
    return check_site(elf, t, Site(offset, elf.offset_to_vaddr(offset), 0, hex(offset)), fs,
                      xol_vaddr)


def check_site(elf: UserElf, t: UprobeTarget, site: Site, fs: FeatureSet,
               xol_vaddr: int = XOL_VADDR_DEFAULT) -> UprobeVerdict:
    """Steps 2-4 of the pipeline for one resolved site."""
    base = UprobeVerdict(str(t), t.kind, False, site.offset, site.vaddr,
                         _symbol_label(elf, site.vaddr), ref_ctr_offset=site.ref_ctr_offset,
                         rules=fs.rules)
    if site.refusal is not None:
        return attrs.evolve(base, reason=site.refusal.reason, detail=site.refusal.detail)
    mod = uprobe_support(elf.backend)
    off = site.offset
    assert off is not None
    # __uprobe_register
    if off > elf.size:
        return attrs.evolve(base, reason=UReason.OFFSET_BEYOND_FILE,
                            detail=f"{off:#x} > size {elf.size:#x}")
    if off % mod.SWBP_INSN_SIZE:
        return attrs.evolve(base, reason=UReason.OFFSET_MISALIGNED,
                            detail=f"{off:#x} % {mod.SWBP_INSN_SIZE}")
    if site.ref_ctr_offset % 2:
        return attrs.evolve(base, reason=UReason.REF_CTR_MISALIGNED, detail=hex(site.ref_ctr_offset))
    vaddr = site.vaddr if site.vaddr is not None else elf.offset_to_vaddr(off)
    if vaddr is None and elf.mapped_offset(off, mod.PAGE_SIZE):  # page tail of a segment
        seg = min((s for s in elf.segments if s.offset <= off), key=lambda s: off - s.offset)
        vaddr = off - seg.offset + seg.vaddr
    if vaddr is None:  # no vma maps it: registered, never installed, never judged further
        return attrs.evolve(base, ok=True, warnings=(UWarning(
            WarningKind.NOT_LOADED, f"file offset {off:#x} is in no PT_LOAD segment: "
            "no process maps it, the probe never fires"),))
    # prepare_uprobe
    if off >= elf.size:
        return attrs.evolve(base, reason=UReason.NO_INSN, detail=f"{off:#x} == size")
    insn = elf.read(off, mod.MAX_UINSN_BYTES)
    shown = insn[:mod.insn_length(elf.backend, insn) or mod.SWBP_INSN_SIZE]
    if mod.is_trap_insn(insn, fs):
        return attrs.evolve(base, reason=UReason.TRAP_INSN, detail=shown.hex(), insn=shown)
    a = mod.analyze_insn(elf.backend, insn, vaddr, fs)
    if isinstance(a, URefusal):
        return attrs.evolve(base, reason=a.reason, detail=a.detail, insn=shown)
    warnings = tuple(own_checks(elf, mod, off, vaddr))
    xol = mod.xol_slot(a, insn, vaddr, xol_vaddr) if a.method in (UMethod.XOL, UMethod.EMULATE_OR_XOL) else b""
    return attrs.evolve(base, ok=True, method=a.method, ops=a.ops, insn=insn[:a.length],
                        mnemonic=a.mnemonic, warnings=warnings, xol=xol)


def analysis_at(elf: UserElf, offset: int, fs: FeatureSet) -> tuple[bytes, Analysis | URefusal]:
    """(the bytes ``copy_insn`` reads, ``arch_uprobe_analyze_insn``'s answer) at ``offset``."""
    mod = uprobe_support(elf.backend)
    insn = elf.read(offset, mod.MAX_UINSN_BYTES)
    vaddr = elf.offset_to_vaddr(offset) or offset
    return insn, mod.analyze_insn(elf.backend, insn, vaddr, fs)


def _symbol_label(elf: UserElf, vaddr: int | None) -> str | None:
    if vaddr is None:
        return None
    f = elf.function_at(vaddr)
    return None if f is None else f"{f.name}+{vaddr - f.vaddr:#x}"


# --- our own checks -------------------------------------------------------------------------
def instruction_starts(elf: UserElf, func: Symbol, mod: UprobeSupport | None = None) -> tuple[list[int], int | None]:
    """Virtual addresses of the instructions of ``func`` decoding from its start, and where the
    decode stopped early (undecodable bytes), or None."""
    cache = elf.__dict__.setdefault("_instruction_starts", {})
    key = (func.vaddr, func.size)
    if key not in cache:
        cache[key] = _instruction_starts(elf, func, mod or uprobe_support(elf.backend))
    return cache[key]


def _instruction_starts(elf: UserElf, func: Symbol, mod: UprobeSupport) -> tuple[list[int], int | None]:
    start = elf.vaddr_to_offset(func.vaddr)
    if start is None:
        return [], func.vaddr
    code = elf.read(start, func.size + 16)
    out: list[int] = []
    pos = 0
    while pos < func.size:
        n = mod.insn_length(elf.backend, code[pos:pos + 16])
        if n <= 0:
            return out, func.vaddr + pos
        out.append(func.vaddr + pos)
        pos += n
    return out, None


def own_checks(elf: UserElf, mod: UprobeSupport, offset: int, vaddr: int) -> Iterator[UWarning]:
    """Our warnings for an offset the kernel accepted: executable, in a function, a boundary."""
    if not elf.executable_offset(offset):
        yield UWarning(WarningKind.NOT_EXECUTABLE, f"{offset:#x} is in a non-executable segment: "
                       "the breakpoint is written there but never executed")
    f = elf.function_at(vaddr)
    if f is None:
        yield UWarning(WarningKind.OUTSIDE_FUNCTION, f"{vaddr:#x} is in no function symbol: "
                       "instruction boundary unknown")
        return
    starts, stop = instruction_starts(elf, f, mod)
    if stop is not None and vaddr >= stop:
        yield UWarning(WarningKind.UNDECODABLE_FUNCTION,
                       f"{f.name}: decoding from its start fails at +{stop - f.vaddr:#x}")
        return
    import bisect
    i = bisect.bisect_right(starts, vaddr) - 1
    if i < 0 or starts[i] != vaddr:
        at = starts[i] if i >= 0 else f.vaddr
        yield UWarning(WarningKind.NOT_BOUNDARY,
                       f"inside the instruction at {f.name}+{at - f.vaddr:#x}: the kernel "
                       "accepts it and the breakpoint corrupts that instruction")
