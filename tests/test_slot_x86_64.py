"""x86_64 instruction slots, byte for byte (arch_copy_kprobe / __copy_instruction /
prepare_singlestep), their reach, and slot_for on images."""
from __future__ import annotations

import pytest

from kpatch_core.registry import backend_named
from kpatch_core.slot import Slot, build_slot, slot_for
from kpatch_core.testing import RawImage, prepare_raw
from kpatch_core.verdict import Execution, Method, Reason, Refusal
from kpatch_arch.x86_64 import slot as x86slot

from conftest import real_vmlinux

TEXT = 0xFFFFFFFF81000000
SLOT = x86slot.MODULES_VADDR
B = backend_named("x86_64")


def prep(code: str, addr: int = TEXT, **config: bool) -> Execution:
    img = RawImage(B, config=config)
    e = prepare_raw(img, bytes.fromhex(code) + b"\x90" * 16, addr)
    assert isinstance(e, Execution), e
    return e


def s32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def test_plain_insn_slot_is_copy_then_int3() -> None:
    s = build_slot(B, prep("4889e5"), TEXT, SLOT)
    assert isinstance(s, Slot)
    assert s.code == bytes.fromhex("4889e5cc")
    assert (s.method, s.trap_offset, s.resume) == (Method.SINGLESTEP, 3, TEXT + 3)
    assert s.used


def test_rip_relative_displacement_is_retargeted() -> None:
    # mov rax, [rip+0x100] at TEXT reads TEXT+7+0x100; from SLOT the disp must be TEXT+0x100-SLOT
    s = build_slot(B, prep("488b0500010000"), TEXT, SLOT)
    assert isinstance(s, Slot)
    newdisp = TEXT + 0x100 - SLOT
    assert s.code == bytes.fromhex("488b05") + s32(newdisp) + b"\xcc"
    # the decoded target of the slot copy is the original target
    insn = next(B._csd.disasm(s.code, SLOT, 1))
    assert SLOT + insn.size + insn.disp == TEXT + 7 + 0x100


def test_rip_relative_with_immediate_keeps_immediate() -> None:
    # movl $7, disp(%rip): the immediate after disp32 must not move
    s = build_slot(B, prep("c705f00f000007000000"), TEXT, SLOT)
    assert isinstance(s, Slot)
    assert s.code[:2] == b"\xc7\x05" and s.code[6:10] == s32(7) and s.code[10:] == b"\xcc"


@pytest.mark.parametrize("delta,ok", [(0x7FFFFFFF, True), (0x80000000, False),
                                      (-0x80000000, True), (-0x80000001, False)])
def test_rip_relative_at_the_2gib_edge(delta: int, ok: bool) -> None:
    # disp 0: the target is addr+7; slot = addr + 0 - delta gives newdisp = delta exactly
    e = prep("488b0500000000")
    slot = TEXT - delta
    s = build_slot(B, e, TEXT, slot)
    if ok:
        assert isinstance(s, Slot)
        assert s.code[3:7] == s32(delta)
    else:
        assert isinstance(s, Refusal) and s.reason == Reason.RIP_DISP_RANGE
        assert "does not fit into s32" in s.detail


def test_boosted_slot_jumps_back() -> None:
    e = prep("4889e5", PREEMPTION=False)
    assert e.method == Method.BOOST
    s = build_slot(B, e, TEXT, SLOT)
    assert isinstance(s, Slot)
    assert s.code == bytes.fromhex("4889e5") + b"\xe9" + s32(TEXT + 3 - (SLOT + 3 + 5))
    assert s.trap_offset is None and s.used


def test_emulated_insn_still_gets_a_copy() -> None:
    s = build_slot(B, prep("e810000000"), TEXT, SLOT)
    assert isinstance(s, Slot)
    assert s.code == bytes.fromhex("e810000000cc")  # copied, never run
    assert s.method == Method.EMULATE and not s.used


def test_ftrace_probe_has_no_slot() -> None:
    s = build_slot(B, Execution(Method.FTRACE), TEXT, SLOT)
    assert isinstance(s, Slot) and s.code == b"" and not s.used


def test_slot_for_on_test_image(x86) -> None:
    from kpatch_core.probe import check
    v = check(x86, "insn_boost+9")  # .Lb_mov: after endbr64 + call __fentry__
    assert v.ok and v.method == Method.SINGLESTEP
    s = slot_for(x86, v)
    assert isinstance(s, Slot)
    assert s.code == v.insn + b"\xcc" and s.slot_addr == SLOT
    r = slot_for(x86, "insn_boost+10")  # mid-instruction
    assert isinstance(r, Refusal) and r.reason == Reason.NOT_BOUNDARY
    rip = x86.symtab.value(".Lb_rip")
    if rip is not None:
        s = slot_for(x86, rip, slot_addr=rip + 0x1000)
        assert isinstance(s, Slot)
        disp = int.from_bytes(s.insn[3:7], "little", signed=True)
        assert int.from_bytes(s.code[3:7], "little", signed=True) == disp - 0x1000
        far = slot_for(x86, rip, slot_addr=rip - (1 << 40))
        assert isinstance(far, Refusal) and far.reason == Reason.RIP_DISP_RANGE


@pytest.mark.realkernel
def test_slot_for_real_kernel_rip_relative() -> None:
    from kpatch_core.image import Image
    img = Image.open(str(real_vmlinux("x86_64")))
    # every accepted RIP-relative instruction of a few common functions: the slot's copy names
    # the same target (capstone decodes both, independently of the slot code's own decoder)
    checked = 0
    for name in ("vfs_read", "vfs_write", "schedule", "do_sys_open", "kfree", "__kmalloc"):
        f = img.kallsyms.lookup(name)
        if f is None:
            continue
        sym = img.kallsyms.containing(f)
        code = img.backend.runtime_bytes(img, sym.addr, sym.end)
        for a in img.backend.boundaries(code, sym.addr):
            k = img.backend.decode(code[a - sym.addr:], a)
            if k and k.rip_relative:
                s = slot_for(img, a)
                if isinstance(s, Refusal):
                    continue
                insn = next(B._csd.disasm(s.code, s.slot_addr, 1))
                orig = next(B._csd.disasm(s.insn, a, 1))
                assert s.slot_addr + insn.size + insn.disp == a + orig.size + orig.disp, hex(a)
                assert s.code[-1:] == b"\xcc" or s.method.value == "boost"
                checked += 1
    assert checked >= 10, f"only {checked} accepted RIP-relative instructions in the sample functions"


def test_eip_relative_is_relocated_like_rip_relative() -> None:
    # insn_rip_relative() looks at ModRM only (mod 0, rm 5): a 0x67 [eip+disp] is fixed up too
    from kpatch_core.testing import diff_states, differential
    code = bytes.fromhex("678d0d00010000")  # lea ecx, [eip+0x100]
    s = build_slot(B, prep(code.hex()), TEXT, SLOT)
    assert isinstance(s, Slot)
    assert s.code[3:7] == s32(TEXT + 0x100 - SLOT)
    a, b = differential(B, RawImage(B), code, TEXT, SLOT, {"flags": 0x202})
    assert not diff_states(a, b)


@pytest.mark.parametrize("code", ["e00c", "e10c", "e20c"])
@pytest.mark.parametrize("count", [0, 1])
def test_loop_emulation_tests_the_count_before_decrementing(code: str, count: int) -> None:
    # kprobe_emulate_loop: match = (regs->cx)-- != 0, the CPU decrements first: with a count
    # of 0 or 1 the probed run branches the other way (the kernel's behaviour, kept by our
    # model); property (a) counts it as kernel-divergent, never as a divergence of ours
    from kpatch_core.testing import RawImage, differential, prop_same_end_state
    raw = bytes.fromhex(code)
    flags = 0x202 if code[-4:-2] != "e1" else 0x242  # LOOPE needs ZF set to branch at all
    regs = {"cx": count, "flags": flags}
    plain, probed = differential(B, RawImage(B), raw, TEXT, SLOT, regs)
    assert plain["regs"]["ip"] != probed["regs"]["ip"]
    assert prop_same_end_state(B, RawImage(B), raw, TEXT, SLOT, regs).startswith("kernel-divergent:")
    assert prop_same_end_state(B, RawImage(B), raw, TEXT, SLOT, {**regs, "cx": 5}) == "ok"


def test_rep_string_behind_rex_is_an_oracle_defect() -> None:
    # capstone drops the F2 prefix of f2 41 a5 (repne movsd); the bytes still say REP
    from kpatch_arch.x86_64.slot import oracle_defect
    assert oracle_defect(bytes.fromhex("f241a5")) == "unicorn-rep-string-one-iteration"
    assert oracle_defect(bytes.fromhex("a5")) is None
    # a branch to itself: one step ends where it began, like a step the engine dropped
    assert oracle_defect(bytes.fromhex("46e0fd")) == "branch-to-itself"  # rex loopne .
    assert oracle_defect(bytes.fromhex("ebfe")) == "branch-to-itself"  # jmp .
    assert oracle_defect(bytes.fromhex("e9fbffffff")) == "branch-to-itself"  # jmp . (rel32)
    assert oracle_defect(bytes.fromhex("ebfd")) is None
