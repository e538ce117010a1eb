"""Kernel modules (kpatch_core/module): the generated test module testdata/modules/kpt_test.ko
(testdata/modules/make_modules.py) against testdata/x86_64/vmlinux, and real Debian modules
when their tree is cached."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import capstone
import numpy as np
import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from conftest import X86_VMLINUX
from kpatch_core.cli import main
from kpatch_core.errors import InputError
from kpatch_core.image import Image
from kpatch_core.module import KoFile, ModuleSet, index_tree, module_file_name
from kpatch_core.module.layout import MemType
from kpatch_core.probe import check

MODDIR = Path(__file__).resolve().parent.parent / "testdata" / "modules"
KO = str(MODDIR / "kpt_test.ko")
VMLINUX = str(X86_VMLINUX)


@pytest.fixture(scope="module")
def kernel() -> Image:
    return Image.open(VMLINUX)


@pytest.fixture(scope="module")
def modset(kernel: Image) -> ModuleSet:
    ms = ModuleSet(kernel, [KO], warn=False)
    kernel.module_source = ms
    return ms


def _symbol(path: str, name: str) -> tuple[str, int]:
    """(section name, st_value) of ``name`` in the .ko, read with pyelftools."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sym = next(s for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name == name)
        return elf.get_section(sym["st_shndx"]).name, sym["st_value"]


# -- the file ---------------------------------------------------------------------------
def test_modinfo_and_compressed_forms() -> None:
    plain = KoFile.open(KO)
    assert (plain.name, plain.release, plain.depends) == ("kpt_test", "6.1.0-kpatch-test", ())
    assert plain.vermagic.startswith("6.1.0-kpatch-test SMP preempt mod_unload")
    for ext in (".xz", ".zst"):
        ko = KoFile.open(KO + ext)
        assert ko.data == plain.data and ko.name == "kpt_test"
    assert plain.build_id and len(plain.build_id) == 40


@pytest.mark.parametrize("name,words", [
    ("truncated.ko.xz", "corrupt or truncated xz module"),
    ("truncated.ko", "truncated module"),
    ("kpt_test.c", "not a kernel module (not an ELF file)"),
])
def test_bad_module_files(name: str, words: str) -> None:
    with pytest.raises(InputError) as e:
        KoFile.open(str(MODDIR / name))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_vmlinux_is_not_a_module() -> None:
    with pytest.raises(InputError, match="not ET_REL"):
        KoFile.open(VMLINUX)


def test_module_names() -> None:
    assert module_file_name("a/snd-hda-intel.ko.zst") == "snd_hda_intel"
    assert module_file_name("nf_conntrack.ko.xz") == "nf_conntrack"
    assert module_file_name("README") is None
    idx = index_tree(str(MODDIR))
    assert idx["kpt_test"].endswith("kpt_test.ko") and "truncated" in idx


# -- layout and relocation ---------------------------------------------------------------
def test_layout_sections(modset: ModuleSet) -> None:
    lm = modset.loaded("kpt_test")
    assert lm is not None
    ko, lay = lm.ko, lm.layout
    at = {ko.sections[i].name: a for i, a in lay.address_of.items()}
    text = lay.range_of(MemType.TEXT)
    # code first, in section order, each at its alignment; init text apart; not loaded: .modinfo
    assert at[".text"] == text[0] and at[".text"] < at[".kprobes.text"] < at[".exit.text"] < text[1]
    assert lay.mem_of[ko.section(".init.text").index] == MemType.INIT_TEXT
    assert lay.mem_of[ko.section("__jump_table").index] == MemType.RO_AFTER_INIT
    assert lay.mem_of[ko.section("__mcount_loc").index] == MemType.RODATA
    assert ".modinfo" not in at
    for i, a in lay.address_of.items():
        assert a % max(ko.sections[i].align, 1) == 0


def test_relocations_match_ld(modset: ModuleSet, kernel: Image, tmp_path: Path) -> None:
    """The relocated sections equal what GNU ld makes of the same object placed at the same
    addresses with the same symbol values (an independent apply_relocate_add)."""
    if shutil.which("ld") is None:
        pytest.skip("GNU ld not installed (binutils)")
    lm = modset.loaded("kpt_test")
    assert lm is not None and lm.relocated.unresolved == ()
    args = ["ld", "-o", str(tmp_path / "out"), "-e", "0", "--no-warn-rwx-segments"]
    for i, a in lm.layout.address_of.items():
        args.append(f"--section-start={lm.ko.sections[i].name}={a:#x}")
    for k, s in enumerate(x for x in lm.ko.sections if x.flags & 2 and x.index not in lm.layout.address_of):
        args.append(f"--section-start={s.name}={0x10000000 + k * 0x10000:#x}")  # not loaded
    for name in ("plain_func", "__fentry__"):
        args.append(f"--defsym={name}={kernel.symtab.value(name):#x}")
    subprocess.run(args + [KO], check=True, capture_output=True)
    with open(tmp_path / "out", "rb") as f:
        elf = ELFFile(f)
        for i in lm.layout.address_of:
            s = lm.ko.sections[i]
            if s.type == 8 or s.size == 0 or s.name.startswith(".note"):
                continue
            sec = elf.get_section_by_name(s.name)
            assert sec["sh_addr"] == lm.layout.address_of[i], s.name
            assert sec.data() == lm.relocated.sections[i], s.name


def test_call_into_the_kernel(modset: ModuleSet, kernel: Image) -> None:
    view = modset.view("kpt_test")
    assert view is not None
    start = view.kallsyms.lookup("kpt_func")
    size = view.kallsyms.containing(start).size
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    calls = [int(i.op_str, 16) for i in cs.disasm(view.read(start, size), start) if i.mnemonic == "call"]
    assert calls == [kernel.symtab.value("__fentry__"), kernel.symtab.value("plain_func")]


def test_module_image_fast_open(modset: ModuleSet, kernel: Image) -> None:
    """ModuleImage reads the ELF it wrote without pyelftools: the same attributes (names and
    values) as Image.__init__ gives the same file."""
    from kpatch_core.module.view import ModuleImage
    view = modset.view("kpt_test")
    assert view is not None
    slow = Image(view.elf_path, kernel.config_path, kernel.overrides)
    fast = ModuleImage._open_written(view.elf_path, kernel)
    want = {k: v for k, v in vars(slow).items() if k not in ("elf", "_stream", "data")}
    got = {k: v for k, v in vars(fast).items() if k not in ("kernel", "data")}
    assert set(got) == set(want)
    for k in want:
        assert got[k] is want[k] or got[k] == want[k], k
    assert fast.data[:] == slow.data[:]


def test_module_kallsyms(modset: ModuleSet) -> None:
    view = modset.view("kpt_test")
    assert view is not None
    ks = view.kallsyms
    for name in ("kpt_func", "kpt_nokprobe", "kpt_kprobes_fn", "kpt_notrace", "kpt_jl", "kpt_exit",
                 "cleanup_module", "kpt_counter"):
        assert ks.count(name) == 1, name
    for name in ("kpt_init", "init_module", "plain_func"):  # init text is freed; kernel not here
        assert ks.count(name) == 0, name
    assert sorted(n for n, _ in view.loaded.init_functions()) == ["init_module", "kpt_init"]


# -- verdicts ----------------------------------------------------------------------------
def test_module_tables(modset: ModuleSet) -> None:
    view = modset.view("kpt_test")
    assert view is not None
    t = view.tables
    ks = view.kallsyms
    ftraced = {ks.containing(int(a)).addr for a in t.ftrace_sites}
    # -pg -mfentry: every function but the notrace one; init text records are dropped
    assert ftraced == {ks.lookup(n) for n in ("kpt_func", "kpt_nokprobe", "kpt_kprobes_fn", "kpt_jl",
                                              "kpt_exit")}
    # aliases: the first in the module's symbol table names the address (find_kallsyms_symbol)
    assert ks.lookup("kpt_exit") == ks.lookup("cleanup_module")
    assert [(b.symbol, b.source) for b in t.blacklist] == [
        ("kpt_nokprobe", "NOKPROBE_SYMBOL"), ("kpt_kprobes_fn", ".kprobes.text")]
    assert len(t.jump_labels[0]) == 1


def _jump_site_offset() -> int:
    """kpt_jl's jump-label site as an offset in kpt_jl, from __jump_table's relocation."""
    with open(KO, "rb") as f:
        elf = ELFFile(f)
        rel = next(s for s in elf.iter_sections() if isinstance(s, RelocationSection)
                   and s.name == ".rela__jump_table")
        symtab = elf.get_section(rel["sh_link"])
        r = next(r for r in rel.iter_relocations() if r["r_offset"] == 0)
        sym = symtab.get_symbol(r["r_info_sym"])
        sec = elf.get_section(sym["st_shndx"]).name
        code = sym["st_value"] + r["r_addend"]  # .long 1b - . at offset 0 of the entry
    where, func = _symbol(KO, "kpt_jl")
    assert where == sec == ".text"
    return code - func


@pytest.mark.parametrize("target,ok,reason", [
    ("kpt_test:kpt_func", True, None),
    ("r kpt_test:kpt_func", True, None),
    ("kpt_test:kpt_func+1", False, "NOT_BOUNDARY"),
    ("kpt_test:kpt_nokprobe", False, "BLACKLIST_NOKPROBE"),
    ("kpt_test:kpt_kprobes_fn", False, "BLACKLIST_AREA"),
    ("kpt_test:kpt_notrace", False, "NOTRACE"),
    ("kpt_test:kpt_init", False, "NO_SYMBOL"),
    ("kpt_test:kpt_exit", True, None),
    ("kpt_test:nonesuch", False, "NO_SYMBOL"),
])
def test_module_verdicts(modset: ModuleSet, kernel: Image, target: str, ok: bool,
                         reason: str | None) -> None:
    v = check(kernel, target)
    assert v.ok is ok and (v.reason.value if v.reason else None) == reason, v
    assert not v.deferred
    if ok and target.endswith("kpt_func"):
        assert v.flags == ("FTRACE",) and v.symbol == "kpt_func+0x4"  # ENDBR, then the NOP5


def test_jump_label_in_module(modset: ModuleSet, kernel: Image) -> None:
    off = _jump_site_offset()
    v = check(kernel, f"kpt_test:kpt_jl+{off}")
    assert not v.ok and v.reason is not None and v.reason.value == "JUMP_LABEL"
    assert check(kernel, f"kpt_test:kpt_jl+{off + 1}").reason.value in ("JUMP_LABEL", "NOT_BOUNDARY")


def test_module_not_given_is_deferred() -> None:
    img = Image.open(VMLINUX)
    v = check(img, "ext4:ext4_file_open")
    j = v.to_json()
    assert j["ok"] and j["deferred"] is True and "arms it when ext4 loads" in j["why"]
    assert check(img, "plain_func").to_json()["deferred"] is False


# -- the command line --------------------------------------------------------------------
def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("form", ["", ".xz", ".zst"])
def test_cli_check_module(capsys, form: str) -> None:
    code, out, err = _run(capsys, "check", VMLINUX, "--module", KO + form, "--json",
                          "kpt_test:kpt_func", "kpt_test:kpt_nokprobe", "other:f")
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["ok"], r["reason"], r["deferred"]) for r in rows] == [
        (True, None, False), (False, "BLACKLIST_NOKPROBE", False), (True, None, True)]


def test_cli_bad_module(capsys) -> None:
    code, out, err = _run(capsys, "check", VMLINUX, "--module", str(MODDIR / "truncated.ko.xz"),
                          "kpt_test:kpt_func")
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "corrupt or truncated xz module" in err


def test_cli_mismatched_module(capsys) -> None:
    code, out, err = _run(capsys, "check", VMLINUX, "--module", str(MODDIR / "kpt_other.ko"),
                          "kpt_test:kpt_func")
    assert code == 0 and "built for 6.12.0-kpatch-test, the kernel is 6.1.0-kpatch-test" in err
    assert out.split()[1] == "ok"


def test_cli_modules_command(capsys) -> None:
    code, out, err = _run(capsys, "modules", VMLINUX, "--module", KO, "--json", "--no-cache")
    assert code == 0, err
    r = json.loads(out.splitlines()[0])
    assert r["module"] == "kpt_test" and r["functions"] >= 5 and r["init_functions"] == 2
    assert r["blacklist"] == 2 and r["unresolved"] == []


# -- real modules -------------------------------------------------------------------------
DEBIAN = Path(os.path.expanduser("~/.cache/kpatch-kernels/6.12.117+deb13-amd64"))


@pytest.fixture(scope="module")
def debian() -> ModuleSet:
    if not (DEBIAN / "modules").is_dir() or not (DEBIAN / "vmlinux").is_file():
        pytest.skip(f"Debian 6.12.117 amd64 vmlinux + modules not cached in {DEBIAN} "
                    "(fetch-debian-kernel.sh --modules 6.12.117+deb13-amd64 amd64)")
    return ModuleSet(Image.open(str(DEBIAN / "vmlinux")), tree=str(DEBIAN / "modules"), warn=False)


@pytest.mark.parametrize("mod", ["ext4", "xfs", "kvm_intel", "nf_conntrack", "e1000e"])
def test_debian_modules(debian: ModuleSet, mod: str) -> None:
    view = debian.view(mod)
    assert view is not None
    lm = view.loaded
    assert lm.relocated.unresolved == () and lm.relocated.unsupported == {}
    assert lm.relocated.overflow == {}
    # every __mcount_loc record of core text is an ftrace site at a NOP5 after boot patching
    sites = view.tables.ftrace_sites
    assert len(sites) > 100
    a = int(sites[len(sites) // 2])
    raw = view.read(a, 5)
    assert raw[0] == 0xE8  # call __fentry__ in the file ...
    assert a + 5 + int.from_bytes(raw[1:5], "little", signed=True) == \
        view.kernel.symtab.value("__fentry__")  # ... relocated to the kernel's __fentry__
    f = view.kallsyms.containing(a)
    assert f is not None
    v = check(view, f.name) if view.kallsyms.count(f.name) == 1 else None
    if v is not None:
        assert v.ok and v.flags == ("FTRACE",), v
    assert np.all(np.diff(sites.astype(np.int64)) > 0)


# -- arm64 --------------------------------------------------------------------------------
ARM64_KO = str(MODDIR / "kpt_test_arm64.ko")
ARM64_VMLINUX = str(Path(__file__).resolve().parent.parent / "testdata" / "arm64" / "vmlinux-6.12")


@pytest.fixture(scope="module")
def arm64() -> tuple[Image, ModuleSet]:
    k = Image.open(ARM64_VMLINUX)
    ms = ModuleSet(k, [ARM64_KO], warn=False)
    k.module_source = ms
    return k, ms


def test_arm64_relocations_match_ld(arm64: tuple[Image, ModuleSet], tmp_path: Path) -> None:
    """arm64 apply_relocate_add (ADRP/LDST/ADD lo12, CALL26/JUMP26, PREL32, ABS64) equals
    GNU ld's output for the same placement; the module sits in the 128 MiB below _end."""
    ld = shutil.which("aarch64-linux-gnu-ld")
    if ld is None:
        pytest.skip("aarch64-linux-gnu-ld not installed (binutils-aarch64-linux-gnu)")
    kernel, ms = arm64
    lm = ms.loaded("kpt_test")
    assert lm is not None and lm.relocated.unresolved == () and not lm.relocated.overflow
    assert lm.relocated.unsupported == {}
    end = kernel.symtab.value("_end") or kernel.link_range[1]
    assert end - (128 << 20) <= min(lm.layout.address_of.values()) < end
    args = [ld, "-o", str(tmp_path / "out"), "-e", "0", "--no-warn-rwx-segments"]
    for i, a in lm.layout.address_of.items():
        args.append(f"--section-start={lm.ko.sections[i].name}={a:#x}")
    for k, s in enumerate(x for x in lm.ko.sections if x.flags & 2 and x.index not in lm.layout.address_of):
        args.append(f"--section-start={s.name}={0x10000000 + k * 0x10000:#x}")
    args.append(f"--defsym=a_hyp={kernel.symtab.value('a_hyp'):#x}")
    subprocess.run(args + [ARM64_KO], check=True, capture_output=True)
    with open(tmp_path / "out", "rb") as f:
        elf = ELFFile(f)
        compared = 0
        for i in lm.layout.address_of:
            s = lm.ko.sections[i]
            if s.type == 8 or s.size == 0 or s.name.startswith(".note"):
                continue
            sec = elf.get_section_by_name(s.name)
            assert sec.data() == lm.relocated.sections[i], s.name
            compared += 1
        assert compared >= 5


@pytest.mark.parametrize("target,ok,reason", [
    ("kpt_test:kpt_func", True, None),
    ("kpt_test:kpt_nokprobe", False, "BLACKLIST_NOKPROBE"),
    ("kpt_test:kpt_kprobes_fn", False, "BLACKLIST_AREA"),
    ("kpt_test:kpt_notrace", False, "NOTRACE"),
    ("kpt_test:kpt_init", False, "NO_SYMBOL"),
    ("kpt_test:kpt_func+2", False, "MISALIGNED"),
])
def test_arm64_module_verdicts(arm64: tuple[Image, ModuleSet], target: str, ok: bool,
                               reason: str | None) -> None:
    kernel, _ = arm64
    v = check(kernel, target)
    assert v.ok is ok and (v.reason.value if v.reason else None) == reason, v


def test_arm64_ftrace_sites(arm64: tuple[Image, ModuleSet]) -> None:
    """Call sites come from __patchable_function_entries (FTRACE_CALLSITE_SECTION on arm64)."""
    _, ms = arm64
    view = ms.view("kpt_test")
    assert view is not None
    ks = view.kallsyms
    funcs = {ks.containing(int(a)).addr for a in view.tables.ftrace_sites}
    assert funcs == {ks.lookup(n) for n in ("kpt_func", "kpt_nokprobe", "kpt_kprobes_fn", "kpt_jl",
                                            "kpt_exit")}


def test_cli_modules_func(capsys) -> None:
    """``modules --func MOD:SYM``: the jump-label NOP is refused, the alignment gap after the
    function is the loader's zeros (decoded as the kernel would, not undecodable)."""
    code, out, err = _run(capsys, "modules", VMLINUX, "--module", KO, "--func", "kpt_test:kpt_jl",
                          "--json")
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["offset"] for r in rows if r["reason"] == "JUMP_LABEL"] == [_jump_site_offset()]
    assert all(r["reason"] != "UNDECODABLE" for r in rows)


def test_cli_vmlinux_with_modules_dir(capsys) -> None:
    """``kpatch-analyze VMLINUX --modules DIR`` is the per-module analysis; a broken module
    of the tree is one line of its own, the others are analysed."""
    code, out, err = _run(capsys, VMLINUX, "--modules", str(MODDIR), "--only", "kpt_test,truncated",
                          "--no-cache")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("kpt_test ") and "functions" in lines[0]
    assert lines[1].startswith("truncated ") and "error:" in lines[1] and "truncated module" in lines[1]
    assert lines[-1].startswith("total: 1 modules (1 failed)")


def test_cli_modules_html(capsys, tmp_path: Path) -> None:
    code, out, err = _run(capsys, "modules", VMLINUX, "--module", KO, "--no-cache",
                          "--html-dir", str(tmp_path))
    assert code == 0, err
    page = (tmp_path / "kpt_test.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "kpt_test.ko" in page


# -- riscv64 ------------------------------------------------------------------------------
RISCV64_KO = str(MODDIR / "kpt_test_riscv64.ko")
RISCV64_VMLINUX = str(Path(__file__).resolve().parent.parent / "testdata" / "riscv64" / "vmlinux-6.12")


@pytest.fixture(scope="module")
def riscv64() -> tuple[Image, ModuleSet]:
    k = Image.open(RISCV64_VMLINUX)
    ms = ModuleSet(k, [RISCV64_KO], warn=False)
    k.module_source = ms
    return k, ms


def test_riscv64_frob_arch_sections(riscv64: tuple[Image, ModuleSet]) -> None:
    """module_frob_arch_sections: .plt/.got/.got.plt NOBITS, 64-byte aligned, one entry per
    distinct CALL_PLT (3 calls, 2 targets) resp. GOT_HI20 (none) plus one; .plt is text."""
    _, ms = riscv64
    lm = ms.loaded("kpt_test")
    assert lm is not None
    sec = {s.name: s for s in lm.ko.sections}
    assert (sec[".plt"].type, sec[".plt"].align, sec[".plt"].size) == (8, 64, 3 * 12)
    assert (sec[".got"].size, sec[".got.plt"].size) == (8, 3 * 8)
    assert lm.layout.mem_of[sec[".plt"].index] == MemType.TEXT
    assert lm.layout.mem_of[sec[".got"].index] == MemType.RODATA  # SHF_ALLOC only


def _riscv64_ld(lm, kernel: Image, ko: str, tmp_path: Path) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """The sections GNU ld makes of ``ko`` placed where ``lm`` has them (each its own output
    section: ld's default script would merge .rodata.* into .rodata), no relaxation."""
    ld = shutil.which("riscv64-linux-gnu-ld")
    if ld is None:
        pytest.skip("riscv64-linux-gnu-ld not installed (binutils-riscv64-linux-gnu)")
    script = ["SECTIONS {"]
    for i, a in lm.layout.address_of.items():
        script.append(f"  {lm.ko.sections[i].name} {a:#x} : {{ *({lm.ko.sections[i].name}) }}")
    for k, s in enumerate(x for x in lm.ko.sections if x.flags & 2 and x.index not in lm.layout.address_of):
        script.append(f"  {s.name} {0x10000000 + k * 0x10000:#x} : {{ *({s.name}) }}")
    (tmp_path / "mod.lds").write_text("\n".join(script) + "\n}\n")
    subprocess.run([ld, "-o", str(tmp_path / "out"), "-e", "0", "--no-relax",
                    "--no-warn-rwx-segments", "-T", str(tmp_path / "mod.lds"),
                    f"--defsym=a_notrace={kernel.symtab.value('a_notrace'):#x}", ko],
                   check=True, capture_output=True)
    out = {}
    with open(tmp_path / "out", "rb") as f:
        elf = ELFFile(f)
        for i in lm.layout.address_of:
            s = lm.ko.sections[i]
            if s.type == 8 or s.size == 0 or s.name.startswith(".note"):
                continue
            out[s.name] = elf.get_section_by_name(s.name).data()
    return out


def test_riscv64_relocations_match_ld(riscv64: tuple[Image, ModuleSet], tmp_path: Path) -> None:
    """riscv64 apply_relocate_add (PCREL_HI20 + paired PCREL_LO12_I/S, CALL_PLT, R_RISCV_64,
    ADD/SUB accumulated per location) equals GNU ld's output for the same placement (no
    relaxation); the module sits in the 2 GiB below _end."""
    kernel, ms = riscv64
    lm = ms.loaded("kpt_test")
    assert lm is not None and lm.relocated.unresolved == () and not lm.relocated.overflow
    assert lm.relocated.unsupported == {}
    end = kernel.symtab.value("_end") or kernel.link_range[1]
    assert end - (2 << 30) <= min(lm.layout.address_of.values()) < end
    theirs = _riscv64_ld(lm, kernel, RISCV64_KO, tmp_path)
    for i in lm.layout.address_of:
        name = lm.ko.sections[i].name
        if name in theirs:
            assert theirs[name] == lm.relocated.sections[i], name
    assert len(theirs) >= 6


def test_riscv64_more_relocation_types(riscv64: tuple[Image, ModuleSet], tmp_path: Path) -> None:
    """JAL, BRANCH, RVC_JUMP, RVC_BRANCH, HI20/LO12_I/LO12_S (a kernel address), 32_PCREL,
    SET6/8/16/32: as GNU ld; SET6+SUB6 at one byte as the kernel's handlers compute it; a lone
    ADD16 over 0x1111 stores the value alone (process_accumulated_relocations starts from 0,
    not from the field; ld adds to the field)."""
    kernel, _ = riscv64
    ms = ModuleSet(kernel, [str(MODDIR / "kpt_relocs_riscv64.ko")], warn=False)
    lm = ms.loaded("kpt_relocs")
    assert lm is not None and lm.relocated.count == 15
    assert lm.relocated.unsupported == {} and not lm.relocated.overflow
    theirs = _riscv64_ld(lm, kernel, str(MODDIR / "kpt_relocs_riscv64.ko"), tmp_path)
    ours = {lm.ko.sections[i].name: lm.relocated.sections[i] for i in lm.layout.address_of}
    assert theirs[".text"] == ours[".text"] and theirs[".text.far"] == ours[".text.far"]
    table, ld_table = ours[".rodata.relocs"], theirs[".rodata.relocs"]
    assert table[:12] == ld_table[:12]  # 32_PCREL, SET32, SET16, SET8, SET6 (keeps bits 7:6)
    far = int(lm.relocated.sym_values[lm.names.index("kpt_r_far")])
    entry = int(lm.relocated.sym_values[lm.names.index("kpt_r_entry")])
    # SET6 then SUB6 on one byte (0x40 in the file): apply_r_riscv_set6_rela /
    # apply_r_riscv_sub6_rela on the buffer, apply_6_bit_accumulation keeps the file's bits 7:6
    # (GNU ld 2.40 adds instead of subtracting here, so ld is not the reference for it)
    assert table[12] == 0x40 | ((((far + 0x30) & 0x3F) - ((entry + 0x10) & 0x3F)) & 0x3F)
    assert int.from_bytes(table[13:15], "little") == far & 0xFFFF
    assert int.from_bytes(ld_table[13:15], "little") == (far + 0x1111) & 0xFFFF


def test_riscv64_accumulated_differences(riscv64: tuple[Image, ModuleSet]) -> None:
    """ADD/SUB pairs give the label differences at their final addresses (the loader's
    buffer starts at 0 per location; the last type's width is stored)."""
    _, ms = riscv64
    view = ms.view("kpt_test")
    assert view is not None
    at = view.symtab.value("kpt_diffs")
    sym = {n: view.symtab.value(n) for n in ("kpt_counter", "kpt_func", "kpt_key", "kpt_jl")}
    raw = view.read(at, 18)
    u = lambda b: int.from_bytes(b, "little")  # noqa: E731
    assert u(raw[0:4]) == (sym["kpt_counter"] - sym["kpt_func"]) & 0xFFFFFFFF
    assert u(raw[4:8]) == (sym["kpt_func"] - sym["kpt_key"]) & 0xFFFFFFFF
    assert u(raw[8:16]) == (sym["kpt_key"] - sym["kpt_jl"]) & (2 ** 64 - 1)
    assert u(raw[16:18]) == (sym["kpt_jl"] - sym["kpt_func"]) & 0xFFFF


@pytest.mark.parametrize("target,ok,reason", [
    ("kpt_test:kpt_func+8", True, None),  # past the patchable entry (two 4-byte nops)
    ("kpt_test:kpt_func", False, "FTRACE_SITE"),  # 6.12: no KPROBES_ON_FTRACE on riscv
    ("kpt_test:kpt_func+2", False, "NOT_BOUNDARY"),  # inside the first nop
    ("kpt_test:kpt_func+1", False, "NOT_BOUNDARY"),
    ("kpt_test:kpt_nokprobe+8", False, "BLACKLIST_NOKPROBE"),
    ("kpt_test:kpt_kprobes_fn+8", False, "BLACKLIST_AREA"),
    ("kpt_test:kpt_notrace", False, "NOTRACE"),
    ("kpt_test:kpt_init", False, "NO_SYMBOL"),
])
def test_riscv64_module_verdicts(riscv64: tuple[Image, ModuleSet], target: str, ok: bool,
                                 reason: str | None) -> None:
    kernel, _ = riscv64
    v = check(kernel, target)
    assert v.ok is ok and (v.reason.value if v.reason else None) == reason, v


def test_riscv64_jump_label_in_module(riscv64: tuple[Image, ModuleSet]) -> None:
    """The module's __jump_table site (a 4-byte nop, relocated PC-relative) is refused."""
    kernel, ms = riscv64
    view = ms.view("kpt_test")
    assert view is not None
    starts, _ = view.tables.jump_labels
    assert len(starts) == 1
    v = check(kernel, hex(int(starts[0])))  # 0xADDR inside the module given
    assert not v.ok and v.reason is not None and v.reason.value == "JUMP_LABEL", v


# -- func / event / 0xADDR on module code -----------------------------------------------
def test_cli_func_module(capsys) -> None:
    """``func VMLINUX --module X.ko NAME`` (bare name found in the module, or MOD:NAME)."""
    code, out, err = _run(capsys, "func", VMLINUX, "kpt_jl", "--module", KO, "--json")
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert {r["module"] for r in rows} == {"kpt_test"} and len(rows) > 3
    assert [r["offset"] for r in rows if r["reason"] == "JUMP_LABEL"] == [_jump_site_offset()]
    code, out2, err = _run(capsys, "func", VMLINUX, "kpt_test:kpt_jl", "--module", KO, "--json")
    assert code == 0 and out2 == out
    code, out, err = _run(capsys, "func", VMLINUX, "kpt_nosuch", "--module", KO)
    assert code == 1 and "no such function in the modules given" in err


def test_cli_address_in_module(capsys) -> None:
    """``check --module X.ko 0xADDR``: an address inside the laid-out module is that live
    module's verdict (the addresses ``func --module`` prints)."""
    code, out, err = _run(capsys, "func", VMLINUX, "kpt_test:kpt_jl", "--module", KO, "--json")
    rows = [json.loads(x) for x in out.splitlines()]
    site = next(r for r in rows if r["reason"] == "JUMP_LABEL")
    ok = next(r for r in rows if r["ok"])
    code, out, err = _run(capsys, "check", VMLINUX, site["address"], ok["address"], "--module", KO,
                          "--json")
    got = [json.loads(x) for x in out.splitlines()]
    assert got[0]["ok"] is False and got[0]["reason"] == "JUMP_LABEL", got[0]
    assert got[1]["ok"] is True and got[1]["symbol"].startswith("kpt_jl+"), got[1]
    code, out, err = _run(capsys, "check", VMLINUX, site["address"], "--json")  # no module
    alone = json.loads(out)  # no kallsyms symbol there: accepted, nothing registered
    assert alone["ok"] is True and alone["symbol"] is None and alone["method"] is None


def test_cli_event_module(capsys) -> None:
    """``event ... 'p:ev MOD:SYM+OFF'`` with --module: the live module's placement checks, a
    missing symbol BAD_PROBE_ADDR, another module deferred; $argN at a module function's
    entry only when the module is loaded (TPARG_FL_FENTRY; arm64 6.12 has $argN)."""
    code, out, err = _run(capsys, "event", VMLINUX, "p:ev kpt_test:kpt_func",
                          "p:ev2 kpt_test:kpt_nosuch", f"p:ev3 kpt_test:kpt_jl+{_jump_site_offset()}",
                          "p:ev4 other_mod:f", "--module", KO, "--json")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["ok"] for r in rows] == [True, False, False, True], rows
    assert rows[0]["event"]["probe"]["flags"] == ["FTRACE"]
    assert rows[1]["error"]["log_id"] == "BAD_PROBE_ADDR"
    assert rows[2]["error"]["log_id"] == "FAIL_REG_PROBE" and rows[2]["error"]["errno"] == "EINVAL"
    assert rows[3]["event"]["probe"]["deferred"] is True
    line = "p:ev kpt_test:kpt_func a=$arg1"
    code, out, err = _run(capsys, "event", ARM64_VMLINUX, line, "--module", ARM64_KO, "--json")
    assert json.loads(out)["ok"] is True and json.loads(out)["event"]["on_func_entry"] is True
    code, out, err = _run(capsys, "event", ARM64_VMLINUX, line, "--json")
    assert json.loads(out)["error"]["log_id"] == "NOFENTRY_ARGS"  # not loaded: not FENTRY
