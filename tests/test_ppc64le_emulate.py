"""ppc64 emulate_step model (arch/ppc64le/emulate.py), proved by execution under
qemu-ppc64le-static (unicorn has no little-endian PPC64), and the optprobe detour buffer run
under qemu with stub optimized_callback/emulate_step."""
from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpatch_arch.ppc64le import emulate as E
from kpatch_arch.ppc64le import slot as ppc
from kpatch_core.testing import qemu_ppc64le as qppc
from kpatch_core.slot import Effect

HAVE_QEMU = shutil.which(qppc.QEMU) is not None
needs_qemu = pytest.mark.skipif(not HAVE_QEMU, reason="qemu-ppc64le-static not installed")
REAL = Path.home() / ".cache" / "kpatch-kernels" / "ppc64le" / "vmlinux"
A = 0xC000000000A00000  # a kernel text address
M64 = (1 << 64) - 1
MEM_AT = 0xC000000001000000
MEM = bytes(range(0x80, 0x100)) + bytes(range(0x80))  # 256 bytes


def read(addr: int, n: int) -> bytes:
    off = addr - MEM_AT
    return MEM[off:off + n] if 0 <= off and off + n <= len(MEM) else b""


def w(x: int) -> bytes:
    return x.to_bytes(4, "little")


def step(word: int, regs: dict | None = None, **kw: object) -> E.Result:
    return E.emulate_step(w(word), A, regs or {}, read, **kw)


# --- named cases (the model) ------------------------------------------------------------------
def test_bl_sets_lr_and_b_does_not() -> None:
    e = step(0x48000101)  # bl +0x100
    assert isinstance(e, Effect) and e.pc == A + 0x100 and e.regs == {"link": A + 4}
    e = step(0x4BFFFF00)  # b -0x100
    assert e.pc == A - 0x100 and e.regs == {}
    e = step(0x48000102)  # ba 0x100: absolute
    assert e.pc == 0x100


def test_bc_decrements_ctr_and_tests_it_before() -> None:
    bdnz = 0x4200FFF0  # bdnz -16: BO=16
    e = step(bdnz, {"ctr": 5})
    assert e.pc == A - 16 and e.regs == {"ctr": 4}
    e = step(bdnz, {"ctr": 1})  # branch_taken compares the old CTR with 1
    assert e.pc == A + 4 and e.regs == {"ctr": 0}
    e = step(bdnz, {"ctr": 0})  # wraps
    assert e.pc == A - 16 and e.regs == {"ctr": M64}
    beq = 0x41820010  # beq +16: BO=12 (no CTR), BI=2 (cr0.eq)
    assert step(beq, {"ccr": 0x20000000}).pc == A + 16
    e = step(beq, {"ccr": 0x40000000, "ctr": 7})
    assert e.pc == A + 4 and "ctr" not in e.regs
    e = step(0x41820011, {"ccr": 0x20000000})  # beql: LR set whether taken or not
    assert e.regs == {"link": A + 4}


def test_bclr_bcctr_and_bctar() -> None:
    e = step(0x4E800020, {"link": 0xC000000000123457})  # blr
    assert e.pc == 0xC000000000123457  # pt_regs NIP unmasked: rfid drops the low two bits
    e = step(0x4E800421, {"ctr": 0x1234, "link": 9})  # bctrl
    assert e.pc == 0x1234 and e.regs == {"link": A + 4}
    e = step(0x4D820020, {"link": 0x4000, "ccr": 0})  # beqlr, cr0.eq clear: not taken
    assert e.pc == A + 4
    assert isinstance(step(0x4E800460), E.Declined)  # bctar: analyse_instr has no case


def test_record_forms_set_cr0_with_so_from_xer() -> None:
    e = step(0x7C632215, {"gpr3": M64 - 4, "gpr4": 2, "ccr": 0x0ABCDEF1})  # add. r3,r3,r4
    assert e.regs == {"gpr3": M64 - 2, "ccr": 0x8ABCDEF1}
    e = step(0x7C632215, {"gpr3": 1, "gpr4": M64, "xer": E.XER_SO})
    assert e.regs["ccr"] == 0x30000000  # EQ | SO
    e = step(0x7C632214, {"gpr3": 1, "gpr4": 2, "ccr": 5})  # add (Rc=0): CR untouched
    assert e.regs == {"gpr3": 3}
    e = step(0x70630000 | 0x00F0, {"gpr3": 0x0F})  # andi. r3,r3,0xf0 -> 0: always records
    assert e.regs == {"gpr3": 0, "ccr": 0x20000000}
    e = step(0x7C6A0378 | 1, {"gpr3": 0, "gpr0": 0, "gpr10": 1 << 63})  # or. r10,r3,r0
    assert e.regs["ccr"] == 0x20000000 and e.regs["gpr10"] == 0


def test_carrying_forms_set_ca_and_ca32() -> None:
    e = step(0x7C632014, {"gpr3": M64, "gpr4": 1})  # addc r3,r3,r4
    assert e.regs == {"gpr3": 0, "xer": E.XER_CA | E.XER_CA32}
    e = step(0x7C632014, {"gpr3": 0xFFFFFFFF, "gpr4": 1, "xer": E.XER_CA})  # CA32 only
    assert e.regs == {"gpr3": 0x100000000, "xer": E.XER_CA32}
    e = step(0x7C632110, {"gpr3": 5, "gpr4": 5, "xer": 0})  # subfe r3,r3,r4: 5-5-1
    assert e.regs == {"gpr3": M64, "xer": 0}
    e = step(0x7C630E70, {"gpr3": 0xFFFFFFFF_FFFFFFF5})  # srawi r3,r3,1: ones shifted out
    assert e.regs == {"gpr3": M64 - 5, "xer": E.XER_CA | E.XER_CA32}
    assert step(0x7C630E70, {"gpr3": 4}).regs == {"gpr3": 2, "xer": 0}


def test_ldu_updates_the_base_and_loads_from_memory() -> None:
    e = step(0xE8640009, {"gpr4": MEM_AT})  # ldu r3,8(r4)
    assert e.regs == {"gpr3": int.from_bytes(MEM[8:16], "little"), "gpr4": MEM_AT + 8}
    assert e.loads == (("gpr3", MEM_AT + 8, 8),)
    assert isinstance(step(0xE8630009, {"gpr3": MEM_AT}), E.Declined)  # ldu r3,8(r3): invalid
    e = step(0x80640003, {"gpr4": MEM_AT})  # lwz r3,3(r4): unaligned is fine (read_mem)
    assert e.regs == {"gpr3": int.from_bytes(MEM[3:7], "little")}
    e = step(0xA8640000, {"gpr4": MEM_AT, "gpr3": 7})  # lha: sign-extends 0x8180
    assert e.regs == {"gpr3": 0xFFFFFFFFFFFF8180}
    e = step(0x7C60242C, {"gpr4": MEM_AT})  # lwbrx r3,0,r4
    assert e.regs == {"gpr3": int.from_bytes(MEM[:4], "big")}
    assert isinstance(step(0xE8640000, {"gpr4": 0x1000}), E.Declined)  # faults: single-step


def test_stores_and_the_stack_update() -> None:
    e = step(0xF8640010, {"gpr3": 0x1122334455667788, "gpr4": MEM_AT})  # std r3,16(r4)
    assert e.stores == ((MEM_AT + 16, bytes.fromhex("8877665544332211")),) and e.regs == {}
    sp = MEM_AT + 0xF0
    e = step(0xF821FF91, {"gpr1": sp})  # stdu r1,-112(r1): the deferred stack store
    assert e.regs == {"gpr1": sp - 112} and e.stores == ((sp - 112, sp.to_bytes(8, "little")),)
    assert "TIF_EMULATE_STACK_STORE" in e.op


def test_declined_and_refused() -> None:
    assert isinstance(step(0x7C6C42A6), E.Declined)  # mfspr r3,268 (TB): only LR/CTR/XER
    assert isinstance(step(0x7C632614), E.Declined)  # addo: OE=1 misses analyse_instr's switch
    assert isinstance(step(0x44000002), E.Refused)  # sc
    assert isinstance(step(0x4C000024), E.Refused)  # rfid
    assert isinstance(step(0x7C600164, {"gpr3": 0}), E.Refused)  # mtmsrd clearing MSR_RI
    e = step(0x7C600164, {"gpr3": E.MSR_RI | E.MSR_LE}, msr=E.MSR_KERNEL)
    assert isinstance(e, Effect) and "msr" in e.regs
    # prefixed: unknown on POWER9 (declined); on an ISA 3.1 CPU it is not modelled
    assert isinstance(step(0x06000000), E.Declined)
    assert isinstance(step(0x06000000, cpu=E.Cpu(arch_31=True)), E.NotModelled)


def test_fp_access_with_the_facility_off_is_skipped_by_the_kernel() -> None:
    lfd = 0xC8240000  # lfd f1,0(r4)
    e = step(lfd, {"gpr4": MEM_AT}, msr=E.MSR_KERNEL)
    assert isinstance(e, Effect) and e.pc == A + 4 and not e.regs and not e.stores
    r = step(lfd, {"gpr4": MEM_AT}, msr=E.MSR_KERNEL | E.MSR_FP)
    assert isinstance(r, E.NotModelled) and r.what == "fp-vmx-vsx-live"


def test_not_modelled_is_stated_and_never_an_effect() -> None:
    assert set(E.NOT_MODELLED) >= {"fp-vmx-vsx-live", "load-store-multiple", "quadword", "stcx",
                                   "prefixed", "darn", "undefined-quotient"}
    cases = [(0xBBC40000, {}), (0x7C60212D, {"gpr4": MEM_AT}), (0xE0830000, {}),
             (0x7C6005E6, {}), (0x7C6323D6, {"gpr4": 0}), (0x7C6323D6, {"gpr3": 1 << 31,
                                                                       "gpr4": 0xFFFFFFFF})]
    whats = set()
    for word, regs in cases:  # lmw r30, stwcx., lq r4, darn, divw by 0, divw overflow
        r = step(word, regs, msr=E.MSR_KERNEL | E.MSR_FP)
        assert isinstance(r, E.NotModelled), (hex(word), r)
        assert r.what in E.NOT_MODELLED
        whats.add(r.what)
    assert whats == {"load-store-multiple", "stcx", "quadword", "darn", "undefined-quotient"}


def test_analyse_word_decides_by_the_word_alone() -> None:
    cases = {
        0x7C6323D2: E.WORD_REGS,  # divd: can_optimize's zero registers divide by zero, still 1
        0x7C632392: E.WORD_REGS,  # divdu
        0x7C0005E6: E.WORD_REGS,  # darn r0,0 (COMPUTE)
        0x7C64279E: E.WORD_REGS,  # isel (32 minor opcodes, compute_done)
        0x7C632614: E.WORD_DECLINED,  # addo: OE=1 misses the switch (emulate_step 0)
        0x4E800460: E.WORD_DECLINED,  # bctar: no case in analyse_instr
        0x7C641828: E.WORD_MEM,  # lwarx r3,r4,r3: EA from registers, aligned for some state
        0x7C6418EE: E.WORD_MEM,  # lbzux r3,r4,r3: rA = r4 != rT, a valid update form
        0x7C6318EE: E.WORD_DECLINED,  # lbzux r3,r3,r3: load with update and rA = rT
        0xE8630001: E.WORD_DECLINED,  # ldu r3,0(r3): load with update and rA = rT
        0xF821FF91: E.WORD_MEM,  # stdu r1,-112(r1)
        0x7C0007EC: E.WORD_MEM,  # dcbz 0,r0: emulate_dcbz
        0x44000002: E.WORD_REFUSED,  # sc
        0x04000000: E.WORD_DECLINED,  # prefix word without ISA 3.1 (the oracle's POWER9)
    }
    assert {w: E.analyse_word(w) for w in cases} == cases
    # an ISA 3.1 CPU does prefixed words (NotModelled: counted as memory, never optimized)
    assert E.analyse_word(0x04000000, E.Cpu(arch_31=True)) == E.WORD_MEM
    assert E.analyse_instr_returns_one(0x7C6323D2) and not E.analyse_instr_returns_one(0xF821FF91)


def test_simulate_is_wired_to_the_model() -> None:
    from kpatch_core.registry import backend_named
    b = backend_named("ppc64le")
    e = ppc.simulate(b, w(0x7C632214), A, {"gpr3": 1, "gpr4": 2}, read)
    assert e.pc == A + 4 and e.regs == {"gpr3": 3}
    with pytest.raises(ppc.NotEmulated) as exc:
        ppc.simulate(b, w(0x7C6C42A6), A, {}, read)
    assert isinstance(exc.value.result, E.Declined)
    with pytest.raises(NotImplementedError):
        ppc.simulate(b, w(0xBBC40000), A, {}, read)


def test_hardware_undefined_bits() -> None:
    assert E.hardware_undefined(0x7C6323D7) == {"gpr3": 0xFFFFFFFF, "ccr": 0x1FFFFFFF}  # divw.
    assert isinstance(E.hardware_undefined(0x4E000420), str)  # bdnzctr: invalid form
    assert E.hardware_undefined(0x7C632214) is None


# --- proof by execution -----------------------------------------------------------------------
NAMED = [0x48000101, 0x4200FFF0, 0x41820010, 0x4E800021, 0x7C632215, 0x7C632014, 0x7C632110,
         0x7C630E70, 0xE8640009, 0x80640003, 0xA8640000, 0x7C60242C, 0xF8640010, 0x7C0802A6,
         0x7C6903A6, 0x7C600026, 0x7C6FF120, 0x7C64289E, 0x5463103A, 0x78631F24, 0x7C6307B4,
         0x7C634038, 0x7C6320F8, 0x38630010, 0x3C63FFFF, 0x60000000, 0x7C6323D6, 0x7C6311D2]


def _prove(words: list[int], seed: int) -> tuple[dict, list]:
    rng = random.Random(seed)
    buf = rng.randbytes(qppc.BUF_SIZE)
    ex = [(w(x), qppc.random_register_file(rng, x)) for x in words]
    res = qppc.prove_emulation(ex, buf)
    assert res is not None
    return res


@needs_qemu
def test_named_cases_match_qemu() -> None:
    counts, div = _prove(NAMED * 8, 1)
    assert div == [] and counts.get("ok", 0) >= 6 * len(NAMED), counts


@needs_qemu
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 1 << 32))
def test_model_matches_qemu_on_random_words(seed: int) -> None:
    rng = random.Random(seed)
    counts, div = _prove([qppc.random_emulated_word(rng) for _ in range(300)], seed)
    assert div == [], div[:3]
    assert counts.get("ok", 0) > 200, counts


@needs_qemu
def test_the_proof_detects_a_wrong_model(monkeypatch: pytest.MonkeyPatch) -> None:
    real = E.emulate_step

    def off_by_one(*a: object, **k: object) -> E.Result:
        r = real(*a, **k)
        if isinstance(r, Effect) and "gpr3" in r.regs:
            return Effect(r.pc, {**r.regs, "gpr3": r.regs["gpr3"] ^ 1}, r.stores, r.loads, r.op)
        return r
    monkeypatch.setattr(E, "emulate_step", off_by_one)
    counts, div = _prove([0x7C632214, 0x38630010], 2)  # add r3 / addi r3
    assert counts.get("DIVERGED") == 2 and "gpr3" in div[0]["diff"]


@needs_qemu
def test_slot_copy_single_steps_like_the_original_in_a_batch() -> None:
    # fadd f1,f1,f2; addo r3,r3,r4; vaddubm; mffs f0; fcmpu cr1,f1,f2: emulate_step declines
    words = [0xFC21102A, 0x7C632614, 0x10011000, 0xFC00048E, 0xFC811000]
    rng = random.Random(3)
    ex = [(w(x), qppc.random_register_file(rng, x)) for x in words]
    assert all(isinstance(E.emulate_step(i, qppc.SITE, r), E.Declined) for i, r in ex)
    counts, div = qppc.prove_single_step(ex, bytes(qppc.BUF_SIZE))
    assert div == [] and counts == {"ok": len(ex)}


# --- the optprobe detour buffer -----------------------------------------------------------------
def _check_detour(r: dict, insn: int, op: int, marker: int | None) -> None:
    regs, g = r["regs"], r["end"]
    assert r["sig"] == 4 and g[qppc.G_NIP] == qppc.DETOUR_PROBE + 4  # back at addr + 4
    for n in range(32):  # the original register file, except what emulate_step changed
        want = marker if (marker is not None and n == 7) else regs[f"gpr{n}"]
        assert g[n] == want & M64, f"r{n}"
    assert (g[qppc.G_CTR], g[qppc.G_LINK], g[qppc.G_CCR] & 0xFFFFFFFF) == (
        regs["ctr"], regs["link"], regs["ccr"])
    assert g[qppc.G_XER] & E.XER_IMPLEMENTED == regs["xer"]
    c3, c4, pt = r["callback"]
    frame = qppc.DETOUR_STACK - qppc.TEMPLATE_OFFSETS_6_1["int_frame"]
    assert c3 == op and c4 == frame + qppc.TEMPLATE_OFFSETS_6_1["overhead"]  # (op, regs)
    assert [pt[n] for n in range(32)] == [regs[f"gpr{n}"] & M64 for n in range(32)]  # gpr1: old SP
    assert (pt[33], pt[34], pt[35], pt[36], pt[37], pt[38]) == (
        qppc.USER_MSR, 0, regs["ctr"], regs["link"], regs["xer"], regs["ccr"])
    softe = r["buffer"][qppc.DETOUR_PACA - qppc.BUF + qppc.TEMPLATE_OFFSETS_6_1["paca_softmask"]]
    assert (pt[39], pt[40], pt[43]) == (softe, 0x700, 0)  # softe, trap, result
    assert r["emulate"] == (c4, insn)  # emulate_step(regs, ppc_inst_as_ulong(insn))


@needs_qemu
@pytest.mark.parametrize("marker", [None, 0x5A])
def test_detour_buffer_saves_calls_restores_and_returns(marker: int | None) -> None:
    rng = random.Random(7)
    regs = qppc.random_register_file(rng)
    insn, op = 0x7C632214, 0x1122334455667788
    r = qppc.run_detour(qppc.template_from_source(), w(insn), regs, op=op, marker=marker,
                       buffer=rng.randbytes(qppc.BUF_SIZE))
    assert r is not None
    _check_detour(r, insn, op, marker)


@needs_qemu
def test_detour_of_a_branch_returns_to_its_target() -> None:
    # can_optimize: an unconditional I-form branch's detour returns to the branch target
    r = qppc.run_detour(qppc.template_from_source(), w(0x48000040), qppc.random_register_file(
        random.Random(8)))
    assert r is not None and r["end"][qppc.G_NIP] == qppc.DETOUR_PROBE + 0x40
    assert r["emulate"][1] == 0x48000040


@pytest.mark.realkernel
def test_template_transcription_is_the_real_one_and_runs() -> None:
    if not REAL.is_file():
        pytest.skip("real ppc64le vmlinux not cached")
    from kpatch_core.image import Image
    img = Image.open(str(REAL))
    words, sym = qppc.template_from_source(**qppc.TEMPLATE_OFFSETS_6_1)
    entry = img.symtab.value("optprobe_template_entry")
    real = [int.from_bytes(img.read(entry + 4 * i, 4), "little") for i in range(len(words))]
    assert real == words
    assert {k: (img.symtab.value(k) - entry) // 4 for k in sym} == sym
    if HAVE_QEMU:
        regs = qppc.random_register_file(random.Random(9))
        r = qppc.run_detour((real, sym), w(0x7C632214), regs, op=0xC0FFEE)
        assert r is not None
        _check_detour(r, 0x7C632214, 0xC0FFEE, None)


def test_template_words_are_what_optprobes_head_s_says() -> None:
    words, sym = qppc.template_from_source()
    assert len(words) == sym["optprobe_template_end"] == 109
    assert words[0] == 0xF821FCF1  # stdu r1,-784(r1)
    assert struct.pack("<I", words[sym["optprobe_template_ret"] - 1]) == bytes.fromhex("10032138")
    assert qppc.MFMSR_R5 in words and qppc.MTMSR_R5 in words


@pytest.mark.realkernel
def test_analyse_instr_returns_one_agrees_with_the_kernels_optimized_flag() -> None:
    # arch_prepare_optimized_kprobe -> can_optimize: analyse_instr == 1 and not a conditional
    # branch.  The real 6.1 kernel's OPTIMIZED flag on every accepted, non-ftrace probe.
    import gzip
    import json

    from kpatch_arch.ppc64le import is_conditional_branch
    from kpatch_core.image import Image
    from conftest import oracle_results, real_vmlinux
    res = oracle_results("ppc64le")
    img = Image.open(str(real_vmlinux("ppc64le")))
    seen = 0
    for line in gzip.open(res, "rt"):
        r = json.loads(line)
        if not r["ok"] or "FTRACE" in (r["flags"] or []):
            continue
        word = int.from_bytes(img.read(int(r["address"], 16), 4), "little")
        model = E.analyse_instr_returns_one(word) and not is_conditional_branch(word)
        assert model == ("OPTIMIZED" in (r["flags"] or [])), (r["target"], hex(word))
        seen += 1
    assert seen > 500


@needs_qemu
def test_bctarl_is_declined_and_single_stepped_with_lr_in_the_slot() -> None:
    # analyse_instr has no bctar case: emulate_step returns 0 and the copy runs in the slot,
    # so the link register names the slot, not the probed address (real kernel behaviour)
    bctarl = 0x4E800461  # bctarl (BO=20: always)
    regs = qppc.random_register_file(random.Random(4))
    assert isinstance(E.emulate_step(w(bctarl), qppc.SITE, regs), E.Declined)
    counts, div = qppc.prove_single_step([(w(bctarl), regs)], bytes(qppc.BUF_SIZE))
    assert counts == {"DIVERGED": 1} and set(div[0]["diff"]) == {"link"}
    assert div[0]["diff"]["link"] == (hex(qppc.SITE + 4), hex(qppc.SLOT_SITE + 4))
