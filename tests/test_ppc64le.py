"""ppc64le backend: the trap, ELFv2 entry points, can_single_step, prefixed instructions,
emulate-or-step classes, optprobes, and verdicts on the committed test images (testdata/ppc64le/)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kpatch_arch.ppc64le import (
    Analysis, Ppc64leBackend, analyse_class, is_conditional_branch, is_prefixed, local_entry_offset,
    not_steppable, ppc_function_entry_offset)
from kpatch_core.config import KernelConfig
from kpatch_core.image import Image
from kpatch_core.probe import check
from kpatch_core.verdict import Method, Reason

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "testdata" / "ppc64le"


@pytest.fixture(scope="module")
def img() -> Image:
    return Image.open(str(DATA / "vmlinux"))


def opened(name: str, **overrides: bool) -> Image:
    """A fresh image with configuration facts overridden (like ``--set FACT=y|n``)."""
    image = Image.open(str(DATA / name))
    image.__dict__["config"] = KernelConfig.for_image(image, None, overrides)
    return image


def at(image: Image, label: str, offset: int = 0):
    addr = image.symtab.value(label)
    assert addr is not None, label
    return check(image, hex(addr + offset))


def word(hexword: str) -> int:
    return int(hexword, 16)


# --- decoder facts ---------------------------------------------------------------------------
def test_trap_bytes_and_facts() -> None:
    b = Ppc64leBackend()
    assert b.breakpoint == bytes.fromhex("0800e07f")
    assert not_steppable(0x7FE00008) == "tw"  # the breakpoint itself cannot be probed
    assert b.pt_regs_size == 384 and b.insn_align == 4
    assert b.register("gpr3").offset == 24 and b.register("r3") is b.register("gpr3")
    assert [b.register(n).offset for n in ("nip", "msr", "ctr", "link", "xer", "ccr")] == \
        [256, 264, 280, 288, 296, 304]
    assert b.arg_regs == tuple(f"gpr{n}" for n in range(3, 11))
    assert b.register("lr") is None and b.register("sp") is None
    assert b.register("orig_gpr3") is None and b.register("result") is None  # no table name
    assert b.adjust_window == 17


def test_arg_access_only_from_6_12(img: Image) -> None:
    b = Ppc64leBackend()
    assert not b.fetch_args_supported(img.features)  # 6.1: no $argN on powerpc
    assert b.fetch_args_supported(Image.open(str(DATA / "vmlinux-6.12")).features)


@pytest.mark.parametrize("w,name", [
    ("7c832008", "tw"), ("7c832088", "td"), ("0c830000", "twi"), ("08830000", "tdi"),
    ("44000002", "sc"), ("44000001", "sc"), ("7c600124", "mtmsr"), ("7c610164", "mtmsrd"),
    ("4c000024", "rfid"), ("4c000224", "hrfid"), ("4c000264", "urfid"), ("4c0000a4", "rfscv"),
    ("4c0002e4", "stop"), ("4c000364", "nap"), ("4c0003a4", "sleep"), ("4c0003e4", "rvwinkle"),
    ("4c000324", "doze"), ("4c000064", "rfi"), ("4c00004c", "rfmci"), ("4c00004e", "rfdi"),
    ("4c000066", "rfci")])
def test_can_single_step_reject_set(w: str, name: str) -> None:
    assert not_steppable(word(w)) == name


@pytest.mark.parametrize("w,cls", [
    ("7c632214", Analysis.REGS),  # add
    ("38630001", Analysis.REGS),  # addi
    ("48000015", Analysis.REGS),  # bl
    ("41820004", Analysis.REGS),  # beq
    ("7c0004ac", Analysis.REGS),  # sync
    ("7ce802a6", Analysis.REGS),  # mflr
    ("e8a30008", Analysis.MEM),  # ld
    ("f8a30010", Analysis.MEM),  # std
    ("7cc01828", Analysis.MEM),  # lwarx
    ("7c0018ac", Analysis.MEM),  # dcbf
    ("7d0000a6", Analysis.MEM),  # mfmsr
    ("7cff42a6", Analysis.STEP),  # mfspr PVR
    ("fc22182a", Analysis.STEP),  # fadd
    ("00000000", Analysis.STEP),  # a data word
    ("7c64279e", Analysis.REGS),  # isel r3,r4,r4,30 (compute_done)
    ("7c6323d2", Analysis.REGS),  # divd r3,r3,r4 (dummy regs divide by zero: still returns 1)
    ("7c632614", Analysis.STEP),  # addo r3,r3,r4: OE=1 misses analyse_instr's switch
    ("7c6304d0", Analysis.STEP),  # nego r3,r3
    ("4e800460", Analysis.STEP),  # bctar: no case in analyse_instr
    ("84630004", Analysis.STEP),  # lwzu r3,4(r3): load with update, rA = rT (invalid form)
    ("94200010", Analysis.STEP),  # stwu r1,16(0): update form with rA = 0
    ("f821ff91", Analysis.MEM),  # stdu r1,-112(r1)
    ("f8640002", Analysis.STEP),  # stq r3,0(r4): odd register pair
    ("7800001e", Analysis.STEP),  # opcode 30 with (word >> 1) & 7 == 7: illegal
    ("04000000", Analysis.STEP),  # a prefix word on POWER9 (no ISA 3.1): unknown opcode
])
def test_analyse_classes(w: str, cls: Analysis) -> None:
    assert analyse_class(word(w)) is cls
    assert not_steppable(word(w)) is None


def _model_emulates(w: int, states: list[dict[str, int]]) -> bool:
    """emulate_step (the model) handles ``w`` for one of ``states`` (every address readable):
    anything but Declined (an Effect, NotModelled = analyse_instr handles it, Refused)."""
    from kpatch_arch.ppc64le import emulate as E
    return any(not isinstance(E.emulate_step(w, 0xC000000000A00000, regs, lambda a, n: bytes(n)),
                              E.Declined) for regs in states)


def test_prepare_method_equals_the_model_on_every_opcode_and_extended_opcode() -> None:
    # EMULATE iff try_to_emulate's emulate_step handles the word for some register state
    # (zero registers: can_optimize's dummy pt_regs; and two random register files), else
    # SINGLESTEP; every primary opcode with every 10-bit extended opcode, the other bits random
    import random

    from kpatch_core.testing import RawImage, prepare_raw
    from kpatch_core.verdict import Execution
    rng = random.Random(5)
    states: list[dict[str, int]] = [{}]
    for _ in range(2):
        states.append({f"gpr{n}": rng.getrandbits(64) for n in range(32)}
                      | {"ccr": rng.getrandbits(32), "xer": rng.getrandbits(32) & 0xE00FFFFF,
                         "ctr": rng.getrandbits(64), "link": rng.getrandbits(64)})
    raw = RawImage(Ppc64leBackend())
    seen = {Method.EMULATE: 0, Method.SINGLESTEP: 0}
    for op in range(64):
        for x in range(1024):
            w = (op << 26) | (x << 1) | (rng.getrandbits(32) & 0x03FFF801)
            e = prepare_raw(raw, w.to_bytes(4, "little") + bytes(4), 0xC000000000A00000)
            if not isinstance(e, Execution):
                assert not_steppable(w) is not None, hex(w)
                continue
            want = Method.EMULATE if _model_emulates(w, states) else Method.SINGLESTEP
            assert e.method == want, hex(w)
            seen[e.method] += 1
    assert min(seen.values()) > 10000


def test_entry_decoding() -> None:
    assert ppc_function_entry_offset(0x3C4C0002, 0x384290C0) == 8  # addis r2,r12 / addi r2,r2
    assert ppc_function_entry_offset(0x3C400002, 0x384290C0) == 8  # lis r2 / addi r2,r2
    assert ppc_function_entry_offset(0x7C0802A6, 0x48000001) == 0  # mflr r0: no TOC setup
    assert [local_entry_offset(v << 5) for v in range(7)] == [0, 0, 4, 8, 16, 32, 64]
    assert is_prefixed(0x04000000) and not is_prefixed(0x38630001)
    assert is_conditional_branch(0x4E800020)  # blr is bclr 20,0
    assert not is_conditional_branch(0x48000015)


# --- verdicts on the test image --------------------------------------------------------------
def test_sym0_moves_to_the_ftrace_site(img: Image) -> None:
    v = check(img, "ppc_toc_func")
    assert v.ok and v.flags == ("FTRACE",) and v.on_func_entry
    assert v.address == img.symtab.value("ppc_toc_func") + 12  # addis; addi; mflr; bl _mcount
    n = check(img, "ppc_notoc_func")
    assert n.ok and n.flags == ("FTRACE",)
    assert n.address == img.symtab.value("ppc_notoc_func") + 4
    # an address target is not moved: it probes the global entry's addis
    g = check(img, hex(img.symtab.value("ppc_toc_func")))
    assert g.ok and g.method == Method.EMULATE and g.address == img.symtab.value("ppc_toc_func")


def test_local_entry_from_st_other_matches_the_code(img: Image) -> None:
    st = img.symtab
    for name, expect in (("ppc_toc_func", 8), ("ppc_toc_notrace", 8), ("ppc_notoc_func", 0)):
        i = st.index(name)
        addr = int(st.values[i])
        w0 = int.from_bytes(img.read(addr, 4), "little")
        w1 = int.from_bytes(img.read(addr + 4, 4), "little")
        assert local_entry_offset(int(st.other[i])) == expect
        assert ppc_function_entry_offset(w0, w1) == expect


def test_local_entry_without_ftrace() -> None:
    image = opened("vmlinux", KPROBE_EVENTS_ON_NOTRACE=True)
    v = check(image, "ppc_toc_notrace")  # no ftrace record: ppc_function_entry -> +8
    assert v.ok and v.address == image.symtab.value(".Lu_local") and v.on_func_entry
    nof = opened("vmlinux", KPROBES_ON_FTRACE=False)
    e = check(nof, "ppc_toc_func")  # no KPROBES_ON_FTRACE: the local entry, not the site
    assert e.ok and e.address == nof.symtab.value("ppc_toc_func") + 8
    assert check(nof, "r ppc_toc_func+8").ok
    assert check(nof, "r ppc_toc_func+12").reason == Reason.RETPROBE_NOT_ENTRY


@pytest.mark.parametrize("off,ok", [(0, True), (4, True), (8, True), (12, True), (16, True),
                                    (20, False), (24, False)])
def test_retprobe_entry_window(img: Image, off: int, ok: bool) -> None:
    v = check(img, f"r ppc_toc_func+{off}")
    assert v.ok is ok
    if not ok:
        assert v.reason == Reason.RETPROBE_NOT_ENTRY and v.errno == "EINVAL"


@pytest.mark.parametrize("label,method,optimized", [
    (".Lt_add", Method.EMULATE, True), (".Lt_ld", Method.EMULATE, False),
    (".Lt_std", Method.EMULATE, False), (".Lt_lwarx", Method.EMULATE, False),
    (".Lt_dcbf", Method.EMULATE, False), (".Lt_sync", Method.EMULATE, True),
    (".Lt_mflr", Method.EMULATE, True), (".Lt_mfpvr", Method.SINGLESTEP, False),
    (".Lt_mfmsr", Method.EMULATE, False), (".Lt_fadd", Method.SINGLESTEP, False),
    (".Lt_beq", Method.EMULATE, False), (".Lt_bl", Method.EMULATE, True),
    (".Lt_zero", Method.SINGLESTEP, False), (".Lt_blr", Method.EMULATE, False)])
def test_methods_and_optprobes(img: Image, label: str, method: Method, optimized: bool) -> None:
    v = at(img, label)
    assert v.ok and v.method == method
    assert (v.flags == ("OPTIMIZED",)) is optimized


@pytest.mark.parametrize("label", [".Lp_tw", ".Lp_td", ".Lp_twi", ".Lp_tdi", ".Lp_trap", ".Lp_sc",
                                   ".Lp_mtmsr", ".Lp_mtmsrd", ".Lp_rfid", ".Lp_hrfid", ".Lp_urfid",
                                   ".Lp_rfscv", ".Lp_stop", ".Lp_nap", ".Lp_rfi"])
def test_reject_set_on_image(img: Image, label: str) -> None:
    v = at(img, label)
    assert not v.ok and v.reason == Reason.PROHIBITED_INSN and v.errno == "EINVAL"


def test_alignment_is_the_only_boundary_rule(img: Image) -> None:
    mis = at(img, ".Lt_add", 2)
    assert not mis.ok and mis.errno == "EINVAL"
    assert at(img, ".Lt_zero").ok  # undecodable data words are judged like any other word


def test_prefixed_instructions(img: Image) -> None:
    p = at(img, ".Lx_pld")
    # accepted whole (8 bytes); on the oracle's POWER9 (no CPU_FTR_ARCH_31) analyse_instr
    # treats opcode 1 as unknown: emulate_step returns 0 and the copy is single-stepped
    assert p.ok and p.method == Method.SINGLESTEP and len(p.insn) == 8
    s = at(img, ".Lx_pld", 4)
    assert not s.ok and s.reason == Reason.PREFIX_SUFFIX and s.errno == "EINVAL"
    c = at(img, ".Lx_cross")  # crossing 64 bytes: kprobes accept (only uprobes refuse)
    assert c.ok and "64-byte" in c.mnemonic
    assert img.symtab.value(".Lx_cross") % 64 == 60
    assert not at(img, ".Lx_cross", 4).ok
    # a suffix that starts a 64 KiB page skips the check (addr & ~PAGE_MASK == 0)
    suffix = img.symtab.value(".Lg_suffix")
    assert suffix % 0x10000 == 0
    assert check(img, hex(suffix)).ok


def test_blacklists_and_reserved_text(img: Image) -> None:
    head = check(img, "head_traced")
    assert not head.ok and head.reason == Reason.BLACKLIST_AREA  # _stext .. __head_end
    assert check(img, "ppc_kprobes_text").reason == Reason.BLACKLIST_AREA
    assert check(img, "ppc_nokprobe+16").reason == Reason.BLACKLIST_NOKPROBE
    assert check(img, "ppc_noinstr").reason == Reason.NOTRACE
    assert at(img, ".Lr_jump").reason == Reason.JUMP_LABEL
    assert at(img, ".Lr_bug").reason == Reason.BUG_SITE
    assert at(img, ".Lr_ex").ok
    assert check(img, "sys_kpatch_test").ok


def test_cli_on_both_images() -> None:
    for name in ("vmlinux", "vmlinux-6.12"):
        p = subprocess.run([sys.executable, "-m", "kpatch_core.cli", str(DATA / name)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "arch         ppc64le" in p.stdout, p.stderr
        p = subprocess.run([sys.executable, "-m", "kpatch_core.cli", "check", str(DATA / name),
                            "ppc_toc_func", "--json"], capture_output=True, text=True, timeout=60)
        out = json.loads(p.stdout)
        assert out["ok"] and out["flags"] == ["FTRACE"] and out["symbol"] == "ppc_toc_func+0xc"


def test_ftrace_call_adjust_per_version(img: Image) -> None:
    new = Image.open(str(DATA / "vmlinux-6.12"))
    base = img.symtab.value("ppc_pfe_func")
    assert check(img, "ppc_pfe_func").address == base + 8  # 6.1: the record itself
    assert check(new, "ppc_pfe_func").address == base + 12  # 6.12: patchable entry, record + 4
    assert check(new, "ppc_toc_func").address == new.symtab.value("ppc_toc_func") + 12  # bl _mcount
    assert check(new, "ppc_pfe_func+8").method == Method.EMULATE


class _Facts:
    """The two facts optimized_capacity reads: template symbols and the page alignment."""

    def __init__(self, page: int, template: int | None) -> None:
        self.page, self.syms = page, ({} if template is None else {
            "optprobe_template_entry": 0x1000, "optprobe_template_end": 0x1000 + template})
        self.symtab = self

    def value(self, name: str) -> int | None:
        return self.syms.get(name)

    def section_alignment(self, name: str) -> int:
        return self.page if name == ".data..page_aligned" else 0


def test_optimized_capacity_is_one_page_of_detour_buffers() -> None:
    b = Ppc64leBackend()
    # Debian 6.12 powerpc64le (4 KiB pages): 4096 // 436 = 9, less the rethook trampoline's
    assert b.optimized_capacity(_Facts(4096, 436)) == 8
    assert b.optimized_capacity(_Facts(65536, 436)) == 149  # Debian 6.1 (64 KiB pages)
    assert b.optimized_capacity(_Facts(4096, None)) is None


def test_check_many_runs_out_of_detour_buffers(img: Image, monkeypatch: pytest.MonkeyPatch) -> None:
    from kpatch_core.probe import check_many
    add, sync, mflr = (hex(img.symtab.value(x)) for x in (".Lt_add", ".Lt_sync", ".Lt_mflr"))
    assert [v.flags for v in check_many(img, [add, sync, mflr])] == [("OPTIMIZED",)] * 3
    monkeypatch.setattr(type(img.backend), "optimized_capacity", lambda self, image: 2)
    vs = check_many(img, [add, sync, add, mflr])
    assert [v.flags for v in vs[:4]] == [("OPTIMIZED",), ("OPTIMIZED",), ("OPTIMIZED",), ()]
    assert "detour buffers" in vs[3].detail and vs[3].ok  # still probed, just not optimized
    assert [v.flags for v in check_many(img, [mflr])] == [("OPTIMIZED",)]  # alone: optimized
