"""ppc64 ``emulate_step`` for kprobes: what the kernel does instead of single-stepping.

[arch/powerpc/kernel/kprobes.c: kprobe_handler -> try_to_emulate] calls
[arch/powerpc/lib/sstep.c: emulate_step] on the probed instruction before anything else:

* ``analyse_instr`` returns 1 (integer arithmetic/logical/rotate/shift/compare, CR logic,
  branches, mfspr/mtspr of LR/CTR/XER, mfcr/mtcrf, isel, barriers): ``emulate_update_regs``
  writes the result into pt_regs and sets NIP; the instruction never runs;
* it returns 0 for loads/stores, cache ops, mfmsr/mtmsr, sc, rfid: ``emulate_step`` does
  them (``emulate_loadstore``...) or gives up (returns 0: a fault, an unknown or unsupported
  word): the kprobe then single-steps the slot copy (MSR_SE);
* ``emulate_step`` < 0 (sc, rfid, mtmsr clearing MSR_RI, VSX without the facility):
  try_to_emulate prints "Can't step on instruction" and BUG()s.  arch_prepare_kprobe
  refuses those words beforehand (``can_single_step``), so a registered probe never gets here.

:func:`emulate_step` returns the kernel's answer as an :class:`~kpatch_core.slot.Effect`
(new NIP, changed pt_regs fields, memory writes, loads), :class:`Declined` (single-stepped),
:class:`Refused` (< 0), or :class:`NotModelled` for what analyse_instr handles but this model
does not compute (listed in :data:`NOT_MODELLED`; never a guessed effect).

Rules are 6.1's (the Debian ppc64le kernel; 6.12 only makes lbarx/lharx depend on
CONFIG_PPC_HAS_LBARX_LHARX).  CPU features default to POWER9 (ISA 3.0: CPU_FTR_ARCH_300, no
ARCH_31), the oracle kernel's CPU.  The model is proved by execution against
qemu-ppc64le-static (:func:`kpatch_core.testing.qemu_ppc64le.prove_emulation`): unicorn has no
little-endian PPC64, so qemu user mode is the honest oracle.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs

from kpatch_core.slot import Effect

ReadMem = Callable[[int, int], bytes]
MASK64 = (1 << 64) - 1
MASK32 = 0xFFFFFFFF

# --- facts: arch/powerpc/include/asm/reg.h, ptrace.h, lib/sstep.c ------------------------------
XER_SO, XER_OV, XER_CA = 0x80000000, 0x40000000, 0x20000000
XER_OV32, XER_CA32 = 0x00080000, 0x00040000
XER_IMPLEMENTED = XER_SO | XER_OV | XER_CA | XER_OV32 | XER_CA32 | 0x7F  # + string byte count
MSR_SF, MSR_VEC, MSR_VSX = 1 << 63, 1 << 25, 1 << 23
MSR_PR, MSR_FP, MSR_ME, MSR_RI, MSR_LE = 1 << 14, 1 << 13, 1 << 12, 1 << 1, 1 << 0
MSR_KERNEL = MSR_SF | MSR_ME | 0x20 | 0x10 | MSR_RI | MSR_LE  # SF ME IR DR RI LE (FP/VEC/VSX off)
MSR_MASK = 0xFFFFFFFF87C0FFFF  # emulate_step: mfmsr result mask (ppc64)
SPRN_XER, SPRN_LR, SPRN_CTR = 1, 8, 9
STACK_INT_FRAME_SIZE = 384 + 112 + 288  # sizeof(pt_regs) + STACK_FRAME_OVERHEAD + redzone
CR0_SHIFT = 28
UPDATE, SIGNEXT, BYTEREV = 0x40, 0x20, 0x80  # sstep.h flag bits (UPDATE = the opcode bit)

# X-form (primary 31) integer loads/stores analyse_instr decodes: xo -> (kind, size, flags)
XFORM_MEM: dict[int, tuple[str, int, int]] = {
    23: ("load", 4, 0), 55: ("load", 4, UPDATE), 87: ("load", 1, 0), 119: ("load", 1, UPDATE),
    21: ("load", 8, 0), 53: ("load", 8, UPDATE), 149: ("store", 8, 0), 181: ("store", 8, UPDATE),
    151: ("store", 4, 0), 183: ("store", 4, UPDATE), 215: ("store", 1, 0),
    247: ("store", 1, UPDATE), 279: ("load", 2, 0), 311: ("load", 2, UPDATE),
    341: ("load", 4, SIGNEXT), 373: ("load", 4, SIGNEXT | UPDATE), 343: ("load", 2, SIGNEXT),
    375: ("load", 2, SIGNEXT | UPDATE), 407: ("store", 2, 0), 439: ("store", 2, UPDATE),
    532: ("load", 8, BYTEREV), 534: ("load", 4, BYTEREV), 790: ("load", 2, BYTEREV),
    660: ("store", 8, BYTEREV), 662: ("store", 4, BYTEREV), 918: ("store", 2, BYTEREV),
}
# D-form integer loads/stores: primary opcode -> (kind, size, flags); bit 26 is UPDATE
DFORM_MEM: dict[int, tuple[str, int, int]] = {
    32: ("load", 4, 0), 34: ("load", 1, 0), 36: ("store", 4, 0), 38: ("store", 1, 0),
    40: ("load", 2, 0), 42: ("load", 2, SIGNEXT), 44: ("store", 2, 0),
}
LARX_XO = {20: 4, 84: 8, 52: 1, 116: 2}  # lwarx ldarx lbarx lharx (lqarx: not modelled)
STCX_XO = {150: 4, 214: 8, 694: 1, 726: 2, 182: 16}
# FP / VMX / VSX loads and stores (X-form xo, primary 31) and the ISA level they need
FP_XO = frozenset({535, 567, 599, 631, 663, 695, 727, 759, 791, 855, 887, 919, 983})
FP_XO_UPDATE = frozenset({567, 631, 695, 759})
VMX_XO = frozenset({7, 39, 71, 103, 359, 135, 167, 199, 231, 487})
VSX_XO: dict[int, str] = {  # xo -> required feature: "" (VSX), "300" (ISA 3.0), "31" (ISA 3.1)
    12: "", 76: "", 140: "", 268: "300", 269: "300", 301: "300", 332: "", 333: "31", 364: "300",
    396: "300", 397: "300", 429: "300", 461: "31", 524: "", 588: "", 652: "", 716: "", 780: "",
    781: "300", 812: "300", 813: "300", 844: "", 876: "300", 908: "", 909: "300", 940: "300",
    941: "300", 972: "", 1004: "300"}
CACHE_XO = {54: "dcbst", 86: "dcbf", 246: "dcbtst", 278: "dcbt", 982: "icbi", 1014: "dcbz"}

# What analyse_instr/emulate_step handle and this model does not compute: asked about,
# :func:`emulate_step` answers NotModelled (with the reason), never a guessed effect.
NOT_MODELLED: dict[str, str] = {
    "fp-vmx-vsx-live": "FP/VMX/VSX loads and stores with the facility on in the interrupted "
                       "MSR (do_fp_load/do_vec_load/do_vsx_load...): vector/FP registers are "
                       "not in the model (with it off, emulate_loadstore returns 0 and the "
                       "access is skipped: modelled)",
    "load-store-multiple": "lmw/stmw/lswi/lswx/stswi/stswx (LOAD_MULTI/STORE_MULTI)",
    "quadword": "lq/stq/lqarx/stqcx. (16-byte GPR pairs)",
    "stcx": "stbcx./sthcx./stwcx./stdcx.: success depends on the CPU's reservation",
    "prefixed": "ISA 3.1 prefixed instructions (paddi, pl*/pst*) on an ARCH_31 CPU",
    "darn": "darn: a random number",
    "undefined-quotient": "divide/modulo by zero or overflow: the kernel's C division runs the "
                          "CPU's divide; the ISA leaves the result undefined",
}

REGS = Mapping[str, int]


@attrs.frozen
class Cpu:
    """The CPU features analyse_instr tests (``cpu_has_feature``)."""

    arch_300: bool = True  # CPU_FTR_ARCH_300 (POWER9)
    arch_31: bool = False  # CPU_FTR_ARCH_31 (POWER10)
    vsx: bool = True  # CPU_FTR_VSX
    dcache_block: int = 128  # l1_dcache_bytes() (dcbz)


POWER9 = Cpu()


@attrs.frozen
class Declined:
    """emulate_step returned 0: the kprobe single-steps the slot copy."""

    reason: str


@attrs.frozen
class Refused:
    """emulate_step returned < 0: try_to_emulate BUG()s (can_single_step keeps these out)."""

    reason: str


@attrs.frozen
class NotModelled:
    """analyse_instr handles the word but this model does not compute it (key of NOT_MODELLED)."""

    what: str
    detail: str = ""


Result = Effect | Declined | Refused | NotModelled


# --- bit helpers (sstep.c macros) --------------------------------------------------------------
def _s(x: int, bits: int) -> int:
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


def _mask32(mb: int, me: int) -> int:  # MASK32
    return ((0xFFFFFFFF >> mb) + ((-0x80000000 >> me) & MASK64) + (1 if me >= mb else 0)) & MASK64


def _mask64(mb: int, me: int) -> int:  # MASK64 = MASK64_L + MASK64_R + (me >= mb)
    return (_mask64_l(mb) + _mask64_r(me) + (1 if me >= mb else 0)) & MASK64


def _mask64_l(mb: int) -> int:
    return MASK64 >> mb


def _mask64_r(me: int) -> int:
    return (-(1 << 63) >> me) & MASK64


def _data32(x: int) -> int:
    lo = x & MASK32
    return lo | lo << 32


def _rot(x: int, n: int) -> int:
    return ((x << n) | (x >> (64 - n))) & MASK64 if n else x


def _byterev(x: int, size: int) -> int:
    return int.from_bytes((x & ((1 << 8 * size) - 1)).to_bytes(size, "little"), "big")


def _clz(x: int, bits: int) -> int:
    return bits - x.bit_length()


def _ctz(x: int, bits: int) -> int:
    return (x & -x).bit_length() - 1 if x else bits


def _popcnt(v: int, size: int) -> int:  # do_popcnt
    out = 0
    for i in range(0, 64, size):
        out |= bin((v >> i) & ((1 << size) - 1)).count("1") << i
    return out


def _trap_compare(a: int, b: int) -> int:
    r = 0x10 if a < b else 0x08 if a > b else 0x04
    ua, ub = a & MASK64, b & MASK64
    return r | (0x02 if ua < ub else 0x01 if ua > ub else 0)


def _tdiv(a: int, b: int) -> int:
    """C division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


class _Undefined(Exception):
    pass


# --- the analysis ------------------------------------------------------------------------------
class _Machine:
    """pt_regs as emulate_step sees them, and the writes it makes."""

    def __init__(self, regs: REGS, addr: int, msr: int, cpu: Cpu, read: ReadMem | None) -> None:
        self.r = regs
        self.nip = addr & MASK64
        self.msr = msr
        self.cpu = cpu
        self.read = read

    def gpr(self, n: int) -> int:
        return self.r.get(f"gpr{n}", 0) & MASK64

    def get(self, name: str) -> int:
        return self.r.get(name, 0) & MASK64

    @property
    def is64(self) -> bool:
        return bool(self.msr & MSR_SF)

    def trunc(self, v: int) -> int:  # truncate_if_32bit
        return v & MASK64 if self.is64 else v & MASK32

    def cr0(self, val: int) -> int:  # set_cr0: the new CCR
        cc = (self.get("ccr") & 0x0FFFFFFF) | ((self.get("xer") >> 3) & 0x10000000)
        v = _s(val, 64) if self.is64 else _s(val, 32)
        return cc | (0x80000000 if v < 0 else 0x40000000 if v > 0 else 0x20000000)

    def cmp(self, v1: int, v2: int, crfld: int) -> int:  # do_cmp_signed / do_cmp_unsigned
        crval = (self.get("xer") >> 31) & 1
        crval |= 8 if v1 < v2 else 4 if v1 > v2 else 2
        shift = (7 - crfld) * 4
        return (self.get("ccr") & ~(0xF << shift) & MASK32) | crval << shift

    def carry(self, rd: int, v1: int, v2: int, cin: int) -> tuple[int, dict[str, int]]:
        """add_with_carry: (value, {gpr, xer})."""
        v1, v2 = v1 & MASK64, v2 & MASK64
        val = (v1 + v2 + (1 if cin else 0)) & MASK64
        t, t1 = self.trunc(val), self.trunc(v1)
        xer = self.get("xer")
        xer = xer | XER_CA if (t < t1 or (cin and t == t1)) else xer & ~XER_CA
        lo, lo1 = val & MASK32, v1 & MASK32
        xer = self._ca32(xer, lo < lo1 or bool(cin and lo == lo1))
        return val, {f"gpr{rd}": val, "xer": xer & MASK64}

    def _ca32(self, xer: int, on: bool) -> int:  # set_ca32 (ISA 3.0 only)
        if not self.cpu.arch_300:
            return xer
        return xer | XER_CA32 if on else xer & ~XER_CA32


def _branch_taken(word: int, m: _Machine) -> tuple[bool, bool]:
    """branch_taken: (taken, CTR decremented)."""
    bo = (word >> 21) & 0x1F
    dec = False
    if not bo & 4:
        dec = True
        if ((bo >> 1) & 1) ^ (m.get("ctr") == 1):
            return False, dec
    if not bo & 0x10:
        bi = (word >> 16) & 0x1F
        if ((m.get("ccr") >> (31 - bi)) & 1) != ((bo >> 3) & 1):
            return False, dec
    return True, dec


def emulate_step(insn: bytes | int, addr: int, regs: REGS, read: ReadMem | None = None,
                 cpu: Cpu = POWER9, msr: int | None = None) -> Result:
    """The kernel's ``emulate_step(regs, insn)`` for the instruction at ``addr``.

    ``regs`` holds pt_regs fields by name (``gpr0``..``gpr31``, ``link``, ``ctr``, ``xer``,
    ``ccr``, ``msr``); missing ones read as 0.  ``read(addr, n)`` returns memory (fewer than
    ``n`` bytes: the access faults, so emulate_step returns 0).  ``msr`` defaults to
    ``regs['msr']`` or :data:`MSR_KERNEL`.  Stores are assumed to succeed where ``read`` can
    read (the model cannot see page protections).
    """
    if isinstance(insn, int):
        word, suffix = insn & MASK32, 0
    else:
        word = int.from_bytes(insn[:4], "little")
        suffix = int.from_bytes(insn[4:8], "little") if len(insn) >= 8 else 0
    if msr is None:
        msr = regs.get("msr", MSR_KERNEL)
    m = _Machine(regs, addr, msr, cpu, read)
    try:
        return _emulate(word, suffix, m, read, cpu)
    except _Undefined as e:
        return NotModelled("undefined-quotient", str(e))


def _done(m: _Machine, out: dict[str, int], op: str, length: int = 4, **kw: Any) -> Effect:
    return Effect(m.trunc(m.nip + length), out, op=op, **kw)


def _emulate(word: int, suffix: int, m: _Machine, read: ReadMem | None, cpu: Cpu) -> Result:
    opcode = word >> 26
    nip = m.nip
    rd, ra = (word >> 21) & 0x1F, (word >> 16) & 0x1F
    rb, rc = (word >> 11) & 0x1F, (word >> 6) & 0x1F
    xo10 = (word >> 1) & 0x3FF
    rc_bit = word & 1
    g = m.gpr

    # -- first switch: branches, CR ops, barriers (analyse_instr returns 1) --------------------
    if opcode in (16, 18) or (opcode == 19 and xo10 in (16, 528)):
        out: dict[str, int] = {}
        if opcode == 16:
            imm = _s(word & 0xFFFC, 16) + (0 if word & 2 else nip)
            taken, dec = _branch_taken(word, m)
            name = "bc"
        elif opcode == 18:
            imm = _s(word & 0x03FFFFFC, 26) + (0 if word & 2 else nip)
            taken, dec, name = True, False, "b"
        else:
            imm = m.get("ctr") if word & 0x400 else m.get("link")
            taken, dec = _branch_taken(word, m)
            name = "bcctr" if word & 0x400 else "bclr"
        target = m.trunc(imm)
        nxt = m.trunc(nip + 4)
        if word & 1:
            out["link"] = nxt
        if dec:
            out["ctr"] = (m.get("ctr") - 1) & MASK64
        return Effect(target if taken else nxt, out,
                      op=f"emulate_update_regs: {name} ({'taken' if taken else 'not taken'})")
    if opcode == 17:
        if word & 0xFE2 == 2:
            return Refused("sc: emulate_step returns -1 (SYSCALL)")
        if word & 0xFE3 == 1:
            return Refused("scv 0: emulate_step returns -1") if cpu.arch_300 else \
                Declined("scv without ISA 3.0: unknown opcode")
        return Declined("sc form analyse_instr does not know")
    if opcode == 19:
        if xo10 == 0:  # mcrf
            d, s_ = 4 * (7 - ((word >> 23) & 7)), 4 * (7 - ((word >> 18) & 7))
            v = (m.get("ccr") >> s_) & 0xF
            return _done(m, {"ccr": (m.get("ccr") & ~(0xF << d) & MASK32) | v << d}, "mcrf")
        if xo10 == 18:
            if m.msr & MSR_PR:
                return Declined("rfid from user mode: privileged")
            return Refused("rfid: emulate_step returns -1 (RFI)")
        if xo10 == 150:
            return _done(m, {}, "isync")
        if xo10 in (33, 129, 193, 225, 257, 289, 417, 449):  # cr logical: XO is the truth table
            a = (m.get("ccr") >> (31 - ra)) & 1
            b = (m.get("ccr") >> (31 - rb)) & 1
            v = (word >> (6 + a * 2 + b)) & 1
            cc = (m.get("ccr") & ~(1 << (31 - rd)) & MASK32) | v << (31 - rd)
            return _done(m, {"ccr": cc}, "cr logical")
        if (word >> 1) & 0x1F == 2:  # addpcis
            if not cpu.arch_300:
                return Declined("addpcis needs ISA 3.0")
            imm = _s(word & 0xFFC1, 16) | ((word >> 15) & 0x3E)
            return _done(m, {f"gpr{rd}": (nip + (imm << 16) + 4) & MASK64}, "addpcis")
        return Declined(f"opcode 19/{xo10}: analyse_instr leaves it (UNKNOWN)")
    if opcode == 31 and xo10 in (598, 854):
        return _done(m, {}, "sync" if xo10 == 598 else "eieio")

    # -- second switch -----------------------------------------------------------------------
    def compute(val: int, op: str, reg: int = rd, **extra: int) -> Effect:  # compute_done
        return _done(m, {f"gpr{reg}": val & MASK64, **extra}, op)

    def arith(val: int, op: str, extra: dict[str, int] | None = None) -> Effect:  # arith_done
        out = {f"gpr{rd}": val & MASK64, **(extra or {})}
        if rc_bit:
            out["ccr"] = m.cr0(val)
        return _done(m, out, op)

    def logical(val: int, op: str, cc: bool = True, extra: dict[str, int] | None = None
                ) -> Effect:  # logical_done(_nocc): the target is rA
        out = {f"gpr{ra}": val & MASK64, **(extra or {})}
        if cc and rc_bit:
            out["ccr"] = m.cr0(val)
        return _done(m, out, op)

    if opcode == 1:
        if not cpu.arch_31:
            return Declined("prefixed instruction without ISA 3.1: unknown opcode")
        return NotModelled("prefixed")
    if opcode == 2 or opcode == 3:  # tdi / twi
        a = _s(g(ra), 64) if opcode == 2 else _s(g(ra), 32)
        if rd & _trap_compare(a, _s(word, 16)):
            return Declined("trap taken: INTERRUPT 0x700 (emulate_step returns 0)")
        return _done(m, {}, "tdi/twi (not taken)")
    if opcode == 4:
        if not cpu.arch_300:
            return Declined("opcode 4 without ISA 3.0")
        x = word & 0x3F
        a, b, c = g(ra), g(rb), g(rc)
        if x == 48:
            return compute((_s(a, 64) * _s(b, 64) + _s(c, 64)) >> 64, "maddhd")
        if x == 49:
            return compute((a * b + c) >> 64, "maddhdu")
        if x == 51:
            return compute(a * b + c, "maddld")
        return Declined("opcode 4: not emulated (unknown_opcode)")
    if opcode == 7:
        return compute(g(ra) * _s(word, 16), "mulli")
    if opcode == 8:
        _, out = m.carry(rd, ~g(ra), _s(word, 16), 1)
        return _done(m, out, "subfic")
    if opcode in (10, 11):
        if opcode == 10:
            v, imm = g(ra), word & 0xFFFF
            if not rd & 1:
                v &= MASK32
            return _done(m, {"ccr": m.cmp(v, imm, rd >> 2)}, "cmpli")
        v = _s(g(ra), 64 if rd & 1 else 32)
        return _done(m, {"ccr": m.cmp(v, _s(word, 16), rd >> 2)}, "cmpi")
    if opcode in (12, 13):
        val, out = m.carry(rd, g(ra), _s(word, 16), 0)
        if opcode == 13:
            out["ccr"] = m.cr0(val)
        return _done(m, out, "addic" + ("." if opcode == 13 else ""))
    if opcode == 14:
        return compute(_s(word, 16) + (g(ra) if ra else 0), "addi")
    if opcode == 15:
        return compute((_s(word, 16) << 16) + (g(ra) if ra else 0), "addis")
    if opcode in (20, 21, 23):
        mb, me = (word >> 6) & 0x1F, (word >> 1) & 0x1F
        val = _data32(g(rd))
        if opcode == 20:
            imm = _mask32(mb, me)
            return logical((g(ra) & ~imm) | (_rot(val, rb) & imm), "rlwimi")
        sh = rb if opcode == 21 else g(rb) & 0x1F
        return logical(_rot(val, sh) & _mask32(mb, me), "rlwinm" if opcode == 21 else "rlwnm")
    if 24 <= opcode <= 29:
        ui = word & 0xFFFF
        s_ = g(rd)
        v = {24: s_ | ui, 25: s_ | ui << 16, 26: s_ ^ ui, 27: s_ ^ ui << 16,
             28: s_ & ui, 29: s_ & ui << 16}[opcode]
        name = {24: "ori", 25: "oris", 26: "xori", 27: "xoris", 28: "andi.", 29: "andis."}[opcode]
        extra = {"ccr": m.cr0(v)} if opcode >= 28 else {}
        return logical(v, name, cc=False, extra=extra)
    if opcode == 30:
        mb = ((word >> 6) & 0x1F) | (word & 0x20)
        val = g(rd)
        if not word & 0x10:
            sh = rb | ((word & 2) << 4)
            val = _rot(val, sh)
            k = (word >> 2) & 3
            if k == 0:
                val &= _mask64_l(mb)
            elif k == 1:
                val &= _mask64_r(mb)
            elif k == 2:
                val &= _mask64(mb, 63 - sh)
            else:
                imm = _mask64(mb, 63 - sh)
                val = (g(ra) & ~imm) | (val & imm)
            return logical(val, ("rldicl", "rldicr", "rldic", "rldimi")[k])
        sh = g(rb) & 0x3F
        val = _rot(val, sh)
        k = (word >> 1) & 7
        if k == 0:
            return logical(val & _mask64_l(mb), "rldcl")
        if k == 1:
            return logical(val & _mask64_r(mb), "rldcr")
        return Declined("opcode 30: illegal form (UNKNOWN)")
    if opcode == 31:
        r = _op31(word, m, cpu, compute, arith, logical)
        if r is not None:
            return r
    return _loadstore(word, m, read, cpu)


def _op31(word: int, m: _Machine, cpu: Cpu, compute: Callable[..., Effect],
          arith: Callable[..., Effect], logical: Callable[..., Effect]) -> Result | None:
    """analyse_instr's primary-opcode-31 register forms; None: go on to loads/stores."""
    rd, ra, rb = (word >> 21) & 0x1F, (word >> 16) & 0x1F, (word >> 11) & 0x1F
    x = (word >> 1) & 0x3FF
    g = m.gpr
    a, b, s_ = g(ra), g(rb), g(rd)
    if (word >> 1) & 0x1F == 15:  # isel
        bit = (m.get("ccr") >> (31 - ((word >> 6) & 0x1F))) & 1
        return compute((a if ra else 0) if bit else b, "isel")
    if x in (4, 68):  # tw / td
        if x == 4:
            trap = rd == 0x1F or rd & _trap_compare(_s(a, 32), _s(b, 32))
        else:
            trap = rd & _trap_compare(_s(a, 64), _s(b, 64))
        if trap:
            return Declined("trap taken: INTERRUPT 0x700 (emulate_step returns 0)")
        return _done(m, {}, "tw/td (not taken)")
    if x == 83:  # mfmsr
        if m.msr & MSR_PR:
            return Declined("mfmsr from user mode: privileged")
        return _done(m, {f"gpr{rd}": m.msr & MSR_MASK}, "emulate_step: mfmsr")
    if x in (146, 178):  # mtmsr / mtmsrd
        if m.msr & MSR_PR:
            return Declined("mtmsr from user mode: privileged")
        if x == 146:
            mask = 0xFFFFFFFF & ~(MSR_ME | MSR_LE)
        else:
            mask = 0x8002 if word & 0x10000 else 0xEFFFFFFFFFFFEFFE
        if not s_ & MSR_RI:
            return Refused("mtmsr[d] clearing MSR_RI: emulate_step returns -1")
        return _done(m, {"msr": (m.msr & ~mask) | (s_ & mask)}, "emulate_step: mtmsr[d]")
    if x == 19:  # mfcr / mfocrf
        imm = 0xFFFFFFFF
        if (word >> 20) & 1:
            imm = 0xF0000000
            for sh in range(8):
                if word & (0x80000 >> sh):
                    break
                imm >>= 4
        return compute(m.get("ccr") & imm, "mfcr")
    if x == 128:  # setb
        if not cpu.arch_300:
            return Declined("setb needs ISA 3.0")
        v = m.get("ccr") >> (CR0_SHIFT - (ra & ~3))
        return compute(-1 if v & 8 else 1 if v & 4 else 0, "setb")
    if x == 144:  # mtcrf / mtocrf
        cc, imm = m.get("ccr"), 0xF0000000
        for sh in range(8):
            if word & (0x80000 >> sh):
                cc = (cc & ~imm) | (s_ & imm)
            imm >>= 4
        return _done(m, {"ccr": cc & MASK32}, "mtcrf")
    if x in (339, 467):
        spr = ((word >> 16) & 0x1F) | ((word >> 6) & 0x3E0)
        if spr not in (SPRN_XER, SPRN_LR, SPRN_CTR):
            return Declined(f"{'mfspr' if x == 339 else 'mtspr'} {spr}: only XER/LR/CTR are "
                            "emulated")
        if x == 339:
            v = {SPRN_XER: m.get("xer") & MASK32, SPRN_LR: m.get("link"),
                 SPRN_CTR: m.get("ctr")}[spr]
            return _done(m, {f"gpr{rd}": v}, "mfspr")
        name = {SPRN_XER: "xer", SPRN_LR: "link", SPRN_CTR: "ctr"}[spr]
        return _done(m, {name: s_ & MASK32 if spr == SPRN_XER else s_}, "mtspr")
    if x in (0, 32):  # cmp / cmpl
        if x == 0:
            v1, v2 = (_s(a, 64), _s(b, 64)) if rd & 1 else (_s(a, 32), _s(b, 32))
        else:
            v1, v2 = (a, b) if rd & 1 else (a & MASK32, b & MASK32)
        return _done(m, {"ccr": m.cmp(v1, v2, rd >> 2)}, "cmp" if x == 0 else "cmpl")
    if x == 508:  # cmpb
        v = 0
        for i in range(8):
            msk = 0xFF << 8 * i
            if s_ & msk == b & msk:
                v |= msk
        return logical(v, "cmpb", cc=False)
    # arithmetic (XO form with OE=0: the OE=1 forms miss this switch and are declined)
    carries = {8: (~a, b, 1, "subfc"), 10: (a, b, 0, "addc"),
               136: (~a, b, m.get("xer") & XER_CA, "subfe"),
               138: (a, b, m.get("xer") & XER_CA, "adde"),
               200: (~a, 0, m.get("xer") & XER_CA, "subfze"),
               202: (a, 0, m.get("xer") & XER_CA, "addze"),
               232: (~a, -1, m.get("xer") & XER_CA, "subfme"),
               234: (a, -1, m.get("xer") & XER_CA, "addme")}
    if x in carries:
        v1, v2, cin, name = carries[x]
        val, out = m.carry(rd, v1, v2, cin)
        del out[f"gpr{rd}"]
        return arith(val, name, out)
    sa, sb = _s(a, 64), _s(b, 64)
    wa, wb = _s(a, 32), _s(b, 32)
    if x == 9:
        return arith((a * b) >> 64, "mulhdu")
    if x == 73:
        return arith((sa * sb) >> 64, "mulhd")
    if x == 11:  # mulhwu: the kernel runs the instruction itself: high word as the CPU gives
        return arith(((a & MASK32) * (b & MASK32)) >> 32, "mulhwu")
    if x == 75:  # mulhw: high word as the CPU gives (ISA: undefined; modelled as qemu: 0)
        return arith(((wa * wb) >> 32) & MASK32, "mulhw")
    if x == 40:
        return arith(b - a, "subf")
    if x == 104:
        return arith(-a, "neg")
    if x == 233:
        return arith(a * b, "mulld")
    if x == 235:
        return arith(wa * wb, "mullw")
    if x == 266:
        return arith(a + b, "add")
    if x in (265, 267, 777, 779):  # modud moduw modsd modsw (ISA 3.0, compute_done)
        if not cpu.arch_300:
            return Declined("mod* needs ISA 3.0")
        if x == 265:
            return compute(_umod(a, b), "modud")
        if x == 267:
            return compute(_umod(a & MASK32, b & MASK32), "moduw")
        if x == 777:
            return compute(_smod(sa, sb, 64), "modsd")
        return compute(_smod(wa, wb, 32), "modsw")
    if x == 457:
        return arith(_udiv(a, b), "divdu")
    if x == 459:
        return arith(_udiv(a & MASK32, b & MASK32), "divwu")
    if x == 489:
        return arith(_sdiv(sa, sb, 64), "divd")
    if x == 491:
        return arith(_sdiv(wa, wb, 32), "divw")
    if x == 425:  # divde: (RA || 64 zeros) / RB, signed
        if sb == 0:
            raise _Undefined("divde by zero")
        q = _tdiv(sa << 64, sb)
        if not -(1 << 63) <= q < 1 << 63:
            raise _Undefined("divde overflow")
        return arith(q, "divde")
    if x == 393:  # divdeu
        if b == 0 or a >= b:
            raise _Undefined("divdeu by zero / overflow")
        return arith((a << 64) // b, "divdeu")
    if x == 755:
        if not cpu.arch_300 or ra & 3 == 3:
            return Declined("darn: unknown form")
        return NotModelled("darn")
    # logical, count, extend
    logic = {28: (s_ & b, "and"), 60: (s_ & ~b, "andc"), 124: (~(s_ | b), "nor"),
             284: (~(s_ ^ b), "eqv"), 316: (s_ ^ b, "xor"), 412: (s_ | ~b, "orc"),
             444: (s_ | b, "or"), 476: (~(s_ & b), "nand"),
             26: (_clz(s_ & MASK32, 32), "cntlzw"), 58: (_clz(s_, 64), "cntlzd"),
             922: (_s(s_, 16), "extsh"), 954: (_s(s_, 8), "extsb"), 986: (_s(s_, 32), "extsw")}
    if x in logic:
        return logical(*logic[x])
    if x in (538, 570):
        if not cpu.arch_300:
            return Declined("cnttz* needs ISA 3.0")
        return logical(_ctz(s_ & MASK32, 32) if x == 538 else _ctz(s_, 64),
                       "cnttzw" if x == 538 else "cnttzd")
    if x in (122, 378, 506):
        return logical(_popcnt(s_, {122: 8, 378: 32, 506: 64}[x]), "popcnt", cc=False)
    if x in (154, 186):  # prtyw / prtyd
        res = s_ ^ (s_ >> 8)
        res ^= res >> 16
        if x == 154:
            return logical(res & 0x0000000100000001, "prtyw", cc=False)
        res ^= res >> 32
        return logical(res & 1, "prtyd", cc=False)
    if x == 252:  # bpermd
        perm = 0
        for i in range(8):
            idx = (s_ >> (8 * i)) & 0xFF
            if idx < 64 and b & (1 << (63 - idx)):
                perm |= 1 << i
        return logical(perm, "bpermd", cc=False)
    # shifts
    if x == 24:
        sh = b & 0x3F
        return logical((s_ << sh) & MASK32 if sh < 32 else 0, "slw")
    if x == 536:
        sh = b & 0x3F
        return logical((s_ & MASK32) >> sh if sh < 32 else 0, "srw")
    if x == 27:
        sh = b & 0x7F
        return logical(s_ << sh if sh < 64 else 0, "sld")
    if x == 539:
        sh = b & 0x7F
        return logical(s_ >> sh if sh < 64 else 0, "srd")
    if x in (792, 824, 794, 826, 827):
        if x == 792:
            sh, iv, lim = b & 0x3F, _s(s_, 32), 32
        elif x == 824:
            sh, iv, lim = rb, _s(s_, 32), 32
        elif x == 794:
            sh, iv, lim = b & 0x7F, _s(s_, 64), 64
        else:
            sh, iv, lim = rb | ((word & 2) << 4), _s(s_, 64), 64
        val = iv >> min(sh, lim - 1)
        ca = iv < 0 and (sh >= lim or (iv & ((1 << sh) - 1)) != 0)
        xer = m.get("xer")
        xer = xer | XER_CA if ca else xer & ~XER_CA
        xer = m._ca32(xer, ca)
        name = {792: "sraw", 824: "srawi", 794: "srad"}.get(x, "sradi")
        return logical(val, name, extra={"xer": xer & MASK64})
    if x in (890, 891):  # extswsli
        if not cpu.arch_300:
            return Declined("extswsli needs ISA 3.0")
        sh = rb | ((word & 2) << 4)
        return logical(_s(s_, 32) << sh, "extswsli")
    if x in CACHE_XO:
        return _cacheop(word, m, CACHE_XO[x])
    return None


def _udiv(a: int, b: int) -> int:
    if b == 0:
        raise _Undefined("divide by zero")
    return a // b


def _sdiv(a: int, b: int, bits: int) -> int:
    if b == 0 or (a == -(1 << (bits - 1)) and b == -1):
        raise _Undefined("divide by zero / overflow")
    return _tdiv(a, b)


def _umod(a: int, b: int) -> int:
    if b == 0:
        raise _Undefined("modulo by zero")
    return a % b


def _smod(a: int, b: int, bits: int) -> int:
    if b == 0 or (a == -(1 << (bits - 1)) and b == -1):
        raise _Undefined("modulo by zero / overflow")
    return a - _tdiv(a, b) * b


def _readable(read: ReadMem | None, ea: int, n: int) -> bytes | None:
    if read is None:
        return None
    try:
        data = read(ea & MASK64, n)
    except Exception:  # noqa: BLE001 - any failure of the reader is a fault
        return None
    return data if len(data) == n else None


def _cacheop(word: int, m: _Machine, name: str) -> Result:
    ra, rb = (word >> 16) & 0x1F, (word >> 11) & 0x1F
    ea = m.trunc(m.gpr(rb) + (m.gpr(ra) if ra else 0))
    rd = (word >> 21) & 0x1F
    if name in ("dcbt", "dcbtst"):  # prefetch / prefetchw (only TH=0): never faults
        return _done(m, {}, f"emulate_step: {name}" + ("" if rd == 0 else " (hint ignored)"))
    if name == "dcbz":
        size = m.cpu.dcache_block
        ea &= ~(size - 1)
        # emulate_dcbz; the model cannot tell read-only pages (assumed writable when readable)
        return (Declined("dcbz: fault") if _readable(m.read, ea, size) is None else
                _done(m, {}, "emulate_dcbz", stores=((ea, bytes(size)),)))
    if _readable(m.read, ea, 1) is None:
        return Declined(f"{name}: fault (__cacheop_user_asmx)")
    return _done(m, {}, f"emulate_step: {name}")


def effective_address(word: int, regs: REGS) -> tuple[int, int] | None:
    """(ea, base register) of an integer D/DS/X-form load or store analyse_instr computes
    (for test generators that aim accesses at a buffer); None for other words."""
    op = word >> 26
    ra, rb = (word >> 16) & 0x1F, (word >> 11) & 0x1F

    def gp(n: int) -> int:
        return regs.get(f"gpr{n}", 0) & MASK64
    if op in DFORM_MEM or op - 1 in DFORM_MEM:
        return ((_s(word, 16) + (gp(ra) if ra else 0)) & MASK64, ra)
    if op in (58, 62):
        return ((_s(word & ~3, 16) + (gp(ra) if ra else 0)) & MASK64, ra)
    x = (word >> 1) & 0x3FF
    if op == 31 and (x in XFORM_MEM or x in LARX_XO or x in CACHE_XO):
        return ((gp(rb) + (gp(ra) if ra else 0)) & MASK64, ra if ra else rb)
    return None


def _loadstore(word: int, m: _Machine, read: ReadMem | None, cpu: Cpu) -> Result:
    """analyse_instr's load/store decode + emulate_loadstore (kernel mode, native endian)."""
    op = word >> 26
    rd, ra, rb = (word >> 21) & 0x1F, (word >> 16) & 0x1F, (word >> 11) & 0x1F
    x = (word >> 1) & 0x3FF
    g = m.gpr
    kind: str | None = None
    size = flags = 0
    if op == 31:
        ea = g(rb) + (g(ra) if ra else 0)
        if x in XFORM_MEM:
            kind, size, flags = XFORM_MEM[x]
        elif x in LARX_XO:  # (6.12: lbarx/lharx only with CONFIG_PPC_HAS_LBARX_LHARX)
            kind, size = "larx", LARX_XO[x]
        elif x == 276:
            return (NotModelled("quadword") if not (rd & 1 or rd == ra or rd == rb)
                    else Declined("lqarx invalid form"))
        elif x in STCX_XO:
            if x == 182 and rd & 1:
                return Declined("stqcx. odd register: invalid form")
            return NotModelled("quadword" if x == 182 else "stcx")
        elif x in (533, 597, 661, 725):
            return NotModelled("load-store-multiple")
        elif x in FP_XO:
            if x in FP_XO_UPDATE and ra == 0:
                return Declined("FP update form with rA = 0: invalid")
            return _facility(m, MSR_FP, "FP", x)
        elif x in VMX_XO:
            return _facility(m, MSR_VEC, "VMX", x)
        elif x in VSX_XO:
            need = VSX_XO[x]
            if need == "300" and not cpu.arch_300 or need == "31" and not cpu.arch_31:
                return Declined("VSX form needs a newer ISA: unknown opcode")
            if not cpu.vsx:
                return Refused("VSX access without CPU_FTR_VSX: analyse_instr returns -1")
            reg = rd | ((word & 1) << 5)
            vec = x in (268, 269, 301, 364, 396, 397, 429, 781, 812, 813, 876, 909, 940, 941, 1004)
            return _facility(m, MSR_VEC if reg >= 32 and vec else MSR_VSX, "VSX", x)
        else:
            return Declined(f"opcode 31/{x}: analyse_instr leaves it (UNKNOWN)")
    elif op in DFORM_MEM or op - 1 in DFORM_MEM:
        base = op if op in DFORM_MEM else op - 1
        kind, size, flags = DFORM_MEM[base]
        flags |= (word >> 20) & UPDATE
        ea = _s(word, 16) + (g(ra) if ra else 0)
    elif op in (46, 47):
        if op == 46 and ra >= rd:
            return Declined("lmw with rA in the loaded range: invalid form")
        return NotModelled("load-store-multiple")
    elif 48 <= op <= 55:  # lfs lfsu lfd lfdu stfs stfsu stfd stfdu
        if op & 1 and ra == 0:
            return Declined("FP update form with rA = 0: invalid")
        return _facility(m, MSR_FP, "FP", op)
    elif op == 56:
        return NotModelled("quadword") if not (rd & 1 or rd == ra) else Declined("lq invalid form")
    elif op == 57:
        k = word & 3
        if k == 0 and not rd & 1:
            return _facility(m, MSR_FP, "FP", op)
        if k in (2, 3) and cpu.arch_300:
            return _facility(m, MSR_VEC, "VSX", op)  # target is a VR (rd + 32): MSR_VEC
        return Declined("opcode 57 form: unknown")
    elif op == 61:
        k = word & 7
        if k in (0, 4):
            return _facility(m, MSR_FP, "FP", op)
        if not cpu.arch_300:
            return Declined("opcode 61 VSX form needs ISA 3.0")
        reg32 = k in (2, 6, 3, 7) or bool(word & 8)
        return _facility(m, MSR_VEC if reg32 else MSR_VSX, "VSX", op)
    elif op == 6:
        if not cpu.arch_31:
            return Declined("lxvp/stxvp need ISA 3.1")
        return _facility(m, MSR_VSX, "VSX", op)
    elif op == 58:
        ea = _s(word & ~3, 16) + (g(ra) if ra else 0)
        k = word & 3
        if k == 3:
            return Declined("DS-form 58/3: unknown")
        kind, size, flags = "load", (8, 8, 4)[k], (0, UPDATE, SIGNEXT)[k]
    elif op == 62:
        ea = _s(word & ~3, 16) + (g(ra) if ra else 0)
        k = word & 3
        if k == 2:
            return NotModelled("quadword") if not rd & 1 else Declined("stq odd register")
        if k == 3:
            return Declined("DS-form 62/3: unknown")
        kind, size, flags = "store", 8, (0, UPDATE)[k]
    else:
        return Declined(f"opcode {op}: analyse_instr leaves it (UNKNOWN)")
    assert kind is not None
    if flags & UPDATE:  # analyse_instr's check of update forms
        if kind == "load" and ra == rd:
            return Declined("load with update and rA = rT: invalid form")
        if ra == 0:
            return Declined("update form with rA = 0: invalid form")
    ea = m.trunc(ea)
    out: dict[str, int] = {}
    if kind == "larx":
        if ea & (size - 1):
            return Declined("larx misaligned: -EACCES")
        data = _readable(read, ea, size)
        if data is None:
            return Declined("larx: fault")
        out[f"gpr{rd}"] = int.from_bytes(data, "little")
        return _done(m, out, "emulate_loadstore: larx (the real larx runs: reservation set)",
                     loads=((f"gpr{rd}", ea, size),))
    if kind == "load":
        data = _readable(read, ea, size)
        if data is None:
            return Declined("load: fault (read_mem -EFAULT)")
        v = int.from_bytes(data, "little")
        if flags & SIGNEXT:
            v = _s(v, 8 * size) & MASK64
        if flags & BYTEREV:
            v = _byterev(v, size)
        out[f"gpr{rd}"] = v
        if flags & UPDATE:
            out[f"gpr{ra}"] = ea
        return _done(m, out, "emulate_loadstore: load", loads=((f"gpr{rd}", ea, size),))
    # store
    val = g(rd)
    if flags & BYTEREV:
        val = _byterev(val, size)
    data = (val & ((1 << 8 * size) - 1)).to_bytes(size, "little")
    if _readable(read, ea, size) is None:
        return Declined("store: fault (write_mem -EFAULT)")
    opname = "emulate_loadstore: store"
    if (flags & UPDATE and size == 8 and rd == 1 and ra == 1 and not m.msr & MSR_PR
            and ea >= (g(1) - STACK_INT_FRAME_SIZE) & MASK64):
        opname = ("emulate_loadstore: stdu r1 (handle_stack_update: the store is done at "
                  "exception exit, TIF_EMULATE_STACK_STORE)")
    if flags & UPDATE:
        out[f"gpr{ra}"] = ea
    return _done(m, out, opname, stores=((ea, data),))


def _facility(m: _Machine, bit: int, name: str, xo_or_op: int) -> Result:
    """emulate_loadstore: an FP/VMX/VSX access in kernel mode with the facility off in the
    interrupted MSR returns 0 without touching anything (NIP still advances)."""
    if not m.msr & MSR_PR and not m.msr & bit:
        return _done(m, {}, f"emulate_loadstore: {name} access with the facility off in "
                            "kernel mode: nothing done (returns 0)")
    return NotModelled("fp-vmx-vsx-live", f"{name} {xo_or_op}")


def hardware_undefined(word: int) -> str | dict[str, int] | None:
    """What the ISA leaves undefined when the *original* instruction runs, so an execution
    oracle cannot judge the kernel's (deterministic) answer there: a reason string for an
    invalid form (nothing comparable), or {field: mask of the defined bits}; None: all defined.
    """
    op, x = word >> 26, (word >> 1) & 0x3FF
    if op == 19 and x == 528 and not (word >> 21) & 4:
        return "bcctr with BO[2]=0 (decrement CTR): invalid form"
    fxm_bits = bin((word >> 12) & 0xFF).count("1")
    if op == 31 and x in (19, 144) and (word >> 20) & 1 and fxm_bits != 1:
        return "mfocrf/mtocrf with a field mask of other than one bit: undefined"
    if op == 31 and x in (11, 75, 459, 491):  # mulhwu mulhw divwu divw: RT[0:31] undefined
        rd = (word >> 21) & 0x1F
        defined = {f"gpr{rd}": MASK32}
        if word & 1:  # Rc=1 in 64-bit mode: CR0 LT/GT/EQ undefined
            defined["ccr"] = 0x1FFFFFFF
        return defined
    return None


_NOT_UPDATE_REGS = ("emulate_loadstore", "emulate_step", "emulate_dcbz")
# NotModelled answers analyse_instr gives 1 for (COMPUTE: darn; arith_done: divisions)
_NOT_MODELLED_REGS = frozenset({"darn", "undefined-quotient"})
# What the kernel makes of a word it accepted, whatever the registers (see analyse_word)
WORD_REGS, WORD_MEM, WORD_DECLINED, WORD_REFUSED = "regs", "mem", "declined", "refused"


def _any_memory(ea: int, n: int) -> bytes:
    return bytes(n)


def analyse_word(word: int, cpu: Cpu = POWER9) -> str:
    """What ``emulate_step`` (try_to_emulate) makes of ``word`` for a register state the word
    alone cannot rule out:

    * :data:`WORD_REGS`: ``analyse_instr`` returns 1 (emulate_update_regs: emulated, and what
      optprobes' ``can_optimize`` asks for);
    * :data:`WORD_MEM`: analyse_instr returns 0 and emulate_step does the load, store, cache
      op or mfmsr/mtmsr itself (emulated when the access does not fault);
    * :data:`WORD_DECLINED`: emulate_step returns 0 by the word alone (unknown opcode, OE=1
      arithmetic, bctar, an invalid form, a feature this CPU lacks): single-stepped;
    * :data:`WORD_REFUSED`: emulate_step returns < 0 (sc, rfid, mtmsr[d] clearing MSR_RI):
      words ``can_single_step`` refuses.

    The word is run through :func:`emulate_step` with zero registers (can_optimize's dummy
    pt_regs), MSR_KERNEL and every address readable, so the answers that depend on the
    registers or memory come out handled: faults cannot happen and larx's EA (0) is aligned.
    The one exception, a trap taken with zero operands (tw/td/tdi/twi), is a word
    ``can_single_step`` refuses before emulate_step is ever reached.
    """
    r = emulate_step(word, 0xC000000000000000, {}, _any_memory, cpu=cpu, msr=MSR_KERNEL)
    if isinstance(r, Effect):
        return WORD_MEM if r.op.startswith(_NOT_UPDATE_REGS) else WORD_REGS
    if isinstance(r, NotModelled):  # analyse_instr handles it (prefixed: counted as memory)
        return WORD_REGS if r.what in _NOT_MODELLED_REGS else WORD_MEM
    if isinstance(r, Refused):
        return WORD_REFUSED
    return WORD_DECLINED


def analyse_instr_returns_one(word: int, cpu: Cpu = POWER9) -> bool:
    """``analyse_instr(&op, regs, insn) == 1``: the word is done by emulate_update_regs alone
    (what optprobes' ``can_optimize`` asks, with MSR_KERNEL and zero registers); loads,
    stores, cache ops and mfmsr/mtmsr (analyse_instr returns 0, emulate_step does them) are
    not."""
    return analyse_word(word, cpu) == WORD_REGS
