"""arm64 backend: BRK breakpoints, fixed 4-byte instructions, the decode-insn.c decision table.

Facts first (BRK encodings, pt_regs, the ``__AARCH64_INSN_FUNCS`` mask/value pairs), then the
decoder, then the hooks that mirror arch/arm64/kernel/probes/{kprobes.c,decode-insn.c}.

The kernel decides from a few opcode bits, so does the decoder here: one ordered table of
``(mask, value, class, outcome)`` rows per kernel rule set, first match wins.  The table is data,
so :func:`decode_words` applies it to a whole function at once with numpy; capstone is used only
to print mnemonics.  The kernel judges its patched text: boot-time alternatives are applied for
the CPU features assumed by the runtime facts (``RUNTIME_LSE_ATOMICS``).

Its instruction facts and decode tables are data in ``insn.py``.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from kpatch_core.verdict import Execution, Method, Reason, Refusal

from ..base import Backend, PrepareContext, PtRegsField, per_image
from .insn import (
    AARCH64_INSN_SIZE,
    ALT_INSTR,
    EVENT_REGISTERS,
    EXTABLE_ENTRY_SIZE,
    KPROBE_BREAKPOINT,
    KPROBE_SS_BREAKPOINT,
    MAX_ATOMIC_CONTEXT_SIZE,
    MAX_INSN_SIZE,
    PT_REGS,
    PT_REGS_SIZE,
    R_AARCH64_RELATIVE,
    REGISTER_ALIASES,
    RUNTIME_LSE_ATOMICS,
    UPROBE_BREAKPOINT,
    Alternatives,
    Outcome,
    decode_table,
    decode_word,
    exclusive_masks,
    is_probed_address_atomic,
)

if TYPE_CHECKING:
    from ..base import UprobeSupport
    from kpatch_arch.base import BulkClassifier, SlotSupport

    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image


# --- backend ---------------------------------------------------------------------------------
class Arm64Backend(Backend):
    """The arm64 architecture (arch/arm64/kernel/probes/)."""

    name = "arm64"
    elf_machine = "EM_AARCH64"
    little_endian = True
    # capstone 5's constants (pyproject pins capstone < 6; tests/test_backend_constants.py):
    # the class loads without importing capstone
    capstone_arch = 1  # capstone.CS_ARCH_ARM64
    capstone_mode = 0  # capstone.CS_MODE_ARM
    relative_reloc_type = R_AARCH64_RELATIVE  # vmlinux is linked --no-apply-dynamic-relocs
    absolute_reloc_type = 257  # R_AARCH64_ABS64 (against .dynsym; none lands in kprobe tables)
    breakpoint = KPROBE_BREAKPOINT  # BRK64_OPCODE_KPROBES
    single_step_breakpoint = KPROBE_SS_BREAKPOINT  # BRK64_OPCODE_KPROBES_SS, slot[1]
    uprobe_breakpoint = UPROBE_BREAKPOINT  # BRK64_OPCODE_UPROBES
    insn_align = AARCH64_INSN_SIZE
    fill_encodings = (b"\x00\x00\x00\x00", b"\x1f\x20\x03\xd5")  # udf #0 (zeros), nop
    slot_size = MAX_INSN_SIZE * AARCH64_INSN_SIZE
    extable_entry_size = EXTABLE_ENTRY_SIZE
    static_call_inline = False
    have_kprobes_on_ftrace = False  # no HAVE_KPROBES_ON_FTRACE on arm64 (6.1 and 6.12)
    have_optprobes = False
    pt_regs_size = PT_REGS_SIZE
    pt_regs = PT_REGS
    arg_regs = tuple(f"x{n}" for n in range(8))  # regs_get_kernel_argument: x0..x7
    retval_reg = "x0"
    stack_reg = "sp"
    syscall_prefix = "__arm64_sys_"
    event_registers = EVENT_REGISTERS

    @functools.cached_property
    def _cs(self) -> Any:
        """capstone, made on first use (a check that decodes nothing never loads it)."""
        import capstone
        return capstone.Cs(self.capstone_arch, self.capstone_mode)

    def register(self, name: str) -> PtRegsField | None:
        """pt_regs field of a kprobe_events ``%name`` (``lr`` is ``x30``)."""
        return super().register(REGISTER_ALIASES.get(name, name))

    # -- hooks --------------------------------------------------------------------------------
    def kprobes_on_ftrace(self, features: "FeatureSet") -> bool:
        return False

    def blacklist_areas(self, features: "FeatureSet") -> tuple[tuple[str, str], ...]:
        # arch_populate_kprobe_blacklist (kernel not in hyp mode: hyp.idmap is added too)
        areas = [("__entry_text_start", "__entry_text_end"),
                 ("__irqentry_text_start", "__irqentry_text_end")]
        if features.has("ARM64_IDMAP_TEXT_BLACKLISTED"):
            areas.append(("__idmap_text_start", "__idmap_text_end"))
        areas += [("__hyp_text_start", "__hyp_text_end"),
                  ("__hyp_idmap_text_start", "__hyp_idmap_text_end")]
        return tuple(areas)

    def ftrace_call_adjust(self, image: "Image", record: int) -> int:
        # ftrace_call_adjust: the NOP that becomes `BL ftrace_caller`
        if image.features.has("ARM64_DYNAMIC_FTRACE_WITH_CALL_OPS") and self._call_ops(image):
            # DYNAMIC_FTRACE_WITH_CALL_OPS: 2 NOPs before func
            addr = record + 2 * AARCH64_INSN_SIZE
            word = int.from_bytes(image.read(addr, 4), "little")
            if word & 0xFFFFFF3F == 0xD503241F:  # BTI / BTI C / BTI J / BTI JC
                addr += AARCH64_INSN_SIZE
            return addr + AARCH64_INSN_SIZE
        return record + AARCH64_INSN_SIZE  # DYNAMIC_FTRACE_WITH_REGS / WITH_ARGS

    @per_image
    def _call_ops(self, image: "Image") -> bool:
        """DYNAMIC_FTRACE_WITH_CALL_OPS (``-fpatchable-function-entry=4,2``): the records sit
        8 bytes before their function, so function symbols start at record + 8, not at record."""
        recs = image.tables.mcount_records
        # zeroed records (weak functions dropped by scripts/sorttable) sort to the front:
        # sample the real ones across the whole table
        recs = recs[recs != 0]
        recs = recs[:: max(1, len(recs) // 256)].tolist()
        at = image.kallsyms.aliases_at
        after = sum(1 for r in recs if at(int(r) + 8) and not at(int(r)))
        return after * 2 > len(recs)

    def default_facts(self, image: "Image") -> dict[str, bool]:
        # the CPU the probe runs on has LSE atomics (any ARMv8.1+ core): boot-time alternatives
        # then replace LL/SC sequences (ldxr..stxr) with an LSE atomic and NOPs
        return {RUNTIME_LSE_ATOMICS: True}

    @per_image
    def alternatives(self, image: "Image") -> Alternatives:
        """The parsed ``__alt_instructions`` table of ``image``."""
        start = image.symtab.value("__alt_instructions")
        end = image.symtab.value("__alt_instructions_end")
        if start is None or end is None or end <= start:
            z = np.zeros(0, np.uint64)
            return Alternatives(z, z, z, np.zeros(0, np.uint16))
        raw = image.read(start, end - start)
        a = np.frombuffer(raw[: len(raw) - len(raw) % ALT_INSTR.itemsize], dtype=ALT_INSTR)
        at = np.uint64(start) + np.arange(len(a), dtype=np.uint64) * np.uint64(ALT_INSTR.itemsize)
        with np.errstate(over="ignore"):
            orig = at + a["orig_offset"].astype(np.int64).astype(np.uint64)
            alt = at + np.uint64(4) + a["alt_offset"].astype(np.int64).astype(np.uint64)
        order = np.argsort(orig, kind="stable")
        return Alternatives(orig[order], a["orig_len"][order].astype(np.uint64), alt[order],
                            a["cpucap"][order].copy())

    @per_image
    def _runtime_caps(self, image: "Image") -> frozenset[int]:
        """cpucaps whose alternatives the running kernel applied (from the runtime facts)."""
        caps = set()
        if image.config.enabled(RUNTIME_LSE_ATOMICS):
            lse = self.alternatives(image).lse_cap(image)
            if lse is not None:
                caps.add(lse)
        return frozenset(caps)

    def runtime_bytes(self, image: "Image", start: int, end: int) -> bytes:
        """Text ``[start, end)`` after ``apply_alternatives`` for the assumed CPU features.

        Replacements are copied as they are: __apply_alternatives only rewrites branch and adrp
        immediates, which never change an instruction's decode class.
        """
        buf = bytearray(image.read(start, end - start))
        caps = self._runtime_caps(image)
        if not caps:
            return bytes(buf)
        alts = self.alternatives(image)
        lo = int(np.searchsorted(alts.orig, np.uint64(max(start - 255, 0))))
        hi = int(np.searchsorted(alts.orig, np.uint64(end)))
        for i in range(lo, hi):
            if int(alts.cpucap[i]) not in caps:
                continue
            site, n = int(alts.orig[i]), int(alts.length[i])
            if site + n <= start:
                continue
            for k, b in enumerate(image.read(int(alts.alt[i]), n)):
                j = site - start + k
                if 0 <= j < len(buf):
                    buf[j] = b
        return bytes(buf)

    # -- decoding -----------------------------------------------------------------------------
    def mnemonic(self, code: bytes, addr: int) -> str:
        """capstone's text for the instruction (details only; never decides)."""
        for _, _, mn, ops in self._cs.disasm_lite(code[:4], addr, 1):
            return f"{mn} {ops}".strip()
        return f".inst {int.from_bytes(code[:4], 'little'):#010x}"

    # -- arch_prepare_kprobe ------------------------------------------------------------------
    def prepare(self, ctx: PrepareContext) -> Execution | Refusal:
        image, addr, func = ctx.image, ctx.addr, ctx.func
        table = decode_table(ctx.features)
        # atomic window: back to the symbol start if it is < 128 bytes away, else 32 insns
        off = addr - func.addr
        window = MAX_ATOMIC_CONTEXT_SIZE * AARCH64_INSN_SIZE
        scan_end = func.addr if off < window else addr - window
        text = self.runtime_bytes(image, scan_end, addr + 4)  # the kernel reads patched text
        code = text[-4:]
        if len(text) < addr + 4 - scan_end:
            return Refusal(Reason.UNDECODABLE, "no bytes at address")
        insn = int.from_bytes(code, "little")
        if image.tables.has_extable(addr):  # search_exception_tables
            return Refusal(Reason.EXTABLE, self.mnemonic(code, addr))
        row = decode_word(insn, table)  # arm_kprobe_decode_insn
        if row.outcome is Outcome.REJECTED:
            return Refusal(Reason.PROHIBITED_INSN,
                           f"{self.mnemonic(code, addr)} ({row.name}: {row.why})")
        before = np.frombuffer(text[:-4], dtype="<u4")[::-1].tolist()
        if is_probed_address_atomic(before, exclusive_masks(ctx.features)):
            return Refusal(Reason.EXCLUSIVE_WINDOW, self.mnemonic(code, addr))
        method = Method.SIMULATE if row.outcome is Outcome.GOOD_NO_SLOT else Method.SINGLESTEP
        return Execution(method, code, self.mnemonic(code, addr))

    def slot(self, insn: bytes) -> bytes:
        """``arch_prepare_ss_slot``: the 8-byte slot, instruction then ``BRK #6``."""
        return insn[:4] + KPROBE_SS_BREAKPOINT

    def ftrace_call_adjust_many(self, image: "Image", records: np.ndarray) -> np.ndarray:
        """:meth:`ftrace_call_adjust` vectorised: record + 8 (+4 past a BTI) + 4 with CALL_OPS,
        else record + 4."""
        records = np.asarray(records, np.uint64)
        if image.features.has("ARM64_DYNAMIC_FTRACE_WITH_CALL_OPS") and self._call_ops(image):
            addr = records + np.uint64(2 * AARCH64_INSN_SIZE)
            bti = (image.read_u32_at(addr) & np.uint32(0xFFFFFF3F)) == np.uint32(0xD503241F)
            return addr + np.where(bti, 2 * AARCH64_INSN_SIZE, AARCH64_INSN_SIZE).astype(np.uint64)
        return records + np.uint64(AARCH64_INSN_SIZE)

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
