"""riscv64 backend: ebreak / c.ebreak, 2- and 4-byte instructions, riscv_probe_decode_insn.

Facts first (encodings, pt_regs, the ``__RISCV_INSN_FUNCS`` mask/value pairs per kernel rule set),
then the decoder, then the hooks that mirror arch/riscv/kernel/probes/{kprobes.c,decode-insn.c}.

The kernel never disassembles: the instruction length comes from the low two bits
(``GET_INSN_LENGTH``: ``11`` -> 4 bytes, else 2) and the verdict from a mask/value table, first
match wins.  It judges its patched text: the ftrace entry as two 4-byte nops and, on 6.12, the
``.alternative`` entries for the CPU's extensions (facts ``RUNTIME_RISCV_<EXT>``).
The same tables are data here (:data:`DECODE_TABLES`), applied one word at a time
(:func:`decode_word`) or to whole arrays with numpy (:func:`decode_words`, :func:`insn_starts`).
capstone (with the compressed-instruction mode bit) only names the instruction in details.
"""
from __future__ import annotations

import bisect
import enum
import functools
from typing import TYPE_CHECKING

import attrs
import capstone
import numpy as np

from kpatch_core.verdict import Execution, Method, Reason, Refusal

from ..base import Backend, PrepareContext, PtRegsField

if TYPE_CHECKING:
    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image

# --- facts -----------------------------------------------------------------------------------
EBREAK = 0x00100073  # __BUG_INSN_32  [asm/bug.h]
C_EBREAK = 0x9002  # __BUG_INSN_16
EBREAK_BYTES = EBREAK.to_bytes(4, "little")
C_EBREAK_BYTES = C_EBREAK.to_bytes(2, "little")
NOP = 0x00000013  # addi x0, x0, 0: what ftrace_init_nop writes (2x) over the patchable entry
NOP_BYTES = NOP.to_bytes(4, "little")
MCOUNT_INSN_SIZE = 8  # patchable function entry bytes  [asm/ftrace.h]
MCOUNT_AUIPC_SIZE = 4  # the auipc ftrace_init_nop writes before the site (RISCV_FTRACE_AUIPC_AT_INIT)
AUIPC_T0 = 0x00000297  # auipc t0, 0  [asm/ftrace.h]
CALL_OPS_SIZE = 8  # the ftrace_ops literal before each function (RISCV_DYNAMIC_FTRACE_WITH_CALL_OPS)
MAX_INSN_SIZE = 2  # kprobe_opcode_t words in a slot  [asm/probes.h]
R_RISCV_RELATIVE = 3
EXTABLE_ENTRY_SIZE = 12  # struct exception_table_entry { int insn, fixup; short type, data; }


# struct alt_entry (6.12, relative)  [arch/riscv/include/asm/alternative.h]
ALT_ENTRY = np.dtype([("old_offset", "<i4"), ("alt_offset", "<i4"), ("vendor_id", "<u2"),
                      ("alt_len", "<u2"), ("patch_id", "<u4")])
# RISCV_ISA_EXT_* ids of 6.12 [asm/hwcap.h] that .alternative entries name (patch_id & 0xffff)
ISA_EXT_IDS_612 = {"D": 3, "F": 5, "V": 21, "ZBB": 30, "ZICBOM": 31, "ZIHINTPAUSE": 32,
                   "SVNAPOT": 33, "ZICBOZ": 34, "ZBA": 37, "ZBS": 38, "ZBC": 45, "ZKR": 52,
                   "ZVE32X": 74, "ZAWRS": 85, "SVVPTC": 86, "XLINUXENVCFG": 127}
# the CPU assumed when nothing says otherwise: the extensions QEMU's default rv64 reports
# (riscv_cpufeature_patch_func applies an alternative when the hart has its extension)
ASSUMED_EXTENSIONS = frozenset({"D", "F", "ZBA", "ZBB", "ZBC", "ZBS", "ZIHINTPAUSE"})
EXT_FACT = "RUNTIME_RISCV_{}"  # fact name per extension, e.g. RUNTIME_RISCV_ZBB


def _auipc_t0(offset: int) -> int:
    """``to_auipc_t0``: the auipc half of a call to ``offset`` bytes away (asm/ftrace.h)."""
    offset &= 0xFFFFFFFF
    hi = (offset & 0xFFFFF000) + (0x1000 if offset & 0x800 else 0)
    return (hi & 0xFFFFF000) | AUIPC_T0


def insn_length(halfword: int) -> int:
    """``GET_INSN_LENGTH``: 4 when the low two bits are ``11``, else 2."""
    return 4 if halfword & 3 == 3 else 2


# struct pt_regs  [arch/riscv/include/asm/ptrace.h]; names from regoffset_table (kernel/ptrace.c)
_PT_NAMES = ("epc ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 s2 s3 s4 s5 s6 s7 s8 s9 "
             "s10 s11 t3 t4 t5 t6 status badaddr cause orig_a0").split()
PT_REGS = tuple(PtRegsField(n, 8 * i) for i, n in enumerate(_PT_NAMES))
PT_REGS_SIZE = 288


class Outcome(enum.Enum):
    """``enum probe_insn`` of decode-insn.h, per instruction."""

    REJECTED = "rejected"  # INSN_REJECTED -> -EINVAL
    GOOD_NO_SLOT = "simulate"  # INSN_GOOD_NO_SLOT: simulate_*() in the handler
    GOOD = "singlestep"  # INSN_GOOD: slot = insn + ebreak


@attrs.frozen
class DecodeRow:
    """One ``riscv_insn_is_<name>`` test: ``(insn & mask) == value`` and, for c.jr/c.jalr in
    6.12, ``insn & nonzero != 0`` (rs1 != 0)."""

    name: str
    mask: int
    value: int
    outcome: Outcome
    nonzero: int = 0


REJ, SIM, STEP = Outcome.REJECTED, Outcome.GOOD_NO_SLOT, Outcome.GOOD
_RS1 = 0x0F80  # RVC_INSN_J_RS1_MASK, bits 11:7

# riscv_probe_decode_insn, in the kernel's order (first match wins); everything else -> GOOD.
# Keyed by the feature RISCV_KPROBES_SIMULATE_RVC.
DECODE_TABLES: dict[bool, tuple[DecodeRow, ...]] = {
    # without (6.1): masks from arch/riscv/kernel/probes/simulate-insn.h; every RVC control
    # transfer is rejected, and c_jal (0xe003/0x2001) also matches RV64's c.addiw
    False: (
        DecodeRow("system", 0x7F, 0x73, REJ),
        DecodeRow("fence", 0x7F, 0x0F, REJ),
        DecodeRow("c_j", 0xE003, 0xA001, REJ),
        DecodeRow("c_jr", 0xF07F, 0x8002, REJ),
        DecodeRow("c_jal", 0xE003, 0x2001, REJ),
        DecodeRow("c_jalr", 0xF07F, 0x9002, REJ),
        DecodeRow("c_beqz", 0xE003, 0xC001, REJ),
        DecodeRow("c_bnez", 0xE003, 0xE001, REJ),
        DecodeRow("c_ebreak", 0xFFFF, 0x9002, REJ),
        DecodeRow("jal", 0x7F, 0x6F, SIM),
        DecodeRow("jalr", 0x707F, 0x67, SIM),
        DecodeRow("auipc", 0x7F, 0x17, SIM),
        DecodeRow("branch", 0x7F, 0x63, SIM),
    ),
    # with (6.12): masks from arch/riscv/include/asm/insn.h; c_jal is RV32-only (never on
    # RV64); compressed jumps and branches are simulated
    True: (
        DecodeRow("system", 0x7F, 0x73, REJ),
        DecodeRow("fence", 0x7F, 0x0F, REJ),
        DecodeRow("c_ebreak", 0xFFFF, 0x9002, REJ),
        DecodeRow("c_j", 0xE003, 0xA001, SIM),
        DecodeRow("c_jr", 0xF07F, 0x8002, SIM, _RS1),
        DecodeRow("c_jalr", 0xF07F, 0x9002, SIM, _RS1),
        DecodeRow("c_beqz", 0xE003, 0xC001, SIM),
        DecodeRow("c_bnez", 0xE003, 0xE001, SIM),
        DecodeRow("jal", 0x7F, 0x6F, SIM),
        DecodeRow("jalr", 0x707F, 0x67, SIM),
        DecodeRow("auipc", 0x7F, 0x17, SIM),
        DecodeRow("branch", 0x7F, 0x63, SIM),
    ),
}
OTHER = DecodeRow("other", 0, 0, STEP)


# --- decoder ---------------------------------------------------------------------------------
def decode_table(features: "FeatureSet") -> tuple[DecodeRow, ...]:
    """``riscv_probe_decode_insn``'s rows on a kernel with ``features``."""
    return DECODE_TABLES[features.has("RISCV_KPROBES_SIMULATE_RVC")]


def decode_word(insn: int, table: tuple[DecodeRow, ...]) -> DecodeRow:
    """``riscv_probe_decode_insn`` (rows ``table``) on the 32-bit word read at the probe address."""
    for row in table:
        if insn & row.mask == row.value and (not row.nonzero or insn & row.nonzero):
            return row
    return OTHER


def decode_words(words: np.ndarray, table: tuple[DecodeRow, ...]) -> np.ndarray:
    """Row index into ``table`` for each u32 word, ``-1`` for GOOD (vectorised)."""
    w = np.asarray(words, dtype=np.uint32)
    out = np.full(len(w), -1, dtype=np.int16)
    for i, row in enumerate(table):
        hit = (out < 0) & ((w & np.uint32(row.mask)) == np.uint32(row.value))
        if row.nonzero:
            hit &= (w & np.uint32(row.nonzero)) != 0
        out[hit] = i
    return out


def insn_starts(code: bytes) -> list[int]:
    """Offsets of the instructions in ``code`` decoding from offset 0 (``arch_check_kprobe``)."""
    half = np.frombuffer(code[: len(code) & ~1], dtype="<u2")
    step = np.where((half & 3) == 3, 2, 1)  # in halfwords
    out = []
    i = 0
    n = len(half)
    while i < n:
        out.append(2 * i)
        i += int(step[i])
    return out


# --- backend ---------------------------------------------------------------------------------
class Riscv64Backend(Backend):
    """The riscv64 architecture (arch/riscv/kernel/probes/)."""

    name = "riscv64"
    elf_machine = "EM_RISCV"
    little_endian = True
    capstone_arch = capstone.CS_ARCH_RISCV
    capstone_mode = capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC
    relative_reloc_type = R_RISCV_RELATIVE
    absolute_reloc_type = 2  # R_RISCV_64
    breakpoint = EBREAK_BYTES  # for a 4-byte instruction; c.ebreak for a 2-byte one
    breakpoint_16 = C_EBREAK_BYTES
    single_step_breakpoint = EBREAK_BYTES  # slot tail is always the 32-bit ebreak
    uprobe_breakpoint = C_EBREAK_BYTES  # CONFIG_RISCV_ISA_C
    insn_align = 2
    # c.nop, nop (addi x0,x0,0), zero halfwords (c.unimp)
    fill_encodings = (b"\x01\x00", b"\x13\x00\x00\x00", b"\x00\x00")
    misaligned_reason = Reason.NOT_BOUNDARY  # odd address: -EILSEQ (arch_prepare_kprobe)
    slot_size = 8
    extable_entry_size = EXTABLE_ENTRY_SIZE
    static_call_inline = False
    have_kprobes_on_ftrace = True  # while RISCV_KPROBES_ON_FTRACE; see kprobes_on_ftrace()
    have_optprobes = False
    pt_regs_size = PT_REGS_SIZE
    pt_regs = PT_REGS
    arg_regs = ("a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7")
    retval_reg = "a0"
    stack_reg = "sp"
    syscall_prefix = "__riscv_sys_"  # with RISCV_SYSCALL_WRAPPER: syscall_prefix_for
    event_registers = tuple(_PT_NAMES)

    def __init__(self) -> None:
        self._cs = capstone.Cs(self.capstone_arch, self.capstone_mode)

    # -- facts that depend on the kernel's features ----------------------------------------------
    def kprobes_on_ftrace(self, features: "FeatureSet") -> bool:
        # HAVE_KPROBES_ON_FTRACE with DYNAMIC_FTRACE_WITH_REGS; none with WITH_ARGS
        return features.has("RISCV_KPROBES_ON_FTRACE")

    def syscall_prefix_for(self, features: "FeatureSet") -> str:
        """Syscall entry prefix: ``__riscv_sys_`` wrappers (ARCH_HAS_SYSCALL_WRAPPER), else ``sys_``."""
        return "__riscv_sys_" if features.has("RISCV_SYSCALL_WRAPPER") else "sys_"

    def blacklist_areas(self, features: "FeatureSet") -> tuple[tuple[str, str], ...]:
        return (("__irqentry_text_start", "__irqentry_text_end"),)  # arch_populate_kprobe_blacklist

    def ftrace_call_adjust(self, image: "Image", record: int) -> int:
        if not image.features.has("RISCV_FTRACE_AUIPC_AT_INIT"):
            return record  # the patchable entry starts at the function (asm/ftrace.h)
        # ftrace_call_adjust (arch/riscv/kernel/ftrace.c): the word after the auipc, past the
        # ops literal with DYNAMIC_FTRACE_WITH_CALL_OPS
        return record + (CALL_OPS_SIZE if self._call_ops(image) else 0) + MCOUNT_AUIPC_SIZE

    @functools.cache
    def _call_ops(self, image: "Image") -> bool:
        """DYNAMIC_FTRACE_WITH_CALL_OPS (``-fpatchable-function-entry=8,4``) as the image shows
        it: the records sit 8 bytes before their function symbols, not at them."""
        if not image.features.has("RISCV_DYNAMIC_FTRACE_WITH_CALL_OPS"):
            return False
        recs = image.tables.mcount_records
        recs = recs[recs != 0]  # zeroed (weak, dropped by sorttable) records sort first
        recs = recs[:: max(1, len(recs) // 256)].tolist()
        at = image.kallsyms.aliases_at
        after = sum(1 for r in recs if at(int(r) + CALL_OPS_SIZE) and not at(int(r)))
        return after * 2 > len(recs)

    def jump_label_size(self, image: "Image", code: int) -> int:
        return 4  # arch_static_branch: one 4-byte `nop` / `j` (norvc)

    def default_facts(self) -> dict[str, bool]:
        return {EXT_FACT.format(e): e in ASSUMED_EXTENSIONS for e in ISA_EXT_IDS_612}

    @functools.cache
    def _alternatives(self, image: "Image") -> tuple[list[tuple[int, int, int]], int]:
        """The ``.alternative`` entries (RISCV_ALTERNATIVE_OFFSETS) ``riscv_cpufeature_patch_func`` applies for the
        assumed CPU (vendor errata: none), as sorted (site, replacement, length), and the
        longest length."""
        start, end = image.symtab.value("__alt_start"), image.symtab.value("__alt_end")
        if start is None or end is None or end <= start \
                or not image.features.has("RISCV_ALTERNATIVE_OFFSETS"):
            return [], 0  # the older alt_entry layout (absolute pointers) is not read
        ids = {i for e, i in ISA_EXT_IDS_612.items() if image.config.enabled(EXT_FACT.format(e))}
        raw = image.read(start, end - start)
        a = np.frombuffer(raw[: len(raw) - len(raw) % ALT_ENTRY.itemsize], dtype=ALT_ENTRY)
        out = []
        for i in range(len(a)):
            if int(a["vendor_id"][i]) != 0 or int(a["patch_id"][i]) & 0xFFFF not in ids:
                continue
            at = start + ALT_ENTRY.itemsize * i
            out.append((at + int(a["old_offset"][i]), at + 4 + int(a["alt_offset"][i]),
                        int(a["alt_len"][i])))
        return sorted(out), max((n for _, _, n in out), default=0)

    def breakpoint_for(self, insn: bytes) -> bytes:
        """The breakpoint written over ``insn``: as long as the probed instruction."""
        return EBREAK_BYTES if insn_length(insn[0]) == 4 else C_EBREAK_BYTES

    def runtime_bytes(self, image: "Image", start: int, end: int) -> bytes:
        """File bytes after boot: alternatives applied for the assumed CPU extensions (6.12), and
        each ftrace patchable entry as two 4-byte ``nop`` (ftrace_init_nop).  Replacements are
        copied as they are: riscv_alternative_fix_offsets only changes auipc/jal immediates."""
        buf = bytearray(image.read(start, end - start))
        alts, longest = self._alternatives(image)
        lo = bisect.bisect_left(alts, (start - longest,))
        hi = bisect.bisect_left(alts, (end,))
        for site, alt, n in alts[lo:hi]:
            if site + n > start:
                for k, b in enumerate(image.read(alt, n)):
                    if 0 <= site - start + k < len(buf):
                        buf[site - start + k] = b
        # the patchable entry after ftrace_init_nop: two nops, or (RISCV_FTRACE_AUIPC_AT_INIT)
        # `auipc t0, ftrace_caller` then the nop at the site
        pre = MCOUNT_AUIPC_SIZE if image.features.has("RISCV_FTRACE_AUIPC_AT_INIT") else 0
        caller = image.symtab.value("ftrace_caller") or 0
        for site in image.tables.ftrace_sites_in(start - MCOUNT_INSN_SIZE + pre + 1, end + pre):
            entry = NOP_BYTES * 2
            if pre:
                entry = _auipc_t0(caller - (site - pre)).to_bytes(4, "little") + NOP_BYTES
            for i in range(MCOUNT_INSN_SIZE):
                j = site - pre - start + i
                if 0 <= j < len(buf):
                    buf[j] = entry[i]
        return bytes(buf)

    # -- decoding -----------------------------------------------------------------------------
    def mnemonic(self, code: bytes, addr: int) -> str:
        """capstone's text for the instruction (details only; never decides)."""
        n = insn_length(code[0]) if code else 2
        for _, size, mn, ops in self._cs.disasm_lite(code[:n], addr, 1):
            return (("c." if size == 2 and not mn.startswith("c.") else "") + f"{mn} {ops}").strip()
        return f".insn {code[:n][::-1].hex()}"

    # -- arch_prepare_kprobe ------------------------------------------------------------------
    def prepare(self, ctx: PrepareContext) -> Execution | Refusal:
        image, addr, func = ctx.image, ctx.addr, ctx.func
        table = decode_table(ctx.features)
        if addr & 1:
            return Refusal(Reason.NOT_BOUNDARY, "odd address")
        code = self.runtime_bytes(image, func.addr, addr + 4)
        off = addr - func.addr
        # arch_check_kprobe: step by GET_INSN_LENGTH from the symbol start, must hit addr
        pos = last = 0
        while pos < off:
            last = pos
            pos += insn_length(code[pos]) if pos < len(code) else 2
        if pos != off:
            return Refusal(Reason.NOT_BOUNDARY, f"inside the instruction at +{last:#x}")
        here = code[off:off + 4]
        if len(here) < 2:
            return Refusal(Reason.UNDECODABLE, "no bytes at address")
        word = int.from_bytes(here.ljust(4, b"\0"), "little")  # the kernel reads a full u32
        length = insn_length(word)
        row = decode_word(word, table)
        insn = here[:length]
        if row.outcome is Outcome.REJECTED:
            return Refusal(Reason.PROHIBITED_INSN,
                           f"{self.mnemonic(insn, addr)} ({row.name}: riscv_probe_decode_insn)")
        method = Method.SIMULATE if row.outcome is Outcome.GOOD_NO_SLOT else Method.SINGLESTEP
        return Execution(method, insn, self.mnemonic(insn, addr))

    def slot(self, insn: bytes) -> bytes:
        """``arch_prepare_ss_slot``: the instruction (2 or 4 bytes) then the 32-bit ``ebreak``."""
        return insn[:insn_length(insn[0])] + EBREAK_BYTES
