"""x86_64 backend: int3 breakpoints, boundary check by decoding, emulation and boosting rules.

Facts first (pt_regs, register names, opcode tables), then the decoder, then the hooks that
mirror arch/x86/kernel/kprobes/core.c.  Rules that changed between 6.1 and 6.12 are chosen from
the image's kernel features (``Image.features``, :mod:`kpatch_core.features`).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import attrs
import capstone
import numpy as np

from kpatch_core.tables import relative_table
from kpatch_core.verdict import Execution, Method, Reason, Refusal

from ..base import Backend, PrepareContext, PtRegsField

if TYPE_CHECKING:
    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image

# --- facts -----------------------------------------------------------------------------------
INT3 = 0xCC
MAX_INSN_SIZE = 15  # arch/x86/include/asm/kprobes.h
JMP32_INSN_SIZE = 5
NOP5 = bytes.fromhex("0f1f440000")  # x86_nops[5]: what __recover_probed_insn shows for ftrace sites
RET_INT3 = bytes.fromhex("c3cccccccc")  # patch_return() without X86_FEATURE_RETHUNK
X86_NOPS = {1: "90", 2: "6690", 3: "0f1f00", 4: "0f1f4000", 5: "0f1f440000", 6: "660f1f440000",
            7: "0f1f8000000000", 8: "0f1f840000000000"}  # x86_nops[] (BYTES_NOP1..8)
PARAVIRT_SITE_SIZE = 16  # struct paravirt_patch_site { u8 *instr; u8 type; u8 len; }
# struct alt_instr (packed)  [arch/x86/include/asm/alternative.h]; ft_flags = cpuid | flags << 16
ALT_INSTR = np.dtype([("instr", "<i4"), ("repl", "<i4"), ("ft_flags", "<u4"),
                      ("instrlen", "u1"), ("replacementlen", "u1")])
ALT_FLAG_NOT = 1 << 0  # apply when the CPU lacks the feature
ALT_FLAG_DIRECT_CALL = 1 << 1  # indirect pv call -> direct call (alt_replace_call)
# native_patch (X86_PARAVIRT_NATIVE_PATCH): the code inlined for a pv op whose native function is
# this one (patch_data_xxl / patch_data_lock, arch/x86/kernel/paravirt_patch.c; the lock ops
# when pv_is_native_spin_unlock / _vcpu_is_preempted, as on a guest without KVM/Xen)
PARAVIRT_NATIVE_CODE = {
    "native_irq_disable": b"\xfa",  # cli
    "native_irq_enable": b"\xfb",  # sti
    "native_save_fl": b"\x9c\x58",  # pushf; pop %rax
    "native_restore_fl": b"\x57\x9d",  # push %rdi; popf
    "native_read_cr2": b"\x0f\x20\xd0",  # mov %cr2, %rax
    "__native_read_cr3": b"\x0f\x20\xd8",  # mov %cr3, %rax
    "native_write_cr3": b"\x0f\x22\xdf",  # mov %rdi, %cr3
    "native_wbinvd": b"\x0f\x09",  # wbinvd
    "_paravirt_ident_64": b"\x48\x89\xf8",  # mov %rdi, %rax (paravirt_patch_ident_64)
    "__raw_callee_save___native_queued_spin_unlock": b"\xc6\x07\x00",  # movb $0, (%rdi)
    "__raw_callee_save___native_vcpu_is_preempted": b"\x31\xc0",  # xor %eax, %eax
}
ENDBR = (bytes.fromhex("f30f1efa"), bytes.fromhex("f30f1efb"), bytes.fromhex("660f1f00"))

# struct pt_regs, arch/x86/include/asm/ptrace.h; names from regoffset_table (arch/x86/kernel/ptrace.c)
PT_REGS = tuple(PtRegsField(n, 8 * i) for i, n in enumerate(
    "r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss".split()))

LEGACY_PREFIXES = frozenset({0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67})
XEN_KVM_EMULATE_PREFIXES = (bytes.fromhex("0f0b78656e"), bytes.fromhex("0f0b6b766d"))  # emulate_prefix.h


def _bitmap(rows: list[str]) -> frozenset[int]:
    out = set()
    for hi, row in enumerate(rows):
        for lo, bit in enumerate(row.split()):
            if bit == "1":
                out.add(hi * 16 + lo)
    return frozenset(out)


# twobyte_is_boostable[] (core.c), identical in 6.1 and 6.12; row = high nibble
TWOBYTE_BOOSTABLE = _bitmap([
    "0 0 1 1 0 0 1 0 1 1 0 0 0 0 0 0", "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1",
    "1 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0", "0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
    "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
    "1 1 1 1 1 1 1 1 1 1 1 1 0 0 1 1", "0 0 0 0 1 1 1 1 0 0 0 0 0 0 1 1",
    "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0", "1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "1 1 0 1 1 1 0 0 1 1 0 1 1 1 0 1", "1 1 1 1 1 1 1 1 0 0 0 1 1 1 1 1",
    "1 1 0 0 0 0 0 0 1 1 1 1 1 1 1 1", "0 1 1 1 0 1 0 0 1 1 0 1 1 1 0 1",
    "0 1 1 0 0 1 0 0 1 1 0 1 1 1 0 1", "0 1 1 1 0 1 0 0 1 1 1 0 1 1 1 0",
])
# can_boost(): one-byte opcodes never boosted, both versions
NOT_BOOSTABLE = frozenset([0x62, *range(0x70, 0x80), 0x9A, 0xCC, 0xCD, 0xCE, 0xD6, *range(0xD8, 0xE4),
                           0xE8, 0xE9, 0xEB, 0xF0, 0xF1, 0xF2, 0xF3, 0xF4])
# can_boost(): group opcodes -> ModRM.reg values that are boostable; keyed by whether the
# kernel has X86_CAN_BOOST_GROUP_REGS (False: only FF /4)
GROUP_BOOSTABLE = {
    False: {0xC0: (), 0xC1: (), 0xD0: (), 0xD1: (), 0xD2: (), 0xD3: (), 0xF6: (), 0xF7: (),
            0xFE: (), 0xFF: (4,)},
    True: {**{op: (0, 1, 2, 3, 4, 5, 7) for op in (0xC0, 0xC1, 0xD0, 0xD1, 0xD2, 0xD3)},
             0xF6: (0, 2, 3, 4, 5, 6, 7), 0xF7: (0, 2, 3, 4, 5, 6, 7), 0xFE: (0, 1), 0xFF: (0, 1, 4)},
}
# prepare_emulation(): emulated one-byte opcodes (name for the report)
EMULATED = {0xFA: "cli", 0xFB: "sti", 0x9C: "pushf", 0x9D: "popf", 0xC2: "ret", 0xC3: "ret",
            0xCA: "lret", 0xCB: "lret", 0xE8: "call", 0xEB: "jmp", 0xE9: "jmp",
            **{op: "jcc" for op in range(0x70, 0x80)},
            0xE0: "loopne", 0xE1: "loope", 0xE2: "loop", 0xE3: "jcxz"}
EMULATION_REFUSED = {0x9A: "far call", 0xEA: "far jmp", 0xCC: "int3", 0xCF: "iret"}
EXCEPTION_OPCODES_1 = frozenset({0xCC, 0xCD, 0xCE, 0xF1})  # is_exception_insn (X86_CAN_PROBE_EXCEPTION_INSN)
EXCEPTION_OPCODES_0F = frozenset({0xFF, 0xB9, 0x0B})
# capstone 5 cannot decode a few system instructions the kernel decoder knows (lengths from the SDM)
CAPSTONE_GAPS = {bytes.fromhex("0f01e8"): 3,  # serialize
                 bytes.fromhex("f30f01fe"): 4,  # rmpadjust
                 bytes.fromhex("f20f01ff"): 4,  # pvalidate
                 bytes.fromhex("c4e27849c0"): 5}  # tilerelease


@attrs.frozen
class KInsn:
    """The fields of the kernel's ``struct insn`` that the kprobe rules read."""

    length: int
    opcode: bytes  # insn->opcode.bytes[0..nbytes)
    prefixes: bytes  # legacy prefixes
    rex: int  # REX byte or 0
    modrm: int | None
    addr_bytes: int
    vex: bool
    rip_relative: bool
    disp_offset: int
    mnemonic: str

    @property
    def reg(self) -> int:
        return ((self.modrm or 0) >> 3) & 7

    @property
    def mod(self) -> int:
        return ((self.modrm or 0) >> 6) & 3


def kernel_opcode(code: bytes) -> tuple[bytes, bytes, int, bool, int]:
    """Split ``code`` like the kernel's insn decoder: (opcode bytes, prefixes, rex, vex, index).

    VEX/EVEX-encoded instructions keep one opcode byte (the one after the VEX payload), as in
    ``insn_get_opcode``; that byte is what ``prepare_emulation``/``can_boost`` switch on.
    """
    i = 0
    while i < len(code) and code[i] in LEGACY_PREFIXES:
        i += 1
    prefixes = code[:i]
    rex = 0
    if i < len(code) and 0x40 <= code[i] <= 0x4F:
        rex = code[i]
        i += 1
    if i < len(code) and code[i] in (0xC4, 0xC5, 0x62) and not rex:
        vlen = {0xC4: 3, 0xC5: 2, 0x62: 4}[code[i]]
        j = i + vlen
        return code[j:j + 1], prefixes, rex, True, j + 1
    if i < len(code) and code[i] == 0x0F:
        if i + 1 < len(code) and code[i + 1] in (0x38, 0x3A):
            return code[i:i + 3], prefixes, rex, False, i + 3
        return code[i:i + 2], prefixes, rex, False, i + 2
    return code[i:i + 1], prefixes, rex, False, i + 1


class X86_64Backend(Backend):
    """The x86_64 architecture (arch/x86/kernel/kprobes/)."""

    name = "x86_64"
    elf_machine = "EM_X86_64"
    little_endian = True
    capstone_arch = capstone.CS_ARCH_X86
    capstone_mode = capstone.CS_MODE_64
    relative_reloc_type = 8  # R_X86_64_RELATIVE
    breakpoint = bytes([INT3])
    insn_align = 1
    # padding: int3, GNU as nops (single and multi-byte, up to 15 with 0x66 prefixes), zeros
    fill_encodings = (b"\xcc", b"\x90", b"\x66\x90", b"\x0f\x1f\x00", b"\x0f\x1f\x40\x00",
                      b"\x0f\x1f\x44\x00\x00", b"\x66\x0f\x1f\x44\x00\x00",
                      b"\x0f\x1f\x80\x00\x00\x00\x00", b"\x0f\x1f\x84\x00\x00\x00\x00\x00",
                      b"\x66\x0f\x1f\x84\x00\x00\x00\x00\x00", b"\x00\x00",
                      *(b"\x66" * k + b"\x2e\x0f\x1f\x84\x00\x00\x00\x00\x00" for k in range(7)))
    extable_entry_size = 12  # insn, fixup, data (s32 each)
    static_call_inline = True
    kretprobe_blacklist = ("__switch_to",)
    have_kprobes_on_ftrace = True
    have_optprobes = True
    pt_regs_size = 168
    pt_regs = PT_REGS
    arg_regs = ("di", "si", "dx", "cx", "r8", "r9")
    retval_reg = "ax"
    stack_reg = "sp"
    arg_stack_base = 1  # regs_get_kernel_argument: $arg7 = *(sp + 8), above the return address
    syscall_prefix = "__x64_sys_"
    bpf_text_poke_errno = "EBUSY"  # __bpf_arch_text_poke: the entry is not the expected 5-byte NOP
    bpf_text_poke_checks_text = True  # bpf_arch_text_poke: !is_kernel_text(ip) (init text) -> -EINVAL

    def __init__(self) -> None:
        self._cs = capstone.Cs(self.capstone_arch, self.capstone_mode)
        self._csd = capstone.Cs(self.capstone_arch, self.capstone_mode)
        self._csd.detail = True

    # -- hooks --------------------------------------------------------------------------------
    def blacklist_areas(self, features: "FeatureSet") -> tuple[tuple[str, str], ...]:
        return (("__entry_text_start", "__entry_text_end"),)  # arch_populate_kprobe_blacklist

    def adjust_kprobe_addr(self, image: "Image", sym_addr: int, offset: int) -> tuple[int, bool]:
        # arch_adjust_kprobe_addr: with IBT, SYM+0 moves past ENDBR and +4 still counts as entry
        if image.config.enabled("X86_KERNEL_IBT") and image.read(sym_addr, 4) in ENDBR:
            return sym_addr + (4 if offset == 0 else offset), offset in (0, 4)
        return sym_addr + offset, offset == 0

    def jump_label_size(self, image: "Image", code: int) -> int:
        # arch_jump_entry_size: the decoded length of the site, 2 (jmp8/nop2) or 5
        b = image.read(code, 2)
        return 2 if b[:1] == b"\xeb" or b == b"\x66\x90" else 5

    @functools.cache
    def _return_sites(self, image: "Image") -> np.ndarray:
        """``.return_sites``: `jmp __x86_return_thunk` sites that apply_returns rewrites at boot."""
        start, end = image.symtab.value("__return_sites"), image.symtab.value("__return_sites_end")
        if start is None or end is None:
            return np.zeros(0, np.uint64)
        return relative_table(image, start, end, 4)

    @functools.cache
    def _paravirt_sites(self, image: "Image") -> tuple[np.ndarray, list[bytes]]:
        """``apply_paravirt``: each site becomes `call <pv_ops[type]>` + NOPs (all NOPs for
        _paravirt_nop), using pv_ops' link-time (native) values."""
        start = image.symtab.value("__parainstructions")
        end = image.symtab.value("__parainstructions_end")
        pv_ops, pv_nop = image.symtab.value("pv_ops"), image.symtab.value("_paravirt_nop")
        if start is None and image.features.has("X86_PARAVIRT_ALTERNATIVES"):
            return self._paravirt_alternatives(image)
        if start is None or end is None or pv_ops is None:
            return np.zeros(0, np.uint64), []
        raw = image.read(start, end - start)
        native: dict[int, bytes] = {}
        if image.features.has("X86_PARAVIRT_NATIVE_PATCH"):
            for name, code in PARAVIRT_NATIVE_CODE.items():
                a = image.symtab.value(name)
                if a is not None:
                    native[a] = code
        sites, patches = [], []
        for i in range(0, len(raw) - PARAVIRT_SITE_SIZE + 1, PARAVIRT_SITE_SIZE):
            at = int.from_bytes(raw[i:i + 8], "little")
            typ, length = raw[i + 8], raw[i + 9]
            op = int.from_bytes(image.read(pv_ops + 8 * typ, 8), "little")
            if op in native and len(native[op]) <= length:  # native_patch: paravirt_patch_insns
                patch = native[op]
            elif op == pv_nop or length < 5:
                patch = b""
            else:
                patch = b"\xe8" + ((op - at - 5) & 0xFFFFFFFF).to_bytes(4, "little")
            sites.append(at)
            patches.append(patch + add_nops(length - len(patch)))
        order = np.argsort(np.array(sites, dtype=np.uint64), kind="stable")
        return np.array(sites, dtype=np.uint64)[order], [patches[i] for i in order.tolist()]

    def _paravirt_alternatives(self, image: "Image") -> tuple[np.ndarray, list[bytes]]:
        """The pv-op call sites (``call *pv_ops...(%rip)``) of ``.altinstructions`` as
        apply_alternatives leaves them on a native CPU: ALT_FLAG_DIRECT_CALL makes a direct
        call to the op's function (alt_replace_call; nops for nop_func), then an ALT_NOT entry
        (XENPV, VCPUPREEMPT...: features a native guest lacks) puts its native code instead
        (e.g. vcpu_is_preempted -> xor %eax,%eax); the rest of the site is nops."""
        start = image.symtab.value("__alt_instructions")
        end = image.symtab.value("__alt_instructions_end")
        if start is None or end is None or end <= start:
            return np.zeros(0, np.uint64), []
        raw = image.read(start, end - start)
        a = np.frombuffer(raw[: len(raw) - len(raw) % ALT_INSTR.itemsize], dtype=ALT_INSTR)
        nops = {image.symtab.value(n) for n in ("nop_func", "_paravirt_nop")} - {None}
        final: dict[int, bytes] = {}
        for i in range(len(a)):
            at = start + ALT_INSTR.itemsize * i
            site, length = at + int(a["instr"][i]), int(a["instrlen"][i])
            orig = image.read(site, 6)
            if orig[:2] != b"\xff\x15" or length < 6:  # not a pv-op call site
                continue
            flags = int(a["ft_flags"][i]) >> 16
            if flags & ALT_FLAG_DIRECT_CALL:
                slot = site + 6 + int.from_bytes(orig[2:6], "little", signed=True)
                target = int.from_bytes(image.read(slot, 8), "little")
                code = b"" if target in nops or not target else \
                    b"\xe8" + ((target - site - 5) & 0xFFFFFFFF).to_bytes(4, "little")
            elif flags & ALT_FLAG_NOT:
                rlen = int(a["replacementlen"][i])
                code = image.read(at + 4 + int(a["repl"][i]), rlen)
                if rlen > length or code[:1] in (b"\xe8", b"\xe9"):
                    continue  # relative branches would need fixing up: leave the site as is
            else:
                continue
            final[site] = code + add_nops(length - len(code))
        sites = sorted(final)
        return np.array(sites, dtype=np.uint64), [final[x] for x in sites]

    def runtime_bytes(self, image: "Image", start: int, end: int) -> bytes:
        """File bytes with paravirt sites patched (apply_paravirt), ftrace sites as NOP5
        (__recover_probed_insn) and, unless the CPU
        needs return thunks, `jmp __x86_return_thunk` as `ret; int3 x4` (apply_returns)."""
        orig = image.read(start, end - start)
        buf = bytearray(orig)
        pv_sites, pv_patches = self._paravirt_sites(image)
        lo, hi = np.searchsorted(pv_sites, [np.uint64(max(start - 16, 0)), np.uint64(end)])
        for i in range(int(lo), int(hi)):
            _overlay(buf, start, int(pv_sites[i]), pv_patches[i])
        arr = np.frombuffer(buf, np.uint8)  # shares buf: fixed-size patches in bulk
        _overlay_many(arr, start, image.tables.ftrace_sites_in(start - 4, end), NOP5)
        if not image.config.enabled("RUNTIME_RETHUNK"):
            thunk = image.symtab.value("__x86_return_thunk")
            sites = self._return_sites(image)
            lo, hi = np.searchsorted(sites, [start - 4, end])
            sel = sites[lo:hi]
            if thunk is not None and len(sel):
                o = np.frombuffer(orig, np.uint8)
                rel = (sel - np.uint64(start)).astype(np.int64)
                inside = (rel >= 0) & (rel + 5 <= len(o))
                edge = sel[~inside].tolist()  # sites straddling the range: read them whole
                rel = rel[inside]
                disp = (o[rel + 1].astype(np.int64) | o[rel + 2].astype(np.int64) << 8
                        | o[rel + 3].astype(np.int64) << 16 | o[rel + 4].astype(np.int64) << 24)
                disp = np.where(disp >= 1 << 31, disp - (1 << 32), disp)
                hit = (o[rel] == 0xE9) & (rel + 5 + disp == thunk - start)
                _overlay_many(arr, start, rel[hit].astype(np.uint64) + np.uint64(start), RET_INT3)
                for s in edge:
                    raw = image.read(s, 5)
                    if raw[:1] == b"\xe9" and \
                            s + 5 + int.from_bytes(raw[1:5], "little", signed=True) == thunk:
                        _overlay(buf, start, s, RET_INT3)
        return bytes(buf)

    def optimizable(self, ctx: PrepareContext) -> bool:
        from . import optprobe  # opt.c: can_optimize + arch_prepare_optimized_kprobe
        return optprobe.can_optimize(ctx)

    # -- decoding -----------------------------------------------------------------------------
    def insn_length(self, code: bytes) -> int:
        """Length of the instruction at the start of ``code``, 0 if the kernel cannot decode it."""
        for _, size, mnem, _ in self._cs.disasm_lite(code[:MAX_INSN_SIZE], 0, 1):
            return _ud1_size(code, mnem, size)
        for gap, size in CAPSTONE_GAPS.items():
            if code.startswith(gap):
                return size
        return 0

    def boundaries(self, code: bytes, base: int) -> list[int]:
        """Instruction start addresses decoding linearly from ``base`` (stops at a decode failure)."""
        out = []
        off = 0
        n = len(code)
        while off < n:
            start = off
            for _, size, mnem, _ in self._cs.disasm_lite(code[off:], base + off):
                out.append(base + off)
                if mnem == "ud1":  # restart after the kernel's length (see _ud1_size)
                    off += _ud1_size(code[off:], mnem, size)
                    break
                off += size
            if off == start or off < n:
                size = self.insn_length(code[off:])
                if size == 0:
                    break
                out.append(base + off)
                off += size
        return out

    def decode(self, code: bytes, addr: int) -> KInsn | None:
        """The kernel's view of the instruction at ``addr`` (``code`` starts there)."""
        opcode, prefixes, rex, vex, op_end = kernel_opcode(code)
        insn = next(self._csd.disasm(code[:MAX_INSN_SIZE], addr, 1), None)
        if insn is None:
            size = self.insn_length(code)
            if not size:
                return None
            return KInsn(size, opcode, prefixes, rex, None, 8, vex, False, 0, "(capstone gap)")
        x = insn
        rip = any(op.type == capstone.x86.X86_OP_MEM and op.mem.base == capstone.x86.X86_REG_RIP
                  for op in x.operands)
        modrm = code[op_end] if x.modrm_offset else None
        if modrm is None and x.modrm:
            modrm = x.modrm
        return KInsn(_ud1_size(code, x.mnemonic, x.size), opcode, prefixes, rex, modrm,
                     x.addr_size or 8, vex, rip, x.disp_offset, f"{x.mnemonic} {x.op_str}".strip())

    # -- arch_prepare_kprobe ------------------------------------------------------------------
    def prepare(self, ctx: PrepareContext) -> Execution | Refusal:
        image, addr, func = ctx.image, ctx.addr, ctx.func
        features = ctx.features
        code = self.runtime_bytes(image, func.addr, addr + MAX_INSN_SIZE)
        # can_probe: decode from the symbol start; addr must be hit exactly
        off = addr - func.addr
        pos = 0
        while pos < off:
            size = self.insn_length(code[pos:])
            if size == 0:
                return Refusal(Reason.NOT_BOUNDARY, f"undecodable bytes at +{pos:#x}")
            pos += size
        if pos != off:
            return Refusal(Reason.NOT_BOUNDARY, f"inside the instruction at +{pos - size:#x}")
        here = code[off:]
        insn = self.decode(here, addr)
        if features.has("X86_CAN_PROBE_EXCEPTION_INSN"):
            if insn is None:
                return Refusal(Reason.NOT_BOUNDARY, "undecodable instruction")
            if _is_exception_insn(insn):  # can_probe: is_exception_insn
                return Refusal(Reason.EXCEPTION_INSN, insn.mnemonic)
        # __copy_instruction
        if insn is None:
            return Refusal(Reason.UNDECODABLE, here[:4].hex())
        if any(here.startswith(p) for p in XEN_KVM_EMULATE_PREFIXES):
            return Refusal(Reason.PROHIBITED_INSN, "Xen/KVM emulate prefix")
        op0 = insn.opcode[0] if insn.opcode else 0
        if op0 == INT3:
            return Refusal(Reason.BREAKPOINT_INSN, "int3")
        if op0 == 0x17 or (op0 == 0x8E and insn.reg == 2):  # insn_masking_exception
            return Refusal(Reason.PROHIBITED_INSN, f"{insn.mnemonic} (masks exceptions)")
        # prepare_emulation
        emulated = self._emulation(insn)
        if isinstance(emulated, Refusal):
            return emulated
        boostable = self._can_boost(image, insn, addr, features)
        # prepare_singlestep (also run for emulated insns): a boost needs 5 spare slot bytes and
        # the int3 one, so a 15-byte instruction gets -ENOSPC whatever can_boost says
        if insn.length >= MAX_INSN_SIZE:
            return Refusal(Reason.INSN_TOO_LONG, insn.mnemonic)
        if boostable and not image.config.enabled("PREEMPTION") \
                and MAX_INSN_SIZE - insn.length >= JMP32_INSN_SIZE:
            method = Method.BOOST
        elif emulated is not None:
            method = Method.EMULATE
        else:
            method = Method.SINGLESTEP
        return Execution(method, here[:insn.length], insn.mnemonic, boostable)

    def _emulation(self, insn: KInsn) -> str | None | Refusal:
        """``prepare_emulation``: the emulated operation, None (single-step) or a refusal."""
        if not insn.opcode:
            return None
        op0 = insn.opcode[0]
        if op0 in EMULATION_REFUSED:
            return Refusal(Reason.EMULATE_UNSUPPORTED, EMULATION_REFUSED[op0])
        if op0 in EMULATED:
            return EMULATED[op0]
        if op0 == 0x0F and len(insn.opcode) >= 2:
            op1 = insn.opcode[1]
            if op1 & 0xF0 == 0x80:
                return "jcc"
            if op1 == 0x01 and insn.reg == 0 and insn.mod == 3:
                return Refusal(Reason.EMULATE_UNSUPPORTED, f"{insn.mnemonic} (VMX)")
            return None
        if op0 == 0xFF and insn.reg in (2, 3, 4, 5):
            if insn.reg in (3, 5):
                return Refusal(Reason.EMULATE_UNSUPPORTED, f"{insn.mnemonic} (far)")
            if insn.addr_bytes != 8:
                return Refusal(Reason.EMULATE_UNSUPPORTED, f"{insn.mnemonic} (address size)")
            if insn.mod != 3:
                return Refusal(Reason.EMULATE_UNSUPPORTED, f"{insn.mnemonic} (memory operand)")
            return "call *reg" if insn.reg == 2 else "jmp *reg"
        return None

    def _can_boost(self, image: "Image", insn: KInsn, addr: int, features: "FeatureSet") -> bool:
        """``can_boost``: may the slot end in a jmp back instead of a second trap?"""
        if image.tables.has_extable(addr):
            return False
        if len(insn.opcode) == 2 and not insn.vex:
            return insn.opcode[1] in TWOBYTE_BOOSTABLE
        if len(insn.opcode) != 1:
            return False
        if any(p in (0x2E, 0x67) for p in insn.prefixes):
            return False
        op = insn.opcode[0]
        if op in NOT_BOOSTABLE:
            return False
        group = GROUP_BOOSTABLE[features.has("X86_CAN_BOOST_GROUP_REGS")]
        if op in group:
            return insn.reg in group[op]
        return True


def _is_exception_insn(insn: KInsn) -> bool:
    """``is_exception_insn`` (X86_CAN_PROBE_EXCEPTION_INSN): INT3 / INT n / INTO / INT1 / UD0 / UD1 / UD2."""
    if not insn.opcode:
        return False
    if insn.opcode[0] == 0x0F:
        return len(insn.opcode) > 1 and insn.opcode[1] in EXCEPTION_OPCODES_0F
    return insn.opcode[0] in EXCEPTION_OPCODES_1


def _ud1_size(code: bytes, mnemonic: str, size: int) -> int:
    """Capstone 5 decodes UD1 (``0f b9``) without a ModRM byte; the kernel's decoder reads one
    (x86-opcode-map.txt: ``b9: Grp10 (1A)``), as objdump does.  UD0 (``0f ff``) has none there."""
    if mnemonic != "ud1" or code[size - 2:size] != b"\x0f\xb9" or len(code) <= size:
        return size
    modrm = code[size]
    mod, rm = modrm >> 6, modrm & 7
    n = 1
    if mod != 3 and rm == 4:  # SIB
        n += 1
        if mod == 0 and len(code) > size + 1 and code[size + 1] & 7 == 5:
            n += 4
    elif mod == 0 and rm == 5:  # disp32 (RIP-relative)
        n += 4
    return size + n + {1: 1, 2: 4}.get(mod, 0)


def add_nops(n: int) -> bytes:
    """``add_nops``: the longest x86_nops[] first, until ``n`` bytes are filled."""
    out = b""
    while n > 0:
        k = min(n, 8)
        out += bytes.fromhex(X86_NOPS[k])
        n -= k
    return out


def _overlay_many(arr: np.ndarray, base: int, sites: "np.ndarray | list[int]", patch: bytes) -> None:
    """:func:`_overlay` of one fixed patch at many sites (bytes outside ``arr`` are dropped)."""
    rel = (np.asarray(sites, dtype=np.uint64) - np.uint64(base)).astype(np.int64)  # may wrap < 0
    for i, b in enumerate(patch):
        j = rel + i
        arr[j[(j >= 0) & (j < len(arr))]] = b


def _overlay(buf: bytearray, base: int, at: int, patch: bytes) -> None:
    for i, b in enumerate(patch):
        j = at - base + i
        if 0 <= j < len(buf):
            buf[j] = b
