"""The arm64 ``Image`` header (arch/arm64/kernel/head.S, Documentation/arch/arm64/booting.rst).

64 bytes: code0/code1, ``text_offset`` (u64 at 8), ``image_size`` (u64 at 16), ``flags`` (u64
at 24: bit 0 big-endian, bits 1-2 page size), three reserved words, the magic ``ARM\\x64`` at
0x38 and the PE header offset at 0x3c (EFI stub: the image starts with ``MZ``). The file is
``objcopy -O binary`` of vmlinux from ``_text``: offset 0 is the link address of ``_text``.

>>> is_arm64_image(data), arm64_little_endian(data)    # doctest: +SKIP
(True, True)
"""
from __future__ import annotations

import struct

ARM64_MAGIC = b"ARM\x64"
EM_AARCH64 = 183


def is_arm64_image(data: bytes) -> bool:
    """True when ``data`` starts with the arm64 Image header."""
    return len(data) > 64 and data[0x38:0x3C] == ARM64_MAGIC


def arm64_little_endian(data: "bytes | bytearray") -> bool:
    """Bit 0 of ``flags``: 0 little-endian kernel, 1 big-endian."""
    (flags,) = struct.unpack_from("<Q", data, 24)
    return not flags & 1


def arm64_image_size(data: bytes) -> int:
    """``image_size``: bytes from ``_text`` to ``_end`` (bss included); 0 on pre-3.17 images."""
    (size,) = struct.unpack_from("<Q", data, 16)
    return int(size)


def arm64_text_from_branch(data: "bytes | bytearray", entry_addr: int) -> int | None:
    """The address of ``_text`` given the address of ``primary_entry``: head.S puts
    ``b primary_entry`` at offset 4 (code1; offset 0 when the EFI stub's "MZ" is absent)."""
    for at in (4, 0):
        (insn,) = struct.unpack_from("<I", data, at)
        if insn >> 26 == 0b000101:  # B imm26
            imm = insn & 0x3FFFFFF
            if imm & 0x2000000:
                imm -= 1 << 26
            return entry_addr - (at + imm * 4)
    return None
