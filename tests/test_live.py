"""--live (kpatch_core/live.py) on fake /proc + /sys + /boot trees: one built from the committed
boot testdata, one from a cached Debian kernel (skipped when not cached). The kernel's lists are
written from ours with one known difference each, which the report must name."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kpatch_core.errors import InputError
from kpatch_core.image import Image
from kpatch_core.live import find_live_files, open_live, read_proc_kallsyms

ROOT = Path(__file__).resolve().parent.parent
BOOT = ROOT / "testdata" / "boot" / "x86_64"
RELEASE = "6.1.0-kpatch-test"
KASLR = 0x1E00000  # a multiple of 2 MiB, as x86 KASLR moves the kernel
KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))


@pytest.fixture(autouse=True)
def boot_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPATCH_BOOT_CACHE", str(tmp_path / "boot-cache"))


def make_root(root: Path, image: Path, config: Path | None, release: str, system_map: list[str],
              ref: Image, btf: bytes | None = None, hide_addresses: bool = False) -> None:
    """A fake machine: osrelease, /boot, /proc/kallsyms (moved by KASLR, or zeros), and the
    kernel's blacklist (ours less its first entry) and ftrace list (ours plus one name)."""
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text(release + "\n")
    (root / "boot").mkdir()
    os.symlink(image, root / "boot" / f"vmlinuz-{release}")
    if config is not None:
        shutil.copy(config, root / "boot" / f"config-{release}")
    lines = []
    for ln in system_map:
        a, t, n = ln.split()
        addr = 0 if hide_addresses else int(a, 16) + KASLR
        lines.append(f"{addr:016x} {t} {n}\n")
    lines.append(f"{0 if hide_addresses else 0xFFFFFFFFC0000000:016x} t mod_func\t[some_module]\n")
    if not hide_addresses:  # one symbol the image does not have
        lines.append(f"{int(system_map[-1].split()[0], 16) + KASLR + 1:016x} t only_in_the_kernel\n")
    (root / "proc/kallsyms").write_text("".join(lines))
    if btf is not None:
        (root / "sys/kernel/btf").mkdir(parents=True)
        (root / "sys/kernel/btf/vmlinux").write_bytes(btf)
    bl = root / "sys/kernel/debug/kprobes"
    bl.mkdir(parents=True)
    first = ref.tables.blacklist[0]
    entries = [e for e in ref.tables.blacklist if (e.start, e.end, e.symbol) != (first.start, first.end, first.symbol)]
    bl.joinpath("blacklist").write_text("".join(
        f"0x{e.start + KASLR:016x}-0x{e.end + KASLR:016x}\t{e.symbol}\n" for e in entries))
    tr = root / "sys/kernel/tracing"
    tr.mkdir(parents=True)
    names = sorted({s.name for s in (ref.kallsyms.containing(int(a)) for a in ref.tables.ftrace_sites)
                    if s is not None})
    tr.joinpath("available_filter_functions").write_text(
        "".join(f"{n}\n" for n in names + ["bogus_func"]) + "mod_func [some_module]\n")


def kallsyms_lines(ref: Image) -> list[str]:
    """What /proc/kallsyms shows of ``ref`` (before KASLR): its kallsyms view, nm letters from
    the System.map of the testdata."""
    letters = {}
    for ln in (BOOT / "System.map").read_text().splitlines():
        _a, t, n = ln.split()
        letters.setdefault(n, t)
    return [f"{int(a):016x} {letters.get(n, 't')} {n}" for a, n in
            zip(ref.kallsyms.addrs.tolist(), ref.kallsyms.names)]


def test_live_from_testdata(tmp_path: Path) -> None:
    ref = Image.open(str(ROOT / "testdata/x86_64/vmlinux"))
    make_root(tmp_path, BOOT / "release" / f"vmlinuz-{RELEASE}", BOOT / "config", RELEASE,
              kallsyms_lines(ref), ref)
    files = find_live_files(str(tmp_path))
    assert files.release == RELEASE and files.btf is None
    image, report = open_live(str(tmp_path))
    assert report.kaslr_offset == KASLR
    text = "\n".join(report.lines())
    assert "core symbols; not in ours: 1 (only_in_the_kernel); at another address: 0" in text
    first = ref.tables.blacklist[0]
    assert f"only the kernel's: 0; only ours: 1 ({first.symbol}@{first.start:#x})" in text
    assert "only the kernel's: 1 (bogus_func); only ours: 0" in text
    assert image.config_path == str(tmp_path / "boot" / f"config-{RELEASE}")


def test_kptr_restrict_is_explained(tmp_path: Path) -> None:
    ref = Image.open(str(ROOT / "testdata/x86_64/vmlinux"))
    make_root(tmp_path, BOOT / "release" / f"vmlinuz-{RELEASE}", None, RELEASE,
              (BOOT / "System.map").read_text().splitlines(), ref, hide_addresses=True)
    with pytest.raises(InputError, match="kptr_restrict"):
        read_proc_kallsyms(str(tmp_path / "proc/kallsyms"))
    _image, report = open_live(str(tmp_path))
    assert report.kaslr_offset is None
    assert any("kptr_restrict" in ln for ln in report.lines())


def test_live_without_boot_image(tmp_path: Path) -> None:
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("9.9.9-none\n")
    with pytest.raises(InputError, match="vmlinuz-9.9.9-none: not found"):
        find_live_files(str(tmp_path))


def test_cli_check_live(tmp_path: Path) -> None:
    ref = Image.open(str(ROOT / "testdata/x86_64/vmlinux"))
    make_root(tmp_path, BOOT / "release" / f"vmlinuz-{RELEASE}", BOOT / "config", RELEASE,
              (BOOT / "System.map").read_text().splitlines(), ref)
    name = next(n for n, a in zip(ref.kallsyms.names, ref.kallsyms.addrs.tolist())
                if ref.tables.stext <= a < ref.tables.etext and not n.startswith("_"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "kpatch_core.cli", "check", "--live", "--live-root",
                        str(tmp_path), name, "--json"], capture_output=True, text=True, env=env, check=False)
    q = subprocess.run([sys.executable, "-m", "kpatch_core.cli", "check", str(ROOT / "testdata/x86_64/vmlinux"),
                        "--config", str(BOOT / "config"), name, "--json"], capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout == q.stdout
    assert "kpatch-analyze: live: KASLR offset" in p.stderr


@pytest.mark.realkernel
def test_live_from_cached_debian_kernel(tmp_path: Path) -> None:
    d = KERNELS / "x86_64"
    image = next(iter(sorted((d / "boot").glob("vmlinuz-*"))), None) if (d / "boot").is_dir() else None
    if image is None or not (d / "vmlinux").is_file():
        pytest.skip(f"{d}: vmlinux and boot/vmlinuz-* not cached")
    release = image.name.split("-", 1)[1]
    ref = Image.open(str(d / "vmlinux"))
    # /proc/kallsyms holds what the kernel's kallsyms tables hold: those in the image
    ks = Image.open(str(image)).kallsyms
    smap = [f"{int(a):016x} T {n}" for a, n in zip(ks.addrs.tolist(), ks.names)]
    s = ref.section(".BTF")
    assert s is not None
    btf = bytes(ref.data[s.offset:s.offset + s.size])
    make_root(tmp_path, image, d / "boot" / f"config-{release}", release, smap, ref, btf)
    _image, report = open_live(str(tmp_path))
    text = "\n".join(report.lines())
    assert report.kaslr_offset == KASLR
    assert "BTF: /sys/kernel/btf/vmlinux equals the image's .BTF" in text
    assert f"/proc/kallsyms: {len(smap) + 1} core symbols; not in ours: 1 (only_in_the_kernel)" in text
    assert "only the kernel's: 1 (bogus_func); only ours: 0" in text
