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

Its instruction facts and decode tables are data in ``insn.py``.
"""
from __future__ import annotations

import bisect
import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from kpatch_core.verdict import Execution, Method, Reason, Refusal

from ..base import Backend, PrepareContext, per_image
from .insn import (
    _PT_NAMES,
    ALT_ENTRY,
    ASSUMED_EXTENSIONS,
    C_EBREAK_BYTES,
    CALL_OPS_SIZE,
    EBREAK_BYTES,
    EXT_FACT,
    EXTABLE_ENTRY_SIZE,
    ISA_EXT_IDS_612,
    MCOUNT_AUIPC_SIZE,
    MCOUNT_INSN_SIZE,
    NOP_BYTES,
    PT_REGS,
    PT_REGS_SIZE,
    R_RISCV_RELATIVE,
    Outcome,
    _auipc_t0,
    decode_table,
    decode_word,
    insn_length,
)

if TYPE_CHECKING:
    from ..base import UprobeSupport
    from kpatch_arch.base import BulkClassifier, SlotSupport

    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image


# --- backend ---------------------------------------------------------------------------------
class Riscv64Backend(Backend):
    """The riscv64 architecture (arch/riscv/kernel/probes/)."""

    name = "riscv64"
    elf_machine = "EM_RISCV"
    little_endian = True
    # capstone 5's constants (pyproject pins capstone < 6; tests/test_backend_constants.py):
    # the class loads without importing capstone
    capstone_arch = 15  # capstone.CS_ARCH_RISCV
    capstone_mode = 6  # capstone.CS_MODE_RISCV64 | CS_MODE_RISCVC
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

    @functools.cached_property
    def _cs(self) -> Any:
        """capstone, made on first use (a check that decodes nothing never loads it)."""
        import capstone
        return capstone.Cs(self.capstone_arch, self.capstone_mode)

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

    @per_image
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

    def default_facts(self, image: "Image") -> dict[str, bool]:
        return {EXT_FACT.format(e): e in ASSUMED_EXTENSIONS for e in ISA_EXT_IDS_612}

    @per_image
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

    def ftrace_call_adjust_many(self, image: "Image", records: np.ndarray) -> np.ndarray:
        """:meth:`ftrace_call_adjust` vectorised (a constant offset)."""
        records = np.asarray(records, np.uint64)
        if not image.features.has("RISCV_FTRACE_AUIPC_AT_INIT"):
            return records
        return records + np.uint64((CALL_OPS_SIZE if self._call_ops(image) else 0)
                                   + MCOUNT_AUIPC_SIZE)

    def bulk_classifier(self, image: "Image") -> "BulkClassifier":
        """The full analysis's vectorised ``arch_prepare_kprobe`` (bulk.py)."""
        from .bulk import classifier
        return classifier(self, image)

    def uprobe_support(self) -> "UprobeSupport":
        """Uprobes: arch_uprobe_analyze_insn, XOL slots, emulation (uprobe.py)."""
        from .uprobe import uprobe_support
        return uprobe_support(self)

    def slot_support(self) -> "SlotSupport":
        """Out-of-line execution: slots, emulation/simulation, CPU facts (slot.py)."""
        from .slot import slot_support
        return slot_support(self)
