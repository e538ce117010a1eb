"""USDT probes (SystemTap SDT, ``<sys/sdt.h>``) listed from ``.note.stapsdt``.

Each note (owner ``stapsdt``, type 3) holds the probe's address, the link-time address of
``.stapsdt.base``, the semaphore's address (0: none), then provider, name and the argument
string [systemtap sdt.h; libbpf usdt.c ``parse_usdt_note``].  When the file was prelinked the
addresses move by ``.stapsdt.base``'s actual address minus the recorded one
(libbpf ``usdt.c: collect_usdt_targets``).  The uprobe goes at the probe's file offset and the
semaphore becomes the uprobe's reference counter (``(REF_CTR_OFFSET)``, a file offset).

>>> [p.name for p in usdt_probes(UserElf.open("/usr/lib/.../libc.so.6"))][:2]  # doctest: +SKIP
['setjmp', 'longjmp']
"""
from __future__ import annotations

from typing import Literal

import attrs

from .elf import UserElf

NT_STAPSDT = 3
STAPSDT_NOTE_SECTION = ".note.stapsdt"
STAPSDT_BASE_SECTION = ".stapsdt.base"


@attrs.frozen
class UsdtProbe:
    """One USDT probe: where the uprobe goes and its semaphore."""

    provider: str
    name: str
    vaddr: int
    offset: int | None  # file offset of the probe (the uprobe offset)
    semaphore: int  # semaphore vaddr (0: none)
    semaphore_offset: int | None  # its file offset (the ref_ctr_offset), None when none
    args: str

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.name}"


def usdt_probes(elf: UserElf) -> list[UsdtProbe]:
    """Every USDT probe of ``elf`` in note order (empty when it has no ``.note.stapsdt``)."""
    word = 8 if elf.elf_class == 64 else 4
    order: Literal["little", "big"] = "little" if elf.little_endian else "big"
    base_sec = elf.elf.get_section_by_name(STAPSDT_BASE_SECTION)
    actual_base = base_sec["sh_addr"] if base_sec is not None else None
    out = []
    for _, note, _ in elf.notes(STAPSDT_NOTE_SECTION):
        if note.name != "stapsdt" or note.type != NT_STAPSDT or len(note.desc) < 3 * word:
            continue
        d = note.desc
        pc, base, sema = (int.from_bytes(d[i * word:(i + 1) * word], order) for i in range(3))
        strings = d[3 * word:].split(b"\0")
        provider = strings[0].decode(errors="replace") if strings else ""
        name = strings[1].decode(errors="replace") if len(strings) > 1 else ""
        args = strings[2].decode(errors="replace") if len(strings) > 2 else ""
        if actual_base is not None and base:
            delta = actual_base - base
            pc += delta
            if sema:
                sema += delta
        out.append(UsdtProbe(provider, name, pc, elf.vaddr_to_offset(pc), sema,
                             elf.vaddr_to_offset(sema) if sema else None, args))
    return out


def find_usdt(elf: UserElf, provider: str, name: str) -> list[UsdtProbe]:
    """The probes called ``name`` (of ``provider`` when not empty); a probe may have several
    sites (one per inlined copy)."""
    return [p for p in usdt_probes(elf) if p.name == name and (not provider or p.provider == provider)]
