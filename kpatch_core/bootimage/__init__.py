"""Stock /boot files as analysis input: a vmlinuz/bzImage/Image (any compression, any of the five
architectures' layouts), a stripped vmlinux, with System.map and config beside it or none.

:func:`boot_elf` turns such an input into a synthetic ELF vmlinux (cached by the image's sha256
under ``$KPATCH_BOOT_CACHE``, ``$KPATCH_CACHE/boot`` or ``~/.cache/kpatch-core/boot/``) that
:class:`kpatch_core.image.Image` opens like a debug vmlinux. Symbols come from a System.map
(``--system-map FILE`` or ``System.map-RELEASE`` beside the image) or else from the kernel's own
kallsyms tables inside the image. Anything else passed by mistake (System.map, config, module,
user-space binary, unknown compression) gets a one-line error naming what to pass instead.

>>> b = boot_elf("/boot/vmlinuz-6.1.0-50-amd64")      # doctest: +SKIP
>>> b.symbol_source, b.config_path                   # doctest: +SKIP
('kallsyms', '/boot/config-6.1.0-50-amd64')
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import threading
from concurrent.futures import Future
from typing import Callable

import attrs
import numpy as np

from ..boot_decode import cache_dir, discard
from ..errors import InputError
from .arm64_image import EM_AARCH64, arm64_little_endian, arm64_text_from_branch, is_arm64_image
from .bzimage import bzimage_payload, is_bzimage
from .code_refs import ImageView, code_refs_for, recover_tables, relocated_pointers
from .decompress import decompress, detect
from .kallsyms import KallsymsTable, find_kallsyms
from .layout import RAW_ARCHES, Payload, elf_payload_layout, raw_payload_layout, read_at
from .riscv_image import EM_RISCV, is_riscv_image
from .s390_image import EM_S390, is_s390_image, s390_payload, s390_vmlinux_info
from .stream import unpack_bzimage
from .symbol_types import FUNCTION_ENTRY_WORDS, btf_string_names, near_mcount, own_records
from .synth_elf import SHF_EXECINSTR, SHT_RELA, ElfFile, Layout, Symbols
from .system_map import looks_like_system_map, read_system_map
from .zboot import is_zboot, zboot_payload

FORMAT_VERSION = 14  # bump when the synthetic ELF changes: old cache entries are not reused
SHT_SYMTAB = 2
ET_REL = 1


@attrs.frozen
class BootElf:
    """What :func:`boot_elf` made of a boot image."""

    elf_path: str  # the synthetic ELF to open
    kind: str  # "bzImage (xz)", "arm64 Image", ...
    symbol_source: str  # "kallsyms", "System.map PATH"
    config_path: str | None  # config found beside the image (or the one given)
    system_map: str | None  # System.map used (None: kallsyms)

    def describe(self) -> str:
        """One line for the user: what was read and where the symbols came from."""
        cfg = f", config {self.config_path}" if self.config_path else ", no config file"
        return f"{self.kind}: symbols from {self.symbol_source}{cfg}"


# e_machine of the supported kernels: x86_64, aarch64, riscv, s390, ppc64 (others: Image says so)
KERNEL_MACHINES = frozenset({62, 183, 243, 22, 21})


def _elf_has_symtab(head: bytes, path: str) -> tuple[bool, int, int]:
    """(has .symtab, e_type, e_machine) of the ELF file ``path`` (reads only its headers); an
    ELF that :class:`Image` refuses with its own message (32-bit, truncated, an unsupported
    machine) counts as having one."""
    e = "<" if head[5] == 1 else ">"
    e_type, e_machine = struct.unpack_from(e + "HH", head, 16)
    if head[4] != 2 or (e_machine not in KERNEL_MACHINES and e_type != ET_REL):
        return True, e_type, e_machine
    shoff, = struct.unpack_from(e + "Q", head, 40)
    shentsize, shnum = struct.unpack_from(e + "HH", head, 58)
    if shoff + shentsize * shnum > os.path.getsize(path):
        return True, e_type, e_machine  # truncated: Image says so
    with open(path, "rb") as f:
        f.seek(shoff)
        raw = f.read(shentsize * shnum)
    for i in range(len(raw) // 64):
        (sh_type,) = struct.unpack_from(e + "I", raw, i * 64 + 4)
        if sh_type == SHT_SYMTAB:
            return True, e_type, e_machine
    return False, e_type, e_machine


def needs_boot_elf(path: str) -> bool:
    """True when ``path`` is not an ELF with a .symtab (so :func:`boot_elf` must read it)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # a FIFO, device or directory: never opened here (inputs.py refuses it)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False  # Image reports the error
    if len(head) < 64:
        return False
    if head[:4] != b"\x7fELF":
        return True
    try:
        has, e_type, _ = _elf_has_symtab(head, path)
    except (OSError, struct.error, ValueError, OverflowError):  # hostile e_shoff: Image reports
        return False
    return not has or e_type == ET_REL  # a module (.ko) has a .symtab: refused by boot_elf


def _mistake(path: str, data: bytes) -> str | None:
    """A one-line explanation when ``data`` is a known non-image, else None."""
    head = bytes(data[:4096])
    name = os.path.basename(path)
    if looks_like_system_map(head) or b"The real System.map is in" in head:
        return (f"{path}: this is a System.map, not a kernel image; pass the image "
                f"(e.g. {name.replace('System.map', 'vmlinuz')}) and this file with --system-map")
    if head.startswith(b"#\n# Automatically generated file") or re.search(rb"^CONFIG_\w+=", head, re.MULTILINE):
        return (f"{path}: this is a kernel config, not a kernel image; pass the image "
                f"(e.g. {name.replace('config', 'vmlinuz')}) and this file with --config")
    return None


def _release(path: str, banner: str | None) -> str | None:
    m = re.match(r"^(?:vmlinuz|vmlinux|bzImage|Image|zImage|kernel)-(.+?)(?:\.(?:gz|xz|zst|bz2|lz4|lzma|lzo))?$",
                 os.path.basename(path))
    if m:
        return m.group(1)
    if banner:
        b = re.search(r"Linux version (\S+)", banner)
        return b.group(1) if b else None
    return None


def beside(path: str, prefix: str, banner: str | None) -> str | None:
    """``PREFIX-RELEASE`` in the directory of ``path`` (System.map-*, config-*), or None."""
    rel = _release(path, banner)
    if rel is None:
        return None
    cand = os.path.join(os.path.dirname(os.path.abspath(path)), f"{prefix}-{rel}")
    return cand if os.path.isfile(cand) else None


def _unpack(path: str, data: bytes, depth: int = 0) -> tuple[str, bytes, str | None]:
    """(kind, payload, raw-image arch or None for an ELF payload) of boot image ``data``."""
    if depth > 3:
        raise InputError(f"{path}: compressed more than three times over; pass the uncompressed vmlinux")
    if data[:4] == b"\x7fELF":
        return "stripped vmlinux (ELF)", data, None
    if is_bzimage(data):
        fmt = detect(data, _bz_payload_at(data)) or "unknown"
        return f"bzImage ({fmt})", bzimage_payload(data, path), None
    if is_zboot(data):
        kind, payload, arch = _unpack(path, zboot_payload(data, path), depth + 1)
        return f"EFI zboot {kind}", payload, arch
    if is_arm64_image(data):
        return "arm64 Image", data, "arm64"
    if is_riscv_image(data):
        return "riscv64 Image", data, "riscv64"
    if is_s390_image(data):
        return "s390x compressed image", s390_payload(data, path), "s390x"
    comp = detect(data)
    if comp is not None:
        kind, payload, arch = _unpack(path, decompress(data, path), depth + 1)
        return f"{kind}, {comp}-compressed", payload, arch
    if (msg := _mistake(path, data)) is not None:
        raise InputError(msg)
    raise InputError(f"{path}: not a kernel image (not an ELF file nor a known boot image format, "
                     f"magic {bytes(data[:8]).hex()}); pass a vmlinux, vmlinuz/bzImage or Image of a Linux kernel")


def _bz_payload_at(data: bytes) -> int:
    (off,) = struct.unpack_from("<I", data, 0x248)
    return ((data[0x1F1] or 4) + 1) * 512 + off


def _check_elf_input(path: str, data: Payload) -> None:
    """Refuse an ELF that is not a kernel: a module (ET_REL) or a user-space program."""
    e = "<" if data[5] == 1 else ">"
    (e_type,) = struct.unpack_from(e + "H", data, 16)
    if e_type == ET_REL:
        raise InputError(f"{path}: a kernel module (.ko, ELF relocatable), not a kernel image; pass "
                         "the vmlinux/vmlinuz of the kernel it was built for, and probe it as MOD:SYM")
    if data.find(b"Linux version ") < 0:
        raise InputError(f"{path}: an ELF program without a Linux banner (user space?), not a kernel "
                         "image; pass a vmlinux or /boot/vmlinuz-RELEASE (uprobes: use the uprobe command)")


_PENDING: dict[tuple[object, ...], "Future[BootElf]"] = {}


def _pending_key(path: str, system_map: str | None) -> tuple[object, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return (path,)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, system_map, cache_dir())


def prefetch(path: str, system_map: str | None = None) -> None:
    """Start :func:`boot_elf` of ``path`` in a background thread when it is a boot image, so the
    decompression (which releases the GIL) runs while the command imports its modules; the
    next :func:`boot_elf` of the same image takes the result (or its error)."""
    key = _pending_key(path, system_map)
    if key in _PENDING or not needs_boot_elf(path):
        return
    fut: Future[BootElf] = Future()

    def work() -> None:
        try:
            fut.set_result(_boot_elf(path, None, system_map))
        except BaseException as e:  # noqa: BLE001 -- handed to the caller of boot_elf
            fut.set_exception(e)
    _PENDING[key] = fut
    threading.Thread(target=work, name="kpatch-boot-prefetch", daemon=True).start()


def boot_elf(path: str, config_path: str | None = None, system_map: str | None = None) -> BootElf:
    """Read boot image ``path`` and return the synthetic ELF that stands for its vmlinux."""
    fut = _PENDING.pop(_pending_key(path, system_map), None)
    if fut is not None:
        b = fut.result()
        if os.path.isfile(b.elf_path):
            return attrs.evolve(b, config_path=config_path) if config_path is not None else b
    return _boot_elf(path, config_path, system_map)


def _boot_elf(path: str, config_path: str | None, system_map: str | None) -> BootElf:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if (msg := _mistake(path, data)) is not None:
        raise InputError(msg)
    if data[:4] == b"\x7fELF":
        _check_elf_input(path, data)
    smap_path = system_map
    h = hashlib.sha256(data)
    banner_at = data.find(b"Linux version ")
    banner = bytes(data[banner_at:banner_at + 256]).split(b"\0")[0].decode("ascii", "replace") \
        if banner_at >= 0 else None
    if smap_path is None:
        smap_path = beside(path, "System.map", banner)
    smap = read_system_map(smap_path) if smap_path else None
    if smap is not None:
        with open(smap_path, "rb") as f:  # type: ignore[arg-type]
            h.update(f.read())
    if config_path is None:
        config_path = beside(path, "config", banner)
    key = f"{h.hexdigest()}-v{FORMAT_VERSION}"
    out = os.path.join(cache_dir(), key + ".elf")
    src_file = out + ".source"
    if os.path.isfile(out) and os.path.isfile(src_file):
        discard(path)  # the decoding the CLI started is not needed
        with open(src_file) as f:
            kind, source = f.read().split("\n", 1)
        return BootElf(out, kind, source, config_path, smap_path if smap else None)
    elf, found = None, None
    if is_bzimage(data):  # decoded in a thread, written out and read as it comes (stream.py)
        kind, payload, elf, found, early = unpack_bzimage(path, data, out, smap is None)
        arch = None
        if found is not None and not early.agrees(_vaddr_of(payload, None)):
            found = None
    else:
        kind, payload, arch = _unpack(path, data)
    try:
        if arch is None:
            _check_elf_input(path, payload)
        syms = smap if smap is not None else _kallsyms(path, payload, arch, found)
        if found is not None and syms.names is found.names:
            syms = attrs.evolve(syms, shapes=early.shapes)
        layout = elf_payload_layout(payload) if arch is None else raw_payload_layout(arch, payload, syms)
        if smap is not None:
            _check_same_build(path, smap_path, smap, payload, layout, banner)  # type: ignore[arg-type]
        mcount = _mcount(layout, payload, syms)
        evidence = near_mcount(syms.addrs, mcount) | _entry_words(layout, payload, syms)
        if elf is None:
            elf = ElfFile(out)
            elf.write_payload(payload)
        elf.finish(layout, syms, _btf_functions(layout, payload), evidence,
                   own_records(syms.addrs, mcount[mcount != 0]),
                   comment=f"kpatch-core boot image: {kind}".encode())
    except BaseException:
        if elf is not None:
            elf.abort()
        raise
    with open(src_file + ".tmp", "w") as f:
        f.write(f"{kind}\n{syms.source}")
    os.replace(src_file + ".tmp", src_file)
    return BootElf(out, kind, syms.source, config_path, smap_path if smap else None)


def _kallsyms(path: str, payload: Payload, arch: str | None,
              found: KallsymsTable | None = None) -> Symbols:
    """Symbols from the kallsyms tables of ``payload`` (``found``: already read, stream.py)."""
    e = ">" if arch == "s390x" or (arch is None and payload[5] == 2) else "<"
    if arch == "arm64" and not arm64_little_endian(payload):
        e = ">"
    try:
        k = found or find_kallsyms(payload, e, vaddr_of=_vaddr_of(payload, arch))
        if arch == "arm64" and k.addrs_from_payload:  # place-relative offsets in a raw image
            k = attrs.evolve(k, addrs=k.addrs + np.uint64(_arm64_link_base(payload, k)))
    except InputError as err:
        if arch is None:  # a stripped ELF: the debug vmlinux is the usual answer
            raise InputError(f"{path}: stripped image (no .symtab) without kallsyms tables; use the "
                             "unstripped debug vmlinux (Debian: linux-image-<version>-dbg) or pass "
                             "its System.map with --system-map FILE") from None
        raise InputError(f"{path}: {err}") from None
    if "linux_banner" not in k.names:  # a .rodata symbol: absent from text-only kallsyms
        # scripts/kallsyms.c without --all-symbols keeps _stext.._etext and the init text only:
        # the kernel tables (__mcount_loc, _kprobe_blacklist, __jump_table...) have no symbol;
        # the code that loads them still shows where they are (code_refs)
        return _text_only(path, payload, arch, k)
    return Symbols(k.addrs, k.types, k.names, "kallsyms")


TEXT_ONLY = ("its kallsyms holds text symbols only (CONFIG_KALLSYMS_ALL off), so the kernel "
             "tables verdicts depend on cannot be located")
PASS_MAP = ("pass the System.map of this build with --system-map FILE (Debian: in "
            "linux-image-<version>-dbg) or the debug vmlinux")


def _text_only(path: str, payload: Payload, arch: str | None, k: KallsymsTable) -> Symbols:
    """Symbols of a text-only kallsyms, with the table bounds recovered from the code that
    loads them (:mod:`.code_refs`) and ``kallsyms_num_syms`` (config inference reads it)."""
    refs = code_refs_for(arch) if arch is not None else None
    if refs is None or arch is None:
        raise InputError(f"{path}: {TEXT_ONLY}; {PASS_MAP}")
    addrs = np.asarray(k.addrs, np.uint64)
    base = None
    if arch == "arm64" and "primary_entry" in k.names and "_text" not in k.names:
        # kallsyms_relative_base is a boot-relocated word (zero in the Image): the offsets are
        # from the lowest symbol; head.S's branch to primary_entry places _text among them
        text = arm64_text_from_branch(payload, int(addrs[k.names.index("primary_entry")]))
        if text is None:
            raise InputError(f"{path}: {TEXT_ONLY} and the image header has no branch to "
                             f"primary_entry to place them; {PASS_MAP}")
        base = _arm64_link_base(payload, k)
        with np.errstate(over="ignore"):
            addrs = addrs - np.uint64(text % 2**64) + np.uint64(base)
    found: dict[str, int] = {}
    if arch == "s390x":
        # the decompressor's struct vmlinux_info places vmlinux.bin (_stext) and names its
        # .dynsym and .rela.dyn, which handle_relocs (arch/s390/boot/startup.c) applies
        with open(path, "rb") as f:
            info = s390_vmlinux_info(f.read(), len(payload))
        if info is None or "_stext" not in k.names:
            raise InputError(f"{path}: {TEXT_ONLY} and the boot image's vmlinux_info is not "
                             f"recognised to place them; {PASS_MAP}")
        with np.errstate(over="ignore"):
            addrs = addrs - addrs[k.names.index("_stext")] + np.uint64(info.default_lma)
        found = {"__dynsym_start": info.dynsym_start, "__dynsym_end": info.rela_dyn_start,
                 "__rela_dyn_start": info.rela_dyn_start, "__rela_dyn_end": info.rela_dyn_end}
    names = k.names + list(found)
    syms = Symbols(np.concatenate([addrs, np.array(list(found.values()), np.uint64)]),
                   k.types + "D" * len(found), names, "kallsyms")
    try:
        layout = raw_payload_layout(arch, payload, syms)
        found |= recover_tables(refs, _image_view(arch, layout, payload, refs.absolute_relocs),
                                addrs, k.names)
    except InputError as err:
        raise InputError(f"{path}: {TEXT_ONLY}: {err}") from None
    if k.num_syms_at >= 0:
        found["kallsyms_num_syms"] = layout.entry + k.num_syms_at  # offset 0 is the entry
    extra = sorted(found.items(), key=lambda kv: kv[1])
    all_addrs = np.concatenate([addrs, np.array([a for _, a in extra], np.uint64)])
    order = np.argsort(all_addrs, kind="stable")
    names = k.names + [n for n, _ in extra]
    types = k.types + "D" * len(extra)
    return Symbols(all_addrs[order], "".join(types[i] for i in order.tolist()),
                   [names[i] for i in order.tolist()], "kallsyms (tables from code references)")


def _image_view(arch: str, layout: Layout, payload: Payload, absolute: tuple[int, ...] = ()) -> ImageView:
    """Reads by address of a raw image, its pointer words relocated by its own boot relocations
    (R_*_RELATIVE; ``absolute``: the S + A types against a .dynsym symbol too)."""
    def read(addr: int, n: int) -> bytes | None:
        return read_at(layout, payload, addr, n) or None
    rtype = RAW_ARCHES[arch][2]
    e = "<" if layout.little_endian else ">"
    places = addends = np.zeros(0, np.uint64)
    rela = next((s for s in layout.sections if s.type == SHT_RELA and s.src >= 0), None)
    if rela is not None:
        r = np.frombuffer(payload[rela.src:rela.src + rela.size // 24 * 24], e + "u8").reshape(-1, 3)
        typ = r[:, 1] & np.uint64(0xFFFFFFFF)
        rel = r[typ == np.uint64(rtype)]
        places, addends = rel[:, 0], rel[:, 2]
        dynsym = next((s for s in layout.sections if s.name == ".dynsym" and s.src >= 0), None)
        if absolute and dynsym is not None:  # value = S + A
            st = np.frombuffer(payload[dynsym.src:dynsym.src + dynsym.size // 24 * 24],
                               e + "u8").reshape(-1, 3)[:, 1]  # st_value of each Elf64_Sym
            ab = r[np.isin(typ, np.array(absolute, np.uint64))]
            sym = (ab[:, 1] >> np.uint64(32)).astype(np.int64)
            ab, sym = ab[sym < len(st)], sym[sym < len(st)]
            with np.errstate(over="ignore"):
                places = np.concatenate([places, ab[:, 0]])
                addends = np.concatenate([addends, st[sym] + ab[:, 2]])
        o = np.argsort(places, kind="stable")
        places, addends = places[o].astype(np.uint64), addends[o].astype(np.uint64)
    return ImageView(read, relocated_pointers(read, places, addends, layout.little_endian),
                     layout.little_endian, (layout.entry, layout.entry + len(payload)))


def _vaddr_of(payload: Payload, arch: str | None) -> "Callable[[int], int | None] | None":
    """Payload offset -> address: the sections of an ELF payload; a raw arm64 Image's offsets
    as they are (its link base is found after, :func:`_arm64_link_base`)."""
    if arch == "arm64":
        return lambda o: o
    if arch is not None:
        return None
    try:
        secs = [(s.src, s.src + s.size, s.addr) for s in elf_payload_layout(payload).sections
                if s.src >= 0 and s.addr and s.type != 8]
    except InputError:
        return None

    def at(o: int) -> int | None:
        return next((a + o - lo for lo, hi, a in secs if lo <= o < hi), None)
    return at


def _arm64_link_base(payload: Payload, k: KallsymsTable) -> int:
    """The link address of a raw arm64 Image (offset 0 = ``_text``) from its own boot
    relocations: arm64 links with --no-apply-dynamic-relocs, so every R_AARCH64_RELATIVE place
    (``r_offset`` = link base + offset) holds zero in the image; of the SEGMENT_ALIGN (64 KiB)
    multiples that keep every place inside the image, the one where all sampled places are zero
    is the base."""
    w = np.frombuffer(payload[:len(payload) // 8 * 8], "<u8")
    i = np.nonzero(w[1:-1] == np.uint64(1027))[0] + 1  # r_info of R_AARCH64_RELATIVE
    hi_half = np.uint64(0xFFFF000000000000)
    i = i[(w[i - 1] >= hi_half) & (w[i + 1] >= hi_half)]
    if len(i) < 16:  # RELR (.relr.dyn, 7.x): the places hold their link-time values
        return _base_from_pointers(w, k)
    places = w[i - 1]
    lo = (int(places.max()) + 8 - len(payload) + 0xFFFF) & ~0xFFFF
    hi = min(int(places.min()), int(w[i + 1].min()))
    sample = places[:: max(1, len(places) // 4096)]
    found = []
    for base in range(lo, hi + 1, 0x10000):
        off = (sample - np.uint64(base)).astype(np.int64)
        if (off % 8 == 0).all() and not w[off // 8].any():
            found.append(base)
    if len(found) != 1:
        raise InputError(f"cannot place the raw image from its relocations ({len(found)} candidate "
                         "link addresses); pass --system-map FILE")
    return found[0]


def _base_from_pointers(w: np.ndarray, k: KallsymsTable) -> int:
    """The link base of a raw image whose pointers hold link-time addresses (RELR relocations):
    the SEGMENT_ALIGN multiple that turns the most pointer words into a kallsyms symbol's
    offset in the image (function pointers in ops tables, and so on)."""
    rel = np.unique(np.asarray(k.addrs, np.uint64))
    low = rel & np.uint64(0xFFFF)
    order = np.argsort(low, kind="stable")
    rel, low = rel[order], low[order]
    ptr = w[(w >= np.uint64(0xFFFF000000000000)) & (w < np.uint64(0xFFFFFFFFFFFF0000))]
    ptr = np.unique(ptr)[:: max(1, len(ptr) // 20000)]
    lo = np.searchsorted(low, ptr & np.uint64(0xFFFF), side="left")
    hi = np.searchsorted(low, ptr & np.uint64(0xFFFF), side="right")
    cand = [ptr[j] - rel[lo[j]:hi[j]] for j in np.nonzero(hi > lo)[0].tolist()]
    if not cand:
        raise InputError("cannot place the raw image (no pointers to its symbols); pass --system-map FILE")
    vals, counts = np.unique(np.concatenate(cand), return_counts=True)
    top = np.argsort(counts)[::-1][:2]
    if counts[top[0]] < 100 or (len(top) > 1 and counts[top[0]] < 3 * counts[top[1]]):
        raise InputError("cannot place the raw image from its pointers; pass --system-map FILE")
    return int(vals[top[0]])


def _btf_functions(layout: Layout, payload: Payload) -> frozenset[str]:
    """Names in the string section of the image's .BTF (:func:`btf_string_names`)."""
    s = next((s for s in layout.sections if s.name == ".BTF" and s.src >= 0), None)
    if s is None:
        return frozenset()
    return btf_string_names(memoryview(payload)[s.src:s.src + s.size])


def _mcount(layout: Layout, payload: Payload, syms: Symbols) -> np.ndarray:
    """The raw ``__mcount_loc`` records, read between their linker symbols."""
    v = {n: int(syms.addrs[i]) for n in ("__start_mcount_loc", "__stop_mcount_loc")
         if (i := _last_index(syms.names, n)) >= 0}
    if len(v) != 2 or v["__stop_mcount_loc"] <= v["__start_mcount_loc"]:
        return np.zeros(0, np.uint64)
    n = v["__stop_mcount_loc"] - v["__start_mcount_loc"]
    raw = read_at(layout, payload, v["__start_mcount_loc"], n)
    e = "<" if layout.little_endian else ">"
    return np.frombuffer(raw[:len(raw) // 8 * 8], e + "u8").astype(np.uint64)


def _last_index(names: list[str], name: str) -> int:
    """Index of the last ``name`` in ``names`` (a C-speed search, not a Python loop over all
    the symbols), -1 when absent."""
    try:
        return len(names) - 1 - names[::-1].index(name)
    except ValueError:
        return -1


def _entry_words(layout: Layout, payload: Payload, syms: Symbols) -> np.ndarray:
    """Per symbol: does it start with one of the machine's function-entry instructions?"""
    words = FUNCTION_ENTRY_WORDS.get(layout.machine)
    out = np.zeros(len(syms.addrs), bool)
    if not words:
        return out
    e = "<" if layout.little_endian else ">"
    buf = np.frombuffer(payload, np.uint8)
    addrs = np.asarray(syms.addrs, np.uint64)
    for s in layout.sections:
        if not s.flags & SHF_EXECINSTR or s.src < 0 or s.size < 4:
            continue
        m = (addrs >= np.uint64(s.addr)) & (addrs <= np.uint64(s.addr + s.size - 4))
        if not m.any():
            continue
        pos = (addrs[m] - np.uint64(s.addr)).astype(np.int64) + s.src
        raw = buf[pos[:, None] + np.arange(4)].copy().view(np.dtype(e + "u4")).reshape(-1)
        out[m] = np.isin(raw, np.array(words, np.uint32))
    return out


def _check_same_build(path: str, smap_path: str, syms: Symbols, payload: Payload, layout: object,
                      banner: str | None) -> None:
    """A System.map of another build puts ``linux_banner`` where this image has other bytes
    (init/version.c: the banner names the build: release, compiler, build number, date)."""
    try:
        i = syms.names.index("linux_banner")
    except ValueError:
        return
    got = read_at(layout, payload, int(syms.addrs[i]), 14)  # type: ignore[arg-type]
    if got != b"Linux version ":
        raise InputError(f"{smap_path}: System.map of another build (its linux_banner address does not "
                         f"hold this image's banner {banner!r}); pass the System.map of {os.path.basename(path)}"
                         " or none (the symbols are then read from the image's kallsyms)")


__all__ = ["EM_AARCH64", "EM_RISCV", "EM_S390", "BootElf", "beside", "boot_elf", "cache_dir",
           "needs_boot_elf", "prefetch"]
