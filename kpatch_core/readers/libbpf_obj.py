"""libbpf BPF objects: program section names (``SEC("kprobe/vfs_read")``), read with
pyelftools; a binary that embeds objects (a libbpf skeleton keeps the ``.bpf.o`` bytes in
``.rodata``) has each embedded ``EM_BPF`` ELF read the same way.

A section without a target (``SEC("kprobe")``, ``SEC("fentry")``) is attached by the program
at run time (``bpf_program__set_attach_target``); libbpf-tools also name such programs after a
placeholder (``fentry/dummy_file_open``): both are listed as unresolved.
"""
from __future__ import annotations

import io
import re
import struct

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import InputError, UsageError
from ..target import parse_target
from .probe_file import ProbeFile, ProbeSpec

EM_BPF = 247
SHF_EXECINSTR = 0x4
_KERNEL_SECTIONS = re.compile(r"^(kprobe|kretprobe|fentry|fexit|fentry\.s|fexit\.s|fmod_ret|"
                              r"fmod_ret\.s|lsm|lsm\.s|kprobe\.multi|kretprobe\.multi|ksyscall|"
                              r"kretsyscall)(/|$)")


def embedded_objects(data: bytes) -> list[bytes]:
    """The ``EM_BPF`` ELF images inside ``data`` (itself one, or a binary embedding some)."""
    out = []
    pos = data.find(b"\x7fELF")
    while pos >= 0:
        if len(data) >= pos + 64 and data[pos + 4] == 2:  # ELFCLASS64
            e = "<" if data[pos + 5] == 1 else ">"
            machine = struct.unpack_from(e + "H", data, pos + 18)[0]
            if machine == EM_BPF:
                shoff = struct.unpack_from(e + "Q", data, pos + 40)[0]
                shentsize, shnum = struct.unpack_from(e + "HH", data, pos + 58)
                end = pos + shoff + shentsize * shnum
                if end <= len(data):
                    out.append(bytes(data[pos:end]))
        pos = data.find(b"\x7fELF", pos + 4)
    return out


def section_names(obj: bytes) -> list[str]:
    """Names of the executable (program) sections of one BPF object."""
    try:
        elf = ELFFile(io.BytesIO(obj))
        return [s.name for s in elf.iter_sections()
                if s["sh_type"] == "SHT_PROGBITS" and s["sh_flags"] & SHF_EXECINSTR and s.name]
    except (ELFError, struct.error, ValueError) as e:
        raise InputError(f"embedded BPF object: cannot read its sections ({e})") from None


def read_libbpf(path: str, data: bytes) -> ProbeFile:
    """The kernel-function probes in the program sections of every BPF object in ``data``."""
    objs = embedded_objects(data)
    if not objs:
        raise InputError(f"{path}: an ELF file with no BPF object (EM_BPF) in it; give a .bpf.o, "
                         "a libbpf tool binary, a bpftrace script, a BCC tool or a targets list")
    specs, skipped, unresolved = [], [], []
    for i, obj in enumerate(objs):
        where = f"object {i}" if len(objs) > 1 else ""
        for name in section_names(obj):
            loc = f"{where} SEC(\"{name}\")".strip()
            if not _KERNEL_SECTIONS.match(name):
                skipped.append(name)
                continue
            if "/" not in name:
                unresolved.append(f"{loc}: attach target set at run time")
                continue
            func = name.split("/", 1)[1]
            if func.startswith("dummy_"):
                unresolved.append(f"{loc}: placeholder, attach target set at run time")
                continue
            try:
                specs.append(ProbeSpec(parse_target(name), 0, loc))
            except UsageError as e:
                unresolved.append(f"{loc}: {e}")
    return ProbeFile(path, "libbpf", tuple(specs), tuple(skipped), tuple(unresolved))
