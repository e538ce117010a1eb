"""The s390x compressed image (arch/s390/boot/): an IPL-able decompressor with the compressed
``vmlinux.bin`` (``objcopy -O binary`` of vmlinux from ``_text``) embedded between
``_compressed_start`` and ``_compressed_end`` (arch/s390/boot/vmlinux.lds.S). The decompressor
has no header giving the payload's place, so it is found by its compression magic.

>>> is_s390_image(data)                               # doctest: +SKIP
True
"""
from __future__ import annotations

from ..errors import InputError
from .decompress import decompress, find_stream

EM_S390 = 22
# the IPL PSW at offset 0 of arch/s390/boot/head.S: .long 0x00080000,0x80000000+iplstart
IPL_PSW = b"\x00\x08\x00\x00\x80"


def is_s390_image(data: bytes) -> bool:
    """True when ``data`` starts with the s390 IPL PSW of the boot decompressor."""
    return len(data) > 0x10000 and data[:5] == IPL_PSW


def s390_payload(data: bytes, what: str = "s390 image") -> bytes:
    """The decompressed ``vmlinux.bin`` inside the s390x boot image."""
    hit = find_stream(data)
    if hit is None:
        raise InputError(f"{what}: s390 boot image without a recognised compressed payload; "
                         "pass the uncompressed vmlinux")
    return decompress(data[hit[0]:], what)
