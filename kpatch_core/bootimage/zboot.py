"""EFI zboot images (drivers/firmware/efi/libstub/zboot-header.S): a PE/COFF stub whose DOS
header says ``zimg`` at offset 4, the payload's offset and size at 8 and 12 and the compression
name at 24 (``gzip``, ``zstd22``, ...). The payload decompresses to the arch's ``Image``
(arm64, riscv64, loongarch).

>>> is_zboot(data), zboot_payload(data)[:4]           # doctest: +SKIP
"""
from __future__ import annotations

import struct

from ..errors import InputError
from .decompress import decompress


def is_zboot(data: bytes) -> bool:
    """True when ``data`` is an EFI zboot image."""
    return len(data) > 64 and data[:2] == b"MZ" and data[4:8] == b"zimg"


def zboot_payload(data: bytes, what: str = "zboot image") -> bytes:
    """The decompressed Image inside an EFI zboot image."""
    off, size = struct.unpack_from("<II", data, 8)
    if off + size > len(data):
        raise InputError(f"{what}: truncated EFI zboot image; download the image again")
    return decompress(data[off:off + size], what)
