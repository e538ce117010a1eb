"""s390x uprobes: ``arch_uprobe_analyze_insn`` = ``probe_is_prohibited_opcode``.

[arch/s390/kernel/uprobes.c] The breakpoint is the 2-byte ``0x0002`` (``UPROBE_SWBP_INSN``),
offsets 2-byte aligned; the prohibited opcodes are the kprobes ones (arch/s390/lib/probes.c,
shared); relative-long instructions (larl, lgrl, stgrl, cgrl...) are emulated by
``handle_insn_ril`` in ``arch_uprobe_skip_sstep``; everything else is copied (6 bytes, ``ixol``)
and single-stepped with PER, then ``arch_uprobe_post_xol`` applies ``probe_get_fixup_type``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kpatch_arch.base import UprobeSupport
from kpatch_core.slot import Effect, ReadMem
from kpatch_core.uprobe.verdict import Analysis, UMethod, UReason, URefusal

from .insn import Fixup, fixup_type, is_relative_long, opcode_source, prohibited
from .insn import insn_length as s390_insn_length

if TYPE_CHECKING:
    from kpatch_arch.base import Backend
    from kpatch_core.features import FeatureSet

    from .backend import S390xBackend

SWBP_INSN = (0x0002).to_bytes(2, "big")  # UPROBE_SWBP_INSN
SWBP_INSN_SIZE = 2
MAX_UINSN_BYTES = 6  # uprobe_opcode_t insn[3]
XOL_SLOT_BYTES = 256
PAGE_SIZE = 4096  # the mapping granule: a vma covers whole pages of the file
XOL_STEP = "single"  # PER single-step (TIF_UPROBE_SINGLESTEP)
MASK64 = (1 << 64) - 1


def is_trap_insn(insn: bytes, features: FeatureSet) -> bool:
    """Weak ``is_trap_insn`` -> ``is_swbp_insn``: the halfword is 0x0002."""
    return insn[:2] == SWBP_INSN


def analyze_insn(backend: S390xBackend, insn: bytes, vaddr: int,
                 features: FeatureSet) -> Analysis | URefusal:
    """``arch_uprobe_analyze_insn``: ``probe_is_prohibited_opcode`` (-EINVAL)."""
    src = opcode_source(features)
    why = prohibited(insn, src)
    n = s390_insn_length(insn[0])
    mn = backend.mnemonic(insn, vaddr, src)
    if why is not None:
        return URefusal(UReason.REJECTED, f"{mn}: {why}")
    if is_relative_long(insn):  # arch_uprobe_skip_sstep: handle_insn_ril
        return Analysis(UMethod.EMULATE, n, mn, "handle_insn_ril", (), insn[:n])
    fix = fixup_type(insn)
    names = tuple(f"FIXUP_{f.name}" for f in Fixup if f & fix and f.name)
    return Analysis(UMethod.XOL, n, mn, "xol", names, insn[:MAX_UINSN_BYTES])


def xol_slot(analysis: Analysis, insn: bytes, vaddr: int, xol_vaddr: int) -> bytes:
    """``arch_uprobe_copy_ixol`` (weak copy of ``ixol``: 6 bytes)."""
    return insn[:MAX_UINSN_BYTES].ljust(MAX_UINSN_BYTES, b"\0")


def pre_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int]) -> dict[str, int]:
    """``arch_uprobe_pre_xol``: only the PSW address moves (and PER is armed)."""
    return {}


def post_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int],
             saved: Mapping[str, int]) -> Effect:
    """``arch_uprobe_post_xol``: FIXUP_PSW_NORMAL, FIXUP_RETURN_REGISTER, FIXUP_BRANCH_NOT_TAKEN."""
    fix = fixup_type(analysis.ixol)
    pc = regs["psw.addr"]
    out: dict[str, int] = {}
    if fix & Fixup.PSW_NORMAL:
        pc = (pc + vaddr - xol_vaddr) & MASK64
    if fix & Fixup.RETURN_REGISTER:
        r = (analysis.ixol[1] & 0xF0) >> 4
        out[f"r{r}"] = (regs[f"r{r}"] + vaddr - xol_vaddr) & MASK64
    if fix & Fixup.BRANCH_NOT_TAKEN and regs["psw.addr"] - xol_vaddr == analysis.length:
        pc = (vaddr + analysis.length) & MASK64
    return Effect(pc, out, op="arch_uprobe_post_xol")


def insn_length(backend: S390xBackend, code: bytes) -> int:
    """``insn_length`` from the first byte (0 past the end)."""
    return s390_insn_length(code[0]) if code else 0


# --- handle_insn_ril: the relative-long instructions arch_uprobe_skip_sstep emulates ----------
PSW_MASK_CC = 0x0000300000000000
# opc1 -> (size, signed, 64-bit target register) for the loads [uprobes.c: handle_insn_ril]
RIL_LOADS = {0x02: (2, False, False), 0x04: (2, True, True), 0x05: (2, True, False),
             0x06: (2, False, True), 0x08: (8, False, True), 0x0C: (4, True, True),
             0x0D: (4, False, False), 0x0E: (4, False, True)}
RIL_STORES = {0x07: 2, 0x0B: 8, 0x0F: 4}  # sthrl, stgrl, strl
# opc1 -> (memory size, memory signed, compare width 64, register signed)  (emu_cmp_ril)
RIL_COMPARES = {0x04: (2, True, 64, True), 0x05: (2, True, 32, True), 0x06: (2, False, 64, False),
                0x07: (2, False, 32, False), 0x08: (8, True, 64, True), 0x0A: (8, False, 64, False),
                0x0C: (4, True, 64, True), 0x0D: (4, True, 32, True), 0x0E: (4, False, 64, False),
                0x0F: (4, False, 32, False)}


# every (first byte, opc1) handle_insn_ril emulates: larl, the loads, stores and compares
RIL_FORMS = ((0xC0, 0x0), *((0xC4, o) for o in sorted(RIL_LOADS)),
             *((0xC4, o) for o in sorted(RIL_STORES)), *((0xC6, o) for o in sorted(RIL_COMPARES)))


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def emulate(backend: S390xBackend, analysis: Analysis, insn: bytes, vaddr: int,
            regs: Mapping[str, int], read: ReadMem) -> Effect | None:
    """``arch_uprobe_skip_sstep`` -> ``handle_insn_ril`` (relative-long loads, stores, compares,
    larl), then ``psw.addr += ilen``; None: single-step in the XOL slot."""
    if analysis.ops != "handle_insn_ril":
        return None
    opc0, reg, opc1 = insn[0], insn[1] >> 4, insn[1] & 0x0F
    disp = int.from_bytes(insn[2:6], "big", signed=True)
    uptr = (vaddr + disp * 2) & MASK64
    nxt = (vaddr + analysis.length) & MASK64
    rx = regs[f"r{reg}"]
    out: dict[str, int] = {}
    stores: tuple[tuple[int, bytes], ...] = ()
    if opc0 == 0xC0:  # larl
        out[f"r{reg}"] = uptr
    elif opc0 == 0xC4 and opc1 in RIL_LOADS:
        size, signed, wide = RIL_LOADS[opc1]
        if uptr % size:
            return Effect(nxt, op="handle_insn_ril: EMU_SPECIFICATION (SIGILL)")
        v = int.from_bytes(read(uptr, size), "big", signed=signed)
        if wide:
            out[f"r{reg}"] = v & MASK64
        else:
            out[f"r{reg}"] = (rx & ~0xFFFFFFFF) | (v & 0xFFFFFFFF)
    elif opc0 == 0xC4 and opc1 in RIL_STORES:
        size = RIL_STORES[opc1]
        if uptr % size:
            return Effect(nxt, op="handle_insn_ril: EMU_SPECIFICATION (SIGILL)")
        stores = ((uptr, (rx & ((1 << (8 * size)) - 1)).to_bytes(size, "big")),)
    elif opc0 == 0xC6 and opc1 in RIL_COMPARES:
        size, msigned, width, rsigned = RIL_COMPARES[opc1]
        if uptr % size:
            return Effect(nxt, op="handle_insn_ril: EMU_SPECIFICATION (SIGILL)")
        mem = int.from_bytes(read(uptr, size), "big", signed=msigned)
        r = _signed(rx, width) if rsigned else rx & ((1 << width) - 1)
        cc = 1 if mem > r else 2 if mem < r else 0
        out["psw.mask"] = (regs["psw.mask"] & ~PSW_MASK_CC) | (cc << 44)
    return Effect(nxt, out, stores, op="handle_insn_ril")


def pc_relative_target(backend: S390xBackend, code: bytes, addr: int) -> int | None:
    """The storage operand a relative-long instruction (``probe_is_insn_relative_long``) of
    ``code`` at ``addr`` names: ``addr + 2 * RI2``; None for other instructions."""
    if len(code) < 6 or not is_relative_long(code):
        return None
    return (addr + 2 * int.from_bytes(code[2:6], "big", signed=True)) & MASK64


def oracle_defect_at(code: bytes, vaddr: int) -> str | None:
    """unicorn runs a relative-long load/store/compare on a misaligned operand; the hardware
    (and ``handle_insn_ril``: EMU_SPECIFICATION, SIGILL) raise a specification exception."""
    if len(code) < 6 or not is_relative_long(code) or code[0] == 0xC0:
        return None
    opc1 = code[1] & 0x0F
    size = (RIL_LOADS.get(opc1, (0,))[0] if code[0] == 0xC4 and opc1 in RIL_LOADS
            else RIL_STORES.get(opc1, 0) if code[0] == 0xC4
            else RIL_COMPARES.get(opc1, (0,))[0])
    target = vaddr + 2 * int.from_bytes(code[2:6], "big", signed=True)
    return "unicorn-no-specification-exception" if size and target % size else None


# cghrl, chrl: unicorn (QEMU 5) sets the wrong condition code (first operand high reads as low);
# qemu-s390x-static 7.2 and the Principles of Operation agree with handle_insn_ril's emu_cmp_ril
# (tests/test_uprobe_properties.py::test_s390x_compare_relative_long_against_qemu proves it)
UNICORN_BAD_CC = frozenset({(0xC6, 0x4), (0xC6, 0x5)})


def oracle_defect(code: bytes) -> str | None:
    """Why unicorn cannot judge ``code``: the kprobe slot's reasons, and the signed halfword
    compares relative long (cghrl, chrl), whose condition code unicorn computes wrongly."""
    from .slot import oracle_defect as slot_defect
    if len(code) >= 6 and (code[0], code[1] & 0x0F) in UNICORN_BAD_CC:
        return "unicorn-cghrl-chrl-condition-code"
    return slot_defect(code)


class S390xUprobeSupport(UprobeSupport):
    """s390x uprobes: the module functions above as the backend's hooks."""

    COPIES_PC_RELATIVE = True
    SWBP_INSN = SWBP_INSN
    SWBP_INSN_SIZE = SWBP_INSN_SIZE
    MAX_UINSN_BYTES = MAX_UINSN_BYTES
    PAGE_SIZE = PAGE_SIZE
    XOL_STEP = XOL_STEP
    is_trap_insn = staticmethod(is_trap_insn)
    analyze_insn = staticmethod(analyze_insn)
    xol_slot = staticmethod(xol_slot)
    pre_xol = staticmethod(pre_xol)
    post_xol = staticmethod(post_xol)
    insn_length = staticmethod(insn_length)
    emulate = staticmethod(emulate)
    oracle_defect = staticmethod(oracle_defect)
    oracle_defect_at = staticmethod(oracle_defect_at)
    pc_relative_target = staticmethod(pc_relative_target)


def uprobe_support(backend: "Backend") -> S390xUprobeSupport:
    """The s390x :class:`~kpatch_arch.base.UprobeSupport` for ``backend``."""
    return S390xUprobeSupport(backend)
