"""The x86 boot image (bzImage): the real-mode setup header and the compressed payload.

The header is arch/x86/boot/header.S (documented in Documentation/arch/x86/boot.rst):
``setup_sects`` at 0x1f1, the ``HdrS`` magic at 0x202, the protocol version at 0x206,
``kernel_version`` at 0x20e, and from protocol 2.08 ``payload_offset``/``payload_length`` at
0x248/0x24c, relative to the protected-mode code that follows the ``setup_sects`` sectors.
The payload decompresses to vmlinux itself, stripped (arch/x86/boot/compressed/Makefile:
``objcopy -R .comment -S``): an ELF with its section headers but no ``.symtab``.

>>> bzimage_payload(open("vmlinuz", "rb").read())[:4]       # doctest: +SKIP
b'\\x7fELF'
"""
from __future__ import annotations

import struct

from ..boot_decode import bzimage_span, detect, is_bzimage
from ..errors import InputError
from .decompress import decompress

__all__ = ["bzimage_compressed", "bzimage_payload", "is_bzimage", "kernel_version"]


def kernel_version(data: bytes) -> str | None:
    """The ``kernel_version`` string the header points at (``6.1.0-50-amd64 (debian-kernel@...``)."""
    (ptr,) = struct.unpack_from("<H", data, 0x20E)
    if not ptr or ptr + 0x200 >= len(data):
        return None
    raw = data[ptr + 0x200:ptr + 0x400].split(b"\0", 1)[0]
    return raw.decode("ascii", "replace") or None


def bzimage_compressed(data: bytes, what: str = "bzImage") -> tuple[str, bytes]:
    """(compression format or "unknown", compressed payload) of a bzImage."""
    version, start, length = bzimage_span(data)
    if version < 0x208:
        raise InputError(f"{what}: boot protocol {version >> 8}.{version & 0xff} has no payload "
                         "header (kernels before 2.6.26); pass the uncompressed vmlinux")
    if start + length > len(data):
        raise InputError(f"{what}: truncated bzImage (payload ends at {start + length}, file has "
                         f"{len(data)} bytes); download the image again")
    comp = data[start:start + length]
    return detect(comp) or "unknown", comp


def bzimage_payload(data: bytes, what: str = "bzImage") -> bytes:
    """The decompressed payload of a bzImage (vmlinux, stripped)."""
    return decompress(bzimage_compressed(data, what)[1], what)
