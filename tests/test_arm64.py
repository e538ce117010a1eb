"""arm64 backend against the small images in testdata/arm64 (built by testdata/arm64/build.sh).

Each decode class of arch/arm64/kernel/probes/decode-insn.c has one function ``k_<class>`` whose
instruction under test sits at +8 (after the two patchable-entry NOPs).  The expected outcomes
below are written from the kernel sources, independently of the backend's table, so moving any
class to another outcome fails a test.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from kpatch_core.features import VERIFIED, FeatureSet
from kpatch_core.image import Image
from kpatch_core.probe import check

from kpatch_arch import arm64

from conftest import versioned_image_fixtures

DATA = pathlib.Path(__file__).resolve().parent.parent / "testdata" / "arm64"
SIM, STEP, REJ = "simulate", "singlestep", "reject"


img, img61, img612 = versioned_image_fixtures("arm64")


# class -> (6.1 outcome, 6.12 outcome); the probed instruction is k_<class>+8
CLASSES: dict[str, tuple[str, str]] = {
    # simulated without a slot
    "ldr_lit_x": (SIM, SIM), "ldr_lit_w": (SIM, SIM), "ldrsw_lit": (SIM, SIM),
    "adr": (SIM, SIM), "adrp": (SIM, SIM), "b": (SIM, SIM), "bl": (SIM, SIM),
    "bcond": (SIM, SIM), "cbz": (SIM, SIM), "cbnz": (SIM, SIM), "tbz": (SIM, SIM),
    "tbnz": (SIM, SIM), "br": (SIM, SIM), "blr": (SIM, SIM), "ret": (SIM, SIM),
    "bc_cond": (STEP, SIM),  # 6.12's bcond mask also takes BC.cond
    # rejected
    "prfm_lit": (REJ, REJ), "retaa": (REJ, REJ), "braa": (REJ, REJ), "blraa": (REJ, REJ),
    "eret": (REJ, REJ), "eretaa": (REJ, REJ), "svc": (REJ, REJ), "hvc": (REJ, REJ),
    "smc": (REJ, REJ), "brk": (REJ, REJ), "hlt": (REJ, REJ), "msr_imm": (REJ, REJ),
    "msr_reg": (REJ, REJ), "mrs_daif": (REJ, REJ), "hint_yield": (REJ, REJ),
    "hint_wfe": (REJ, REJ), "hint_wfi": (REJ, REJ), "hint_sev": (REJ, REJ),
    "hint_autiasp": (REJ, REJ), "hint_autia1716": (REJ, REJ), "hint_esb": (REJ, REJ),
    "hint_csdb": (REJ, REJ), "ldxr": (REJ, REJ), "stxr": (REJ, REJ), "ldaxr": (REJ, REJ),
    "stlxr": (REJ, REJ), "ldxp": (REJ, REJ), "stxp": (REJ, REJ),
    "mops": (STEP, REJ),  # 6.12 refuses memory copy/set (aarch64_insn_is_mops)
    # stepped out of line
    "mrs_tpidr": (STEP, STEP), "hint_nop": (STEP, STEP), "hint_xpaclri": (STEP, STEP),
    "hint_pacia1716": (STEP, STEP), "hint_pacib1716": (STEP, STEP), "hint_paciaz": (STEP, STEP),
    "hint_paciasp": (STEP, STEP), "hint_pacibz": (STEP, STEP), "hint_pacibsp": (STEP, STEP),
    "hint_bti": (STEP, STEP), "hint_bti_c": (STEP, STEP), "hint_bti_j": (STEP, STEP),
    "hint_bti_jc": (STEP, STEP), "dsb": (STEP, STEP), "isb": (STEP, STEP),
    "clrex": (STEP, STEP), "dc": (STEP, STEP), "tlbi": (STEP, STEP), "add": (STEP, STEP),
    "ldr_imm": (STEP, STEP), "ldar": (STEP, STEP), "ldadd": (STEP, STEP),
    "ldr_lit_q": (STEP, STEP),  # SIMD literal load: not in uses_literal, stepped
}


def _outcome(v) -> str:
    if v.ok:
        return v.method.value
    assert v.reason.value == "PROHIBITED_INSN", v.to_json()
    assert v.errno == "EINVAL"
    return REJ


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_decode_class(img: Image, cls: str) -> None:
    want = CLASSES[cls][0 if img.version.rules == "6.1" else 1]
    v = check(img, f"k_{cls}+8")
    assert _outcome(v) == want, v.to_json()
    if v.ok:
        assert v.insn == img.read(v.address, 4)


def test_every_table_row_is_exercised() -> None:
    """Each row of both decision tables is hit by some k_<class> instruction."""
    for rules in ("6.1", "6.12"):
        image = Image.open(str(DATA / f"vmlinux-{rules}"))
        hit = set()
        for cls in CLASSES:
            addr = image.kallsyms.lookup(f"k_{cls}") + 8
            hit.add(arm64.decode_word(int.from_bytes(image.read(addr, 4), "little"),
                                      arm64.decode_table(image.features)).name)
        names = {r.name for r in arm64.decode_table(image.features)}
        assert names - hit == set()


def test_encodings() -> None:
    b = arm64.Arm64Backend
    assert b.breakpoint == bytes.fromhex("800020d4")  # BRK #0x004
    assert b.single_step_breakpoint == bytes.fromhex("c00020d4")  # BRK #0x006
    assert b.uprobe_breakpoint == bytes.fromhex("a00020d4")  # BRK #0x005
    assert b.insn_align == 4 and b.relative_reloc_type == 1027
    assert b.extable_entry_size == 12
    assert arm64.Arm64Backend().slot(bytes.fromhex("00008b8b")) == bytes.fromhex("00008b8bc00020d4")


def test_pt_regs_and_names() -> None:
    b = arm64.Arm64Backend()
    assert b.pt_regs_size == 336
    names = [f.name for f in b.pt_regs]
    assert names == [f"x{n}" for n in range(31)] + ["sp", "pc", "pstate"]
    assert set(b.event_registers) == {*names, "lr"}
    assert {n: b.register(n).offset for n in ("x0", "x30", "lr", "sp", "pc", "pstate")} == \
        {"x0": 0, "x30": 240, "lr": 240, "sp": 248, "pc": 256, "pstate": 264}
    assert b.register("fp") is None and b.register("w0") is None
    assert b.arg_regs == tuple(f"x{n}" for n in range(8))
    assert (b.retval_reg, b.stack_reg, b.syscall_prefix) == ("x0", "sp", "__arm64_sys_")
    assert not b.kprobes_on_ftrace(Image.open(str(DATA / "vmlinux-6.1")).features)


def test_decode_words_matches_decode_word() -> None:
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    # make sure the interesting classes are well represented
    words[:4000] = (words[:4000] & 0x03FFFFFF) | 0xD4000000
    words[4000:6000] = (words[4000:6000] & 0x00000FE0) | 0xD503201F
    for table in {arm64.decode_table(FeatureSet.decide(v, "arm64")) for v in VERIFIED}:
        idx = arm64.decode_words(words, table)
        for w, i in zip(words[::7].tolist(), idx[::7].tolist()):
            assert table[i] is arm64.decode_word(w, table)


def test_exclusive_window(img: Image) -> None:
    def reason(t: str) -> str | None:
        v = check(img, t)
        return None if v.ok else v.reason.value

    assert reason("k_excl_loop+8") == "PROHIBITED_INSN"  # the ldxr itself
    assert reason("k_excl_loop+12") == "EXCLUSIVE_WINDOW"
    assert reason("k_excl_loop+16") == "PROHIBITED_INSN"  # stxr
    assert reason("k_excl_loop+20") is None  # after the store
    assert reason("k_ldar_window+12") == "EXCLUSIVE_WINDOW"  # ldar matches load_ex
    assert reason("k_ldar_window+20") is None  # stlr matches store_ex
    # >= 128 bytes into the symbol the scan covers 32 instructions: the ldxr at +8 is 32
    # instructions before +136, 33 before +140
    assert reason("k_far_window+136") == "EXCLUSIVE_WINDOW"
    assert reason("k_far_window+140") is None
    # < 128 bytes in, the scan stops at the symbol start
    assert reason("k_after_ldxr+8") is None


def test_exception_table(img: Image) -> None:
    v = check(img, "k_extable+8")
    assert (v.ok, v.reason.value, v.errno) == (False, "EXTABLE", "EINVAL")
    assert check(img, "k_extable+12").ok


def test_ftrace_site_alignment_and_entry(img: Image) -> None:
    v = check(img, "k_add+4")  # ftrace_call_adjust: record + 4, and no KPROBES_ON_FTRACE
    assert (v.ok, v.reason.value, v.errno) == (False, "FTRACE_SITE", "EINVAL")
    v = check(img, "k_add")
    assert v.ok and v.method.value == STEP and v.on_func_entry
    v = check(img, "k_add+2")
    assert (v.ok, v.reason.value, v.errno) == (False, "MISALIGNED", "EINVAL")
    assert check(img, "r k_add").ok
    assert check(img, "r k_add+8").errno == "EINVAL"


@pytest.mark.parametrize("name,call_ops", [("vmlinux-6.1", False), ("vmlinux-6.12", False),
                                            ("vmlinux-6.12-callops", True)])
def test_ftrace_call_adjust(name: str, call_ops: bool) -> None:
    """The site is the NOP that becomes `BL`: record+4; with CALL_OPS (6.12) record+8, +4 past a
    BTI C, +4 (the first NOP becomes `MOV X9, LR`)."""
    image = Image.open(str(DATA / name))
    assert image.backend._call_ops(image) is call_ops
    for fn, site in (("k_add", 4), ("k_bti_entry", 8)):
        base = image.kallsyms.lookup(fn)
        sites = image.tables.ftrace_sites_in(base, base + 16)
        assert sites == [base + site]
        v = check(image, f"{fn}+{site}")
        assert (v.ok, v.reason.value, v.errno) == (False, "FTRACE_SITE", "EINVAL")
        assert check(image, f"{fn}+{site - 4}").ok


@pytest.mark.parametrize("fn,v61,v612", [
    ("a_entry", "BLACKLIST_AREA", "BLACKLIST_AREA"),
    ("a_irqentry", "BLACKLIST_AREA", "BLACKLIST_AREA"),
    ("a_idmap", "BLACKLIST_AREA", None),  # 6.12 no longer adds .idmap.text
    ("a_hyp", "BLACKLIST_AREA", "BLACKLIST_AREA"),
    ("a_hyp_idmap", "BLACKLIST_AREA", "BLACKLIST_AREA"),
    ("a_kprobes", "BLACKLIST_AREA", "BLACKLIST_AREA"),
    ("a_noinstr", "BLACKLIST_AREA", "BLACKLIST_AREA"),
    ("a_nokprobe", "BLACKLIST_NOKPROBE", "BLACKLIST_NOKPROBE"),
    ("a_nokprobe.part.0", "BLACKLIST_SUFFIX", "BLACKLIST_SUFFIX"),
    ("a_jump_label", "JUMP_LABEL", "JUMP_LABEL"),
    ("a_bug", "BUG_SITE", "BUG_SITE"),
])
def test_reserved_text(img: Image, fn: str, v61: str | None, v612: str | None) -> None:
    want = v61 if img.version.rules == "6.1" else v612
    v = check(img, f"{fn}+8")
    assert (None if v.ok else v.reason.value) == want, v.to_json()


def test_version_rules_and_events_layer(img61: Image, img612: Image) -> None:
    assert (img61.version.rules, img612.version.rules) == ("6.1", "6.12")
    assert check(img61, "dup_fn").errno == "EADDRNOTAVAIL"
    assert check(img612, "dup_fn").errno == "EINVAL"
    assert check(img61, "a_notrace").reason.value == "NOTRACE"
    assert check(img61, "k_add").rules == "6.1"


def test_lse_alternatives_are_applied(img: Image) -> None:
    """An LL/SC loop under ARM64_LSE_ATOMIC_INSN: judged as patched (stadd; nop x3) when the CPU
    has LSE atomics (the default assumption), as in the file when it has not."""
    from kpatch_core.config import KernelConfig
    assert img.backend.alternatives(img).lse_cap(img) == 26
    assert [_outcome(check(img, f"k_lse_alt+{o}")) for o in (8, 12, 16, 20)] == [STEP] * 4
    assert check(img, "k_lse_alt+8").insn == bytes.fromhex("1f0022b8")  # stadd w2, [x0]
    plain = Image.open(img.path)
    plain.__dict__["config"] = KernelConfig.for_image(plain, None, {"RUNTIME_LSE_ATOMICS": False})
    got = [check(plain, f"k_lse_alt+{o}") for o in (8, 12, 16, 20)]
    assert [None if v.ok else v.reason.value for v in got] == \
        ["PROHIBITED_INSN", "EXCLUSIVE_WINDOW", "PROHIBITED_INSN", None]
    assert got[3].method.value == SIM


def test_pointer_tables_come_from_rela_dyn(img61: Image) -> None:
    """The image is linked --no-apply-dynamic-relocs, like the real arm64 vmlinux."""
    s, e = img61.symtab.value("__start_mcount_loc"), img61.symtab.value("__stop_mcount_loc")
    assert not img61.read_words(s, e, "u8").any()
    assert img61.kallsyms.lookup("k_add") + 4 in img61.tables.ftrace_sites.tolist()
