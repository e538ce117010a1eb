"""x86_64 jump-optimized probes: can_optimize rules, the detour buffer bytes, and a run of the
detour through the executor (opt.c)."""
from __future__ import annotations

import keystone
import pytest

from kpatch_arch.base import PrepareContext
from kpatch_arch.x86_64 import optprobe
from kpatch_core.emulate import Executor
from kpatch_core.probe import check
from kpatch_core.registry import backend_named
from kpatch_core.symbols import KSym
from kpatch_core.testing import RawImage, prepare_raw
from kpatch_core.verdict import Execution, Reason, Refusal

from conftest import real_vmlinux

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


def _run(code: bytes, optimized: bool, pre=None):
    ex = Executor(B)
    ex.map_code(TEXT, code)
    ex.set("sp", ex.ptr(STACK))
    ret = 0xFFFFFFFF8DEAD000
    ex.write(STACK, ex.ptr(ret).to_bytes(8, "little"))
    ex.set("di", 7)
    if optimized:
        e = prepare_raw(RawImage(B), code, TEXT)
        assert isinstance(e, Execution)
        ex.add_kprobe(TEXT, e, pre=pre)
        cb = optprobe.DEFAULT_DETOUR + 0x800
        d = optprobe.build_detour(None, B, TEXT, code, callback=cb)
        optprobe.install(ex, d, cb)
        assert ex.read(TEXT, 5) == d.jump
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
    from pathlib import Path

    from kpatch_core.image import Image
    res = Path("/work/shared/data/oracle/x86_64/results.jsonl.gz")
    if not res.is_file():
        pytest.skip("no oracle results")
    img = Image.open(str(real_vmlinux("x86_64")))
    rows = [json.loads(x) for x in gzip.open(res, "rt")][:300]
    n = agree = 0
    for r in rows:
        if not r["ok"] or r.get("flags") is None:
            continue
        v = check(img, r["target"] if r["kind"] == "p" else "r " + r["target"])
        n += 1
        agree += sorted(v.flags) == sorted(f for f in r["flags"] if f in ("OPTIMIZED", "FTRACE"))
    assert n and agree / n >= 0.99
