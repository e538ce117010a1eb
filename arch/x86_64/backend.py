"""x86_64 backend: int3 breakpoints, boundary check by decoding, emulation and boosting rules.

Facts first (pt_regs, register names, opcode tables), then the decoder, then the hooks that
mirror arch/x86/kernel/kprobes/core.c.  Rules that changed between 6.1 and 6.12 are chosen from
the image's kernel features (``Image.features``, :mod:`kpatch_core.features`).

Its instruction facts and decode tables are data in ``insn.py``.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from kpatch_core.features import feature
from kpatch_core.tables import relative_table
from kpatch_core.verdict import Execution, Method, Reason, Refusal

from ..base import Backend, PrepareContext, per_image
from .insn import (
    ALT_FLAG_DIRECT_CALL,
    ALT_FLAG_NOT,
    ALT_INSTR,
    CAPSTONE_GAPS,
    EMULATED,
    EMULATION_REFUSED,
    ENDBR,
    EXCEPTION_OPCODES_0F,
    EXCEPTION_OPCODES_1,
    GROUP_BOOSTABLE,
    INT3,
    JMP32_INSN_SIZE,
    MAX_INSN_SIZE,
    NOP5,
    NOT_BOOSTABLE,
    PARAVIRT_NATIVE_CODE,
    PARAVIRT_SITE_SIZE,
    PT_REGS,
    RET_INT3,
    TWOBYTE_BOOSTABLE,
    K8_NOPS,
    X86_NOPS,
    XEN_KVM_EMULATE_PREFIXES,
    KInsn,
    kernel_opcode,
)

if TYPE_CHECKING:
    from ..base import UprobeSupport
    from kpatch_arch.base import BulkClassifier, SlotSupport

    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image


class X86_64Backend(Backend):
    """The x86_64 architecture (arch/x86/kernel/kprobes/)."""

    name = "x86_64"
    elf_machine = "EM_X86_64"
    little_endian = True
    # capstone 5's constants (pyproject pins capstone < 6; tests/test_backend_constants.py):
    # the class loads without importing capstone
    capstone_arch = 3  # capstone.CS_ARCH_X86
    capstone_mode = 8  # capstone.CS_MODE_64
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

    @functools.cached_property
    def _cs(self) -> Any:
        """capstone, made on first use (a check that decodes nothing never loads it)."""
        import capstone
        return capstone.Cs(self.capstone_arch, self.capstone_mode)

    @functools.cached_property
    def _csd(self) -> Any:
        """capstone with instruction details."""
        import capstone
        cs = capstone.Cs(self.capstone_arch, self.capstone_mode)
        cs.detail = True
        return cs

    # -- hooks --------------------------------------------------------------------------------
    def default_facts(self, image: "Image") -> dict[str, bool]:
        """CPU facts boot-time patching depends on: X86_K8_NOPS (arch_init_ideal_nops picks
        k8_nops), where the kernel selects NOPs at boot (X86_DYNAMIC_NOPS, before 5.15), is
        assumed off, as on every CPU since Core 2 / family 10h."""
        v = image.version
        return {"X86_K8_NOPS": False} if feature("X86_DYNAMIC_NOPS").in_versions(
            (v.major, v.minor)) else {}

    def cpu_facts(self, cpuinfo: "dict[str, str]", vulnerabilities: "dict[str, str]"
                  ) -> dict[str, bool]:
        """X86_K8_NOPS as arch_init_ideal_nops (5.10) decides it for this CPU, RUNTIME_RETHUNK
        from the mitigations that force X86_FEATURE_RETHUNK (bugs.c: retbleed untrained return
        thunk or call-depth stuffing, SRSO safe RET, ITS return thunks)."""
        rethunk = any(m in vulnerabilities.get(name, "") for name, m in RETHUNK_MITIGATIONS)
        return {**self._k8_nops_fact(cpuinfo), "RUNTIME_RETHUNK": rethunk}

    @staticmethod
    def _k8_nops_fact(cpuinfo: "dict[str, str]") -> dict[str, bool]:
        vendor = cpuinfo.get("vendor_id", "")
        if not vendor:
            return {}
        try:
            family, model = int(cpuinfo.get("cpu family", "0")), int(cpuinfo.get("model", "0"))
        except ValueError:
            return {}
        k8 = (vendor == "AuthenticAMD" and family <= 0xF) or \
            (vendor == "GenuineIntel" and family == 6 and 0x0F <= model < 0x30
             and model not in (0x1C, 0x26, 0x27)) or \
            vendor not in ("AuthenticAMD", "GenuineIntel", "HygonGenuine")  # default: k8_nops
        return {"X86_K8_NOPS": k8}

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

    def jump_label_sizes(self, image: "Image", codes: np.ndarray) -> np.ndarray:
        # jump_label_size of every site: its first word read with the others (a site whose
        # four bytes are not all in one section, read as 0, is asked alone)
        codes = np.asarray(codes, np.uint64)
        w = image.read_u32_at(codes)
        out = np.where(((w & 0xFF) == 0xEB) | ((w & 0xFFFF) == 0x9066), 2, 5).astype(np.uint64)
        for i in np.flatnonzero(w == 0).tolist():
            out[i] = self.jump_label_size(image, int(codes[i]))
        return out

    @per_image
    def _alternatives(self, image: "Image") -> tuple[np.ndarray, np.ndarray]:
        """``.altinstructions`` sorted by site: the sites and their entries (ALT_INSTR rows)."""
        start = image.symtab.value("__alt_instructions")
        end = image.symtab.value("__alt_instructions_end")
        if start is None or end is None or end <= start:
            return np.zeros(0, np.uint64), np.zeros(0, ALT_INSTR)
        raw = image.read(start, end - start)
        a = np.frombuffer(raw[: len(raw) - len(raw) % ALT_INSTR.itemsize], dtype=ALT_INSTR)
        at = np.arange(len(a), dtype=np.uint64) * np.uint64(ALT_INSTR.itemsize) + np.uint64(start)
        sites = at + a["instr"].astype(np.int64).astype(np.uint64)  # wraps like the kernel's s32
        order = np.argsort(sites, kind="stable")  # stable: apply_alternatives' order per site
        return sites[order], a[order]

    def bpf_poke_nop_feature(self, image: "Image", addr: int) -> int | None:
        # bpf_arch_text_poke skips an ENDBR, then __bpf_arch_text_poke wants x86_nops[5] there.
        # A 5-byte alternative site with an empty replacement (static_cpu_has /
        # ALTERNATIVE_TERNARY("jmp 6f", F, "", "jmp t_no")) is padded to that NOP by
        # apply_alternatives when the CPU has F: the attach then depends on the CPU
        if image.read(addr, 4) in ENDBR:
            addr += 4
        sites, rows = self._alternatives(image)
        lo, hi = np.searchsorted(sites, [np.uint64(addr), np.uint64(addr + 1)])
        feature = None
        for r in rows[int(lo):int(hi)]:
            flags, bit = int(r["ft_flags"]) >> 16, int(r["ft_flags"]) & 0xFFFF
            if int(r["instrlen"]) == 5 and int(r["replacementlen"]) == 0 and not flags & ALT_FLAG_NOT:
                feature = bit
        return feature

    @per_image
    def _return_sites(self, image: "Image") -> np.ndarray:
        """``.return_sites``: `jmp __x86_return_thunk` sites that apply_returns rewrites at boot."""
        start, end = image.symtab.value("__return_sites"), image.symtab.value("__return_sites_end")
        if start is None or end is None:
            return np.zeros(0, np.uint64)
        return relative_table(image, start, end, 4)

    @per_image
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
        k8 = _k8_nops(image)  # apply_paravirt pads with add_nops (ideal_nops before 5.15)
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
            patches.append(patch + add_nops(length - len(patch), k8))
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
        k8 = _k8_nops(image)
        final: dict[int, bytes] = {}
        # the entries whose site may start `call *disp32(%rip)` (ff 15), read all at once: the
        # first word of each site (0 also where it cannot be read whole: then asked below)
        at = np.uint64(start) + np.arange(len(a), dtype=np.uint64) * np.uint64(ALT_INSTR.itemsize)
        with np.errstate(over="ignore"):
            at_site = at + a["instr"].astype(np.int64).astype(np.uint64)
        word = image.read_u32_at(at_site)
        maybe = (a["instrlen"] >= 6) & (((word & 0xFFFF) == 0x15FF) | (word == 0))
        slots: dict[int, int] = {}  # pv_ops slot -> its link-time (native) function
        for i in np.flatnonzero(maybe).tolist():
            at_i = start + ALT_INSTR.itemsize * i
            site, length = at_i + int(a["instr"][i]), int(a["instrlen"][i])
            orig = image.read(site, 6)
            if orig[:2] != b"\xff\x15" or length < 6:  # not a pv-op call site
                continue
            flags = int(a["ft_flags"][i]) >> 16
            if flags & ALT_FLAG_DIRECT_CALL:
                slot = site + 6 + int.from_bytes(orig[2:6], "little", signed=True)
                if slot not in slots:
                    slots[slot] = int.from_bytes(image.read(slot, 8), "little")
                target = slots[slot]
                code = b"" if target in nops or not target else \
                    b"\xe8" + ((target - site - 5) & 0xFFFFFFFF).to_bytes(4, "little")
            elif flags & ALT_FLAG_NOT:
                rlen = int(a["replacementlen"][i])
                code = image.read(at_i + 4 + int(a["repl"][i]), rlen)
                if rlen > length or code[:1] in (b"\xe8", b"\xe9"):
                    continue  # relative branches would need fixing up: leave the site as is
            else:
                continue
            final[site] = code + add_nops(length - len(code), k8)
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
        from .optprobe import can_optimize  # opt.c: can_optimize + arch_prepare_optimized_kprobe
        return can_optimize(ctx)

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
        import capstone
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

    def bulk_classifier(self, image: "Image") -> "BulkClassifier":
        """The full analysis's vectorised ``arch_prepare_kprobe`` (bulk.py)."""
        from .bulk import classifier
        return classifier(self, image)

    def uprobe_support(self) -> "UprobeSupport":
        """Uprobes: arch_uprobe_analyze_insn, XOL slots, emulation (uprobe.py)."""
        from .uprobe import uprobe_support
        return uprobe_support(self)

    def slot_support(self) -> "SlotSupport":
        """Out-of-line execution: slots, emulation/simulation, CPU facts (slot.py)."""
        from .slot import slot_support
        return slot_support(self)


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


# (vulnerabilities file, text of a mitigation that forces X86_FEATURE_RETHUNK): bugs.c
# retbleed_select_mitigation (UNRET, STUFF), srso_select_mitigation (SAFE_RET), its (RETURN_THUNK)
RETHUNK_MITIGATIONS = (("retbleed", "untrained return thunk"), ("retbleed", "Stuffing"),
                       ("spec_rstack_overflow", "safe RET"),
                       ("indirect_target_selection", "return thunk"))


@functools.cache
def add_nops(n: int, k8: bool = False) -> bytes:
    """``add_nops``: the longest x86_nops[] (``k8``: k8_nops[], ideal_nops on a K8-class CPU
    before 5.15) first, until ``n`` bytes are filled."""
    table = K8_NOPS if k8 else X86_NOPS
    out = b""
    while n > 0:
        k = min(n, 8)
        out += bytes.fromhex(table[k])
        n -= k
    return out


def _k8_nops(image: "Image") -> bool:
    """Pads with k8_nops: dynamic NOP selection (arch_init_ideal_nops, before 5.15) on a CPU
    that picks them (runtime fact X86_K8_NOPS, assumed off: every x86-64 CPU since Intel Core 2
    and AMD family 10h takes p6_nops, which are x86_nops)."""
    return image.features.has("X86_DYNAMIC_NOPS") and image.config.enabled("X86_K8_NOPS")


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
