#!/usr/bin/env python3
"""Make the small boot images of testdata/boot/ from the test vmlinux images.

    python testdata/boot/make_boot_images.py      (from anywhere; needs binutils' objcopy and nm)

For each architecture it writes the kernel's kallsyms tables into the image (as scripts/kallsyms.c
lays them out from 6.2 on: num_syms, names, markers, token_table, token_index, offsets,
relative_base; every symbol kept, as with CONFIG_KALLSYMS_ALL), then packs the payload the way
that architecture's boot image does:

- x86_64: stripped vmlinux (``objcopy -S``) in a bzImage (setup header, arch/x86/boot/header.S)
  compressed with gzip, xz, lzma, bzip2, lz4 (legacy frame), zstd and lzo (lzop -9 container,
  with python-lzo installed): ``x86_64/vmlinuz-<fmt>``;
- arm64: ``objcopy -O binary`` layout from ``_text`` with the Image header (``Image``),
  gzipped (``Image.gz``) and in an EFI zboot container (``vmlinuz.efi``, zstd);
- riscv64: the same with the riscv header (``Image``) and zboot with gzip (``vmlinuz.efi``);
- s390x: the raw payload xz-compressed behind the IPL PSW of the decompressor (``vmlinuz``);
- ppc64le: the stripped vmlinux ELF (``vmlinux-stripped``).

Beside each: ``System.map`` (nm -n, filtered like scripts/mksysmap) and ``config`` (a few
CONFIG_ lines), named ``System.map-<release>``/``config-<release>`` for the ``vmlinuz-<release>``
copy in ``x86_64/release/``. The payload's kallsyms-derived verdicts must equal the vmlinux's
(tests/test_bootimage.py).
"""
from __future__ import annotations

import bz2
import gzip
import importlib.util
import lzma
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import lz4.block
import zstandard
from elftools.elf.elffile import ELFFile

HERE = Path(__file__).resolve().parent
TESTDATA = HERE.parent
sys.path.insert(0, str(TESTDATA.parent))

from kpatch_core.image import Image  # noqa: E402 (after the sys.path line)
from kpatch_core.symbols import kallsyms_keeps  # noqa: E402

SOURCES = {"x86_64": "x86_64/vmlinux", "arm64": "arm64/vmlinux-6.12", "riscv64": "riscv64/vmlinux-6.12",
           "s390x": "s390x/vmlinux-6.12", "ppc64le": "ppc64le/vmlinux"}
CONFIG = b"#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_KALLSYMS=y\nCONFIG_KALLSYMS_ALL=y\n"
RELEASE = "6.1.0-kpatch-test"


def nm_symbols(path: Path) -> list[tuple[int, str, str]]:
    """``nm -n`` lines as (address, letter, name), filtered like scripts/mksysmap."""
    out = subprocess.run(["nm", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] in "aNUw":
            continue
        rows.append((int(parts[0], 16), parts[1], parts[2]))
    return rows


def kallsyms_rows(vmlinux: Path, extra: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The symbols kallsyms would hold, in the kernel's order (address, then compare_symbols)."""
    letters = {}
    for a, t, n in nm_symbols(vmlinux):
        letters.setdefault((a, n), t)
    img = Image.open(str(vmlinux))
    ks = img.kallsyms
    off = img.load_offset  # kallsyms holds link-time addresses (s390x 6.10+ moves them at boot)
    rows = [(int(a) - off, letters.get((int(a) - off, n), "t"), n)
            for a, n in zip(ks.addrs.tolist(), ks.names)]
    rows += [r for r in extra if kallsyms_keeps(r[2])]
    rows.sort(key=lambda r: r[0])  # stable: the kernel's alias order is kept
    return rows


def kallsyms_blob(rows: list[tuple[int, str, str]], e: str, place: int | None = None) -> bytes:
    """scripts/kallsyms.c output: single characters are their own tokens; the most frequent
    character pairs take the unused token numbers (compress_symbols, simplified). With ``place``
    (the address the blob will sit at): the newest layout (Debian 7.2): names right after
    num_syms, no kallsyms_relative_base, each offset relative to its own place."""
    strs = [(t + n).encode("latin-1") for _a, t, n in rows]
    used = sorted({c for s in strs for c in s} | set(b"0123456789"))
    tokens: list[bytes | None] = [None] * 256
    for c in used:
        tokens[c] = bytes([c])
    pairs: dict[bytes, int] = {}
    for s in strs:
        for i in range(len(s) - 1):
            pairs[s[i:i + 2]] = pairs.get(s[i:i + 2], 0) + 1
    free = [i for i in range(1, 256) if tokens[i] is None]
    best = sorted(pairs, key=lambda p: -pairs[p])[:len(free)]
    for i, p in zip(free, best):
        tokens[i] = p
    for i in range(256):
        if tokens[i] is None:
            tokens[i] = b"~"
    pair_id = {t: i for i, t in enumerate(tokens) if t is not None and len(t) == 2}
    names = bytearray()
    markers = []
    for k, s in enumerate(strs):
        if k % 256 == 0:
            markers.append(len(names))
        enc = []
        i = 0
        while i < len(s):
            if s[i:i + 2] in pair_id:
                enc.append(pair_id[s[i:i + 2]])
                i += 2
            else:
                enc.append(s[i])
                i += 1
        n = len(enc)
        names += bytes([n]) if n < 128 else bytes([(n & 0x7F) | 0x80, n >> 7])
        names += bytes(enc)

    def align(b: bytearray) -> None:
        b += bytes(-len(b) % 8)

    out = bytearray(struct.pack(e + "I", len(rows)) if place is not None else struct.pack(e + "II", len(rows), 0))
    out += names
    align(out)
    out += struct.pack(e + f"{len(markers)}I", *markers)
    align(out)
    table = bytearray()
    index = []
    for t in tokens:
        index.append(len(table))
        table += t + b"\0"  # type: ignore[operator]
    out += table
    align(out)
    out += struct.pack(e + "256H", *index)
    align(out)
    if place is not None:
        at = place + len(out)
        out += struct.pack(e + f"{len(rows)}i", *[r[0] - (at + 4 * i) for i, r in enumerate(rows)])
        return bytes(out)
    base = min(r[0] for r in rows)
    out += struct.pack(e + f"{len(rows)}i", *[r[0] - base for r in rows])
    align(out)
    out += struct.pack(e + "Q", base)
    return bytes(out)


def alloc_sections(vmlinux: Path) -> tuple[list[tuple[int, int, bytes | None]], bool, int]:
    """(addr, size, bytes or None for NOBITS) of the allocated sections, endianness, e_machine."""
    with open(vmlinux, "rb") as f:
        elf = ELFFile(f)
        secs = [(s["sh_addr"], s["sh_size"], None if s["sh_type"] == "SHT_NOBITS" else s.data())
                for s in elf.iter_sections() if s["sh_flags"] & 2 and s["sh_size"]]
        return secs, elf.little_endian, 0


def raw_payload(vmlinux: Path, header_page: bool, first_symbol: str = "_text") -> tuple[bytearray, int, int, str]:
    """The objcopy -O binary layout (+ a header page before it for arm64/riscv) with the
    kallsyms tables after the last section; (payload, base, kallsyms address, byte order)."""
    secs, little, _ = alloc_sections(vmlinux)
    e = "<" if little else ">"
    lo = min(a for a, _s, _d in secs)
    base = lo - 0x1000 if header_page else lo
    hi = max(a + s for a, s, _d in secs)
    ks_at = (hi + 0xFFF) & ~0xFFF
    rows = kallsyms_rows(vmlinux, [])
    if header_page:  # the image starts at _text (arm64) / _start (riscv64): the header page
        rows = [(base, "T", first_symbol)] + [r for r in rows if r[2] != first_symbol]
    blob = kallsyms_blob(rows, e)
    payload = bytearray(ks_at - base + len(blob))
    for a, s, d in secs:
        if d is not None:
            payload[a - base:a - base + s] = d
    payload[ks_at - base:] = blob
    return payload, base, ks_at, e


def bzimage(payload: bytes, version: str) -> bytes:
    """A bzImage: one setup sector after the boot sector, the header at 0x1f1 (protocol 2.15)."""
    setup = bytearray(1024)
    setup[:2] = b"MZ"
    setup[0x1F1] = 1  # setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    vs = version.encode() + b"\0"
    setup[0x300:0x300 + len(vs)] = vs
    struct.pack_into("<H", setup, 0x20E, 0x300 - 0x200)  # kernel_version
    struct.pack_into("<II", setup, 0x248, 0, len(payload))  # payload_offset, payload_length
    return bytes(setup) + payload


def lz4_legacy(data: bytes) -> bytes:
    """lz4 -l: the legacy frame the kernel's unlz4 reads (8 MiB blocks)."""
    out = bytearray(struct.pack("<I", 0x184C2102))
    for i in range(0, len(data), 8 << 20):
        blk = lz4.block.compress(data[i:i + (8 << 20)], store_size=False, mode="high_compression")
        out += struct.pack("<I", len(blk)) + blk
    return bytes(out)


def lzop(data: bytes) -> bytes:
    """``lzop -9`` as cmd_lzo runs it: the lzop header (version 0x1030, LZO1X-999, one adler32
    per block, F_ADLER32_D) and 256 KiB blocks [lib/decompress_unlzo.c]; needs python-lzo."""
    import zlib

    import lzo  # type: ignore[import-not-found]
    hdr = struct.pack(">HHHBBIIIIB", 0x1030, 0x2080, 0x0940, 3, 9, 0x1, 0o100644, 0, 0, 0)
    out = bytearray(b"\x89LZO\x00\r\n\x1a\n" + hdr + struct.pack(">I", zlib.adler32(hdr)))
    for i in range(0, len(data), 256 << 10):
        blk = data[i:i + (256 << 10)]
        c = lzo.compress(blk, 9, False)
        c = c if len(c) < len(blk) else blk
        out += struct.pack(">III", len(blk), len(c), zlib.adler32(blk)) + c
    return bytes(out + bytes(4))


COMPRESS = {
    "gzip": lambda d: gzip.compress(d, 9, mtime=0),
    "xz": lambda d: lzma.compress(d, lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    "lzma": lambda d: lzma.compress(d, lzma.FORMAT_ALONE),
    "bzip2": lambda d: bz2.compress(d, 9),
    "lz4": lz4_legacy,
    "zstd": lambda d: zstandard.ZstdCompressor(level=19).compress(d),
    "lzo": lzop,
}


def zboot(image: bytes, comp: str) -> bytes:
    """drivers/firmware/efi/libstub/zboot-header.S: MZ, "zimg", payload offset and size, type."""
    data = COMPRESS[comp](image)
    hdr = bytearray(0x200)
    hdr[:2] = b"MZ"
    hdr[4:8] = b"zimg"
    struct.pack_into("<II", hdr, 8, len(hdr), len(data))
    name = (comp if comp != "zstd" else "zstd22").encode()
    hdr[24:24 + len(name)] = name
    return bytes(hdr) + data


def stripped_with_kallsyms(vmlinux: Path, out: Path) -> None:
    """vmlinux with the kallsyms tables as a section of their own, then stripped (objcopy -S)."""
    secs, little, _ = alloc_sections(vmlinux)
    e = "<" if little else ">"
    hi = max(a + s for a, s, _d in secs)
    ks_at = (hi + 0xFFF) & ~0xFFF
    blob = kallsyms_blob(kallsyms_rows(vmlinux, []), e)
    with tempfile.TemporaryDirectory() as tmp:
        b = Path(tmp) / "kallsyms.bin"
        b.write_bytes(blob)
        subprocess.run(["objcopy", "--add-section", f".kallsyms={b}",
                        "--set-section-flags", ".kallsyms=alloc,load,readonly,data",
                        "--change-section-address", f".kallsyms={ks_at:#x}",
                        "--set-section-alignment", ".kallsyms=4096", "-S", str(vmlinux), str(out)],
                       check=True, capture_output=True)


def write_system_map(vmlinux: Path, out: Path, first: tuple[int, str] | None = None) -> None:
    """nm -n of ``vmlinux``; ``first`` (address, name) moves the image's first symbol to where
    the raw image starts (its header page)."""
    rows = nm_symbols(vmlinux)
    if first is not None:
        rows = sorted([(first[0], "T", first[1])] + [r for r in rows if r[2] != first[1]],
                      key=lambda r: r[0])
    out.write_text("".join(f"{a:016x} {t} {n}\n" for a, t, n in rows))


def main() -> int:
    for arch, src in SOURCES.items():
        vml = TESTDATA / src
        d = HERE / arch
        d.mkdir(exist_ok=True)
        write_system_map(vml, d / "System.map")
        (d / "config").write_bytes(CONFIG)
        if arch in ("x86_64", "ppc64le"):
            stripped = d / "vmlinux-stripped"
            stripped_with_kallsyms(vml, stripped)
            if arch == "x86_64":
                payload = stripped.read_bytes()
                for fmt, comp in COMPRESS.items():
                    if fmt == "lzo" and importlib.util.find_spec("lzo") is None:
                        print("x86_64: vmlinuz-lzo kept as it is (python-lzo not installed)")
                        continue
                    (d / f"vmlinuz-{fmt}").write_bytes(bzimage(comp(payload), RELEASE))
                stripped.unlink()
                rel = d / "release"
                rel.mkdir(exist_ok=True)
                (rel / f"vmlinuz-{RELEASE}").write_bytes((d / "vmlinuz-zstd").read_bytes())
                (rel / f"config-{RELEASE}").write_bytes(CONFIG)
                (rel / f"System.map-{RELEASE}").write_text(
                    "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n")
            continue
        # the image starts at _text (_start on riscv64): a page before the test vmlinux's first
        # section, which holds the arm64/riscv64 header (s390x: its build-id note lies below _text)
        payload, base, _ks, _e = raw_payload(vml, True,
                                            "_start" if arch == "riscv64" else "_text")
        write_system_map(vml, d / "System.map", (base, "_start" if arch == "riscv64" else "_text"))
        if arch == "arm64":
            payload[0:2] = b"MZ"
            struct.pack_into("<QQQ", payload, 8, 0, len(payload), 0xA)  # text_offset, image_size, flags
            payload[0x38:0x3C] = b"ARM\x64"
            (d / "Image").write_bytes(payload)
            (d / "Image.gz").write_bytes(gzip.compress(bytes(payload), 9, mtime=0))
            (d / "vmlinuz.efi").write_bytes(zboot(bytes(payload), "zstd"))
        elif arch == "riscv64":
            payload[0:2] = b"MZ"
            struct.pack_into("<QQQI", payload, 8, 0, len(payload), 0, 2)
            payload[48:56] = b"RISCV\0\0\0"
            payload[56:60] = b"RSC\x05"
            (d / "Image").write_bytes(payload)
            (d / "vmlinuz.efi").write_bytes(zboot(bytes(payload), "gzip"))
        else:  # s390x: IPL PSW, the decompressor's text, then the compressed vmlinux.bin
            stub = bytearray(0x10000)
            stub[:8] = b"\x00\x08\x00\x00\x80\x01\x00\x00"
            (d / "vmlinuz").write_bytes(bytes(stub) + COMPRESS["xz"](bytes(payload)))
        print(f"{arch}: base {base:#x}, payload {len(payload)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
