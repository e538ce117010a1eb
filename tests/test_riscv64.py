"""riscv64 backend against the small images of testdata/riscv64 (rebuilt by its build.sh).

Each class of riscv_probe_decode_insn has one function ``k_<class>`` whose instruction under test
sits at +8 (after the four c.nop of the patchable entry).  The expected outcomes are written from
arch/riscv/kernel/probes/decode-insn.c of 6.1 and 6.12, independently of the backend's tables, so
moving any class to another outcome fails a test.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from kpatch_core.image import Image
from kpatch_core.probe import check

from kpatch_arch import riscv64

from conftest import versioned_image_fixtures

DATA = pathlib.Path(__file__).resolve().parent.parent / "testdata" / "riscv64"
SIM, STEP, REJ = "simulate", "singlestep", "reject"


img, img61, img612 = versioned_image_fixtures("riscv64")


# class -> (length, 6.1 outcome, 6.12 outcome); the probed instruction is k_<class>+8
CLASSES: dict[str, tuple[int, str, str]] = {
    # system (opcode 0x73) and fence (0x0f): rejected by both
    "ecall": (4, REJ, REJ), "ebreak": (4, REJ, REJ), "csrr": (4, REJ, REJ),
    "sret": (4, REJ, REJ), "wfi": (4, REJ, REJ), "sfence_vma": (4, REJ, REJ),
    "fence": (4, REJ, REJ), "fence_i": (4, REJ, REJ), "pause": (4, REJ, REJ),
    "c_ebreak": (2, REJ, REJ),
    # compressed control transfers: 6.1 rejects, 6.12 simulates
    "c_j": (2, REJ, SIM), "c_jr": (2, REJ, SIM), "c_jalr": (2, REJ, SIM),
    "c_beqz": (2, REJ, SIM), "c_bnez": (2, REJ, SIM),
    "c_addiw": (2, REJ, STEP),  # 6.1's c_jal mask matches RV64 c.addiw; 6.12 has no c_jal on RV64
    "c_jr_x0": (2, REJ, STEP),  # 6.12 wants rs1 != 0
    # simulated by both
    "jal": (4, SIM, SIM), "jalr": (4, SIM, SIM), "auipc": (4, SIM, SIM),
    "beq": (4, SIM, SIM), "bne": (4, SIM, SIM), "blt": (4, SIM, SIM), "bge": (4, SIM, SIM),
    "bltu": (4, SIM, SIM), "bgeu": (4, SIM, SIM),
    # everything else is single-stepped from the slot
    "add": (4, STEP, STEP), "ld": (4, STEP, STEP), "sd": (4, STEP, STEP),
    "lr_w": (4, STEP, STEP), "sc_w": (4, STEP, STEP), "amoadd": (4, STEP, STEP),
    "fld": (4, STEP, STEP), "sh1add": (4, STEP, STEP), "jalr_f3": (4, STEP, STEP),
    "c_addi": (2, STEP, STEP), "c_mv": (2, STEP, STEP), "c_ld": (2, STEP, STEP),
    "c_li": (2, STEP, STEP), "c_nop": (2, STEP, STEP),
}


def _outcome(v) -> str:
    if v.ok:
        return v.method.value
    assert v.reason.value == "PROHIBITED_INSN", v.to_json()
    assert v.errno == "EINVAL"
    return REJ


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_decode_class(img: Image, cls: str) -> None:
    length, v61, v612 = CLASSES[cls]
    v = check(img, f"k_{cls}+8")
    assert _outcome(v) == (v61 if img.version.rules == "6.1" else v612), v.to_json()
    if v.ok:
        assert len(v.insn) == length
        assert v.insn == img.read(v.address, length)


def test_every_table_row_is_exercised() -> None:
    for rules in ("6.1", "6.12"):
        image = Image.open(str(DATA / f"vmlinux-{rules}"))
        hit = set()
        for cls in CLASSES:
            addr = image.kallsyms.lookup(f"k_{cls}") + 8
            hit.add(riscv64.decode_word(int.from_bytes(image.read(addr, 4), "little"),
                                        riscv64.decode_table(image.features)).name)
        names = {r.name for r in riscv64.decode_table(image.features)} | {"other"}
        if rules == "6.1":  # 6.1's c_jalr mask (rs1 not checked) already takes c.ebreak
            assert riscv64.decode_word(0x9002, riscv64.decode_table(image.features)).name == "c_jalr"
            names.discard("c_ebreak")
        assert names == hit


def test_lengths_breakpoints_and_slot() -> None:
    b = riscv64.Riscv64Backend()
    halves = (0x0001, 0x8082, 0x9002, 0x0013, 0x0533)
    assert [riscv64.insn_length(h) for h in halves] == [2, 2, 2, 4, 4]
    assert b.breakpoint == bytes.fromhex("73001000")  # ebreak
    assert b.breakpoint_16 == bytes.fromhex("0290")  # c.ebreak
    assert b.breakpoint_for(bytes.fromhex("3305b500")) == b.breakpoint  # add: 4 bytes
    assert b.breakpoint_for(bytes.fromhex("0505")) == b.breakpoint_16  # c.addi: 2 bytes
    assert b.single_step_breakpoint == bytes.fromhex("73001000")
    assert b.slot(bytes.fromhex("0505aaaa")) == bytes.fromhex("050573001000")
    assert b.slot(bytes.fromhex("3305b500")) == bytes.fromhex("3305b50073001000")
    assert b.relative_reloc_type == 3 and b.insn_align == 2


def test_pt_regs_and_names(img61: Image, img612: Image) -> None:
    b = riscv64.Riscv64Backend()
    assert b.pt_regs_size == 288 and len(b.pt_regs) == 36
    assert {n: b.register(n).offset for n in ("epc", "ra", "sp", "a0", "a7", "s2", "t6",
                                              "status", "orig_a0")} == \
        {"epc": 0, "ra": 8, "sp": 16, "a0": 80, "a7": 136, "s2": 144, "t6": 248,
         "status": 256, "orig_a0": 280}
    assert b.register("pc") is None and b.register("x1") is None and b.register("zero") is None
    assert b.arg_regs == tuple(f"a{n}" for n in range(8))
    assert (b.retval_reg, b.stack_reg) == ("a0", "sp")
    assert b.syscall_prefix_for(img612.features) == "__riscv_sys_"
    assert b.syscall_prefix_for(img61.features) == "sys_"
    assert b.kprobes_on_ftrace(img61.features) and not b.kprobes_on_ftrace(img612.features)


def test_decode_words_matches_decode_word() -> None:
    rng = np.random.default_rng(2)
    words = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    words[:8000] &= 0xFFFF0000 | 0xF07F | 0x0F80  # many compressed C2/C1 encodings
    for table in riscv64.DECODE_TABLES.values():
        idx = riscv64.decode_words(words, table)
        for w, i in zip(words[::5].tolist(), idx[::5].tolist()):
            want = riscv64.decode_word(w, table)
            assert (table[i] if i >= 0 else riscv64.OTHER) is want


def test_insn_starts() -> None:
    code = bytes.fromhex("0505" "3305b500" "2a85" "17060000")
    assert riscv64.insn_starts(code) == [0, 2, 6, 8]


def _v(image: Image, target: str) -> tuple:
    v = check(image, target)
    return (v.ok, v.method.value if v.ok and v.method else None, v.errno)


def test_function_entry_and_ftrace(img61: Image, img612: Image) -> None:
    # 6.1: KPROBES_ON_FTRACE -> ftrace-based; 6.12: no KPROBES_ON_FTRACE -> EINVAL at SYM+0
    assert _v(img61, "k_add") == (True, "ftrace", None)
    assert _v(img61, "r k_add") == (True, "ftrace", None)
    assert check(img612, "k_add").reason.value == "FTRACE_SITE"
    assert _v(img612, "k_add") == (False, None, "EINVAL")
    assert _v(img612, "r k_add") == (False, None, "EINVAL")
    for image in (img61, img612):
        # at runtime the entry is two 4-byte nops, not four c.nop
        assert _v(image, "k_add+2") == (False, None, "EILSEQ")
        assert _v(image, "k_add+4") == (True, "singlestep", None)
        assert _v(image, "k_add+6") == (False, None, "EILSEQ")


def test_boundaries(img: Image) -> None:
    assert _v(img, "k_mixed+8") == (True, "singlestep", None)  # c.addi
    assert _v(img, "k_mixed+10") == (True, "singlestep", None)  # add (4 bytes)
    assert _v(img, "k_mixed+12") == (False, None, "EILSEQ")  # inside it
    assert _v(img, "k_mixed+14") == (True, "singlestep", None)  # c.mv
    assert _v(img, "k_mixed+16") == (True, "simulate", None)  # auipc
    assert _v(img, "k_mixed+18") == (False, None, "EILSEQ")
    v = check(img, "k_add+9")  # odd: -EILSEQ from arch_prepare_kprobe
    assert (v.ok, v.errno) == (False, "EILSEQ")
    assert v.message == "Probe point is not an instruction boundary"


def test_no_extable_check_on_riscv(img: Image) -> None:
    assert img.tables.has_extable(img.kallsyms.lookup("k_extable") + 8)
    assert _v(img, "k_extable+8") == (True, "singlestep", None)


@pytest.mark.parametrize("fn,want", [
    ("a_irqentry", "BLACKLIST_AREA"),
    ("a_entry", None),  # riscv does not blacklist .entry.text
    ("a_kprobes", "BLACKLIST_AREA"),
    ("a_noinstr", "BLACKLIST_AREA"),
    ("a_nokprobe", "BLACKLIST_NOKPROBE"),
    ("a_jump_label", "JUMP_LABEL"),
    ("a_bug", "BUG_SITE"),
])
def test_reserved_text(img: Image, fn: str, want: str | None) -> None:
    v = check(img, f"{fn}+8")
    assert (None if v.ok else v.reason.value) == want, v.to_json()


def test_alternatives(img61: Image, img612: Image) -> None:
    """6.12 judges text after riscv_cpufeature_patch_func: the assumed CPU has Zbb, not Zicbom,
    and errata entries (vendor_id != 0) are not applied; the 6.1 table layout is not read."""
    from kpatch_core.config import KernelConfig
    assert _v(img612, "k_alt_zbb+8") == (True, "singlestep", None)  # j -> nop
    assert _v(img612, "k_alt_zicbom+8") == (True, "singlestep", None)
    assert _v(img612, "k_alt_errata+8") == (True, "singlestep", None)
    assert _v(img61, "k_alt_zbb+8") == (True, "simulate", None)
    other = Image.open(img612.path)
    other.__dict__["config"] = KernelConfig.for_image(
        other, None, {"RUNTIME_RISCV_ZBB": False, "RUNTIME_RISCV_ZICBOM": True})
    assert _v(other, "k_alt_zbb+8") == (True, "simulate", None)
    v = check(other, "k_alt_zicbom+8")  # cbo.clean is MISC-MEM: the fence class
    assert (v.ok, v.reason.value) == (False, "PROHIBITED_INSN")


def test_version_rules_and_events_layer(img61: Image, img612: Image) -> None:
    assert (img61.version.rules, img612.version.rules) == ("6.1", "6.12")
    assert check(img61, "dup_fn").errno == "EADDRNOTAVAIL"
    assert check(img612, "dup_fn").errno == "EINVAL"
    assert check(img612, "a_notrace").reason.value == "NOTRACE"


def test_mnemonics_are_details_only() -> None:
    b = riscv64.Riscv64Backend()
    assert b.mnemonic(bytes.fromhex("0505"), 0).startswith("c.addi")
    assert b.mnemonic(bytes.fromhex("3325b520"), 0)  # sh1add: capstone 5 lacks Zba, still text
