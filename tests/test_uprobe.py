"""uprobes: targets, the user ELF view, USDT notes, the per-arch rules, XOL slots, the CLI,
and probed runs of real compiled code (testdata/uprobe, rebuilt by testdata/uprobe/build.sh)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile

from kpatch_core.errors import InputError, UsageError
from kpatch_core.registry import backend_named
from kpatch_core.uprobe.elf import UserElf
from kpatch_core.uprobe.executor import UprobeExecutor, call_function, load_elf
from kpatch_core.uprobe.probe import (
    check_offset,
    check_uprobe,
    features_for,
    instruction_starts,
    uprobe_support,
)
from kpatch_core.uprobe.target import kstrtoul, parse_uprobe_target
from kpatch_core.uprobe.usdt import usdt_probes
from kpatch_core.uprobe.verdict import UMethod, UReason, URefusal, WarningKind

ROOT = os.path.join(os.path.dirname(__file__), "..", "testdata", "uprobe")
DEBUG = os.path.join(ROOT, "debug")
ARCHES = ("x86_64", "arm64", "riscv64", "s390x", "ppc64le")
FILES = ("probed", "probed-pie", "libprobed.so")


def tpath(arch: str, name: str) -> str:
    return os.path.join(ROOT, arch, name)


def open_elf(arch: str, name: str = "probed") -> UserElf:
    return UserElf.open(tpath(arch, name), debug_roots=[DEBUG])


# --- targets ----------------------------------------------------------------------------------
def test_uprobe_events_grammar() -> None:
    t = parse_uprobe_target("p:grp/ev /bin/ls:0x4a0%return(0x1234) arg1=%di")
    assert (t.path, t.kind, t.offset, t.ref_ctr_offset, t.group, t.event, t.args) == \
        ("/bin/ls", "r", 0x4A0, 0x1234, "grp", "ev", ("arg1=%di",))
    t = parse_uprobe_target("r /a/b:c:010")  # strrchr(':'): the path may hold ':'; octal
    assert (t.path, t.kind, t.offset) == ("/a/b:c", "r", 8)
    for bad in ("p /bin/ls:0x4a0(0x1234)%return",  # rctr_end[1] != '\\0': BAD_REFCNT_SUFFIX
                "p /bin/ls:main", "p:g/e /bin/ls:0x10%ret", "p /bin/ls:0x10(0x4",
                "p /bin/ls:0x10(0x4)x", "p /bin/ls:0x1g"):
        with pytest.raises(UsageError):
            parse_uprobe_target(bad)


def test_other_syntaxes() -> None:
    t = parse_uprobe_target("uretprobe:/bin/bash:readline+4")
    assert (t.kind, t.path, t.symbol, t.sym_offset) == ("r", "/bin/bash", "readline", 4)
    t = parse_uprobe_target("uprobe:/bin/bash:0x4a0")  # bpftrace: a virtual address
    assert (t.vaddr, t.offset) == (0x4A0, None)
    t = parse_uprobe_target("/lib/libc.so.6:0x98930")  # a file offset
    assert (t.offset, t.vaddr) == (0x98930, None)
    assert parse_uprobe_target("usdt:/x/y:prov:name").usdt == ("prov", "name")
    assert parse_uprobe_target("malloc+0x10", "/lib/libc.so.6").sym_offset == 16
    assert kstrtoul("0x10") == 16 and kstrtoul("010") == 8 and kstrtoul("10") == 10
    with pytest.raises(UsageError):
        parse_uprobe_target("malloc")  # no path


# --- the ELF view -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", FILES)
def test_symbol_offsets_match_sections(arch: str, name: str) -> None:
    """Offsets from the program headers equal those from the section headers
    (``st_value - sh_addr + sh_offset``, libbpf's way) for every function."""
    elf = open_elf(arch, name)
    assert elf.backend.name == arch
    with open(tpath(arch, name), "rb") as f:
        ef = ELFFile(f)
        text = ef.get_section_by_name(".text")
        assert elf.functions
        for s in elf.functions:
            assert text["sh_addr"] <= s.vaddr < text["sh_addr"] + text["sh_size"]
            assert elf.vaddr_to_offset(s.vaddr) == s.vaddr - text["sh_addr"] + text["sh_offset"]
            assert elf.offset_to_vaddr(elf.vaddr_to_offset(s.vaddr)) == s.vaddr
    assert elf.pie == (name != "probed")


@pytest.mark.parametrize("arch", ARCHES)
def test_debug_file_by_build_id(arch: str) -> None:
    """The stripped library's hidden ``counter`` is known only from the debug file."""
    with_debug = open_elf(arch, "libprobed.so")
    without = UserElf.open(tpath(arch, "libprobed.so"), debug_roots=[])
    bid = with_debug.build_id
    assert bid and with_debug.debug_path.endswith(f"{bid[:2]}/{bid[2:]}.debug")
    assert [s.table for s in with_debug.lookup("counter")] == ["debug:.symtab"]
    assert without.lookup("counter") == [] and without.lookup("branchy")


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", FILES)
def test_usdt_note_and_semaphore(arch: str, name: str) -> None:
    elf = open_elf(arch, name)
    (p,) = usdt_probes(elf)
    assert (p.provider, p.name) == ("demo", "tick")
    f = elf.function_at(p.vaddr)
    assert f is not None and f.name == "with_usdt"
    assert p.vaddr in instruction_starts(elf, f)[0]  # the note points at the probe's nop
    sema = elf.lookup("demo_tick_semaphore")
    if sema:  # .symtab present: the note's semaphore is that object
        assert sema[0].vaddr == p.semaphore
    assert p.semaphore_offset is not None and p.semaphore_offset % 2 == 0
    with open(tpath(arch, name), "rb") as fh:
        probes = ELFFile(fh).get_section_by_name(".probes")
        assert p.semaphore_offset == p.semaphore - probes["sh_addr"] + probes["sh_offset"]
    v = check_uprobe(elf, f"usdt:{elf.path}:demo:tick")
    assert v.ok and v.offset == p.offset and v.ref_ctr_offset == p.semaphore_offset


def test_bad_inputs() -> None:
    with pytest.raises(InputError):
        UserElf.open("/nonexistent/file")
    with pytest.raises(InputError):
        UserElf.open(os.path.join(ROOT, "src", "probed.c"))


# --- the rules, per architecture ----------------------------------------------------------------
# arch -> [(errno or None, reason or method)] for each instruction of `special`, decoding from its
# start: the refusals the kernel's arch_uprobe_analyze_insn / prepare_uprobe give them (6.12)
SPECIAL = {
    "x86_64": [(None, "emulate"), (None, "emulate"), (None, "xol"), (None, "xol"),
               ("ENOTSUPP", "BAD_PREFIX"), ("ENOTSUPP", "BAD_PREFIX"), ("ENOTSUPP", "TRAP_INSN"),
               ("ENOTSUPP", "BRANCH_OPSIZE"), (None, "xol"), (None, "xol"), (None, "xol")],
    "arm64": [(None, "xol"), (None, "simulate"), (None, "xol"), ("EINVAL", "REJECTED"),
              ("EINVAL", "REJECTED"), ("EINVAL", "REJECTED"), (None, "xol"), (None, "simulate")],
    "riscv64": [(None, "xol"), (None, "simulate"), (None, "xol"), ("ENOTSUPP", "TRAP_INSN"),
                ("ENOTSUPP", "TRAP_INSN"), ("EINVAL", "REJECTED"), ("EINVAL", "REJECTED"),
                (None, "xol"), (None, "simulate")],
    "s390x": [(None, "xol"), (None, "emulate"), (None, "emulate"), ("EINVAL", "REJECTED"),
              ("ENOTSUPP", "TRAP_INSN"), (None, "xol"), (None, "xol"), (None, "xol")],
    "ppc64le": [(None, "emulate"), (None, "emulate"), ("ENOTSUPP", "TRAP_INSN"),
                ("ENOTSUPP", "CANNOT_SINGLE_STEP"), ("ENOTSUPP", "CANNOT_SINGLE_STEP"),
                (None, "emulate"), (None, "emulate"), (None, "emulate")],
}


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", FILES)
def test_special_function_verdicts(arch: str, name: str) -> None:
    elf = open_elf(arch, name)
    fs = features_for(elf.backend, (6, 12))
    (f,) = [s for s in elf.functions if s.name == "special"]
    starts, stop = instruction_starts(elf, f)
    assert stop is None
    got = []
    for va in starts:
        v = check_offset(elf, elf.vaddr_to_offset(va), fs)
        got.append((v.errno, v.method.value if v.ok else v.reason.value))
        assert not v.warnings, v.warnings
    assert got == SPECIAL[arch]


def test_riscv_ebreak_by_kernel_version() -> None:
    """6.1: a 32-bit ebreak is not is_swbp_insn, the decoder rejects it (-EINVAL);
    6.12: is_trap_insn refuses it (-ENOTSUPP)."""
    elf = open_elf("riscv64")
    (f,) = [s for s in elf.functions if s.name == "special"]
    ebreak = instruction_starts(elf, f)[0][3]
    off = elf.vaddr_to_offset(ebreak)
    assert elf.read(off, 4) == bytes.fromhex("73001000")
    v61 = check_offset(elf, off, features_for(elf.backend, (6, 1)))
    v612 = check_offset(elf, off, features_for(elf.backend, (6, 12)))
    assert (v61.errno, v61.reason) == ("EINVAL", UReason.REJECTED)
    assert (v612.errno, v612.reason) == ("ENOTSUPP", UReason.TRAP_INSN)


def test_register_checks_and_boundary_warning() -> None:
    elf = open_elf("x86_64")
    size = elf.size
    assert check_uprobe(elf, f"{elf.path}:{size + 1:#x}").reason == UReason.OFFSET_BEYOND_FILE
    # the file ends inside the last segment's page: mapped, and copy_insn reads nothing
    assert elf.mapped_offset(size, 4096)
    assert check_uprobe(elf, f"{elf.path}:{size:#x}").errno == "EIO"
    assert check_uprobe(elf, f"p {elf.path}:0x1000(0x3)").reason == UReason.REF_CTR_MISALIGNED
    v = check_uprobe(elf, "branchy+1")
    assert v.ok and [w.kind for w in v.warnings] == [WarningKind.NOT_BOUNDARY]
    assert check_uprobe(elf, "nosuch").errno == "ENOENT"
    a64 = open_elf("arm64")
    off = a64.vaddr_to_offset(a64.lookup("branchy")[0].vaddr)
    assert check_uprobe(a64, f"{a64.path}:{off + 2:#x}").reason == UReason.OFFSET_MISALIGNED
    rv = open_elf("riscv64")  # c.ebreak: 2-byte alignment is enough for the kernel
    off = rv.vaddr_to_offset(rv.lookup("branchy")[0].vaddr)
    v = check_uprobe(rv, f"{rv.path}:{off + 2:#x}")
    assert v.reason != UReason.OFFSET_MISALIGNED


def test_x86_riprel_slot() -> None:
    """riprel_analyze: ``00 reg 101`` becomes ``10 reg scratch`` (si unless reg/vvvv is si)."""
    b = backend_named("x86_64")
    fs = features_for(b)
    mod = uprobe_support(b)
    a = mod.analyze_insn(b, bytes.fromhex("488b0510000000") + bytes(9), 0x401000, fs)
    assert a.ixol[:7] == bytes.fromhex("488b8610000000") and a.scratch == "si"
    a = mod.analyze_insn(b, bytes.fromhex("48893510000000") + bytes(9), 0x401000, fs)  # mov [rip],rsi
    assert a.ixol[:7] == bytes.fromhex("4889b710000000") and a.scratch == "di"
    a = mod.analyze_insn(b, bytes.fromhex("4c8b0510000000") + bytes(9), 0x401000, fs)  # r8: REX.B clear
    assert a.ixol[:3] == bytes.fromhex("4c8b86")
    assert mod.pre_xol(a, 0x401000, 0x7000, {}) == {"si": 0x401007}
    a = mod.analyze_insn(b, bytes.fromhex("e810000000") + bytes(11), 0x401000, fs)
    assert a.method == UMethod.EMULATE and a.ixol[:5] == bytes.fromhex("e800000000")


def test_real_libc_if_present() -> None:
    path = "/lib/x86_64-linux-gnu/libc.so.6"
    if not os.path.exists(path):
        pytest.skip(f"{path} missing (apt-get install libc6)")
    elf = UserElf.open(path)
    v = check_uprobe(elf, "malloc")
    assert v.ok and v.offset == elf.vaddr_to_offset(elf.lookup("malloc")[0].vaddr)


# --- probed runs of real code -------------------------------------------------------------------
@pytest.mark.parametrize("arch", ("x86_64", "arm64", "riscv64", "s390x"))
def test_probed_run_of_compiled_code(arch: str) -> None:
    """Every accepted instruction of the compiled functions probed: the calls return what they
    return unprobed, and the probes fire."""
    elf = open_elf(arch)
    fs = features_for(elf.backend)
    mod = uprobe_support(elf.backend)
    (f,) = [s for s in elf.functions if s.name == "with_usdt"]
    results, hits = [], 0
    for probed in (False, True):
        ex = UprobeExecutor(elf.backend, fs)
        load_elf(ex, elf)
        if probed:
            for g in elf.functions:
                if g.name in ("special", "_start"):
                    continue
                for va in instruction_starts(elf, g)[0]:
                    a = mod.analyze_insn(elf.backend, elf.read(elf.vaddr_to_offset(va),
                                                               mod.MAX_UINSN_BYTES), va, fs)
                    if not isinstance(a, URefusal):
                        ex.install(va, a)
        results.append([call_function(ex, f.vaddr, [x], 0x7FF00000, 0x7FFF0000)
                        for x in range(20)])
        hits = sum(u.hits for u in ex.uprobes.values())
    assert all(o.reason == "stop" for o, _ in results[0])
    assert [r for _, r in results[0]] == [r for _, r in results[1]]
    assert [o.reason for o, _ in results[1]] == ["stop"] * 20 and hits > 200


# --- CLI ------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kpatch_core.cli", "uprobe", *args],
                          check=False, capture_output=True, text=True, timeout=120)


def test_cli() -> None:
    p = tpath("x86_64", "probed")
    r = _cli(p)
    assert r.returncode == 0 and "6 functions" in r.stdout and "demo:tick" in r.stdout
    r = _cli(p, "special", "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0 and [x["errno"] for x in rows].count("ENOTSUPP") == 4
    r = _cli(p, "branchy+1", "--json")
    (row,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert row["ok"] and row["warnings"][0]["kind"] == "NOT_BOUNDARY"
    r = _cli(p, "nosuch")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = _cli("/etc/hostname")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    r = _cli(p, "p:g/e " + p + ":zz")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    r = _cli(tpath("arm64", "libprobed.so"), "--debug-dir", DEBUG, "special")
    assert r.returncode == 0 and "REJECTED" in r.stdout
