"""Table bounds recovered from the code that loads them (kpatch_core/bootimage/code_refs.py,
arch/arm64/boot_refs.py): a small synthetic arm64 image built here, and the cached Debian arm64
kernels (each skipped when not cached): without CONFIG_KALLSYMS_ALL (5.10, 6.1) the recovered
values equal the debug vmlinux's symbols; with it (6.12, 7.2) they equal kallsyms' own."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import kpatch_core.bootimage as bi
from kpatch_arch.arm64.boot_refs import BOOT_REFS, TABLES, adrp_targets
from kpatch_arch.s390x.boot_refs import larl_targets
from kpatch_core.bootimage.code_refs import (
    CodeRefs,
    ImageView,
    TableShape,
    code_refs_for,
    recover_tables,
    relocated_pointers,
)
from kpatch_core.bootimage.kallsyms import find_kallsyms
from kpatch_core.bootimage.layout import raw_payload_layout
from kpatch_core.bootimage.synth_elf import Symbols
from kpatch_core.errors import InputError

KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))
BOUNDS = [n for t in TABLES for n in (t.start, t.stop)]

# --- a synthetic arm64 image -------------------------------------------------------------------
BASE = 0xFFFF800008000000
STEXT, ETEXT = BASE + 0x1000, BASE + 0x3000  # text: functions and the code the tables point to
DATA = BASE + 0x4000  # tables
SIZE = 0x8000


def adrp(rd: int, pc: int, target: int) -> int:
    imm = ((target >> 12) - (pc >> 12)) & 0x1FFFFF
    return 0x90000000 | ((imm & 3) << 29) | ((imm >> 2) << 5) | rd


def add_imm(rd: int, rn: int, imm: int) -> int:
    return 0x91000000 | (imm << 10) | (rn << 5) | rd


def load_pair(pc: int, start: int, stop: int) -> list[int]:
    """adrp x0, start; add x0, x0, :lo12:start; adrp x1, stop; add x1, x1, :lo12:stop; ret"""
    return [adrp(0, pc, start), add_imm(0, 0, start & 0xFFF), adrp(1, pc + 8, stop),
            add_imm(1, 1, stop & 0xFFF), 0xD65F03C0]


class Synthetic:
    """A raw image with functions at STEXT, pointer tables in DATA whose words are written by
    boot relocations (zero in the image, as arm64 links with --no-apply-dynamic-relocs)."""

    def __init__(self) -> None:
        self.buf = bytearray(SIZE)
        self.places: list[tuple[int, int]] = []
        self.syms: dict[str, int] = {"_stext": STEXT, "_etext": ETEXT}
        self.at = STEXT

    def function(self, name: str, words: list[int]) -> int:
        self.syms[name] = self.at
        for i, w in enumerate(words):
            self.put(self.at + 4 * i, w.to_bytes(4, "little"))
        self.at += 4 * len(words)
        self.syms[f"after_{name}"] = self.at  # next symbol: where the function ends
        return self.syms[name]

    def put(self, addr: int, b: bytes) -> None:
        self.buf[addr - BASE:addr - BASE + len(b)] = b

    def pointer_table(self, at: int, targets: list[int]) -> tuple[int, int]:
        for i, t in enumerate(targets):
            self.places.append((at + 8 * i, t))
        return at, at + 8 * len(targets)

    def view(self) -> ImageView:
        def read(addr: int, n: int) -> bytes | None:
            o = addr - BASE
            return bytes(self.buf[o:o + n]) if 0 <= o < SIZE else None
        p = sorted(self.places)
        places = np.array([a for a, _ in p], np.uint64)
        addends = np.array([v for _, v in p], np.uint64)
        return ImageView(read, relocated_pointers(read, places, addends, True), True, (BASE, BASE + SIZE))

    def symbols(self) -> tuple[np.ndarray, list[str]]:
        items = sorted(self.syms.items(), key=lambda kv: kv[1])
        return np.array([a for _, a in items], np.uint64), [n for n, _ in items]


POINTERS = TableShape("__start_t", "__stop_t", ("walk_t",), (8,), True)
REFS = CodeRefs((POINTERS,), adrp_targets)


def test_pointer_table_bounds_are_read_from_the_code() -> None:
    s = Synthetic()
    lo, hi = s.pointer_table(DATA, [STEXT + 0x100 + 4 * i for i in range(40)])
    s.function("walk_t", load_pair(s.at, lo, hi))
    addrs, names = s.symbols()
    assert recover_tables(REFS, s.view(), addrs, names) == {"__start_t": lo, "__stop_t": hi}


def test_a_page_aligned_bound_whose_add_the_linker_made_a_nop() -> None:
    """ld relaxes ``add x0, x0, #:lo12:sym`` to a NOP when ``sym`` is page-aligned (7.x
    btf_vmlinux_init): the adrp page, used by a ``sub``, is the address."""
    s = Synthetic()
    lo, hi = s.pointer_table(DATA, [STEXT + 0x100 + 4 * i for i in range(40)])
    assert lo % 4096 == 0
    pc = s.at
    s.function("walk_t", [adrp(0, pc, lo), 0xD503201F, adrp(1, pc + 8, hi), add_imm(1, 1, hi & 0xFFF),
                          0xCB000022, 0xD65F03C0])  # nop; sub x2, x1, x0; ret
    addrs, names = s.symbols()
    assert recover_tables(REFS, s.view(), addrs, names) == {"__start_t": lo, "__stop_t": hi}


def test_a_table_whose_entries_point_outside_text_is_refused() -> None:
    s = Synthetic()
    lo, hi = s.pointer_table(DATA, [DATA + 0x800 + 8 * i for i in range(40)])  # data, not text
    s.function("walk_t", load_pair(s.at, lo, hi))
    addrs, names = s.symbols()
    with pytest.raises(InputError, match="no .*__start_t.*walk_t"):
        recover_tables(REFS, s.view(), addrs, names)


def test_two_pairs_of_the_table_shape_are_ambiguous_and_refused() -> None:
    s = Synthetic()
    a = s.pointer_table(DATA, [STEXT + 4 * i for i in range(16)])
    b = s.pointer_table(DATA + 0x1000, [STEXT + 0x200 + 4 * i for i in range(16)])
    s.function("walk_t", load_pair(s.at, *a)[:-1] + load_pair(s.at + 16, *b))
    addrs, names = s.symbols()
    with pytest.raises(InputError, match="2 .*candidates"):
        recover_tables(REFS, s.view(), addrs, names)


def test_a_table_whose_functions_are_absent_is_left_out() -> None:
    s = Synthetic()
    s.function("something_else", [0xD65F03C0])
    addrs, names = s.symbols()
    assert recover_tables(REFS, s.view(), addrs, names) == {}


def test_relative_table_sorted_and_via_struct() -> None:
    """A 12-byte self-relative table, sorted, whose bounds the code takes from a struct of two
    pointers it references (arm64's kernel_alternatives)."""
    s = Synthetic()
    lo = DATA
    for i in range(30):
        at = lo + 12 * i
        s.put(at, (STEXT + 0x40 + 8 * i - at).to_bytes(4, "little", signed=True))
    hi = lo + 12 * 30
    region = s.pointer_table(DATA + 0x2000, [lo, hi])[0]
    s.function("apply", [adrp(2, s.at, region), add_imm(2, 2, region & 0xFFF), 0xD65F03C0])
    t = TableShape("__a", "__a_end", ("apply",), (12, 8), False, sorted=True, via_struct=True)
    addrs, names = s.symbols()
    assert recover_tables(CodeRefs((t,), adrp_targets), s.view(), addrs, names) == {"__a": lo, "__a_end": hi}
    # unsorted: not the shape of a sorted table
    s.put(lo, (STEXT + 0x1000 - lo).to_bytes(4, "little", signed=True))
    with pytest.raises(InputError):
        recover_tables(CodeRefs((t,), adrp_targets), s.view(), addrs, names)


def test_the_arch_table_is_found_by_arch_name() -> None:
    assert code_refs_for("arm64") is BOOT_REFS
    assert code_refs_for("s390x") is not None
    assert code_refs_for("no-such-arch") is None


def test_s390x_relative_long_addresses() -> None:
    """larl and the relative-long loads/compares give pc + 2 * imm; exrl and branches do not."""
    at = 0x412378
    code = (bytes.fromhex("c010") + (0x80).to_bytes(4, "big", signed=True)  # larl %r1, +0x100
            + bytes.fromhex("c6 2a") + (-0x10).to_bytes(4, "big", signed=True)  # clgrl %r2, -0x20
            + bytes.fromhex("c048") + (0x40).to_bytes(4, "big")  # lgrl %r4, +0x80
            + bytes.fromhex("c600") + (0x10).to_bytes(4, "big")  # exrl: an instruction
            + bytes.fromhex("c0f4") + (0x10).to_bytes(4, "big")  # brcl 15: a branch
            + bytes.fromhex("07fe"))  # br %r14
    assert larl_targets(code, at) == [at + 0x100, at + 6 - 0x20]
    code2 = bytes.fromhex("c4 48") + (0x40).to_bytes(4, "big")  # lgrl %r4, +0x80
    assert larl_targets(code2, at) == [at + 0x80]


# --- cached Debian arm64 kernels -------------------------------------------------------------
def boot_image(name: str) -> Path:
    d = KERNELS / name / "boot"
    img = next(iter(sorted(d.glob("vmlinuz-*"))), None) if d.is_dir() else None
    if img is None:
        pytest.skip(f"{KERNELS / name}/boot: boot image not cached")
    return img


@pytest.mark.parametrize("name", ["arm64", "5.10.0-32-arm64", "s390x"])
def test_text_only_kallsyms_tables_equal_the_debug_vmlinux(name: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian 6.1 and 5.10 arm64, 6.1 s390x (CONFIG_KALLSYMS_ALL off): a bare image gives the
    debug vmlinux's table bounds (and ``kallsyms_num_syms``), read from the synthetic ELF."""
    img = boot_image(name)
    if not (KERNELS / name / "vmlinux").is_file():
        pytest.skip(f"{KERNELS / name}/vmlinux not cached")
    from kpatch_core.image import Image
    bare = tmp_path / "bare" / img.name  # no System.map beside it
    bare.parent.mkdir()
    os.symlink(img, bare)
    monkeypatch.setenv("KPATCH_BOOT_CACHE", str(tmp_path / "cache"))
    b = bi.boot_elf(str(bare))
    assert b.symbol_source == "kallsyms (tables from code references)"
    got, ref = Image.open(b.elf_path).symtab, Image.open(str(KERNELS / name / "vmlinux")).symtab
    refs = code_refs_for("s390x" if name == "s390x" else "arm64")
    assert refs is not None
    names = [n for t in refs.tables for n in (t.start, t.stop)] + ["kallsyms_num_syms", "_stext", "_etext", "vfs_read"]
    names += ["__dynsym_start", "__dynsym_end", "__rela_dyn_start", "__rela_dyn_end"] if name == "s390x" else []
    assert {n: got.value(n) for n in names} == {n: ref.value(n) for n in names}
    shutil.rmtree(tmp_path / "cache")


# (7.2 s390x: its newest-layout kallsyms cannot be placed in a raw image yet; System.map is used)
@pytest.mark.parametrize("name", ["arm64-6.12", "7.2.13+deb14-arm64", "s390x-6.12"])
def test_recovered_tables_equal_kallsyms_all(name: str) -> None:
    """Where kallsyms has every symbol (6.12, 7.2), recovering the bounds from the text
    symbols alone gives kallsyms' own values."""
    img = boot_image(name)
    data = img.read_bytes()
    kind, payload, arch = bi._unpack(str(img), data)
    assert arch is not None
    refs = code_refs_for(arch)
    assert refs is not None
    bounds = [n for t in refs.tables for n in (t.start, t.stop)]
    full = bi._kallsyms(str(img), payload, arch)
    k = find_kallsyms(payload, ">" if arch == "s390x" else "<", vaddr_of=bi._vaddr_of(payload, arch))
    assert k.num_syms_at >= 0
    v = dict(zip(reversed(full.names), reversed(full.addrs.tolist())))
    text = [(v["_stext"], v["_etext"]), (v["_sinittext"], v["_einittext"])]
    # scripts/kallsyms.c symbol_valid without --all-symbols: inside the text ranges, and at
    # their ends only the end symbols themselves (__start_rodata shares _etext's address)
    ends = {v["_etext"]: "_etext", v["_einittext"]: "_einittext"}
    keep = [i for i, (a, n) in enumerate(zip(full.addrs.tolist(), full.names))
            if any(lo <= a <= hi for lo, hi in text) and ends.get(a, n) == n]
    assert not set(bounds) & {full.names[i] for i in keep}
    layout = raw_payload_layout(arch, payload, full)
    view = bi._image_view(arch, layout, payload, refs.absolute_relocs)
    got = recover_tables(refs, view, full.addrs[keep], [full.names[i] for i in keep])
    assert got == {n: v[n] for n in bounds if n in v}
    assert len(got) >= 12
    assert isinstance(full, Symbols)


def test_text_areas_come_from_bounds_kallsyms_shows() -> None:
    """5.10 arm64: ``__kvm_nvhe_abort_guest_exit_start``/``_end`` (a label pair inside
    ``.hyp.text``) are in vmlinux's symtab but not in kallsyms, so not in a /boot image: the
    areas of the debug vmlinux are those a /boot image can show (facts.text_areas)."""
    vml = KERNELS / "5.10.0-32-arm64" / "vmlinux"
    if not vml.is_file():
        pytest.skip(f"{vml} not cached")
    from kpatch_core.facts import text_areas
    from kpatch_core.image import Image
    im = Image.open(str(vml))
    assert im.symtab.value("__kvm_nvhe_abort_guest_exit_start") is not None
    labels = {a[2] for a in text_areas(im)}
    assert ".hyp.text" in labels and ".kvm_nvhe_abort_guest_exit" not in labels
