"""Decompress a kernel payload in any format the kernel's boot decompressors accept.

Each format is recognised by its magic (as scripts/Makefile.lib's ``cmd_gzip``, ``cmd_xzkern``,
``cmd_lzma``, ``cmd_bzip2``, ``cmd_lzo``, ``cmd_lz4``, ``cmd_zstd22`` write them) and decoded with
the field's library: stdlib gzip/lzma/bz2, ``zstandard``, ``lz4``; lzo through ``python-lzo``
when installed (it needs liblzo2 to build, so it is optional). Trailing bytes after the stream
(the 4-byte decompressed size arch/x86/boot/compressed/Makefile appends) are ignored.

>>> decompress(gzip.compress(b"vmlinux")) == b"vmlinux"      # doctest: +SKIP
True
"""
from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from typing import Iterator

from ..boot_decode import CHUNK, MAGICS, PIECEWISE, detect, pieces
from ..errors import InputError


def _gzip(d: bytes) -> bytes:
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(d)


def _xz(d: bytes) -> bytes:
    return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(d)


def _lzma(d: bytes) -> bytes:
    return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(d)


def _bzip2(d: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(d)


def _zstd(d: bytes) -> bytes:
    import zstandard
    return zstandard.ZstdDecompressor().decompressobj().decompress(d)


def _lz4_legacy(d: bytes) -> bytes:
    """lz4 legacy frame: magic, then blocks of (u32 LE size, block of at most 8 MiB output)
    [lib/decompress_unlz4.c]; a size that is another magic ends the stream."""
    import lz4.block  # type: ignore[import-untyped]
    out = []
    p = 4
    while p + 4 <= len(d):
        (n,) = struct.unpack_from("<I", d, p)
        if n == 0x184C2102:  # another stream follows
            p += 4
            continue
        if n > len(d) - p - 4 or n == 0:
            break
        try:
            out.append(lz4.block.decompress(d[p + 4:p + 4 + n], uncompressed_size=8 << 20))
        except lz4.block.LZ4BlockError:
            break  # the appended size word is not a block
        p += 4 + n
    return b"".join(out)


def _lz4_frame(d: bytes) -> bytes:
    import lz4.frame  # type: ignore[import-untyped]
    return lz4.frame.LZ4FrameDecompressor().decompress(d)


def _lzo(d: bytes) -> bytes:
    """lzop container as lib/decompress_unlzo.c reads it (``parse_header``, then blocks of u32 BE
    uncompressed size, u32 BE compressed size, checksums, data; a zero size ends it); the block
    checksums are the ones the header flags announce (``lzop -9``, as cmd_lzo runs it: one)."""
    try:
        import lzo  # type: ignore[import-not-found]
    except ImportError:
        raise InputError("lzo-compressed payload: install python-lzo (pip install 'kpatch-core[lzo]' "
                         "or python-lzo; it builds against liblzo2-dev) or pass the uncompressed "
                         "vmlinux") from None
    (version,) = struct.unpack_from(">H", d, 9)
    p = 9 + 7 + (1 if version >= 0x0940 else 0)  # version, lib version, needed version, method, level
    (flags,) = struct.unpack_from(">I", d, p)
    p += 8 if flags & 0x800 else 4  # HEADER_HAS_FILTER: flags + filter
    p += 8 + (4 if version >= 0x0940 else 0)  # mode, mtime_low, mtime_high
    p += 1 + d[p] + 4  # name length, name, header checksum
    d_sums = 4 * (bool(flags & 0x1) + bool(flags & 0x100))  # F_ADLER32_D, F_CRC32_D
    c_sums = 4 * (bool(flags & 0x2) + bool(flags & 0x200))  # F_ADLER32_C, F_CRC32_C
    out = []
    while p + 4 <= len(d):
        (dst,) = struct.unpack_from(">I", d, p)
        if dst == 0:
            break
        (src,) = struct.unpack_from(">I", d, p + 4)
        if src == 0 or src > dst:
            raise ValueError(f"block at {p}: compressed size {src} for {dst} bytes")
        p += 8 + d_sums + (c_sums if src < dst else 0)
        block = d[p:p + src]
        out.append(block if src == dst else lzo.decompress(block, False, dst))
        p += src
    return b"".join(out)


_DECODERS = {"gzip": _gzip, "xz": _xz, "lzma": _lzma, "bzip2": _bzip2, "zstd": _zstd,
             "lz4": _lz4_legacy, "lz4f": _lz4_frame, "lzo": _lzo}


def decompress(data: bytes, what: str = "payload") -> bytes:
    """Decompress ``data`` (format by magic); raises :class:`InputError` for an unknown format
    or a corrupt stream."""
    fmt = detect(data)
    if fmt is None:
        raise InputError(f"{what}: compressed in an unknown format (magic {bytes(data[:6]).hex()}); "
                         "pass the uncompressed vmlinux")
    try:
        out = _DECODERS[fmt](data)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as e:
        raise InputError(f"{what}: corrupt {fmt} stream ({e}); download the image again") from None
    except Exception as e:  # zstandard.ZstdError, lz4 errors: library-specific types
        if type(e).__module__.split(".")[0] in ("zstandard", "lz4", "lzo"):
            raise InputError(f"{what}: corrupt {fmt} stream ({e}); download the image again") from None
        raise
    if not out:
        raise InputError(f"{what}: empty or corrupt {fmt} stream; download the image again")
    return out


def decompress_chunks(data: bytes, what: str = "payload", chunk: int = CHUNK) -> Iterator[bytes]:
    """:func:`decompress` in pieces, as the decoder produces them (xz, lzma, bzip2, gzip and
    zstd: :func:`kpatch_core.boot_decode.pieces`; lz4 and lzo in one), so that a reader can
    start on the beginning of the payload while the rest decodes; the same bytes in all and the
    same errors."""
    fmt = detect(data)
    if fmt in PIECEWISE:
        yield from pieces(fmt, data, what, chunk)  # type: ignore[arg-type]
    else:
        yield decompress(data, what)


def find_stream(data: bytes, formats: tuple[str, ...] = ("gzip", "xz", "zstd", "bzip2", "lz4",
                                                          "lzo", "lzma")) -> tuple[int, str] | None:
    """The first offset in ``data`` where a stream of one of ``formats`` starts and decodes
    (for images that embed the payload without a header giving its place: s390x, zboot)."""
    best: tuple[int, str] | None = None
    for magic, name in MAGICS:
        if name not in formats:
            continue
        pos = 0
        while (i := data.find(magic, pos)) >= 0:
            pos = i + 1
            if best is not None and i >= best[0]:
                break
            try:
                _DECODERS[name](bytes(data[i:i + 4096]) if name not in ("gzip", "xz", "zstd", "bzip2")
                                else bytes(data[i:i + 65536]))
            except Exception:  # noqa: BLE001, S112 -- a false magic (any decoder's error): next one
                continue
            best = (i, name)
            break
    return best
