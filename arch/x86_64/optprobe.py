"""x86_64 jump-optimized kprobes [arch/x86/kernel/kprobes/opt.c].

``can_optimize`` + ``arch_prepare_optimized_kprobe`` decide whether an armed probe shows
``[OPTIMIZED]``; :func:`build_detour` writes the detour buffer byte for byte
(``optprobe_template_entry`` .. ``_end``, the copied instructions, ``jmp`` back).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

import attrs
import capstone

from kpatch_arch.base import PrepareContext
from kpatch_core.verdict import Execution, Method, Reason, Refusal

from .insn import JMP32_INSN_SIZE, MAX_INSN_SIZE, kernel_opcode
from .slot import MODULES_VADDR, relocate, synthesize_reljump

if TYPE_CHECKING:
    from kpatch_core.executor import Executor
    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image

    from .backend import X86_64Backend

INT3_INSN_SIZE = 1
DISP32_SIZE = 4
MASK64 = (1 << 64) - 1
# optprobe_template_entry..optprobe_template_end of 6.1 x86_64 (opt.c asm, as linked in Debian's
# 6.1.0-50 vmlinux): push __KERNEL_DS; push %rsp; pushfq; NOP3 (CLAC); SAVE_REGS_STRING;
# mov %rsp,%rsi; NOP5 x2 (mov $op,%rdi); NOP5 (call optimized_callback); flags->ss;
# RESTORE_REGS_STRING; add $0x10,%rsp; popfq
TEMPLATE = bytes.fromhex(
    "6a18549c0f1f004883ec1857565251504150415141524153535541544155415641574889e6"
    "0f1f4400000f1f4400000f1f440000488b94249000000048899424a0000000415f415e415d"
    "415c5d5b415b415a4159415858595a5e5f4883c4184883c4109d")
TMPL_CLAC_IDX, TMPL_MOVE_IDX, TMPL_CALL_IDX, TMPL_END_IDX = 4, 37, 47, len(TEMPLATE)
# the first optinsn slot (module area, after the insn slot page)
DEFAULT_DETOUR = MODULES_VADDR + 0x1000
# a stand-in for &optimized_kprobe (the value `mov $op, %rdi` loads)
DEFAULT_OP = 0xFFFF888000200000


@attrs.frozen
class Detour:
    """One optimized probe: the jump written at ``addr`` and the detour buffer at ``slot``."""

    addr: int
    slot: int
    size: int  # optinsn.size: bytes of whole instructions replaced (5..19)
    code: bytes  # the buffer: template, copied instructions, jmp back
    jump: bytes  # `jmp rel32` to the detour, written over addr..addr+4

    @property
    def copied_offset(self) -> int:
        """Where the relocated instructions start (``setup_detour_execution``: slot + TMPL_END_IDX)."""
        return TMPL_END_IDX

    @property
    def call_offset(self) -> int:
        return TMPL_CALL_IDX


def _template(image: "Image | None") -> bytes:
    """The template as the image links it (falls back to Debian 6.1's bytes)."""
    if image is not None and hasattr(image, "symtab"):
        a = image.symtab.value("optprobe_template_entry")
        e = image.symtab.value("optprobe_template_end")
        if a is not None and e is not None and 0 < e - a < 256:
            raw = image.read(a, e - a)
            if len(raw) == e - a:
                return raw
    return TEMPLATE


def _jump_target(backend: "X86_64Backend", code: bytes, addr: int) -> int | None:
    """``insn_jump_into_range``'s target for e0-e3, e9, eb, 70-7f, 0f 80-8f; else None."""
    opcode, _, _, _, _ = kernel_opcode(code)
    if not opcode:
        return None
    op0 = opcode[0]
    if not (0xE0 <= op0 <= 0xE3 or op0 in (0xE9, 0xEB) or 0x70 <= op0 <= 0x7F
            or (op0 == 0x0F and len(opcode) > 1 and opcode[1] & 0xF0 == 0x80)):
        return None
    insn = next(backend._csd.disasm(code[:MAX_INSN_SIZE], addr, 1), None)
    if insn is None:
        return None
    for op in insn.operands:
        if op.type == capstone.x86.X86_OP_IMM:
            return op.imm & MASK64
    return None


def _is_indirect_jump(code: bytes, modrm: int | None) -> bool:
    """``__insn_is_indirect_jump``: ff /4, ff /5, or ea."""
    opcode, _, _, _, _ = kernel_opcode(code)
    if not opcode:
        return False
    return (opcode[0] == 0xFF and ((modrm or 0) >> 3) & 6 == 4) or opcode[0] == 0xEA


def can_optimize(ctx: PrepareContext) -> bool:
    """``can_optimize`` + the checks of ``arch_prepare_optimized_kprobe``: would the armed probe
    be jump-optimized?"""
    return not isinstance(prepare_optimized(ctx), Refusal)


def prepare_optimized(ctx: PrepareContext, detour_addr: int = DEFAULT_DETOUR) -> Detour | Refusal:
    """``arch_prepare_optimized_kprobe``: the detour, or why the probe stays a breakpoint."""
    image, paddr, func = ctx.image, ctx.addr, ctx.func
    backend = cast("X86_64Backend", image.backend)
    features = ctx.features
    # can_optimize
    size, offset = func.size, paddr - func.addr
    entry = image.tables.area("__entry_text_start", "__entry_text_end") \
        if hasattr(image.tables, "area") else None
    if entry and entry[0] <= paddr < entry[1]:
        return Refusal(Reason.BLACKLIST_AREA, "entry text is never optimized")
    if size - offset < JMP32_INSN_SIZE:
        return Refusal(Reason.INSN_TOO_LONG, "fewer than 5 bytes left in the function")
    code = backend.runtime_bytes(image, func.addr, func.addr + size + MAX_INSN_SIZE)
    thunks = image.tables.area("__indirect_thunk_start", "__indirect_thunk_end") \
        if hasattr(image.tables, "area") else None
    retpoline = thunks is not None  # CONFIG_RETPOLINE
    new_scan = features.has("X86_OPTPROBE_NO_INDIRECT_SCAN_WITH_RETPOLINE_IBT")
    check_indirect = not new_scan or not (retpoline or image.config.enabled("X86_KERNEL_IBT"))
    pos = 0
    while pos < size:
        a = func.addr + pos
        if image.tables.has_extable(a):
            return Refusal(Reason.EXTABLE, f"exception-table user at {a:#x}")
        here = code[pos:pos + MAX_INSN_SIZE]
        k = backend.decode(here, a)
        if k is None:
            return Refusal(Reason.UNDECODABLE, f"at {a:#x}")
        if check_indirect:
            if _is_indirect_jump(here, k.modrm):
                return Refusal(Reason.PROHIBITED_INSN, f"indirect jump at {a:#x}")
            if not new_scan and thunks is not None:  # insn_jump_into_range(__indirect_thunk_*)
                t = _jump_target(backend, here, a)
                if t is not None and thunks[0] <= t <= thunks[1]:
                    return Refusal(Reason.PROHIBITED_INSN, f"jump to a retpoline thunk at {a:#x}")
        t = _jump_target(backend, here, a)
        if t is not None and paddr + INT3_INSN_SIZE <= t <= paddr + INT3_INSN_SIZE + DISP32_SIZE:
            return Refusal(Reason.NOT_BOUNDARY, f"jump into the optimized region from {a:#x}")
        pos += k.length
    # arch_prepare_optimized_kprobe: the detour must be reachable by a rel32 jump
    rel = detour_addr - paddr + JMP32_INSN_SIZE
    if abs(rel) > 0x7FFFFFFF:
        return Refusal(Reason.RIP_DISP_RANGE, "detour buffer out of rel32 range (-ERANGE)")
    return _copy_optimized(image, backend, paddr, code[offset:], detour_addr, features)


def _copy_optimized(image: "Image", backend: "X86_64Backend", paddr: int, code: bytes,
                    detour: int, features: "FeatureSet") -> Detour | Refusal:
    """``copy_optimized_instructions`` + the rest of ``arch_prepare_optimized_kprobe``."""
    copied = b""
    n = 0
    while n < JMP32_INSN_SIZE:
        here = code[n:n + MAX_INSN_SIZE]
        k = backend.decode(here, paddr + n)
        if k is None or k.opcode[:1] == b"\xcc":  # __copy_instruction fails
            return Refusal(Reason.UNDECODABLE, f"at {paddr + n:#x}")
        if any(here.startswith(p) for p in (bytes.fromhex("0f0b78656e"), bytes.fromhex("0f0b6b766d"))):
            return Refusal(Reason.PROHIBITED_INSN, "emulate prefix")
        if k.opcode[:1] == b"\x17" or (k.opcode[:1] == b"\x8e" and k.reg == 2):
            return Refusal(Reason.PROHIBITED_INSN, "masks exceptions")
        rel = relocate(backend, here, paddr + n, detour + TMPL_END_IDX + n)
        if isinstance(rel, Refusal):
            return rel
        if not backend._can_boost(image, k, paddr + n, features):
            return Refusal(Reason.EMULATE_UNSUPPORTED, f"{k.mnemonic} is not boostable")
        copied += rel
        n += k.length
    end = paddr + n - 1
    t = image.tables
    if t.ftrace_sites_in(paddr - 4, end + 1) and any(
            s <= end and s + 5 > paddr for s in t.ftrace_sites_in(paddr - 4, end + 1)):
        return Refusal(Reason.FTRACE_SITE, "ftrace_text_reserved (-EBUSY)")
    for a in range(paddr, end + 1):
        if t.jump_label_hit(a) is not None:
            return Refusal(Reason.JUMP_LABEL, "jump_label_text_reserved (-EBUSY)")
        if t.static_call_hit(a) is not None:
            return Refusal(Reason.STATIC_CALL, "static_call_text_reserved (-EBUSY)")
    return Detour(paddr, detour, n, b"", b"")


def build_detour(image: "Image | None", backend: "X86_64Backend", paddr: int, code: bytes,
                 detour: int = DEFAULT_DETOUR, op: int = DEFAULT_OP,
                 callback: int | None = None, smap: bool = False) -> Detour | Refusal:
    """The detour buffer bytes for a probe at ``paddr`` whose text starts with ``code``:
    template (CLAC if ``smap``; ``mov $op, %rdi``; ``call callback``), the relocated
    instructions, ``jmp`` to ``paddr + size``; and the ``jmp`` written at ``paddr``."""
    tmpl = bytearray(_template(image))
    copied = b""
    n = 0
    while n < JMP32_INSN_SIZE:
        here = code[n:n + MAX_INSN_SIZE]
        rel = relocate(backend, here, paddr + n, detour + TMPL_END_IDX + n)
        if isinstance(rel, Refusal):
            return rel
        copied += rel
        n += len(rel)
    if smap:  # synthesize_clac
        tmpl[TMPL_CLAC_IDX:TMPL_CLAC_IDX + 3] = b"\x0f\x01\xca"
    tmpl[TMPL_MOVE_IDX:TMPL_MOVE_IDX + 10] = b"\x48\xbf" + (op & MASK64).to_bytes(8, "little")
    if callback is None:
        found = image.symtab.value("optimized_callback") if image is not None and \
            hasattr(image, "symtab") else None
        callback = found if found else paddr
    call_at = detour + TMPL_CALL_IDX
    tmpl[TMPL_CALL_IDX:TMPL_CALL_IDX + 5] = b"\xe8" + (
        (callback - (call_at + 5)) & 0xFFFFFFFF).to_bytes(4, "little")  # synthesize_relcall
    body = bytes(tmpl) + copied
    body += synthesize_reljump(detour + len(body), paddr + n)
    jump = synthesize_reljump(paddr, detour)  # arch_optimize_kprobes
    return Detour(paddr, detour, n, body, jump)


def execution_for(code: bytes, mnemonic: str = "") -> Execution:
    """A single-step :class:`Execution` for the first instruction of ``code`` (tests)."""
    return Execution(Method.SINGLESTEP, code, mnemonic)


def install(executor: "Executor", detour: Detour, callback: int) -> None:
    """Jump-optimize the kprobe already armed at ``detour.addr`` on a
    :class:`kpatch_core.executor.Executor`: write the detour buffer, replace the int3 by the
    jump (``arch_optimize_kprobes``), and make ``callback`` run ``optimized_callback``:
    the pre-handlers see the pt_regs the template saved on the stack (``%rsi``)."""
    from kpatch_core.executor import Hit, PtRegs

    ex = executor
    p = ex.probes.probes[detour.addr]
    backend = ex.backend
    ex.map_code(detour.slot, detour.code)
    replaced = ex.probes.recovered(detour.addr, JMP32_INSN_SIZE)
    ex.probes.optimize(detour.addr, detour, detour.jump, replaced)
    order: Literal["little", "big"] = "little"

    def optimized_callback(m: "Executor") -> None:
        import unicorn.x86_const as ux
        regs_at = m.kaddr(m.uc.reg_read(ux.UC_X86_REG_RSI))
        raw = m.read(regs_at, backend.pt_regs_size)
        values = {f.name: int.from_bytes(raw[f.offset:f.offset + f.size], order)
                  for f in backend.pt_regs}
        values["sp"] = (values["sp"] + 8) & MASK64  # regs->sp += sizeof(long)
        values["ip"] = detour.addr + INT3_INSN_SIZE  # regs->ip = kp.addr + INT3_INSN_SIZE
        values["orig_ax"] = MASK64
        view = PtRegs(backend, values, m.read_raw)
        for h in p.pre_handlers:
            m.hits.append(Hit("pre", detour.addr, view.as_dict()))
            h(view)
        for name in view._dirty:  # RESTORE_REGS_STRING reloads what the handler changed
            f = backend.register(name)
            if f is not None and name not in ("ip", "sp", "cs", "ss"):
                m.write(regs_at + f.offset, (view[name] & MASK64).to_bytes(f.size, order))

    ex.add_callback(callback, optimized_callback, tail=b"\xc3")
