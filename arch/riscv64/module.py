"""riscv64 module loading facts: the module area (asm/pgtable.h ``MODULES_VADDR``: the 2 GiB
below the kernel's end, so a module reaches the kernel with ``auipc``+``jalr``), the sizes
``module_frob_arch_sections`` gives ``.plt``/``.got``/``.got.plt`` before layout
(arch/riscv/kernel/module-sections.c), and ``apply_relocate_add`` (arch/riscv/kernel/module.c):
the ``reloc_handlers`` table as vectorised compute functions, PCREL_LO12 paired with the
HI20 relocation at its symbol, GOT entries for GOT_HI20 and PLT entries for an out-of-range
CALL_PLT/PLT32 (``module_emit_got_entry``/``module_emit_plt_entry``: one per distinct value,
in the order the relocations ask for them), and ADD/SUB/SET/ULEB128 accumulated per location
(``add_relocation_to_accumulate``/``process_accumulated_relocations``).

Each row's ``compute(S, A, P, old)`` takes numpy uint64 arrays (symbol value, addend, place,
the field's current contents, 32-bit little-endian instructions read as two parcels as
``riscv_insn_rmw`` does) and returns (new contents, overflow mask or None).  A relocation the
kernel refuses (ALIGN, TLS, dynamic linking, an unpaired PCREL_LO12) is counted as
unsupported: the kernel would not load the module.  GOT and PLT contents are not written
(``.got``/``.plt`` are data and trampolines no probe lands in); their addresses are.
"""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from ..base import Reloc

PAGE_SIZE = 4096
# apply_relocate_add may take every RELA section of the module in one pass (PCREL_LO12 pairing and ADD/SUB accumulation are per relocation section)
RELOCATE_ACROSS_SECTIONS = False
SZ_2G = 2 << 30
L1_CACHE_BYTES = 64  # arch/riscv/include/asm/cache.h (L1_CACHE_SHIFT 6)
PLT_ENTRY_SIZE = 12  # struct plt_entry: auipc, ld, jr
GOT_ENTRY_SIZE = 8  # struct got_entry: one unsigned long
# include/linux/ftrace.h: CC_USING_PATCHABLE_FUNCTION_ENTRY (-fpatchable-function-entry)
FTRACE_CALLSITE_SECTION = "__patchable_function_entries"
SHT_NOBITS, SHT_RELA = 8, 4
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4

U64 = np.uint64
M32 = U64(0xFFFFFFFF)

# include/uapi/linux/elf-em.h / riscv-elf-psabi numbers used below
R_RISCV_CALL, R_RISCV_CALL_PLT, R_RISCV_GOT_HI20 = 18, 19, 20
R_RISCV_PCREL_HI20, R_RISCV_PCREL_LO12_I, R_RISCV_PCREL_LO12_S = 23, 24, 25
R_RISCV_PLT32 = 59


def module_base(kernel_start: int, kernel_end: int) -> int:
    """``MODULES_VADDR`` = ``PFN_ALIGN(_end) - SZ_2G`` (asm/pgtable.h, 64-bit)."""
    end = kernel_end or kernel_start + (64 << 20)
    return ((end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)) - SZ_2G


def _valid_32bit_offset(off: np.ndarray) -> np.ndarray:
    """``riscv_insn_valid_32bit_offset``: auipc+jalr reach [-2^31 - 2^11, 2^31 - 2^11)."""
    s = off.view(np.int64)
    return (s >= -(1 << 31) - (1 << 11)) & (s < (1 << 31) - (1 << 11))


def _rmw(old: np.ndarray, keep: int, set_: np.ndarray) -> np.ndarray:
    """``riscv_insn_rmw`` / ``riscv_insn_rvc_rmw``: keep some bits, or in the immediate."""
    return (old & U64(keep)) | (set_ & M32)


def _hi20(off: np.ndarray) -> np.ndarray:
    return (off + U64(0x800)) & U64(0xFFFFF000)


def _i_imm(lo12: np.ndarray) -> np.ndarray:
    return (lo12 & U64(0xFFF)) << U64(20)


def _s_imm(lo12: np.ndarray) -> np.ndarray:
    return ((lo12 & U64(0xFE0)) << U64(31 - 11)) | ((lo12 & U64(0x1F)) << U64(11 - 4))


def _s32(v: np.ndarray) -> np.ndarray:
    """``(s32)v`` as uint64 two's complement."""
    return (v & M32).astype(np.uint32).view(np.int32).astype(np.int64).view(np.uint64)


# -- the reloc_handlers rows (v = S + A; the place P) ---------------------------------------
def _r32(S, A, P, old):  # type: ignore[no-untyped-def]
    v = S + A  # apply_r_riscv_32_rela: -EINVAL when v != (u32)v
    return v & M32, v > M32


def _r64(S, A, P, old):  # type: ignore[no-untyped-def]
    return S + A, None  # apply_r_riscv_64_rela


def _branch(S, A, P, old):  # type: ignore[no-untyped-def]
    o = S + A - P  # apply_r_riscv_branch_rela
    imm = (((o & U64(0x1000)) << U64(31 - 12)) | ((o & U64(0x800)) >> U64(11 - 7))
           | ((o & U64(0x7E0)) << U64(30 - 10)) | ((o & U64(0x1E)) << U64(11 - 4)))
    return _rmw(old, 0x1FFF07F, imm), None


def _jal(S, A, P, old):  # type: ignore[no-untyped-def]
    o = S + A - P  # apply_r_riscv_jal_rela
    imm = (((o & U64(0x100000)) << U64(31 - 20)) | (o & U64(0xFF000))
           | ((o & U64(0x800)) << U64(20 - 11)) | ((o & U64(0x7FE)) << U64(30 - 10)))
    return _rmw(old, 0xFFF, imm), None


def _rvc_branch(S, A, P, old):  # type: ignore[no-untyped-def]
    o = S + A - P  # apply_r_riscv_rvc_branch_rela
    imm = (((o & U64(0x100)) << U64(12 - 8)) | ((o & U64(0xC0)) >> U64(6 - 5))
           | ((o & U64(0x20)) >> U64(5 - 2)) | ((o & U64(0x18)) << U64(12 - 5))
           | ((o & U64(0x6)) << U64(12 - 10)))
    return (old & U64(0xE383)) | (imm & U64(0xFFFF)), None


def _rvc_jump(S, A, P, old):  # type: ignore[no-untyped-def]
    o = S + A - P  # apply_r_riscv_rvc_jump_rela
    imm = (((o & U64(0x800)) << U64(12 - 11)) | ((o & U64(0x400)) >> U64(10 - 8))
           | ((o & U64(0x300)) << U64(12 - 11)) | ((o & U64(0x80)) >> U64(7 - 6))
           | ((o & U64(0x40)) << U64(12 - 11)) | ((o & U64(0x20)) >> U64(5 - 2))
           | ((o & U64(0x10)) << U64(12 - 5)) | ((o & U64(0xE)) << U64(12 - 10)))
    return (old & U64(0xE003)) | (imm & U64(0xFFFF)), None


def _pcrel_hi20(S, A, P, old):  # type: ignore[no-untyped-def]
    o = S + A - P  # apply_r_riscv_pcrel_hi20_rela (also GOT_HI20 once S is the GOT entry)
    return _rmw(old, 0xFFF, _hi20(o)), ~_valid_32bit_offset(o)


def _got_hi20(S, A, P, old):  # type: ignore[no-untyped-def]
    return _rmw(old, 0xFFF, _hi20(S + A - P)), None  # apply_r_riscv_got_hi20_rela


def _lo12_i_paired(S, A, P, old):  # type: ignore[no-untyped-def]
    return _rmw(old, 0xFFFFF, _i_imm(S)), None  # apply_r_riscv_pcrel_lo12_i_rela (S = lo12)


def _lo12_s_paired(S, A, P, old):  # type: ignore[no-untyped-def]
    return _rmw(old, 0x1FFF07F, _s_imm(S)), None  # apply_r_riscv_pcrel_lo12_s_rela


def _abs_hi20(S, A, P, old):  # type: ignore[no-untyped-def]
    # apply_r_riscv_hi20_rela (CONFIG_CMODEL_MEDLOW off: Debian builds medany)
    return _rmw(old, 0xFFF, _hi20(_s32(S + A))), None


def _abs_lo12(S, A, P):  # type: ignore[no-untyped-def]
    v = _s32(S + A)
    return v - _hi20(v).astype(np.uint32).view(np.int32).astype(np.int64).view(np.uint64)


def _lo12_i(S, A, P, old):  # type: ignore[no-untyped-def]
    return _rmw(old, 0xFFFFF, _i_imm(_abs_lo12(S, A, P))), None  # apply_r_riscv_lo12_i_rela


def _lo12_s(S, A, P, old):  # type: ignore[no-untyped-def]
    return _rmw(old, 0x1FFF07F, _s_imm(_abs_lo12(S, A, P))), None  # apply_r_riscv_lo12_s_rela


def _call(S, A, P, old):  # type: ignore[no-untyped-def]
    """apply_r_riscv_call_rela / call_plt (S already the PLT entry when out of range): the
    auipc (low word) and the jalr after it (high word)."""
    o = S + A - P
    hi = _hi20(o)
    lo = (o - hi) & U64(0xFFF)
    auipc = _rmw(old & M32, 0xFFF, hi)
    jalr = _rmw(old >> U64(32), 0xFFFFF, lo << U64(20))
    return auipc | (jalr << U64(32)), ~_valid_32bit_offset(o)


def _pcrel32(S, A, P, old):  # type: ignore[no-untyped-def]
    return (S + A - P) & M32, None  # apply_r_riscv_32_pcrel_rela


def _plt32(S, A, P, old):  # type: ignore[no-untyped-def]
    o = S + A - P  # apply_r_riscv_plt32_rela (S already the PLT entry when out of range)
    return o & M32, ~_valid_32bit_offset(o)


def _none(S, A, P, old):  # type: ignore[no-untyped-def]
    return old, None


R = Reloc
# reloc_handlers[] without an accumulate_handler
RELOCATIONS: dict[int, Reloc] = {
    1: R("R_RISCV_32", 4, _r32),
    2: R("R_RISCV_64", 8, _r64),
    16: R("R_RISCV_BRANCH", 4, _branch),
    17: R("R_RISCV_JAL", 4, _jal),
    18: R("R_RISCV_CALL", 8, _call),
    19: R("R_RISCV_CALL_PLT", 8, _call),
    20: R("R_RISCV_GOT_HI20", 4, _got_hi20),
    23: R("R_RISCV_PCREL_HI20", 4, _pcrel_hi20),
    24: R("R_RISCV_PCREL_LO12_I", 4, _lo12_i_paired),
    25: R("R_RISCV_PCREL_LO12_S", 4, _lo12_s_paired),
    26: R("R_RISCV_HI20", 4, _abs_hi20),
    27: R("R_RISCV_LO12_I", 4, _lo12_i),
    28: R("R_RISCV_LO12_S", 4, _lo12_s),
    44: R("R_RISCV_RVC_BRANCH", 2, _rvc_branch),
    45: R("R_RISCV_RVC_JUMP", 2, _rvc_jump),
    51: R("R_RISCV_RELAX", 0, _none),  # apply_r_riscv_relax_rela: nothing
    57: R("R_RISCV_32_PCREL", 4, _pcrel32),
    59: R("R_RISCV_PLT32", 4, _plt32),
}
# types whose handler refuses the module (dynamic_linking_not_supported, tls_not_supported,
# apply_r_riscv_align_rela): named for the unsupported count
REFUSED = {3: "R_RISCV_RELATIVE", 4: "R_RISCV_COPY", 5: "R_RISCV_JUMP_SLOT",
           6: "R_RISCV_TLS_DTPMOD32", 7: "R_RISCV_TLS_DTPMOD64", 8: "R_RISCV_TLS_DTPREL32",
           9: "R_RISCV_TLS_DTPREL64", 10: "R_RISCV_TLS_TPREL32", 11: "R_RISCV_TLS_TPREL64",
           21: "R_RISCV_TLS_GOT_HI20", 22: "R_RISCV_TLS_GD_HI20", 29: "R_RISCV_TPREL_HI20",
           30: "R_RISCV_TPREL_LO12_I", 31: "R_RISCV_TPREL_LO12_S", 32: "R_RISCV_TPREL_ADD",
           43: "R_RISCV_ALIGN", 58: "R_RISCV_IRELATIVE"}


@attrs.frozen
class Accumulated:
    """An ADD/SUB/SET/ULEB128 type: how it changes the per-location buffer (the handler run on
    ``&buffer``) and the width its accumulate handler stores (0: ULEB128)."""

    name: str
    op: str  # add, sub, set, sub6, set6
    bits: int  # width the handler works on inside the buffer
    store: int  # accumulate handler: 6, 8, 16, 32, 64 bits, or 0 for ULEB128


ACCUMULATED: dict[int, Accumulated] = {
    33: Accumulated("R_RISCV_ADD8", "add", 8, 8), 34: Accumulated("R_RISCV_ADD16", "add", 16, 16),
    35: Accumulated("R_RISCV_ADD32", "add", 32, 32),
    36: Accumulated("R_RISCV_ADD64", "add", 64, 64),
    37: Accumulated("R_RISCV_SUB8", "sub", 8, 8), 38: Accumulated("R_RISCV_SUB16", "sub", 16, 16),
    39: Accumulated("R_RISCV_SUB32", "sub", 32, 32),
    40: Accumulated("R_RISCV_SUB64", "sub", 64, 64),
    52: Accumulated("R_RISCV_SUB6", "sub6", 8, 6), 53: Accumulated("R_RISCV_SET6", "set6", 8, 6),
    54: Accumulated("R_RISCV_SET8", "set", 8, 8), 55: Accumulated("R_RISCV_SET16", "set", 16, 16),
    56: Accumulated("R_RISCV_SET32", "set", 32, 32),
    60: Accumulated("R_RISCV_SET_ULEB128", "set", 64, 0),
    61: Accumulated("R_RISCV_SUB_ULEB128", "sub", 64, 0),
}


def module_frob_arch_sections(ko: Any) -> Any:
    """``module_frob_arch_sections`` (module-sections.c): ``.plt``, ``.got`` and ``.got.plt``
    become NOBITS, L1-cache aligned, sized for one entry per distinct (type, symbol, addend)
    CALL_PLT/PLT32 resp. GOT_HI20 relocation into executable sections, plus one (duplicates
    found across all sections after sorting, as 6.15+ count them).  A module without the
    three sections is refused by the kernel (``-ENOEXEC``); it is kept as is here."""
    names = {s.name: s for s in ko.sections}
    if not all(n in names for n in (".plt", ".got", ".got.plt")):
        return ko
    plts: set[tuple[int, int]] = set()
    gots: set[tuple[int, int]] = set()
    e = ko.endian
    dt = np.dtype([("offset", e + "u8"), ("info", e + "u8"), ("addend", e + "i8")])
    for s in ko.sections:
        if s.type != SHT_RELA or s.info >= len(ko.sections) \
                or not ko.sections[s.info].flags & SHF_EXECINSTR:
            continue
        rel = np.frombuffer(ko.data, dt, count=s.size // 24, offset=s.offset)
        t = rel["info"] & U64(0xFFFFFFFF)
        for want, into in (((R_RISCV_CALL_PLT, R_RISCV_PLT32), plts), ((R_RISCV_GOT_HI20,), gots)):
            sel = np.isin(t, np.array(want, np.uint64))
            into.update(zip(rel["info"][sel].tolist(), rel["addend"][sel].tolist()))
    sized = {".plt": (SHF_EXECINSTR | SHF_ALLOC, (len(plts) + 1) * PLT_ENTRY_SIZE),
             ".got": (SHF_ALLOC, (len(gots) + 1) * GOT_ENTRY_SIZE),
             ".got.plt": (SHF_ALLOC, (len(plts) + 1) * GOT_ENTRY_SIZE)}
    secs = tuple(attrs.evolve(s, type=SHT_NOBITS, flags=sized[s.name][0], align=L1_CACHE_BYTES,
                              size=sized[s.name][1]) if s.name in sized else s
                 for s in ko.sections)
    return attrs.evolve(ko, sections=secs)


def _entry(state: dict, sec: Any, kind: str, section: str, size: int, val: int) -> int | None:
    """``module_emit_got_entry`` / ``module_emit_plt_entry``: the entry of ``val`` (one per
    distinct value, in order of first use), as an address; None without the section
    (CONFIG_MODULE_SECTIONS off: the relocation then fails as out of range)."""
    s = sec.ko.section(section)
    base = sec.layout.address_of.get(s.index) if s is not None else None
    if base is None:
        return None
    table = state.setdefault(kind, {})
    if val not in table:
        table[val] = len(table)
    return int(base + size * table[val])


def apply_relocate_add(sec: Any, state: dict) -> None:
    """arch/riscv/kernel/module.c ``apply_relocate_add`` over one relocation section (``sec``:
    a :class:`kpatch_core.module.relocate.RelaSection`)."""
    types = sec.types
    S = sec.S.copy()
    with np.errstate(over="ignore"):
        v = sec.S + sec.A
        # out-of-range CALL_PLT / PLT32 go through the module's PLT (module_emit_plt_entry)
        plt = np.isin(types, [R_RISCV_CALL_PLT, R_RISCV_PLT32]) & ~_valid_32bit_offset(v - sec.P)
        A = sec.A.copy()
        for i in np.flatnonzero(plt).tolist():
            e = _entry(state, sec, "plt", ".plt", PLT_ENTRY_SIZE, int(v[i]))
            if e is not None:
                S[i], A[i] = U64(e), U64(0)
        # GOT_HI20: the GOT entry of S + A (module_emit_got_entry), in relocation order
        got = types == R_RISCV_GOT_HI20
        for i in np.flatnonzero(got).tolist():
            e = _entry(state, sec, "got", ".got", GOT_ENTRY_SIZE, int(v[i]))
            if e is None:  # apply_r_riscv_got_hi20_rela: "can not generate the GOT entry"
                sec.unsupported["R_RISCV_GOT_HI20 without .got"] = \
                    sec.unsupported.get("R_RISCV_GOT_HI20 without .got", 0) + 1
                continue
            S[i], A[i] = U64(e), U64(0)
        # PCREL_LO12_I/S: the lo12 of the HI20 relocation whose place is this symbol's value
        lo = np.isin(types, [R_RISCV_PCREL_LO12_I, R_RISCV_PCREL_LO12_S])
        if lo.any():
            hi_idx = np.flatnonzero(np.isin(types, [R_RISCV_PCREL_HI20, R_RISCV_GOT_HI20]))
            first: dict[int, int] = {}
            for j in hi_idx.tolist():
                first.setdefault(int(sec.P[j]), j)
            for i in np.flatnonzero(lo).tolist():
                hi = first.get(int(sec.S[i]))
                if hi is None:  # "Can not find HI20 relocation information": -EINVAL
                    name = "R_RISCV_PCREL_LO12 without HI20"
                    sec.unsupported[name] = sec.unsupported.get(name, 0) + 1
                    lo[i] = False
                    continue
                target = int(S[hi] + A[hi])  # the GOT entry for GOT_HI20 (S[hi] set above)
                S[i] = U64((target - int(sec.P[hi])) & 0xFFFFFFFFFFFFFFFF)
            A[lo] = 0
    for t in np.unique(types).tolist():
        if t in REFUSED:
            sec.unsupported[REFUSED[t]] = sec.unsupported.get(REFUSED[t], 0) + int((types == t).sum())
    acc = np.isin(types, list(ACCUMULATED))
    table_sel = ~acc & ~np.isin(types, list(REFUSED))
    if table_sel.any():
        sec.apply_table(RELOCATIONS, table_sel, S, A)
    if acc.any():
        _accumulate(sec, np.flatnonzero(acc), v)


def _accumulate(sec: Any, idx: np.ndarray, v: np.ndarray) -> None:
    """``add_relocation_to_accumulate`` + ``process_accumulated_relocations``: per location a
    buffer starting at 0, each relocation's handler run on it in order, then the last one's
    accumulate handler stores it (over its width; ULEB128 as many bytes as it takes)."""
    groups: dict[int, list[int]] = {}
    for i in idx.tolist():
        groups.setdefault(int(sec.offs[i]), []).append(i)
    full = (1 << 64) - 1
    for off, rows in groups.items():
        buf = 0
        for i in rows:
            a = ACCUMULATED[int(sec.types[i])]
            x = int(v[i]) & full
            mask = (1 << a.bits) - 1
            low = buf & mask
            if a.op == "add":
                low = (low + x) & mask
            elif a.op == "sub":
                low = (low - x) & mask
            elif a.op == "set":
                low = x & mask
            elif a.op == "sub6":  # apply_r_riscv_sub6_rela
                low = (low - (x & 0x3F)) & 0x3F
            else:  # set6: apply_r_riscv_set6_rela
                low = (low & 0xC0) | (x & 0x3F)
            buf = (buf & ~mask & full) | low
        last = ACCUMULATED[int(sec.types[rows[-1]])]
        signed = buf - (1 << 64) if buf >> 63 else buf
        o = np.array([off], np.int64)
        if last.store == 0:  # apply_uleb128_accumulation
            out = bytearray()
            while signed != 0 and len(out) < 10:
                b = signed & 0x7F
                signed >>= 7
                out.append(b | (0x80 if signed else 0))
            for k, b in enumerate(out):
                sec.write(o + k, np.array([b], np.uint64), 1)
            sec.count += len(rows)
            continue
        if last.store < 64 and signed > (1 << last.store) - 1:  # "out of range for N-bit"
            sec.overflow[last.name] = sec.overflow.get(last.name, 0) + 1
        if last.store == 6:  # apply_6_bit_accumulation
            old = int(sec.read(o, 1)[0])
            sec.write(o, np.array([(old & 0xC0) | (buf & 0x3F)], np.uint64), 1)
        else:
            sec.write(o, np.array([buf & ((1 << last.store) - 1)], np.uint64), last.store // 8)
        sec.count += len(rows)
