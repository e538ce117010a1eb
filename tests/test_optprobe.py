"""x86_64 jump-optimized probes: can_optimize rules, the detour buffer bytes, and a run of the
detour through the executor (opt.c)."""
from __future__ import annotations

import keystone
import pytest

from kpatch_arch.base import PrepareContext
from kpatch_arch.x86_64 import optprobe
from kpatch_core.executor import Executor
from kpatch_core.probe import check
from kpatch_core.registry import backend_named
from kpatch_core.symbols import KSym
from kpatch_core.testing import RawImage, prepare_raw
from kpatch_core.verdict import Execution, Reason, Refusal

from conftest import oracle_results, real_vmlinux

B = backend_named("x86_64")
TEXT = 0xFFFFFFFF81000000
STACK = 0xFFFFC90000004000
KS = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)


def asm(src: str, addr: int = TEXT) -> bytes:
    return bytes(KS.asm(src, addr)[0])


def ctx(code: bytes, off: int = 0, **config: bool) -> PrepareContext:
    img = RawImage(B, config=config).load(code, TEXT)
    return PrepareContext(img, TEXT + off, KSym("f", TEXT, len(code)))


FUNC = """
    mov rax, rdi
    add rax, 0x10
    lea rcx, [rip+0x200]
    imul rax, rcx
    xor edx, edx
    ret
"""


def test_straight_line_function_is_optimizable() -> None:
    code = asm(FUNC)
    d = optprobe.prepare_optimized(ctx(code))
    assert isinstance(d, optprobe.Detour)
    assert d.size == 3 + 4  # whole instructions covering 5 bytes: mov (3) + add (4)
    assert optprobe.can_optimize(ctx(code))


def test_jump_into_the_region_forbids_optimization() -> None:
    # a jcc elsewhere in the function that targets addr+1..addr+5 (inclusive: opt.c)
    code = asm("nop\n" + FUNC.replace("ret", "jz 0xffffffff81000006\nret"))
    assert isinstance(optprobe.prepare_optimized(ctx(code, 1)), Refusal)
    # the same branch to addr+6 (outside the range) is harmless
    code2 = asm("nop\n" + FUNC.replace("ret", "jz 0xffffffff81000007\nret"))
    assert optprobe.can_optimize(ctx(code2, 1))


def test_indirect_jump_in_function_forbids_optimization() -> None:
    code = asm(FUNC.replace("ret", "jmp rax"))
    r = optprobe.prepare_optimized(ctx(code))
    assert isinstance(r, Refusal) and "indirect jump" in r.detail


def test_exception_table_user_forbids_optimization() -> None:
    code = asm(FUNC)
    c = ctx(code)
    c.image.tables.extable.add(TEXT + 7)  # the lea: an instruction start
    r = optprobe.prepare_optimized(c)
    assert isinstance(r, Refusal) and r.reason == Reason.EXTABLE


def test_unboostable_or_short_region_is_not_optimized() -> None:
    code = asm("mov rax, rdi\ncall 0xffffffff81000100\nret")  # call within 5 bytes: not boostable
    assert not optprobe.can_optimize(ctx(code))
    code = asm("nop\nret")  # fewer than 5 bytes left
    assert not optprobe.can_optimize(ctx(code))


def test_detour_bytes() -> None:
    code = asm(FUNC)
    detour, cb = optprobe.DEFAULT_DETOUR, optprobe.DEFAULT_DETOUR + 0x800
    d = optprobe.build_detour(None, B, TEXT, code, detour, op=0x1122334455667788, callback=cb)
    assert isinstance(d, optprobe.Detour)
    t = optprobe.TMPL_END_IDX
    assert d.code[:4] == bytes.fromhex("6a18549c")  # push $__KERNEL_DS; push %rsp; pushfq
    assert d.code[optprobe.TMPL_MOVE_IDX:optprobe.TMPL_MOVE_IDX + 10] == \
        bytes.fromhex("48bf8877665544332211")  # mov $op, %rdi
    call = d.code[optprobe.TMPL_CALL_IDX:optprobe.TMPL_CALL_IDX + 5]
    assert call[0] == 0xE8 and detour + optprobe.TMPL_CALL_IDX + 5 + \
        int.from_bytes(call[1:], "little", signed=True) == cb
    assert d.code[t:t + d.size] == code[:d.size]  # not RIP-relative: copied as is
    back = d.code[t + d.size:]
    assert back[0] == 0xE9 and detour + t + d.size + 5 + \
        int.from_bytes(back[1:], "little", signed=True) == TEXT + d.size
    assert d.jump[0] == 0xE9 and TEXT + 5 + int.from_bytes(d.jump[1:], "little", signed=True) == detour


def _run(code: bytes, optimized: bool, pre=None, at: int = 0):
    ex = Executor(B)
    ex.map_code(TEXT, code)
    ex.set("sp", ex.ptr(STACK))
    ret = 0xFFFFFFFF8DEAD000
    ex.write(STACK, ex.ptr(ret).to_bytes(8, "little"))
    ex.set("di", 7)
    if optimized:
        e = prepare_raw(RawImage(B), code[at:], TEXT + at)
        assert isinstance(e, Execution)
        ex.add_kprobe(TEXT + at, e, pre=pre)
        cb = optprobe.DEFAULT_DETOUR + 0x800
        d = optprobe.build_detour(None, B, TEXT + at, code[at:], callback=cb)
        optprobe.install(ex, d, cb)
        assert ex.read(TEXT + at, 5) == d.jump
    out = ex.run(TEXT, stop_at={ret}, max_steps=500)
    return ex, out


def test_detour_runs_through_the_executor() -> None:
    code = asm(FUNC.replace("lea rcx, [rip+0x200]", "lea rcx, [rip+0x200]\nmov rbx, rcx"))
    seen = []

    def pre(r):
        seen.append((r.ip, r.di, r.sp, r.orig_ax))
    plain, a = _run(code, False)
    opt, b = _run(code, True, pre)
    assert a.reason == b.reason == "stop"
    assert plain.regs() == opt.regs()
    # optimized_callback: ip = addr + 1, sp as at the probe, orig_ax = ~0
    assert seen == [(TEXT + 1, 7, opt.ptr(STACK), (1 << 64) - 1)]


def test_detour_with_rip_relative_copy() -> None:
    code = asm(FUNC)
    at = len(asm("mov rax, rdi\nadd rax, 0x10"))  # the probe on `lea rcx, [rip+0x200]`
    c = ctx(code, at)
    assert optprobe.can_optimize(c)
    d = optprobe.build_detour(None, B, TEXT + at, code[at:])
    t = optprobe.TMPL_END_IDX
    disp = int.from_bytes(d.code[t + 3:t + 7], "little", signed=True)
    assert d.slot + t + 7 + disp == TEXT + at + 7 + 0x200  # relocated for the detour
    hits = []
    plain, a = _run(code, False)
    opt, b = _run(code, True, pre=lambda r: hits.append(r.ip), at=at)
    assert a.reason == b.reason == "stop" and plain.regs() == opt.regs()
    assert hits == [TEXT + at + 1]


def test_detour_handler_changes_registers() -> None:
    code = asm(FUNC)
    opt, out = _run(code, True, pre=lambda r: r.__setitem__("di", 100))
    assert out.reason == "stop"
    plain, _ = _run(code, False)
    assert opt.get("ax") != plain.get("ax")  # the handler's %di reached the copied `mov rax, rdi`


def test_test_image_optimized_flag(x86_with) -> None:
    img = x86_with(OPTPROBES=True)
    v = check(img, "insn_boost+9")  # mov %rdi,%rax; shl %eax; ... in a function without jumps
    assert v.ok
    assert ("OPTIMIZED" in v.flags) == optprobe.can_optimize(
        PrepareContext(img, v.address, img.kallsyms.containing(v.address)))
    e = check(img, "insn_emulated+9")  # cli: not boostable -> never optimized
    assert e.ok and "OPTIMIZED" not in e.flags


@pytest.mark.realkernel
def test_real_kernel_flags_agree_with_oracle() -> None:
    import gzip
    import json

    from kpatch_core.image import Image
    res = oracle_results("x86_64")
    img = Image.open(str(real_vmlinux("x86_64")))
    rows = [json.loads(x) for x in gzip.open(res, "rt")][:300]
    n = agree = 0
    for r in rows:
        if not r["ok"] or r.get("flags") is None:
            continue
        v = check(img, r["target"] if r["kind"] == "p" else "r " + r["target"])
        n += 1
        agree += sorted(v.flags) == sorted(f for f in r["flags"] if f in ("OPTIMIZED", "FTRACE"))
    assert n >= 100 and agree == n, f"{agree}/{n} flags agree with the real kernel"


def test_ppc64_immediate_loads_and_branches() -> None:
    from kpatch_arch.ppc64le import slot as ppc
    assert ppc._sldi(3, 3, 32) == 0x786307C6  # sldi r3,r3,32 (binutils)
    assert ppc.imm64_load(0x1122334455667788, 3) == [0x3C601122, 0x60633344, 0x786307C6,
                                                     0x64635566, 0x60637788]
    assert ppc.branch(0x1000, 0x2000, link=True) == 0x48001001
    assert ppc.branch(0x1000, 0x1000 + 0x2000000) is None  # beyond +-32 MiB
    assert ppc.next_nip(0x48000010, 0x1000) == 0x1010 and ppc.next_nip(0x60000000, 0x1000) == 0x1004


@pytest.mark.realkernel
def test_ppc64_detour_buffer_on_real_kernel() -> None:
    import gzip
    import json

    import capstone

    from kpatch_arch.ppc64le import slot as ppc
    from kpatch_core.image import Image
    res = oracle_results("ppc64le")
    img = Image.open(str(real_vmlinux("ppc64le")))
    cs = capstone.Cs(capstone.CS_ARCH_PPC, capstone.CS_MODE_64 | capstone.CS_MODE_LITTLE_ENDIAN)
    cs.detail = True
    done = 0
    for line in gzip.open(res, "rt"):
        r = json.loads(line)
        if not (r["ok"] and r["flags"] and "OPTIMIZED" in r["flags"]):
            continue
        v = check(img, r["target"])
        out = ppc.build_detour(img, v.address, v.insn)
        assert not isinstance(out, Refusal), out
        buff, code, jump = out
        sym = img.symtab.value
        entry = sym("optprobe_template_entry")
        assert len(code) == sym("optprobe_template_end") - entry
        # the jump at the probe reaches the buffer; the buffer's last branch returns to nip
        j = next(cs.disasm(jump, v.address))
        assert j.mnemonic == "b" and j.operands[0].imm & ((1 << 64) - 1) == buff
        ret_off = sym("optprobe_template_ret") - entry
        back = next(cs.disasm(code[ret_off:ret_off + 4], buff + ret_off))
        word = int.from_bytes(v.insn[:4], "little")
        assert back.operands[0].imm & ((1 << 64) - 1) == ppc.next_nip(word, v.address)
        # the instruction handed to emulate_step is loaded into r4
        ins = sym("optprobe_template_insn") - entry
        w = [int.from_bytes(code[ins + 4 * i:ins + 4 * i + 4], "little") for i in range(5)]
        assert w == ppc.imm64_load(word, 4)
        done += 1
        if done == 20:
            break
    assert done


def test_probe_inside_the_jump_unoptimizes_the_first() -> None:
    # arch_check_optimized_kprobe: another armed kprobe in addr+1..addr+size-1 -> unoptimized
    code = asm(FUNC)
    hits = []
    ex = Executor(B)
    ex.map_code(TEXT, code)
    ex.set("sp", ex.ptr(STACK))
    ret = 0xFFFFFFFF8DEAD000
    ex.write(STACK, ex.ptr(ret).to_bytes(8, "little"))
    e = prepare_raw(RawImage(B), code, TEXT)
    ex.add_kprobe(TEXT, e, pre=lambda r: hits.append(("first", r.ip)))
    cb = optprobe.DEFAULT_DETOUR + 0x800
    optprobe.install(ex, optprobe.build_detour(None, B, TEXT, code, callback=cb), cb)
    e2 = prepare_raw(RawImage(B), code[3:], TEXT + 3)  # `add rax, 0x10`, inside the jump
    p2 = ex.add_kprobe(TEXT + 3, e2, pre=lambda r: hits.append(("second", r.ip)))
    assert not isinstance(p2, Refusal)
    assert ex.read(TEXT, 4) == b"\xcc" + code[1:3] + b"\xcc"  # int3 again, original bytes back
    assert ex.probes.probes[TEXT].optimized is None
    assert ex.run(TEXT, stop_at={ret}).reason == "stop"
    assert hits == [("first", TEXT + 1), ("second", TEXT + 4)]
