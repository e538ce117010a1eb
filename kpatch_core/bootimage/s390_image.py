"""The s390x compressed image (arch/s390/boot/): an IPL-able decompressor with the compressed
``vmlinux.bin`` (``objcopy -O binary`` of vmlinux from ``_text``) embedded between
``_compressed_start`` and ``_compressed_end`` (arch/s390/boot/vmlinux.lds.S). The decompressor
has no header giving the payload's place, so it is found by its compression magic.

>>> is_s390_image(data)                               # doctest: +SKIP
True
"""
from __future__ import annotations

import attrs
import numpy as np

from ..errors import InputError
from .decompress import decompress, find_stream

EM_S390 = 22
# the IPL PSW at offset 0 of arch/s390/boot/head.S: .long 0x00080000,0x80000000+iplstart
IPL_PSW = b"\x00\x08\x00\x00\x80"


def is_s390_image(data: bytes) -> bool:
    """True when ``data`` starts with the s390 IPL PSW of the boot decompressor."""
    return len(data) > 0x10000 and data[:5] == IPL_PSW


@attrs.frozen
class VmlinuxInfo:
    """``struct vmlinux_info`` (arch/s390/boot/boot.h), which arch/s390/kernel/vmlinux.lds.S's
    ``.vmlinux.info`` gives the decompressor: where vmlinux.bin goes and its relocations."""

    default_lma: int  # _stext: offset 0 of vmlinux.bin
    image_size: int  # __bss_start - _stext
    dynsym_start: int
    rela_dyn_start: int  # == __dynsym_end
    rela_dyn_end: int


def s390_vmlinux_info(data: bytes, payload_len: int) -> VmlinuxInfo | None:
    """The one ``struct vmlinux_info`` in the boot image ``data`` that fits a payload of
    ``payload_len`` bytes (big-endian quads: default_lma, entry, image_size, bss_size,
    bootdata_off/size, bootdata_preserved_off/size, dynsym_start, rela_dyn_start, rela_dyn_end),
    or None when there is none or more than one."""
    found = set()
    for align in (0, 4):  # the struct is 8-aligned in the decompressor, not in the file
        w = np.frombuffer(data[align:align + (len(data) - align) // 8 * 8], ">u8")
        size = w[2:]
        hit = np.nonzero((size >= np.uint64(payload_len)) & (size < np.uint64(payload_len + 4096)))[0]
        for j in hit.tolist():
            if j + 11 > len(w):
                continue
            q = [int(x) for x in w[j:j + 11]]
            lma, entry, sz = q[0], q[1], q[2]
            if lma and lma % 4096 == 0 and lma <= entry < lma + sz and lma <= q[8] <= q[9] <= q[10] <= lma + sz:
                found.add(VmlinuxInfo(lma, sz, q[8], q[9], q[10]))
    return found.pop() if len(found) == 1 else None


def s390_payload(data: bytes, what: str = "s390 image") -> bytes:
    """The decompressed ``vmlinux.bin`` inside the s390x boot image."""
    hit = find_stream(data)
    if hit is None:
        raise InputError(f"{what}: s390 boot image without a recognised compressed payload; "
                         "pass the uncompressed vmlinux")
    return decompress(data[hit[0]:], what)
