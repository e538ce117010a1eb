"""x86_64 uprobes: ``arch_uprobe_analyze_insn``, the XOL slot, emulation and post-XOL fixups.

Tables first, from arch/x86/kernel/uprobes.c (identical in 6.1 and 6.12): ``good_insns_64``
and ``good_2byte_insns`` (bit set: the opcode may be probed), the bad prefixes, the branch and
push opcodes that ``branch_setup_xol_ops``/``push_setup_xol_ops`` emulate.  Then the analysis in
the kernel's order, then what happens on a hit: emulation (``branch_emulate_op``,
``push_emulate_op``) or single-step of the copy in the XOL slot with ``riprel_pre_xol`` and
``default_post_xol_op``.  The breakpoint is ``int3`` (``UPROBE_SWBP_INSN``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kpatch_arch.base import UprobeSupport
from kpatch_core.slot import Effect, ReadMem
from kpatch_core.uprobe.verdict import Analysis, UMethod, UReason, URefusal

import attrs

from .insn import EMULATED, LEGACY_PREFIXES, kernel_opcode

if TYPE_CHECKING:
    from kpatch_arch.base import Backend
    from kpatch_core.features import FeatureSet

    from .insn import KInsn
    from .backend import X86_64Backend

# --- facts [arch/x86/include/asm/uprobes.h] ---------------------------------------------------
SWBP_INSN = b"\xcc"  # UPROBE_SWBP_INSN
SWBP_INSN_SIZE = 1  # UPROBE_SWBP_INSN_SIZE
MAX_UINSN_BYTES = 16  # sizeof(arch_uprobe.insn): copy_insn reads this much
XOL_SLOT_BYTES = 128  # UPROBE_XOL_SLOT_BYTES
PAGE_SIZE = 4096  # the mapping granule: a vma covers whole pages of the file
USER_TOP = (1 << 47) - PAGE_SIZE  # TASK_SIZE_MAX (__VIRTUAL_MASK_SHIFT 47): kernel space above
MASK64 = (1 << 64) - 1


def _bits(rows: tuple[str, ...]) -> frozenset[int]:
    return frozenset(hi * 16 + lo for hi, row in enumerate(rows)
                     for lo, b in enumerate(row.split()) if b == "1")


# good_insns_64[] (uprobes.c, 6.1 == 6.12); row = high nibble
GOOD_INSNS_64 = _bits((
    "1 1 1 1 1 1 0 0 1 1 1 1 1 1 0 1", "1 1 1 1 1 1 0 0 1 1 1 1 1 1 0 0",
    "1 1 1 1 1 1 1 0 1 1 1 1 1 1 1 0", "1 1 1 1 1 1 1 0 1 1 1 1 1 1 1 0",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "0 0 0 1 1 1 1 1 1 1 1 1 0 0 0 0", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 0 1 1 1 1 1 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 1 1 0 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 0 0 0 0", "1 1 1 1 0 0 0 1 1 1 1 1 1 1 1 1",
    "1 1 1 1 0 0 0 0 1 1 0 1 0 0 0 0", "1 0 1 1 0 1 1 1 1 1 0 0 1 1 1 1",
))
# good_2byte_insns[] (reached only when OPCODE1 is not good: 0x0f is, so never in 64-bit mode)
GOOD_2BYTE_INSNS = _bits((
    "0 0 1 1 1 0 0 0 0 0 1 0 1 1 1 1", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "0 1 1 1 0 0 1 0 1 1 1 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 0 0 1 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 0 1", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
))
BAD_PREFIXES = {0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0xF0: "lock"}  # is_prefix_bad
COND_JMP = frozenset(range(0x70, 0x80))  # is_cond_jmp_opcode (CASE_COND)
# push_setup_xol_ops: opcode -> pt_regs field, without and with REX 0x41
PUSH_REGS = {0x50: ("ax", "r8"), 0x51: ("cx", "r9"), 0x52: ("dx", "r10"), 0x53: ("bx", "r11"),
             0x54: ("sp", "r12"), 0x55: ("bp", "r13"), 0x56: ("si", "r14"), 0x57: ("di", "r15")}
# riprel_analyze: scratch register choice, in this order (ModRM.rm encodings)
SCRATCH = ((6, "si", "UPROBE_FIX_RIP_SI"), (7, "di", "UPROBE_FIX_RIP_DI"), (3, "bx", "UPROBE_FIX_RIP_BX"))
EFLAGS_CF, EFLAGS_PF, EFLAGS_ZF, EFLAGS_SF, EFLAGS_OF = 1, 1 << 2, 1 << 6, 1 << 7, 1 << 11


# --- the kernel's structural decode (arch/x86/lib/insn.c), for what capstone refuses ----------
# insn_decode does not validate opcodes: an encoding invalid in 64-bit mode (0x1f pop ds, ff /7,
# 0f 04) still gets a length from the inat tables (no ModRM, no immediate when the slot is
# empty), and the uprobe tables then judge its opcode.  Only bad VEX/EVEX forms fail.
def _rng(a: int, b: int) -> set[int]:
    return set(range(a, b + 1))


MODRM_1 = (_rng(0x00, 0x03) | _rng(0x08, 0x0B) | _rng(0x10, 0x13) | _rng(0x18, 0x1B)
           | _rng(0x20, 0x23) | _rng(0x28, 0x2B) | _rng(0x30, 0x33) | _rng(0x38, 0x3B)
           | {0x62, 0x63, 0x69, 0x6B} | _rng(0x80, 0x8F) | {0xC0, 0xC1, 0xC6, 0xC7}
           | _rng(0xD0, 0xD3) | _rng(0xD8, 0xDF) | {0xF6, 0xF7, 0xFE, 0xFF})
IMM8_1 = ({0x04, 0x0C, 0x14, 0x1C, 0x24, 0x2C, 0x34, 0x3C, 0x6A, 0x6B, 0x80, 0x82, 0x83, 0xA8,
           0xC0, 0xC1, 0xC6, 0xCD, 0xD4, 0xD5, 0xEB} | _rng(0x70, 0x7F) | _rng(0xB0, 0xB7)
          | _rng(0xE0, 0xE7))
IMMZ_1 = {0x05, 0x0D, 0x15, 0x1D, 0x25, 0x2D, 0x35, 0x3D, 0x68, 0x69, 0x81, 0xA9, 0xC7}
MODRM_0F = ((_rng(0x00, 0x03) | {0x0D, 0x0F} | _rng(0x10, 0x23) | _rng(0x28, 0x2F)
             | _rng(0x40, 0x7F) | _rng(0x90, 0x9F) | {0xA3, 0xA4, 0xA5} | _rng(0xAB, 0xC7)
             | _rng(0xD0, 0xFF)) - {0x77})
IMM8_0F = {0x0F, 0x70, 0x71, 0x72, 0x73, 0xA4, 0xAC, 0xBA, 0xC2, 0xC4, 0xC5, 0xC6}


@attrs.frozen
class StructInsn:
    """What the kernel's decoder knows of an instruction capstone cannot decode."""

    length: int
    modrm: int | None
    disp_offset: int
    mnemonic: str = "(bad)"

    @property
    def reg(self) -> int:
        return ((self.modrm or 0) >> 3) & 7


_CS = None


def _vex_accepted(vex: bytes) -> bool:
    """Does the kernel's inat table accept this VEX opcode (``inat_accept_vex``)?  Its tables
    ignore VEX.L and VEX.W, so: does capstone decode it with L and W cleared?  EVEX: no."""
    global _CS
    if _CS is None:
        import capstone
        _CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    if len(vex) < 4 or vex[0] == 0x62:
        return False
    v = bytearray(vex[:MAX_UINSN_BYTES])
    if v[0] == 0xC5:
        v[1] &= ~0x04 & 0xFF
    else:
        v[2] &= ~0x84 & 0xFF
    return any(True for _ in _CS.disasm_lite(bytes(v), 0, 1))


def rex2_at(code: bytes) -> int | None:
    """Index of an APX REX2 prefix (0xd5) after the legacy prefixes, or None."""
    i = 0
    while i < len(code) and code[i] in LEGACY_PREFIXES:
        i += 1
    return i if i + 2 < len(code) and code[i] == 0xD5 else None


def struct_decode(code: bytes, rex2: bool = False) -> StructInsn | None:
    """``insn_decode`` in 64-bit mode, structurally; None where it fails (VEX/EVEX forms).
    ``rex2``: the decoder knows the REX2 prefix (X86_INSN_DECODER_REX2)."""
    try:
        i, opsize, adsize = 0, False, False
        while code[i] in LEGACY_PREFIXES:
            opsize |= code[i] == 0x66
            adsize |= code[i] == 0x67
            i += 1
        if rex2 and code[i] == 0xD5:  # REX2: payload byte, then a map-0/map-1 opcode
            payload = code[i + 1]
            i += 2
            if payload & 0x80:  # M bit: map 1 (the 0x0f map), no escape byte
                code = code[:i] + b"\x0f" + code[i:]
            rex = 0x48 if payload & 0x08 else 0x40
            sub = struct_decode(bytes(code[:i - 2]) + bytes([rex]) + code[i:])
            if sub is None:
                return None
            delta = 0 if payload & 0x80 else 1  # REX2 is a byte longer than REX (+ the 0x0f)
            n = sub.length + delta
            disp = sub.disp_offset + delta if sub.disp_offset else 0
            return StructInsn(n, sub.modrm, disp, "(rex2)") if n <= MAX_UINSN_BYTES else None
        rex = code[i] if 0x40 <= code[i] <= 0x4F else 0
        i += 1 if rex else 0
        op = code[i]
        i += 1
        imm = 0
        if op in (0xC4, 0xC5, 0x62) and not _vex_accepted(code[i - 1:]):
            return None  # inat_accept_vex / inat_must_evex fail
        if op in (0xC4, 0xC5, 0x62):  # a VEX form the kernel takes (capstone may not: L/W, REX)
            vlen = {0xC5: 1, 0xC4: 2, 0x62: 3}[op]
            vmap = 1 if op == 0xC5 else code[i] & (0x1F if op == 0xC4 else 0x03)
            i += vlen
            op2 = code[i]
            i += 1
            m = None if (vmap == 1 and op2 == 0x77) else code[i]
            i += 0 if m is None else 1
            imm = 1 if vmap == 3 or (vmap == 1 and op2 in IMM8_0F) else 0
            disp_at = 0
            if m is not None and m >> 6 != 3:
                if m & 7 == 4:
                    i += 1 + (4 if m >> 6 == 0 and code[i] & 7 == 5 else 0)
                if m >> 6 == 1:
                    disp_at, i = i, i + 1
                elif m >> 6 == 2 or (m >> 6 == 0 and m & 7 == 5):
                    disp_at, i = i, i + 4
            n = i + imm
            return StructInsn(n, m, disp_at) if n <= min(MAX_UINSN_BYTES, len(code)) else None
        if op == 0x0F:
            op2 = code[i]
            i += 1
            if op2 in (0x38, 0x3A):
                i += 1
                modrm, imm = True, (1 if op2 == 0x3A else 0)
            else:
                modrm = op2 in MODRM_0F
                imm = 1 if op2 in IMM8_0F else 4 if 0x80 <= op2 <= 0x8F else 0
        else:
            modrm = op in MODRM_1
            if op in IMM8_1:
                imm = 1
            elif op in IMMZ_1:
                imm = 2 if opsize else 4
            elif op in (0xE8, 0xE9):
                imm = 4  # Jz, force64
            elif 0xB8 <= op <= 0xBF:
                imm = 8 if rex & 8 else 2 if opsize else 4
            elif op in (0xC2, 0xCA):
                imm = 2
            elif op == 0xC8:
                imm = 3
            elif op in (0x9A, 0xEA):
                imm = 4 if opsize else 6  # __get_immptr
            elif 0xA0 <= op <= 0xA3:
                imm = 4 if adsize else 8  # moffs
        m = None
        disp_at = 0
        if modrm:
            m = code[i]
            i += 1
            mod, rm = m >> 6, m & 7
            if op in (0xF6, 0xF7) and (m >> 3) & 7 in (0, 1):
                imm = 1 if op == 0xF6 else (2 if opsize else 4)
            if mod != 3 and rm == 4:
                sib = code[i]
                i += 1
                if mod == 0 and sib & 7 == 5:
                    disp_at, i = i, i + 4
            if mod == 1:
                disp_at, i = i, i + 1
            elif mod == 2 or (mod == 0 and rm == 5):
                disp_at, i = i, i + 4
        n = i + imm
        if n > MAX_UINSN_BYTES or n > len(code):
            return None
        return StructInsn(n, m, disp_at)
    except IndexError:
        return None


NOP10_PREFIX = b"\x66\x2e\x0f\x1f\x84"  # is_optimizable_nop10: nopw %cs:disp32(base,index)
NOP10_LEN = 10  # OPT_INSN_SIZE


def is_optimizable_nop10(insn: bytes, length: int) -> bool:
    """``is_optimizable_nop10``: the 10-byte NOP whose last 5 bytes are SIB and disp32 (0f 1f
    with ModRM 0x84 is ``nopw``, so the prefix and the length make it a NOP)."""
    return length == NOP10_LEN and insn[:len(NOP10_PREFIX)] == NOP10_PREFIX


def is_trap_insn(insn: bytes, features: FeatureSet) -> bool:
    """``is_swbp_insn`` (x86 has no override of ``is_trap_insn``): the first byte is int3."""
    return insn[:1] == SWBP_INSN


def analyze_insn(backend: X86_64Backend, insn: bytes, vaddr: int,
                 features: FeatureSet) -> Analysis | URefusal:
    """``arch_uprobe_analyze_insn`` for a 64-bit process on the 16 bytes ``insn`` at ``vaddr``."""
    r2 = rex2_at(insn) if features.has("X86_INSN_DECODER_REX2") else None
    k: KInsn | StructInsn | None
    if r2 is not None:  # insn_get_prefixes: REX2; OPCODE1 is the byte after it
        k = struct_decode(insn, rex2=True)
        if k is None:
            return URefusal(UReason.UNDECODABLE, insn[:4].hex())
        _, prefixes, _, _, _ = kernel_opcode(insn)
        opcode, rex, vex, op_end = insn[r2 + 2:r2 + 3], 0, False, r2 + 3
    else:
        k = backend.decode(insn[:MAX_UINSN_BYTES], vaddr) or struct_decode(insn)  # insn_decode
        if k is None:
            return URefusal(UReason.UNDECODABLE, insn[:4].hex())
        opcode, prefixes, rex, vex, op_end = kernel_opcode(insn)
    op1 = opcode[0] if opcode else 0
    nbytes = 1 if vex else len(opcode)
    # can_optimize (X86_UPROBE_OPTIMIZE_NOP10): an optimizable nop10 skips uprobe_init_insn
    if not (features.has("X86_UPROBE_OPTIMIZE_NOP10") and is_optimizable_nop10(insn, k.length)
            and PAGE_SIZE - (vaddr & (PAGE_SIZE - 1)) >= NOP10_LEN):
        for p in prefixes:  # is_prefix_bad
            if p in BAD_PREFIXES:
                return URefusal(UReason.BAD_PREFIX, f"{BAD_PREFIXES[p]} prefix: {k.mnemonic}")
        if op1 == 0x17 or (op1 == 0x8E and k.reg == 2):  # insn_masking_exception
            return URefusal(UReason.MASKING_EXCEPTION, k.mnemonic)
        if op1 not in GOOD_INSNS_64 and not (nbytes == 2 and opcode[1] in GOOD_2BYTE_INSNS):
            return URefusal(UReason.BAD_OPCODE, f"opcode {opcode.hex()}: {k.mnemonic}")
    n = k.length
    # branch_setup_xol_ops
    opc = op1
    branch = False
    if op1 == 0x90:  # prefix* + nop: a jmp with .offs = 0 (no 0x66 check)
        return Analysis(UMethod.EMULATE, n, k.mnemonic, "branch_xol_ops", ("nop",))
    if op1 in (0xEB, 0xE9, 0xE8):
        branch = True
    elif op1 == 0x0F and nbytes == 2:
        opc = (opcode[1] - 0x10) & 0xFF
        branch = opc in COND_JMP
    elif op1 != 0x0F:
        branch = op1 in COND_JMP
    if branch:
        if 0x66 in prefixes:
            return URefusal(UReason.BRANCH_OPSIZE, k.mnemonic)
        ixol = bytearray(insn[:MAX_UINSN_BYTES])
        if opc == 0xE8:  # branch_clear_offset: the copy's rel32 is zeroed
            ixol[op_end:n] = bytes(n - op_end)
        return Analysis(UMethod.EMULATE, n, k.mnemonic, "branch_xol_ops", (f"opc1={opc:#x}",),
                        bytes(ixol))
    # push_setup_xol_ops: length 1, or 2 with exactly the REX prefix 0x41
    if 0x50 <= op1 <= 0x57 and not vex and (n == 1 or (n == 2 and rex == 0x41 and not prefixes)):
        reg = PUSH_REGS[op1][1 if n == 2 else 0]
        return Analysis(UMethod.EMULATE, n, k.mnemonic, "push_xol_ops", (f"push {reg}",))
    # default_xol_ops: fixups by OPCODE1, then riprel_analyze
    fixups: list[str] = []
    fix = "UPROBE_FIX_IP"
    rip_ok = True
    if op1 == 0x9D:
        fixups.append("UPROBE_FIX_SETF")
    elif op1 in (0xC3, 0xCB, 0xC2, 0xCA, 0xEA):
        fix, rip_ok = "", False
    elif op1 == 0x9A:
        fix, rip_ok = "UPROBE_FIX_CALL", False
    elif op1 == 0xFF:
        if k.reg in (2, 3):
            fix = "UPROBE_FIX_CALL"
        elif k.reg in (4, 5):
            fix = ""
    ixol = bytearray(insn[:MAX_UINSN_BYTES])
    scratch = None
    if rip_ok and k.modrm is not None and (k.modrm & 0xC7) == 0x05:
        scratch = _riprel_analyze(insn, ixol, k, prefixes, rex, vex, fixups)
    if fix:
        fixups.append(fix)
    return Analysis(UMethod.XOL, n, k.mnemonic, "default_xol_ops", tuple(fixups), bytes(ixol),
                    scratch)


def _riprel_analyze(insn: bytes, ixol: bytearray, k: object, prefixes: bytes, rex: int,
                    vex: bool, fixups: list[str]) -> str:
    """``riprel_analyze``: ``00 reg 101`` becomes ``10 reg scratch`` (disp32 kept, now
    relative to the scratch register that ``riprel_pre_xol`` loads with ``vaddr + ilen``)."""
    i = len(prefixes)
    if rex:  # clear REX.B
        ixol[i] &= 0xFE
        i += 1
    vex2 = 0
    if vex:
        vlen = {0xC4: 3, 0xC5: 2, 0x62: 4}[insn[i]]
        if vlen >= 3:  # VEX3/EVEX: set (inverted) B and X
            ixol[i + 1] |= 0x60
            vex2 = insn[i + 2]
    reg = (k.modrm >> 3) & 7  # type: ignore[attr-defined]
    reg2 = ((vex2 if vex else 0xFF) >> 3 & 7) ^ 7
    for num, name, flag in SCRATCH:
        if num == 3 or (reg != num and reg2 != num):
            fixups.append(flag)
            break
    modrm_at = k.disp_offset - 1  # type: ignore[attr-defined]
    ixol[modrm_at] = 0x80 | (reg << 3) | num
    return name


def xol_slot(analysis: Analysis, insn: bytes, vaddr: int, xol_vaddr: int) -> bytes:
    """``arch_uprobe_copy_ixol`` (the weak copy): ``sizeof(arch_uprobe.ixol)`` = 16 bytes."""
    return (analysis.ixol or insn)[:MAX_UINSN_BYTES].ljust(MAX_UINSN_BYTES, b"\0")


XOL_STEP = "single"  # arch_uprobe_pre_xol sets TF: one instruction, then the debug trap


def _jcc(opc: int, flags: int) -> bool:
    """``check_jmp_cond`` (CASE_COND)."""
    def xf(b: int) -> bool:
        return bool(flags & b)
    base = opc & 0xFE
    cond = {0x70: xf(EFLAGS_OF), 0x72: xf(EFLAGS_CF), 0x74: xf(EFLAGS_ZF), 0x78: xf(EFLAGS_SF),
            0x7A: xf(EFLAGS_PF), 0x76: xf(EFLAGS_CF) or xf(EFLAGS_ZF),
            0x7C: xf(EFLAGS_SF) != xf(EFLAGS_OF),
            0x7E: xf(EFLAGS_ZF) or xf(EFLAGS_SF) != xf(EFLAGS_OF)}[base]
    return cond if opc == base else not cond


def emulate(backend: X86_64Backend, analysis: Analysis, insn: bytes, vaddr: int,
            regs: Mapping[str, int], read: ReadMem) -> Effect | None:
    """``arch_uprobe_skip_sstep`` -> ``ops->emulate``; None: single-step in the XOL slot."""
    n = analysis.length
    nxt = (vaddr + n) & MASK64
    if analysis.ops == "push_xol_ops":  # push_emulate_op
        reg = analysis.fixups[0].split()[1]
        sp = (regs["sp"] - 8) & MASK64
        return Effect(nxt, {"sp": sp}, ((sp, (regs[reg] & MASK64).to_bytes(8, "little")),),
                      op="push_emulate_op")
    if analysis.ops != "branch_xol_ops":
        return None
    if analysis.fixups == ("nop",):
        return Effect(nxt, op="branch_emulate_op")
    opc = int(analysis.fixups[0].split("=")[1], 16)
    _, _, _, _, op_end = kernel_opcode(insn)
    offs = int.from_bytes(insn[op_end:n], "little", signed=True)  # insn->immediate.value
    if opc == 0xE8:  # emulate_push_stack(regs, new_ip)
        sp = (regs["sp"] - 8) & MASK64
        return Effect((nxt + offs) & MASK64, {"sp": sp}, ((sp, nxt.to_bytes(8, "little")),),
                      op="branch_emulate_op")
    if opc in COND_JMP and not _jcc(opc, regs["flags"]):
        offs = 0
    return Effect((nxt + offs) & MASK64, op="branch_emulate_op")


def pre_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int]) -> dict[str, int]:
    """``default_pre_xol_op`` -> ``riprel_pre_xol``: the scratch register gets ``vaddr + ilen``
    (register writes to apply; the saved value is the caller's to keep)."""
    if analysis.scratch:
        return {analysis.scratch: (vaddr + analysis.length) & MASK64}
    return {}


def post_xol(analysis: Analysis, vaddr: int, xol_vaddr: int, regs: Mapping[str, int],
             saved: Mapping[str, int]) -> Effect:
    """``default_post_xol_op``: restore the scratch register, move the IP back by
    ``vaddr - xol_vaddr`` (FIX_IP) or replace the pushed return address (FIX_CALL)."""
    out: dict[str, int] = dict(saved)
    pc = regs["ip"]
    stores: tuple[tuple[int, bytes], ...] = ()
    if "UPROBE_FIX_IP" in analysis.fixups:
        pc = (pc + vaddr - xol_vaddr) & MASK64
    elif "UPROBE_FIX_CALL" in analysis.fixups:
        # sp += 8 (pop the slot's return address), then emulate_push_stack(vaddr + ilen)
        stores = ((regs["sp"], ((vaddr + analysis.length) & MASK64).to_bytes(8, "little")),)
    return Effect(pc, out, stores, op="default_post_xol_op")


def kernel_divergent(code: bytes) -> str | None:
    """Why the kernel runs ``code`` differently from the CPU (None: it does not).
    ``branch_setup_xol_ops`` switches on ``OPCODE1``: for a VEX/EVEX instruction that is the
    byte after the prefix (``c5 f9 90`` is emulated as a nop, opcode 0x74 as ``je``), and a
    REX-prefixed 0x90 (``41 90``: xchg %eax,%r8d) is also taken for a nop."""
    opcode, _, rex, vex, _ = kernel_opcode(code)
    op1 = opcode[0] if opcode else 0
    if vex and (op1 in COND_JMP or op1 in (0x90, 0xE8, 0xE9, 0xEB) or 0x50 <= op1 <= 0x57):
        return f"vex-emulated-as-{EMULATED.get(op1, 'nop' if op1 == 0x90 else 'push')}"
    if op1 == 0x90 and rex & 1:
        return "rex-xchg-emulated-as-nop"
    # default_xol_ops: a 0x66 (16-bit operand size, without REX.W) loop/jrcxz or indirect call
    # stepped in the slot, then default_post_xol_op moves IP by vaddr - xol_vaddr (UPROBE_FIX_IP)
    # or pops and pushes an 8-byte return address (UPROBE_FIX_CALL, sizeof_long): right where the
    # CPU ignores 0x66 (Intel), wrong where it truncates the target to 16 bits and pushes 2 bytes
    # (AMD, and QEMU) -- branch_setup_xol_ops refuses 0x66 for the branches it emulates for
    # that reason, default_xol_ops does not
    _, prefixes, _, _, op_end = kernel_opcode(code)
    if not vex and 0x66 in prefixes and not rex & 8:
        if 0xE0 <= op1 <= 0xE3 and len(opcode) == 1:
            return "66-loop-stepped-fix-ip-assumes-64-bit-operand-size"
        if opcode == b"\xff" and op_end < len(code) and (code[op_end] >> 3) & 7 == 2:
            return "66-call-indirect-stepped-fix-call-pushes-8-bytes"
    # (only where the kernel accepts it: OPCODE1 in good_insns_64, no bad prefix before the REX)
    if not vex and op1 in LEGACY_PREFIXES and op1 in GOOD_INSNS_64 and \
            not set(prefixes) & set(BAD_PREFIXES):
        hidden = _prefix_after_rex(code)
        if hidden is not None:
            return f"prefix-after-rex-decoded-as-opcode:{hidden}"
    return None


RELATIVE_BRANCHES = frozenset(range(0x70, 0x80)) | {0xE0, 0xE1, 0xE2, 0xE3, 0xE9, 0xEB}
RETURNS = frozenset({0xC2, 0xC3, 0xCA, 0xCB, 0xCF})


def _prefix_after_rex(code: bytes) -> str | None:
    """A legacy prefix after REX (``42 36 c3``): ``insn_get_prefixes`` reads REX only after the
    legacy prefixes, and ``insn_get_opcode`` takes the next prefix byte as OPCODE1 (no ModRM, no
    immediate), so ``default_xol_ops`` gives whatever the CPU runs the fixups of a prefix:
    UPROBE_FIX_IP only, no riprel scratch register.  Which CPU instructions that breaks (None:
    FIX_IP is right for it)."""
    i = 0
    opsize16 = False
    while i < len(code) and (code[i] in LEGACY_PREFIXES or 0x40 <= code[i] <= 0x4F):
        opsize16 |= code[i] == 0x66
        i += 1
    if 0xF0 in code[:i]:  # LOCK: the CPU raises #UD for these forms (in the slot as in place)
        return None
    rex_w = i > 0 and 0x48 <= code[i - 1] <= 0x4F  # the CPU honours only a REX right before it
    op = code[i:i + 2]
    modrm = code[i + 1] if len(code) > i + 1 else None
    if not op:
        return None
    if op[0] in RETURNS:
        return "return-gets-fix-ip"  # ip = the popped address + vaddr - xol_vaddr
    if op[0] == 0xE8 or (op[0] == 0xFF and modrm is not None and (modrm >> 3) & 7 in (2, 3)):
        return "call-without-fix-call"  # the pushed return address is the slot's (and FIX_IP)
    if op[0] == 0xFF and modrm is not None and (modrm >> 3) & 7 in (4, 5):
        return "indirect-jmp-gets-fix-ip"
    relative = op[0] in RELATIVE_BRANCHES or (op[0] == 0x0F and len(op) == 2 and 0x80 <= op[1] <= 0x8F)
    if relative and opsize16 and not rex_w:  # right where the CPU ignores 0x66 (Intel)
        return "66-branch-stepped-fix-ip-assumes-64-bit-operand-size"
    if op[0] == 0x0F:  # the ModRM of a two-byte opcode (three-byte ones: after 38/3a xx)
        at = i + 3 if len(op) == 2 and op[1] in (0x38, 0x3A) else i + 2
        has = len(op) == 2 and (op[1] in (0x38, 0x3A) or op[1] in MODRM_0F)
        modrm = code[at] if has and len(code) > at else None
    elif op[0] not in MODRM_1:
        modrm = None
    if modrm is not None and modrm & 0xC7 == 0x05:
        return "rip-relative-not-fixed"  # the copy reads/writes relative to the slot
    return None


def pc_relative_target(backend: X86_64Backend, code: bytes, addr: int) -> int | None:
    """The address a RIP-relative operand of ``code`` at ``addr`` names (None: none)."""
    k = backend.decode(code, addr)
    if k is None or k.modrm is None or (k.modrm & 0xC7) != 0x05 or not k.disp_offset:
        return None
    disp = int.from_bytes(code[k.disp_offset:k.disp_offset + 4], "little", signed=True)
    return (addr + k.length + disp) & MASK64


def insn_length(backend: X86_64Backend, code: bytes) -> int:
    """Length of the instruction at the start of ``code`` as the kernel decodes it (0: none)."""
    return backend.insn_length(code)


class X86_64UprobeSupport(UprobeSupport):
    """x86_64 uprobes: the module functions above as the backend's hooks."""

    COPIES_PC_RELATIVE = True
    SWBP_INSN = SWBP_INSN
    SWBP_INSN_SIZE = SWBP_INSN_SIZE
    MAX_UINSN_BYTES = MAX_UINSN_BYTES
    PAGE_SIZE = PAGE_SIZE
    XOL_STEP = XOL_STEP
    USER_TOP = USER_TOP
    is_trap_insn = staticmethod(is_trap_insn)
    analyze_insn = staticmethod(analyze_insn)
    xol_slot = staticmethod(xol_slot)
    pre_xol = staticmethod(pre_xol)
    post_xol = staticmethod(post_xol)
    insn_length = staticmethod(insn_length)
    emulate = staticmethod(emulate)
    kernel_divergent = staticmethod(kernel_divergent)
    pc_relative_target = staticmethod(pc_relative_target)


def uprobe_support(backend: "Backend") -> X86_64UprobeSupport:
    """The x86_64 :class:`~kpatch_arch.base.UprobeSupport` for ``backend``."""
    return X86_64UprobeSupport(backend)
