"""The running kernel as analysis input (``--live``): its boot image and config from /boot, its
symbols from /proc/kallsyms, its BTF from /sys/kernel/btf/vmlinux; and, when readable, the
kernel's own kprobe blacklist and ftrace function list compared with ours.

Every path is under a root (``--live-root DIR``, default ``/``), so a fake /proc+/sys+/boot tree
stands for a machine in tests.

- ``proc/sys/kernel/osrelease`` (what ``uname -r`` prints) names the release;
- ``boot/vmlinuz-RELEASE`` (or ``vmlinux-``/``Image-``), ``boot/config-RELEASE`` or
  ``proc/config.gz`` (CONFIG_IKCONFIG_PROC);
- ``proc/kallsyms``: addresses are zero unless the reader may see them (kernel/kallsyms.c
  ``kallsyms_show_value``: ``kernel.kptr_restrict`` 0 with CAP_SYSLOG, 1 needs CAP_SYSLOG,
  2 hides them from everybody); they include the KASLR offset, which is subtracted (the offset
  is ``_text`` in /proc/kallsyms minus ``_text`` in the image);
- ``sys/kernel/debug/kprobes/blacklist`` (debugfs, root), ``sys/kernel/tracing/
  available_filter_functions`` (tracefs, root).

>>> image, report = open_live("/")                   # doctest: +SKIP
>>> print("\\n".join(report.lines()))                 # doctest: +SKIP
"""
from __future__ import annotations

import gzip
import os
import tempfile

import attrs
import numpy as np

from .errors import InputError
from .image import Image

BOOT_PREFIXES = ("vmlinuz", "vmlinux", "Image", "bzImage")


@attrs.frozen
class LiveFiles:
    """The files of the running kernel found under ``root`` (None: absent or unreadable)."""

    root: str
    release: str
    boot_image: str
    config: str | None
    kallsyms: str | None
    btf: str | None
    blacklist: str | None
    filter_functions: str | None


def _readable(path: str) -> str | None:
    return path if os.path.isfile(path) and os.access(path, os.R_OK) else None


def find_live_files(root: str = "/") -> LiveFiles:
    """Locate the running kernel's files under ``root``; the boot image is required."""
    rel_path = os.path.join(root, "proc/sys/kernel/osrelease")
    try:
        with open(rel_path) as f:
            release = f.read().strip()
    except OSError:
        if root != "/":
            raise InputError(f"{rel_path}: missing; --live-root must hold proc/sys/kernel/osrelease "
                             "(the output of uname -r)") from None
        release = os.uname().release
    boot = os.path.join(root, "boot")
    image = next((p for p in (os.path.join(boot, f"{pre}-{release}") for pre in BOOT_PREFIXES)
                  if os.path.isfile(p)), None)
    if image is None:
        raise InputError(f"{boot}/vmlinuz-{release}: not found; install the kernel image package of "
                         f"the running kernel or pass the image instead of --live")
    config = _readable(os.path.join(boot, f"config-{release}")) or \
        _readable(os.path.join(root, "proc/config.gz"))
    return LiveFiles(root, release, image, config,
                     _readable(os.path.join(root, "proc/kallsyms")),
                     _readable(os.path.join(root, "sys/kernel/btf/vmlinux")),
                     _readable(os.path.join(root, "sys/kernel/debug/kprobes/blacklist")),
                     _readable(os.path.join(root, "sys/kernel/tracing/available_filter_functions")))


def read_proc_kallsyms(path: str) -> tuple[np.ndarray, str, list[str]]:
    """(addresses, nm letters, names) of the core kernel's lines of /proc/kallsyms (module
    symbols, ``[mod]``, left out); InputError when the addresses are hidden."""
    addrs, types, names = [], [], []
    with open(path, "rb") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue  # "ADDR t name [module]"
            addrs.append(int(parts[0], 16))
            types.append(parts[1].decode())
            names.append(parts[2].decode("latin-1"))
    if not addrs:
        raise InputError(f"{path}: no symbols; is /proc mounted?")
    if not any(addrs):
        raise InputError(f"{path}: every address reads as 0: kernel.kptr_restrict hides them "
                         "(kallsyms_show_value); run as root with kptr_restrict <= 1, e.g. "
                         "sudo sysctl kernel.kptr_restrict=1")
    return np.array(addrs, np.uint64), "".join(types), names


@attrs.frozen
class LiveReport:
    """What the running kernel says beside our analysis: each line one finding."""

    files: LiveFiles
    kaslr_offset: int | None
    notes: tuple[str, ...]

    def lines(self) -> list[str]:
        """One line per finding, for the user."""
        return list(self.notes)


def _config_file(files: LiveFiles, tmp: str) -> str | None:
    if files.config and files.config.endswith(".gz"):
        out = os.path.join(tmp, f"config-{files.release}")
        with gzip.open(files.config, "rb") as f, open(out, "wb") as g:
            g.write(f.read())
        return out
    return files.config


def open_live(root: str = "/", overrides: dict[str, bool] | None = None,
              config: str | None = None) -> tuple[Image, LiveReport]:
    """The running kernel (files under ``root``) as an :class:`Image`, and the comparison of
    the kernel's own lists with ours."""
    files = find_live_files(root)
    notes: list[str] = [f"live kernel {files.release}: image {files.boot_image}"]
    tmp = tempfile.mkdtemp(prefix="kpatch-live-")
    cfg = config or _config_file(files, tmp)
    # symbols: the image's own kallsyms tables when it has them (same as /proc/kallsyms less
    # KASLR); else /proc/kallsyms moved back to link-time addresses
    image = Image.open(files.boot_image, cfg, overrides)
    if image.boot is not None:
        notes.append(image.boot.describe())
    kaslr = None
    if files.kallsyms:
        try:
            addrs, _types, names = read_proc_kallsyms(files.kallsyms)
        except InputError as e:
            notes.append(f"{e}")
        else:
            i = names.index("_text") if "_text" in names else None
            link = image.symtab.value("_text")
            if i is not None and link is not None:
                kaslr = (int(addrs[i]) - link) & (2**64 - 1)
                notes.append(f"KASLR offset {kaslr:#x} (/proc/kallsyms _text minus the image's)")
                notes.append(_compare_kallsyms(image, addrs, names, kaslr))
    else:
        notes.append(f"{os.path.join(root, 'proc/kallsyms')}: not readable; symbols from the image")
    if files.btf:
        with open(files.btf, "rb") as f:
            live_btf = f.read()
        s = image.section(".BTF")
        ours = bytes(image.data[s.offset:s.offset + s.size]) if s else None
        notes.append("BTF: /sys/kernel/btf/vmlinux equals the image's .BTF" if ours == live_btf else
                     "BTF: /sys/kernel/btf/vmlinux differs from the image's .BTF"
                     if ours else "BTF: the image has none; /sys/kernel/btf/vmlinux is available")
    notes.append(_compare_blacklist(image, files.blacklist, kaslr or 0) if files.blacklist else
                 "kprobe blacklist: sys/kernel/debug/kprobes/blacklist not readable (root, debugfs)")
    notes.append(_compare_filter_functions(image, files.filter_functions) if files.filter_functions
                 else "ftrace: sys/kernel/tracing/available_filter_functions not readable (root, tracefs)")
    return image, LiveReport(files, kaslr, tuple(notes))


def _compare_kallsyms(image: Image, addrs: np.ndarray, names: list[str], kaslr: int) -> str:
    """/proc/kallsyms (moved back by ``kaslr``) against our kallsyms view, as (name, address)."""
    ours = set(zip(image.kallsyms.names, image.kallsyms.addrs.tolist()))
    theirs = {(n, (a - kaslr) & (2**64 - 1)) for a, n in zip(addrs.tolist(), names)}
    our_names = {n for n, _a in ours}
    missing = sorted({n for n, _a in theirs if n not in our_names})
    moved = sorted({n for n, a in theirs - ours if n in our_names})
    if not missing and not moved:
        return f"/proc/kallsyms: {len(names)} core symbols, equal to ours"
    return (f"/proc/kallsyms: {len(names)} core symbols; not in ours: {_few(missing)}; "
            f"at another address: {_few(moved)}")


def _few(items: list[str]) -> str:
    return f"{len(items)}" + (" (" + " ".join(items[:5]) + (" ..." if len(items) > 5 else "") + ")"
                              if items else "")


def _compare_blacklist(image: Image, path: str, kaslr: int) -> str:
    """The kernel's blacklist lines (``0xSTART-0xEND\\tSYMBOL``) against ours."""
    theirs: set[tuple[int, int, str]] = set()
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or "-" not in parts[0]:
                continue
            s, e = (int(x, 16) for x in parts[0].split("-"))
            theirs.add(((s - kaslr) & (2**64 - 1), (e - kaslr) & (2**64 - 1), parts[1]))
    ours = {(b.start, b.end, b.symbol) for b in image.tables.blacklist}
    if all(s == 0 for s, _e, _n in theirs):  # addresses hidden (kptr_restrict): names only
        theirs_n, ours_n = {n for _s, _e, n in theirs}, {n for _s, _e, n in ours}
        only_k, only_o = sorted(theirs_n - ours_n), sorted(ours_n - theirs_n)
    else:
        only_k = sorted(f"{n}@{s:#x}" for s, _e, n in theirs - ours)
        only_o = sorted(f"{n}@{s:#x}" for s, _e, n in ours - theirs)
    if not only_k and not only_o:
        return f"kprobe blacklist: {len(theirs)} entries, equal to ours"
    return (f"kprobe blacklist: {len(theirs)} entries; only the kernel's: {_few(only_k)}; "
            f"only ours: {_few(only_o)}")


def _compare_filter_functions(image: Image, path: str) -> str:
    """available_filter_functions (core lines, no ``[module]``) against the functions holding
    our ftrace sites."""
    theirs: set[str] = set()
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 1:
                theirs.add(parts[0])
    ks = image.kallsyms
    ours = set()
    for a in image.tables.ftrace_sites.tolist():
        s = ks.containing(int(a))
        if s is not None:
            ours.add(s.name)
    only_k, only_o = sorted(theirs - ours), sorted(ours - theirs)
    if not only_k and not only_o:
        return f"ftrace: {len(theirs)} available_filter_functions, equal to ours"
    return (f"ftrace: {len(theirs)} available_filter_functions; only the kernel's: {_few(only_k)}; "
            f"only ours: {_few(only_o)}")
