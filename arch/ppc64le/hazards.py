"""ppc64le probes the kernel accepts that killed it when armed (kpatch_core/hazard.py).

A probe inside a load-reserve / store-conditional loop (``ldarx`` ... ``stdcx.``):
arch_prepare_kprobe refuses neither, but every breakpoint hit returns through interrupt_return
(arch/powerpc/kernel/interrupt_64.S), whose ``stdcx. r0,0,r1`` ("to clear the reservation", or
``ldarx r0,0,r1`` on CPU_FTR_STCX_CHECKS_ADDRESS) drops the loop's reservation: the ``stdcx.``
fails, the loop retries through the probe, forever (soft lockup).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from kpatch_core.hazard import HazardPattern, HazardSite

from .insn import INSN_SIZE, primary_opcode, xo

if TYPE_CHECKING:
    from kpatch_core.image import Image

# X-form extended opcodes under primary opcode 31 (analyse_instr: MKOP(LARX/STCX, ...))
LARX_XO = frozenset({20, 52, 84, 116, 276})  # lwarx lbarx ldarx lharx lqarx
STCX_XO = frozenset({150, 694, 214, 726, 182})  # stwcx. stbcx. stdcx. sthcx. stqcx.
WINDOW = 16  # instructions searched back for the larx (the kernel's ll/sc loops are short)

SITES = (
    HazardSite("mutex_unlock", 36, ((6, 1),),
               "Debian 6.1.0-50 powerpc64le under QEMU: soft lockup in arm_kprobe, the `bne-` "
               "between ldarx and stdcx.; tests/data/oracle/ppc64le"),
    HazardSite("posix_cpu_timers_exit", 224, ((7, 2),),
               "Debian 7.2.13 powerpc64le-64k under QEMU: `addi r1,r1,0x40` (epilogue stack "
               "pop, emulated), oops jumping to 0xc00000007feac500 from release_task; "
               "tests/data/oracle/7.2.13+deb14-powerpc64le-64k"),
)


def _word(image: "Image", addr: int) -> int | None:
    b = image.read(addr, INSN_SIZE)
    return int.from_bytes(b, "little") if len(b) == INSN_SIZE else None


def _kind(word: int | None) -> str:
    if word is None or primary_opcode(word) != 31:
        return ""
    return "larx" if xo(word) in LARX_XO else "stcx" if xo(word) in STCX_XO else ""


def _nearest(image: "Image", addr: int, step: int, lo: int, hi: int) -> str:
    """The first larx/stcx. met from ``addr + step`` on, in steps of ``step``, within
    [lo, hi) and WINDOW instructions ('' if none)."""
    a = addr + step
    for _ in range(WINDOW):
        if not lo <= a < hi:
            return ""
        k = _kind(_word(image, a))
        if k:
            return k
        a += step
    return ""


def in_reservation(image: "Image", addr: int) -> bool:
    """True when ``addr`` lies in [larx, stcx.] of one loop: the nearest reservation
    instruction before it is a larx and the nearest after it a stcx. (the larx and the stcx.
    themselves count)."""
    sym = image.kallsyms.containing(addr)
    lo, hi = (sym.addr, sym.end) if sym is not None and sym.size else (addr - 64, addr + 64)
    here = _kind(_word(image, addr))
    before = "larx" if here == "larx" else _nearest(image, addr, -INSN_SIZE, lo, hi)
    after = "stcx" if here == "stcx" else _nearest(image, addr, INSN_SIZE, lo, hi)
    return before == "larx" and after == "stcx"


PATTERNS = (
    HazardPattern(
        "probe inside a larx/stcx. loop",
        in_reservation,
        "each hit returns through interrupt_return, whose stdcx. clears the reservation: the "
        "stcx. fails and the loop re-enters the probe forever (arch_prepare_kprobe does not "
        "refuse it)"),
)
