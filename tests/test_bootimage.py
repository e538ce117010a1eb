"""Boot images (kpatch_core/bootimage): every compression and arch layout of testdata/boot/ gives
the verdicts of the vmlinux it was made from, with symbols from kallsyms or System.map; inputs
passed by mistake get one line naming what to pass; real Debian /boot files equal their debug
vmlinux on the oracle sample (skipped per kernel when not cached)."""
from __future__ import annotations

import gzip
import importlib.util
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kpatch_core.bootimage import boot_elf, needs_boot_elf
from kpatch_core.bootimage.decompress import decompress, detect, find_stream
from kpatch_core.bootimage.kallsyms import find_kallsyms
from kpatch_core.errors import InputError
from kpatch_core.image import Image
from kpatch_core.probe import check

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "testdata"
BOOT = TESTDATA / "boot"
KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))

# (boot image, the vmlinux it was made from)
IMAGES = [(f"x86_64/vmlinuz-{fmt}", "x86_64/vmlinux") for fmt in ("gzip", "xz", "lzma", "bzip2", "lz4", "zstd")] + [
    ("arm64/Image", "arm64/vmlinux-6.12"), ("arm64/Image.gz", "arm64/vmlinux-6.12"),
    ("arm64/vmlinuz.efi", "arm64/vmlinux-6.12"), ("riscv64/Image", "riscv64/vmlinux-6.12"),
    ("riscv64/vmlinuz.efi", "riscv64/vmlinux-6.12"), ("s390x/vmlinuz", "s390x/vmlinux-6.12"),
    ("ppc64le/vmlinux-stripped", "ppc64le/vmlinux")]


@pytest.fixture(autouse=True)
def boot_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "boot-cache"
    monkeypatch.setenv("KPATCH_BOOT_CACHE", str(d))
    return d


def _verdicts(image: Image) -> list[dict]:
    """Entry, +1, +4 and return probe of every function in text: the verdicts as JSON."""
    out = []
    t = image.tables
    for name, addr in zip(image.kallsyms.names, image.kallsyms.addrs.tolist()):
        # _text (arm64) / _start (riscv64) mark where a raw image starts: its header page
        if not t.stext <= addr < t.etext or name in ("_text", "_start"):
            continue
        for target in (name, f"{name}+1", f"{name}+4"):
            out.append(check(image, target).to_json())
    return out


@pytest.mark.parametrize("boot,vmlinux", IMAGES, ids=[i[0] for i in IMAGES])
def test_boot_image_verdicts_equal_vmlinux(boot: str, vmlinux: str) -> None:
    img = Image.open(str(BOOT / boot))
    ref = Image.open(str(TESTDATA / vmlinux))
    assert img.boot is not None and img.boot.symbol_source == "kallsyms"
    assert img.backend.name == ref.backend.name and img.version == ref.version
    assert img.build_id == ref.build_id and img.banner == ref.banner
    mine, theirs = _verdicts(img), _verdicts(ref)
    assert len(mine) >= 30
    assert mine == theirs
    # the full analysis's per-symbol type, by evidence both hold (names, BTF, __mcount_loc)
    from kpatch_core.analysis import TextSymbols
    a, b = TextSymbols.build(img), TextSymbols.build(ref)
    assert a.names == b.names and a.types.tolist() == b.types.tolist()


@pytest.mark.parametrize("boot,vmlinux", IMAGES[::3], ids=[i[0] for i in IMAGES[::3]])
def test_system_map_gives_the_same(boot: str, vmlinux: str) -> None:
    smap = BOOT / boot.split("/")[0] / "System.map"
    img = Image.open(str(BOOT / boot), system_map=str(smap))
    assert img.boot is not None and img.boot.symbol_source == f"System.map {smap}"
    assert _verdicts(img) == _verdicts(Image.open(str(TESTDATA / vmlinux)))


def test_release_files_beside_the_image() -> None:
    """config-RELEASE is found beside vmlinuz-RELEASE; Debian's placeholder System.map (no
    symbols) is passed over for kallsyms."""
    d = BOOT / "x86_64" / "release"
    img = Image.open(str(d / "vmlinuz-6.1.0-kpatch-test"))
    assert img.boot is not None
    assert img.boot.config_path == str(d / "config-6.1.0-kpatch-test")
    assert img.boot.symbol_source == "kallsyms" and img.boot.system_map is None
    assert img.config.facts["KALLSYMS_ALL"].source.startswith("config file")


def test_synthetic_elf_is_cached(boot_cache: Path) -> None:
    a = boot_elf(str(BOOT / "x86_64/vmlinuz-xz"))
    mtime = os.stat(a.elf_path).st_mtime_ns
    b = boot_elf(str(BOOT / "x86_64/vmlinuz-xz"))
    assert a == b and os.stat(b.elf_path).st_mtime_ns == mtime
    assert Path(a.elf_path).parent == boot_cache


def test_needs_boot_elf() -> None:
    assert needs_boot_elf(str(BOOT / "x86_64/vmlinuz-gzip"))
    assert needs_boot_elf(str(BOOT / "ppc64le/vmlinux-stripped"))
    assert not needs_boot_elf(str(TESTDATA / "x86_64/vmlinux"))


def test_prefetch_hands_its_result_or_error_to_boot_elf(boot_cache: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI starts boot_elf in a thread while it loads the command; boot_elf takes that result
    (or raises its error), and makes a fresh one when the cache moved in between."""
    from kpatch_core.bootimage import prefetch
    img = str(BOOT / "x86_64/vmlinuz-gzip")
    prefetch(img)
    a = boot_elf(img)
    assert a == boot_elf(img) and Path(a.elf_path).parent == boot_cache
    smap = tmp_path / "System.map"
    shutil.copy(BOOT / "x86_64/System.map", smap)
    prefetch(str(smap))  # a System.map as the image: the thread's InputError reaches the caller
    with pytest.raises(InputError, match="this is a System.map"):
        boot_elf(str(smap))
    prefetch(img)
    monkeypatch.setenv("KPATCH_BOOT_CACHE", str(tmp_path / "elsewhere"))
    c = boot_elf(img)
    assert Path(c.elf_path).parent == tmp_path / "elsewhere" and Path(c.elf_path).is_file()


def test_symbol_types_of_names_shaped_like_linker_symbols() -> None:
    """scripts/kallsyms gives no ELF types: a tracepoint's functions (a tracepoint called
    foo_start gives __traceiter_foo_start) are functions; ``__X_start`` is a function with an
    ftrace record of its own, a linker symbol where it shares its address with the first function
    of its area, or lies within a patchable entry before it (riscv64 7.x)."""
    from kpatch_core.bootimage.symbol_types import STT_FUNC, STT_NOTYPE, own_records, symbol_infos
    base = 0xFFFFFFFF81000000
    rows = [(base, "T", "__sched_text_start"), (base, "T", "io_schedule_timeout"),
            (base + 0x100, "t", "__delayacct_blkio_start"), (base + 0x200, "t", "__traceiter_pm_cb_start"),
            (base + 0x300, "T", "__kprobes_text_start"), (base + 0x308, "T", "kprobe_func"),
            (base + 0x400, "T", "__irqentry_text_end"), (base + 0x406, "t", "next_func")]
    addrs = np.array([r[0] for r in rows], np.uint64)
    mcount = np.array([base, base + 0x100, base + 0x300, base + 0x406], np.uint64)
    info = symbol_infos("".join(r[1] for r in rows), [r[2] for r in rows], np.ones(len(rows), bool),
                        np.zeros(len(rows), bool), np.ones(len(rows), bool), own_records(addrs, mcount))
    types = dict(zip((r[2] for r in rows), (int(i) & 0xF for i in info)))
    assert types == {"__sched_text_start": STT_NOTYPE, "io_schedule_timeout": STT_FUNC,
                     "__delayacct_blkio_start": STT_FUNC, "__traceiter_pm_cb_start": STT_FUNC,
                     "__kprobes_text_start": STT_NOTYPE, "kprobe_func": STT_FUNC,
                     "__irqentry_text_end": STT_NOTYPE, "next_func": STT_FUNC}


def test_symbol_infos_equal_symbol_info_per_symbol() -> None:
    """The table-driven symbol_infos gives symbol_info's answer for every symbol and evidence."""
    from kpatch_core.bootimage.symbol_types import symbol_info, symbol_infos
    from kpatch_core.bootimage.system_map import read_system_map
    sm = read_system_map(str(BOOT / "x86_64/System.map"))
    assert sm is not None
    names = sm.names + ["__bpf_trace_tp_map_foo_start", "__traceiter_foo_end", "bar.isra.0",
                        "__pi__stext", "__kvm_nvhe___start___kvm_ex_table", "_etext", "baz.cold"]
    letters = sm.types + "dtttTTt"
    rng = np.random.default_rng(0)
    flags = rng.random((4, len(names))) < 0.5
    got = symbol_infos(letters, names, flags[0], flags[1], flags[2], flags[3])
    want = [symbol_info(t, n, *map(bool, f)) for t, n, f in zip(letters, names, flags.T)]
    assert got.tolist() == want


# -- decompression ---------------------------------------------------------------------------
DATA = b"Linux version 6.1.0 " + bytes(range(256)) * 64


def _compress(fmt: str) -> bytes:
    spec = importlib.util.spec_from_file_location("make_boot_images", BOOT / "make_boot_images.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.COMPRESS[fmt](DATA)


@pytest.mark.parametrize("fmt", ["gzip", "xz", "lzma", "bzip2", "lz4", "zstd"])
def test_decompress_round_trip(fmt: str) -> None:
    blob = _compress(fmt)
    assert detect(blob) == fmt
    # the 4-byte size arch/x86/boot/compressed appends is ignored
    assert decompress(blob + struct.pack("<I", len(DATA))) == DATA
    hit = find_stream(b"\0" * 100 + blob)
    assert hit == (100, fmt)


def test_unknown_and_corrupt_streams() -> None:
    with pytest.raises(InputError, match="unknown format"):
        decompress(b"\x12\x34" * 40)
    xz = lzma.compress(DATA)
    with pytest.raises(InputError, match="corrupt xz"):
        decompress(xz[:12] + b"\xff" * 40 + xz[52:])


HAVE_LZO = importlib.util.find_spec("lzo") is not None


def test_lzo_without_python_lzo_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lzo", None)  # import lzo raises ImportError, as when absent
    with pytest.raises(InputError, match=r"^lzo-compressed payload: install python-lzo .*kpatch-core\[lzo\]"):
        Image.open(str(BOOT / "x86_64/vmlinuz-lzo"))


def test_lzo_bzimage() -> None:
    """The lzop container of cmd_lzo (testdata/boot/x86_64/vmlinuz-lzo) with python-lzo (the
    optional extra ``lzo``): the vmlinux's verdicts; without it, the one line naming it."""
    if not HAVE_LZO:
        with pytest.raises(InputError, match="install python-lzo"):
            Image.open(str(BOOT / "x86_64/vmlinuz-lzo"))
        return
    img = Image.open(str(BOOT / "x86_64/vmlinuz-lzo"))
    assert img.boot is not None and img.boot.kind == "bzImage (lzo)"
    assert _verdicts(img) == _verdicts(Image.open(str(TESTDATA / "x86_64/vmlinux")))


@pytest.mark.skipif(not HAVE_LZO, reason="python-lzo (optional extra lzo) not installed: lzo cannot be written")
def test_lzo_round_trip_several_blocks() -> None:
    mod = _blob_module()
    data = DATA * 40  # > 256 KiB: more than one lzop block
    blob = mod.lzop(data)
    assert detect(blob) == "lzo" and decompress(blob) == data
    noise = np.random.default_rng(0).bytes(5000)  # incompressible: stored, src == dst
    stored = mod.lzop(noise)
    assert decompress(stored) == noise
    at = len(stored) - 4 - len(noise) - 12  # the block header: dst, src, adler32
    bad = stored[:at + 4] + struct.pack(">I", len(noise) + 1) + stored[at + 8:]
    with pytest.raises(InputError, match="corrupt lzo stream"):
        decompress(bad)


# -- kallsyms --------------------------------------------------------------------------------
def _blob_module():  # the generator's encoder, written from scripts/kallsyms.c
    spec = importlib.util.spec_from_file_location("make_boot_images", BOOT / "make_boot_images.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("e", ["<", ">"])
def test_kallsyms_big_symbols_and_byte_order(e: str) -> None:
    mod = _blob_module()
    rows = [(0xFFFFFFFF81000000 + 16 * i, "t" if i % 3 else "T", f"func_{i}") for i in range(700)]
    rows.insert(5, (0xFFFFFFFF81000000 + 16 * 5, "t", "x" * 300))  # a "big" symbol (6.1+)
    rows.append((0xFFFFFFFF82000000, "D", "linux_banner"))
    blob = b"\xaa" * 64 + mod.kallsyms_blob(rows, e)
    k = find_kallsyms(blob, e)
    assert k.names == [r[2] for r in rows]
    assert k.types == "".join(r[1] for r in rows)
    assert k.addrs.tolist() == [r[0] for r in rows]


def test_kallsyms_6_1_layout() -> None:
    """Up to 6.1: kallsyms_offsets and kallsyms_relative_base before kallsyms_num_syms."""
    mod = _blob_module()
    rows = [(0xFFFF800008000000 + 8 * i, "t", f"sym{i:04d}") for i in range(300)]
    new = mod.kallsyms_blob(rows, "<")
    n = len(rows)
    names_end = new.index(struct.pack("<I", 0) + struct.pack("<I", 0), 8)  # not used: rebuild
    del names_end
    # 6.12 layout: [num, pad][names..][markers][table][index][offsets][base]; move the last two
    off_len = (4 * n + 7) & ~7
    tail = new[-(off_len + 8):]
    head = new[:-(off_len + 8)]
    old = tail[:off_len] + tail[off_len:] + head
    k = find_kallsyms(bytes(16) + old, "<")
    assert k.addrs.tolist() == [r[0] for r in rows] and k.names[-1] == "sym0299"


def test_kallsyms_place_relative_layout() -> None:
    """The newest layout (Debian 7.2): kallsyms_names right after num_syms, markers ending at the
    token table, offsets relative to their own place; read with the payload's addresses, and in
    a raw image as offsets from its start (the link base is found after)."""
    mod = _blob_module()
    rows = [(0xFFFFFFFF81000000 + 16 * i, "T" if i % 2 else "t", f"fn_{i}") for i in range(600)]
    rows.append((0xFFFFFFFF82000000, "D", "linux_banner"))
    at = 0xFFFFFFFF82400000  # where the blob sits, after 64 bytes of other data
    blob = b"\xaa" * 64 + mod.kallsyms_blob(rows, "<", place=at)
    k = find_kallsyms(blob, "<", vaddr_of=lambda o: at - 64 + o)
    assert k.names == [r[2] for r in rows] and k.types == "".join(r[1] for r in rows)
    assert k.addrs.tolist() == [r[0] for r in rows] and not k.addrs_from_payload
    raw = find_kallsyms(blob, "<", vaddr_of=lambda o: o)  # a raw image: addresses less its base
    assert raw.addrs_from_payload
    assert (raw.addrs + np.uint64(at - 64)).tolist() == [r[0] for r in rows]
    with pytest.raises(InputError, match="kallsyms_offsets not recognised"):
        find_kallsyms(blob, "<")  # without the payload's addresses the offsets cannot be read


def test_no_kallsyms_says_pass_system_map() -> None:
    with pytest.raises(InputError, match="--system-map"):
        find_kallsyms(b"\0" * 4096, "<")


# -- mistakes --------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kpatch_core.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=False)


def _one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kpatch-analyze: error:"), p.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_system_map_or_config_as_image() -> None:
    _one_line_error(_cli("check", str(BOOT / "x86_64/System.map"), "f"), "System.map", "--system-map")
    _one_line_error(_cli("check", str(BOOT / "x86_64/config"), "f"), "kernel config", "--config")
    _one_line_error(_cli("check", str(BOOT / "x86_64/release/System.map-6.1.0-kpatch-test"), "f"),
                    "System.map", "vmlinuz-6.1.0-kpatch-test")


def test_kernel_module_as_image(tmp_path: Path) -> None:
    ko = tmp_path / "ext4.ko"
    data = bytearray((TESTDATA / "x86_64/vmlinux").read_bytes())
    struct.pack_into("<H", data, 16, 1)  # ET_REL, as every .ko
    ko.write_bytes(data)
    _one_line_error(_cli("check", str(ko), "f"), "kernel module", "MOD:SYM")


def test_user_space_binary_as_image(tmp_path: Path) -> None:
    exe = tmp_path / "prog"
    shutil.copy(sys.executable, exe)
    subprocess.run(["objcopy", "-S", str(exe)], check=True)
    _one_line_error(_cli("check", str(exe), "f"), "user space", "vmlinuz")


def test_unknown_compression_in_bzimage(tmp_path: Path) -> None:
    data = bytearray((BOOT / "x86_64/vmlinuz-gzip").read_bytes())
    data[1024:1027] = b"\x01\x02\x03"  # the payload's magic
    bad = tmp_path / "vmlinuz"
    bad.write_bytes(data)
    _one_line_error(_cli("check", str(bad), "f"), "unknown format", "uncompressed vmlinux")
    (tmp_path / "blob").write_bytes(os.urandom(4096))
    _one_line_error(_cli("check", str(tmp_path / "blob"), "f"), "not a kernel image")


def test_system_map_of_another_build(tmp_path: Path) -> None:
    lines = (BOOT / "x86_64/System.map").read_text().splitlines()
    moved = []
    for ln in lines:
        a, t, n = ln.split()
        moved.append(f"{int(a, 16) + 0x40:016x} {t} {n}" if n == "linux_banner" else ln)
    other = tmp_path / "System.map"
    other.write_text("\n".join(moved) + "\n")
    _one_line_error(_cli("check", str(BOOT / "x86_64/vmlinuz-gzip"), "--system-map", str(other), "f"),
                    "another build", "System.map")


def test_cli_check_says_where_symbols_came_from() -> None:
    ref = Image.open(str(TESTDATA / "x86_64/vmlinux"))
    name = next(n for n, a in zip(ref.kallsyms.names, ref.kallsyms.addrs.tolist())
                if ref.tables.stext <= a < ref.tables.etext and not n.startswith("_"))
    p = _cli("check", str(BOOT / "x86_64/vmlinuz-zstd"), name, "--json")
    q = _cli("check", str(TESTDATA / "x86_64/vmlinux"), name, "--json")
    assert p.stdout == q.stdout and json.loads(p.stdout)["target"] == name
    assert "bzImage (zstd): symbols from kallsyms" in p.stderr


# -- real Debian /boot files -----------------------------------------------------------------
REAL = ["x86_64", "x86_64-6.12", "arm64-6.12", "riscv64", "s390x-6.12", "ppc64le", "ppc64le-6.12"]


def _probes(name: str, n: int) -> list[str]:
    own = ROOT / "tests/data/oracle" / name / "results.jsonl.gz"
    if own.is_file():
        with gzip.open(own, "rt") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        tg = [("r " if r["kind"] == "r" else "") + r["target"] for r in rows]
    else:
        p = Path("/work/shared/data/oracle") / name / "probes.txt"
        if not p.is_file():
            return []
        tg = [ln.split("#", 1)[0].strip() for ln in p.read_text().splitlines() if ln.split("#", 1)[0].strip()]
    return tg[::max(1, len(tg) // n)]


@pytest.mark.realkernel
@pytest.mark.parametrize("name", REAL)
def test_real_boot_files_equal_debug_vmlinux(name: str) -> None:
    d = KERNELS / name / "boot"
    img = next((p for p in sorted(d.glob("vmlinu*"))), None) if d.is_dir() else None
    if img is None or not (KERNELS / name / "vmlinux").is_file():
        pytest.skip(f"{KERNELS / name}: boot/ image or vmlinux not cached")
    targets = _probes(name, 150)
    if not targets:
        pytest.skip(f"no oracle sample for {name}")
    boot = Image.open(str(img))  # Debian's ppc64le /boot/vmlinux-* keeps its .symtab: read as is
    config = boot.boot.config_path if boot.boot is not None else None
    ref = Image.open(str(KERNELS / name / "vmlinux"), config)
    from kpatch_core.probe import check_many
    from kpatch_core.target import parse_target
    tg = [parse_target(t) for t in targets]
    assert [v.to_json() for v in check_many(boot, tg)] == [v.to_json() for v in check_many(ref, tg)]
    assert np.array_equal(boot.tables.ftrace_sites, ref.tables.ftrace_sites)
