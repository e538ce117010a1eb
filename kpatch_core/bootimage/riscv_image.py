"""The riscv64 ``Image`` header (arch/riscv/kernel/head.S, Documentation/arch/riscv/boot-image-header.rst).

code0/code1, ``text_offset`` (u64 at 8), ``image_size`` (u64 at 16), ``flags`` (u64 at 24),
``version`` (u32 at 32), the deprecated magic ``RISCV\\0\\0\\0`` at 48 and ``RSC\\x05`` at 56,
then the PE header offset at 60 (EFI stub: the image starts with ``MZ``). Like arm64 the file is
``objcopy -O binary`` of vmlinux: offset 0 is ``_start``, the kernel's first address.

>>> is_riscv_image(data)                              # doctest: +SKIP
True
"""
from __future__ import annotations

EM_RISCV = 243


def is_riscv_image(data: bytes) -> bool:
    """True when ``data`` starts with the riscv Image header (either magic)."""
    return len(data) > 64 and (data[56:60] == b"RSC\x05" or data[48:56] == b"RISCV\0\0\0")
