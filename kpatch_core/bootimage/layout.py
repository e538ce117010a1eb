"""Where the payload's bytes go in the synthetic ELF: its own section headers when the payload
is an ELF (x86 bzImage, ppc64le), else sections cut at the linker symbols of vmlinux.lds.S
(``_text``, ``_etext``, ``__start_BTF``, ``__rela_start``...) for a raw ``objcopy -O binary``
image (arm64, riscv64, s390x), whose offset 0 is ``_text``.

>>> raw_payload_layout("arm64", image_bytes, symbols).sections[0].name  # doctest: +SKIP
'.head.text'
"""
from __future__ import annotations

import io
import struct
from typing import IO, cast

import attrs
import numpy as np
from elftools.elf.elffile import ELFFile

from ..buffer_stream import BufferStream
from ..errors import InputError
from .arm64_image import EM_AARCH64, arm64_text_from_branch
from .riscv_image import EM_RISCV
from .s390_image import EM_S390
from .synth_elf import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHT_NOBITS,
    SHT_NOTE,
    SHT_PROGBITS,
    SHT_RELA,
    Layout,
    OutSection,
    Symbols,
)

# per raw-image architecture: ELF machine, byte order, the relocation type the kernel applies
# to itself at boot (R_*_RELATIVE) and the linker symbols around its table
# and the symbol at offset 0 of the image
RAW_ARCHES: dict[str, tuple[int, bool, int, tuple[tuple[str, str], ...], str]] = {
    # arch/arm64/kernel/vmlinux.lds.S: __rela_start/__rela_end (6.6+: the __pi_ aliases
    # arch/arm64/kernel/pi/relocate.c reads); the image starts at _text (head.S)
    "arm64": (EM_AARCH64, True, 1027, (("__rela_start", "__rela_end"),
                                       ("__pi_rela_start", "__pi_rela_end")), "_text"),
    # arch/riscv/kernel/vmlinux.lds.S: __rela_dyn_start/__rela_dyn_end (relocate_kernel);
    # the image starts at _start (.head.text), _text is .text
    "riscv64": (EM_RISCV, True, 3, (("__rela_dyn_start", "__rela_dyn_end"),), "_start"),
    # arch/s390/kernel/vmlinux.lds.S: __rela_dyn_start/__rela_dyn_end (boot/startup.c handle_relocs)
    "s390x": (EM_S390, False, 12, (("__rela_dyn_start", "__rela_dyn_end"),), "_text"),
}
# named sections cut out of the raw image by their linker symbols (name, start, end, type, flags)
NAMED = ((".BTF", "__start_BTF", "__stop_BTF", SHT_PROGBITS, SHF_ALLOC),
         (".notes", "__start_notes", "__stop_notes", SHT_NOTE, SHF_ALLOC),
         (".dynsym", "__dynsym_start", "__dynsym_end", 11, SHF_ALLOC),
         (".init.text", "_sinittext", "_einittext", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR))


Payload = bytes | bytearray  # a decoded payload (a bzImage's: the buffer it was decoded into)


def elf_payload_layout(payload: Payload) -> Layout:
    """The payload's own sections (a stripped vmlinux: x86 bzImage payload, ppc64le)."""
    elf = ELFFile(io.BytesIO(payload) if isinstance(payload, bytes)
                  else cast("IO[bytes]", BufferStream(payload)))  # (BytesIO would copy it)
    secs = []
    for s in elf.iter_sections():
        if not s.name or s["sh_type"] in ("SHT_SYMTAB", "SHT_STRTAB"):
            continue
        t = s.header["sh_type"]
        typ = t if isinstance(t, int) else _SHT.get(t, SHT_PROGBITS)
        if s["sh_offset"] + (0 if typ == SHT_NOBITS else s["sh_size"]) > len(payload):
            raise InputError("payload ELF truncated; download the image again")
        secs.append(OutSection(s.name, s["sh_addr"], s["sh_size"], typ, s["sh_flags"],
                               src=s["sh_offset"], align=s["sh_addralign"], entsize=s["sh_entsize"]))
    h = elf.header
    e_type = {"ET_EXEC": 2, "ET_DYN": 3}.get(h["e_type"], 2)
    machine = h["e_machine"]
    em = machine if isinstance(machine, int) else _EM[machine]
    return Layout(em, elf.little_endian, tuple(secs), e_type, h["e_flags"], h["e_entry"])


_SHT = {"SHT_PROGBITS": 1, "SHT_NOBITS": 8, "SHT_NOTE": 7, "SHT_RELA": 4, "SHT_REL": 9,
        "SHT_DYNSYM": 11, "SHT_DYNAMIC": 6, "SHT_HASH": 5, "SHT_GNU_HASH": 0x6FFFFFF6,
        "SHT_STRTAB": 3, "SHT_NULL": 0, "SHT_INIT_ARRAY": 14, "SHT_RELR": 19}
_EM = {"EM_X86_64": 62, "EM_AARCH64": 183, "EM_RISCV": 243, "EM_S390": 22, "EM_PPC64": 21}


def _sym(syms: Symbols) -> dict[str, int]:
    out: dict[str, int] = {}
    for a, n in zip(syms.addrs.tolist(), syms.names):
        out.setdefault(n, int(a))
    return out


def _find_rela(payload: Payload, base: int, rtype: int, little: bool) -> tuple[int, int] | None:
    """The longest run of Elf64_Rela entries of type ``rtype`` whose places lie in the image:
    the boot-time relocation table when no linker symbol marks it (text-only kallsyms)."""
    e = "<" if little else ">"
    n8 = len(payload) // 8
    words = np.frombuffer(payload[:n8 * 8], e + "u8")
    hi = np.uint64(base + len(payload) + (64 << 20))
    info_hit = np.nonzero(words[1:] == np.uint64(rtype))[0]  # index of r_offset
    if not len(info_hit):
        return None
    ok = (words[info_hit] >= np.uint64(base)) & (words[info_hit] < hi)
    starts = info_hit[ok]
    if not len(starts):
        return None
    # runs with stride 3 words
    brk = np.nonzero(np.diff(starts) != 3)[0]
    run_lo = np.concatenate([[0], brk + 1])
    run_hi = np.concatenate([brk, [len(starts) - 1]])
    k = int(np.argmax(run_hi - run_lo))
    if run_hi[k] - run_lo[k] < 16:
        return None
    lo, hi_i = int(starts[run_lo[k]]), int(starts[run_hi[k]])
    return lo * 8, (hi_i + 3) * 8


def _find_build_id(payload: Payload, little: bool) -> tuple[int, int] | None:
    e = "<" if little else ">"
    pat = struct.pack(e + "III", 4, 20, 3) + b"GNU\0"
    i = payload.find(pat)
    return (i, 36) if i >= 0 else None


def raw_payload_layout(arch: str, payload: Payload, syms: Symbols) -> Layout:
    """Sections for a raw image (offset 0 = ``_text``) cut at the linker symbols known."""
    machine, little, rtype, rela_syms, first = RAW_ARCHES[arch]
    v = _sym(syms)
    base = v.get(first, v.get("_text"))
    if base is None and arch == "arm64" and "primary_entry" in v:  # text-only kallsyms
        base = arm64_text_from_branch(payload, v["primary_entry"])
    if base is None:
        base = v.get("_stext") if arch == "s390x" else None  # s390: _text == _stext
    if base is None:
        raise InputError("no _text/_stext symbol: cannot place the image; pass --system-map FILE")
    end = base + len(payload)
    cuts: list[tuple[int, int, str, int, int]] = []  # (start, end, name, type, flags)
    for name, lo_sym, hi_sym, typ, flags in NAMED:
        if lo_sym in v and hi_sym in v and base <= v[lo_sym] <= v[hi_sym] <= end:
            cuts.append((v[lo_sym], v[hi_sym], name, typ, flags))
    ro_lo, ro_hi = v.get("__start_rodata"), v.get("__end_rodata")
    if ro_lo is not None and ro_hi is not None and base <= ro_lo < ro_hi <= end \
            and all(c[0] != ro_lo for c in cuts):
        # RO_DATA (include/asm-generic/vmlinux.lds.h): the kernel's strings, up to the first
        # section cut out of it (.notes, .BTF): config.py reads facts from .rodata's text
        cuts.append((ro_lo, min([c[0] for c in cuts if ro_lo < c[0] < ro_hi] + [ro_hi]), ".rodata",
                     SHT_PROGBITS, SHF_ALLOC))
    rela = next(((v[a], v[b]) for a, b in rela_syms if a in v and b in v), None)
    if rela is None:
        found = _find_rela(payload, base, rtype, little)
        rela = (base + found[0], base + found[1]) if found else None
    if rela is not None and rela[1] > rela[0]:
        cuts.append((rela[0], rela[1], ".rela.dyn", SHT_RELA, SHF_ALLOC))
    if ".notes" not in {c[2] for c in cuts} and (bid := _find_build_id(payload, little)):
        cuts.append((base + bid[0], base + bid[0] + bid[1], ".notes", SHT_NOTE, SHF_ALLOC))
    cuts.sort()
    secs: list[OutSection] = []
    etext = v.get("_etext", end)
    below = np.asarray(syms.addrs, np.uint64)
    below = below[below < np.uint64(etext)]
    text_end = _got_end(payload, base, _text_end(payload, base, etext, syms), rela, rtype, little,
                        int(below.max()) if arch == "arm64" and len(below) else None)
    pos = base
    for cut_lo, cut_hi, name, typ, flags in cuts + [(end, end, "", 0, 0)]:
        if cut_lo < pos:
            continue
        while pos < cut_lo:  # the gap: text up to _etext, data after
            if pos < text_end:
                stop = min(cut_lo, text_end)
                secs.append(_gap(".text" if not secs else f".text.{len(secs)}", pos, stop, base,
                                 SHF_ALLOC | SHF_EXECINSTR))
            elif pos < etext:  # the zero pages before _etext: no section, as in vmlinux
                stop = min(cut_lo, etext)
            else:
                stop = cut_lo
                secs.append(_gap(".data" if all(x.name != ".data" for x in secs) else f".data.{len(secs)}",
                                 pos, stop, base, SHF_ALLOC | SHF_WRITE))
            pos = stop
        if name:
            secs.append(OutSection(name, cut_lo, cut_hi - cut_lo, typ, flags, src=cut_lo - base,
                                   align=8, entsize=24 if typ in (SHT_RELA, 11) else 0))
            pos = cut_hi
    bss_s, bss_e = v.get("__bss_start"), v.get("_end")
    if bss_s is not None and bss_e is not None and bss_e > max(bss_s, end):
        lo = max(bss_s, end)
        secs.append(OutSection(".bss", lo, bss_e - lo, SHT_NOBITS, SHF_ALLOC | SHF_WRITE,
                               src=len(payload), align=4096))
    # .rela.dyn links to .dynsym (s390 R_390_64 against global asm symbols)
    names = [x.name for x in secs]
    if ".rela.dyn" in names and ".dynsym" in names:
        i = names.index(".rela.dyn")
        secs[i] = attrs.evolve(secs[i], link=names.index(".dynsym") + 1)
    return Layout(machine, little, tuple(secs), 2, 0, base)


def _text_end(payload: Payload, base: int, etext: int, syms: Symbols) -> int:
    """Where the text section ends: ``_etext``, less the whole zero pages before it that no
    symbol starts in (arm64 aligns ``_etext`` to SEGMENT_ALIGN after .text; vmlinux has no
    section over that padding, so the engine must not decode it as code)."""
    a = np.asarray(syms.addrs, np.uint64)
    below = a[a < np.uint64(etext)]
    last = int(below.max()) if len(below) else base
    end = etext
    while end - 4096 >= max(last, base) and end % 4096 == 0 and \
            not any(payload[end - 4096 - base:end - base]):
        end -= 4096
    return end


def _got_end(payload: Payload, base: int, end: int, rela: tuple[int, int] | None, rtype: int,
             little: bool, last_symbol: int | None = None) -> int:
    """``end`` less the zeros after a ``.got`` that closes .text: arm64's vmlinux.lds.S puts
    ``*(.got)`` last in .text and ``.got.plt`` (0 or 0x18 bytes of zeros) after it, outside
    .text, before SEGMENT_ALIGN. When the last non-zero word before ``end``, or a zero word after
    it, is a place the boot relocations write (a GOT entry), .text ends right after the last such."""
    if rela is None or rela[1] <= rela[0]:
        return end
    tail = payload[max(0, end - base - 8192):end - base]
    kept = len(tail.rstrip(b"\0"))
    if kept == len(tail) or kept == 0:
        return end
    word = (end - len(tail) + kept - 1) & ~7
    e = "<" if little else ">"
    ents = np.frombuffer(payload[rela[0] - base:rela[1] - base], e + "u8")
    ents = ents[:len(ents) // 3 * 3].reshape(-1, 3)
    places = ents[ents[:, 1] == np.uint64(rtype), 0]
    # the GOT's entries may hold zero until the boot relocations write them (5.10): the last
    # place at or after the last non-zero word ends .text
    got = places[(places >= np.uint64(word)) & (places < np.uint64(end))]
    if len(got):
        return int(got.max()) + 8
    if last_symbol is not None and last_symbol < word:
        # unnamed code after the last symbol (5.10's .fixup), then `. = ALIGN(16); *(.got)`
        # (arm64 vmlinux.lds.S): a .got with no entries still holds the reserved GOT[0], zero
        # in a static link (a symbol at the end, 6.12's __hyp_text_end, means no such tail)
        return min(((end - len(tail) + kept + 15) & ~15) + 8, end)
    return end


def _gap(name: str, lo: int, hi: int, base: int, flags: int) -> OutSection:
    return OutSection(name, lo, hi - lo, SHT_PROGBITS, flags, src=lo - base, align=4096)


def read_at(layout: Layout, payload: Payload, addr: int, n: int) -> bytes:
    """``n`` payload bytes at link address ``addr`` (b'' when no section holds it)."""
    for s in layout.sections:
        if s.type != SHT_NOBITS and s.flags & SHF_ALLOC and s.addr <= addr < s.addr + s.size and s.src >= 0:
            o = s.src + addr - s.addr
            return bytes(payload[o:o + n])
    return b""
