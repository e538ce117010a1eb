"""s390x backend: lengths, the kernel's opcode table per version, prohibited opcodes, fixups,
relative-long slot fixup, and verdicts on the committed test images (testdata/s390x/)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kpatch_arch.s390x import (
    Fixup, S390xBackend, find_insn, fixup_type, insn_length, is_relative_long, prohibited,
    relative_long_fixup)
from kpatch_core.image import Image
from kpatch_core.probe import check
from kpatch_core.verdict import Method, Reason

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "testdata" / "s390x"
KSRC = Path.home() / ".cache" / "kpatch-ksrc"


@pytest.fixture(scope="module")
def img() -> Image:
    return Image.open(str(DATA / "vmlinux"))


@pytest.fixture(scope="module")
def img612() -> Image:
    return Image.open(str(DATA / "vmlinux-6.12"))


def at(image: Image, label: str):
    """The verdict for a probe at the `.L` label ``label`` (addressed by address)."""
    addr = image.symtab.value(label)
    assert addr is not None, label
    return check(image, hex(addr))


# --- decoder facts ---------------------------------------------------------------------------
@pytest.mark.parametrize("first,length", [(0x00, 2), (0x07, 2), (0x3F, 2), (0x40, 4), (0x47, 4),
                                          (0xB9, 4), (0xBF, 4), (0xC0, 6), (0xE3, 6), (0xFF, 6)])
def test_insn_length_from_the_two_top_bits(first: int, length: int) -> None:
    assert insn_length(first) == length


def test_opcode_tables_differ_between_6_1_and_6_12() -> None:
    clzg = bytes.fromhex("b9680012")
    assert find_insn(clzg, "6.1") is None
    assert find_insn(clzg, "6.12") == "clzg"
    assert find_insn(bytes.fromhex("b93c0012"), "6.1") == "ppno"
    assert find_insn(bytes.fromhex("b93c0012"), "6.12") == "prno"
    for rules in ("6.1", "6.12"):
        assert find_insn(b"\x00\x00", rules) == "illegal"
        assert find_insn(b"\x00\x02", rules) == "brkpt"
        assert find_insn(b"\x00\x03", rules) is None
        assert find_insn(bytes.fromhex("a7f40000"), rules) == "brc"  # RI: nibble in byte 1
        assert find_insn(bytes.fromhex("e31020000004"), rules) == "lg"  # RXY: byte 5
        assert find_insn(b"\x07\xfe", rules) == "bcr"  # 1-byte opcode: default group
        assert find_insn(bytes.fromhex("b9ff0012"), rules) is None


@pytest.mark.parametrize("hexcode,name", [
    ("44102000", "ex"), ("c61000000000", "exrl"), ("83120044", "diag"), ("ac00f000", "stnsm"),
    ("ad00f000", "stosm"), ("0b12", "bsm"), ("0c12", "bassm"), ("b98d0012", "epsw"),
    ("b2400012", "bakr"), ("b2180000", "pc"), ("b2280012", "pt"), ("b25a0012", "bsa"),
    ("b2580012", "bsg"), ("0101", "pr"), ("e56000000000", "tbegin"), ("e56100000000", "tbeginc"),
    ("b2f80000", "tend")])
def test_probe_is_prohibited_opcode(hexcode: str, name: str) -> None:
    assert prohibited(bytes.fromhex(hexcode), "6.1") == name


def test_allowed_and_unknown_opcodes() -> None:
    assert prohibited(bytes.fromhex("b9040012"), "6.1") is None  # lgr
    assert prohibited(bytes.fromhex("c01000000000"), "6.1") is None  # larl
    assert "unknown" in prohibited(bytes.fromhex("b9680012"), "6.1")
    assert prohibited(bytes.fromhex("b9680012"), "6.12") is None


@pytest.mark.parametrize("hexcode,fix", [
    ("1a12", Fixup.PSW_NORMAL),  # ar
    ("a7740002", Fixup.PSW_NORMAL),  # brc: relative target recomputed by the PSW fixup
    ("0de1", Fixup.RETURN_REGISTER),  # basr
    ("0de0", Fixup.RETURN_REGISTER | Fixup.BRANCH_NOT_TAKEN),  # basr r14,r0
    ("078e", Fixup.BRANCH_NOT_TAKEN),  # bcr
    ("47800000", Fixup.BRANCH_NOT_TAKEN),  # bc
    ("4de00000", Fixup.RETURN_REGISTER),  # bas
    ("82000000", Fixup.NOT_REQUIRED),  # lpsw
    ("b2b20000", Fixup.NOT_REQUIRED),  # lpswe
    ("a7e50000", Fixup.PSW_NORMAL | Fixup.RETURN_REGISTER),  # bras
    ("c0e500000000", Fixup.PSW_NORMAL | Fixup.RETURN_REGISTER),  # brasl
    ("eb1200000044", Fixup.BRANCH_NOT_TAKEN),  # bxhg
    ("e31000000046", Fixup.BRANCH_NOT_TAKEN),  # bctg
    ("ec12e00080f6", Fixup.BRANCH_NOT_TAKEN),  # crb
])
def test_probe_get_fixup_type(hexcode: str, fix: Fixup) -> None:
    assert fixup_type(bytes.fromhex(hexcode)) == fix


def test_cgrb_fixup_follows_the_kernels_table() -> None:
    # probes.c (6.1 and 6.12) lists 0xe6 as "cgrb" although cgrb is 0xec..e4
    assert fixup_type(bytes.fromhex("ec12e00080e4")) == Fixup.PSW_NORMAL
    assert fixup_type(bytes.fromhex("ec12e00080e6")) == Fixup.BRANCH_NOT_TAKEN


def test_relative_long_set_and_slot_fixup() -> None:
    larl = bytes.fromhex("c01000000010")  # larl %r1, .+0x20
    assert is_relative_long(larl)
    assert is_relative_long(bytes.fromhex("c43800000000"))  # lgrl
    assert is_relative_long(bytes.fromhex("c43500000000"))  # lhrl
    assert not is_relative_long(bytes.fromhex("c61000000000"))  # exrl (prohibited instead)
    assert not is_relative_long(bytes.fromhex("c0e500000000"))  # brasl: PSW fixup, no rewrite
    # target addr + 0x20 seen from a slot 0x1000 below: displacement (0x20 + 0x1000) / 2
    out = relative_long_fixup(larl, 0x101000, 0x100000)
    assert out == bytes.fromhex("c010") + (0x810).to_bytes(4, "big")
    assert relative_long_fixup(larl, 0x1_0000_0000_0000, 0x100000) is None  # beyond +-4 GiB


def test_facts() -> None:
    b = S390xBackend()
    assert b.breakpoint == b"\x00\x02" and b.insn_align == 2
    assert b.pt_regs_size == 200
    assert b.register("r2").offset == 40 and b.register("r15").offset == 144
    fields = {f.name: f.offset for f in b.pt_regs}
    assert fields["psw.mask"] == 8 and fields["psw.addr"] == 16 and fields["orig_gpr2"] == 152
    # regs_query_register_offset: "r" + kstrtoul(..., 10) < 16, nothing else
    assert b.register("r02").offset == 40 and b.register("r+2").offset == 40
    for bad in ("psw.mask", "orig_gpr2", "r16", "r", "rx", "gpr2", "%r2"):
        assert b.register(bad) is None, bad
    assert b.arg_stack_base == 20
    assert b.arg_regs == ("r2", "r3", "r4", "r5", "r6")
    assert b.syscall_prefix == "__s390x_sys_"
    assert b.blacklist_areas(None) == (("__irqentry_text_start", "__irqentry_text_end"),)


# --- verdicts on the test image --------------------------------------------------------------
def test_entry_is_ftrace_based(img: Image) -> None:
    v = check(img, "s390_plain")
    assert v.ok and v.method == Method.FTRACE and v.flags == ("FTRACE",)
    assert check(img, "r s390_plain").ok
    r = check(img, "r s390_plain+6")
    assert not r.ok and r.reason == Reason.RETPROBE_NOT_ENTRY


def test_boundaries_and_mid_instruction_einval(img: Image) -> None:
    v = at(img, ".Ls_lgr")
    assert v.ok and v.method == Method.SINGLESTEP and v.insn == bytes.fromhex("b9040012")
    lgr = img.symtab.value(".Ls_lgr")
    mid = check(img, hex(lgr + 2))
    assert not mid.ok and mid.reason == Reason.NOT_BOUNDARY
    assert mid.errno == "EINVAL"  # not EILSEQ as on x86
    assert mid.message == "Failed to register probe event"
    odd = check(img, hex(lgr + 1))
    assert not odd.ok and odd.errno == "EINVAL"
    larl = img.symtab.value(".Ls_larl")
    assert [check(img, hex(larl + k)).ok for k in (0, 2, 4)] == [True, False, False]


def test_relative_long_and_fixups_on_image(img: Image) -> None:
    v = at(img, ".Ls_larl")
    assert v.ok and "relative-long" in v.mnemonic
    assert "RETURN_REGISTER" in at(img, ".Ls_brasl").mnemonic
    assert "BRANCH_NOT_TAKEN" in at(img, ".Ls_bcr").mnemonic


def test_zero_halfword_stops_the_walk(img: Image) -> None:
    assert at(img, ".Lz_lgr").ok
    assert at(img, ".Lz_zero").ok  # 0x0000 is "illegal" in the table: known, so probeable
    after = at(img, ".Lz_after")
    assert not after.ok and after.reason == Reason.NOT_BOUNDARY and after.errno == "EINVAL"


@pytest.mark.parametrize("label", [".Lp_ex", ".Lp_exrl", ".Lp_diag", ".Lp_stnsm", ".Lp_stosm",
                                   ".Lp_bsm", ".Lp_bassm", ".Lp_epsw", ".Lp_bakr", ".Lp_pc",
                                   ".Lp_pt", ".Lp_bsa", ".Lp_bsg", ".Lp_pr", ".Lp_tbegin",
                                   ".Lp_tbeginc", ".Lp_tend"])
def test_prohibited_on_image(img: Image, label: str) -> None:
    v = at(img, label)
    assert not v.ok and v.reason == Reason.PROHIBITED_INSN and v.errno == "EINVAL"


def test_opcode_table_follows_the_version(img: Image, img612: Image) -> None:
    assert img.version.rules == "6.1" and img612.version.rules == "6.12"
    old, new = at(img, ".Ls_clzg"), at(img612, ".Ls_clzg")
    assert not old.ok and old.reason == Reason.PROHIBITED_INSN
    assert new.ok and new.method == Method.SINGLESTEP
    for image in (img, img612):
        assert not at(image, ".Ls_unknown").ok
        assert at(image, ".Ls_trap4").ok
    for image in (img, img612):
        assert "PSW_NORMAL" in at(image, ".Ls_cgrb").mnemonic


def test_blacklists_and_reserved_text(img: Image) -> None:
    assert check(img, "s390_irqentry+6").reason == Reason.BLACKLIST_AREA
    assert check(img, "s390_kprobes_text").reason == Reason.BLACKLIST_AREA
    assert check(img, "s390_nokprobe+6").reason == Reason.BLACKLIST_NOKPROBE
    assert check(img, "s390_notrace").reason == Reason.NOTRACE
    jump = img.symtab.value(".Lr_jump")
    assert [check(img, hex(jump + k)).reason for k in (0, 2, 4)] == [Reason.JUMP_LABEL] * 3
    assert at(img, ".Lr_bug").reason == Reason.BUG_SITE
    assert at(img, ".Lr_ex").ok  # s390 has no exception-table rule
    assert check(img, "__s390x_sys_kpatch_test").ok


def test_cli_on_both_images() -> None:
    for name in ("vmlinux", "vmlinux-6.12"):
        p = subprocess.run([sys.executable, "-m", "kpatch_core.cli", str(DATA / name)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "arch         s390x" in p.stdout, p.stderr
        p = subprocess.run([sys.executable, "-m", "kpatch_core.cli", "check", str(DATA / name),
                            "s390_plain+8", "--json"], capture_output=True, text=True, timeout=60)
        assert json.loads(p.stdout)["errno"] == "EINVAL"


# --- generated data and real kernels (skipped when absent) -----------------------------------
def test_opcode_module_is_what_the_generator_makes() -> None:
    trees = [KSRC / "linux-source-6.1", KSRC / "linux-source-6.12"]
    if not all((t / "arch/s390/tools/opcodes.txt").exists() for t in trees):
        pytest.skip("kernel source trees not available")
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_s390x_opcodes.py"), *map(str, trees)],
                       capture_output=True, text=True, timeout=60, check=True)
    assert p.stdout == (ROOT / "arch" / "s390x" / "opcodes.py").read_text()


def test_6_12_runs_at_the_kernel_image_base(img: Image, img612: Image) -> None:
    """From 6.10 the s390 kernel runs at vmlinux + CONFIG_KERNEL_IMAGE_BASE even with nokaslr
    (the real 6.12.107 kernel did: tests/test_real_oracle.py); addresses in and out are the
    running kernel's."""
    from elftools.elf.elffile import ELFFile

    from kpatch_arch.s390x import KERNEL_IMAGE_BASE
    from kpatch_arch.s390x.slot import MODULES_LEN, default_slot_addr
    assert img.load_offset == 0 and img612.load_offset == KERNEL_IMAGE_BASE
    with open(DATA / "vmlinux-6.12", "rb") as f:
        link = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name("s390_plain")[0]
        link_addr = link["st_value"]
    run_addr = link_addr + KERNEL_IMAGE_BASE
    assert img612.kallsyms.lookup("s390_plain") == run_addr
    assert img612.section(".text").addr >= KERNEL_IMAGE_BASE
    v = check(img612, "s390_plain")
    assert v.ok and v.address == run_addr
    assert check(img612, hex(run_addr)).address == run_addr
    # the link address is no kernel address there: trace_kprobe takes -ENOENT as "not yet"
    low = check(img612, hex(link_addr))
    assert low.ok and low.method is None and "not registered" in low.detail
    assert default_slot_addr(img612) == KERNEL_IMAGE_BASE - MODULES_LEN  # MODULES_VADDR
