"""ppc64le backend: ``tw 31,0,0`` breakpoints, ELFv2 entry points, emulate-or-single-step.

Facts first (pt_regs, register names, opcode classes), then the decoder, then the hooks that
mirror arch/powerpc/kernel/kprobes.c, arch/powerpc/include/asm/probes.h (``can_single_step``)
and arch/powerpc/kernel/optprobes.c.  powerpc has no boundary decoding: every 4-byte-aligned
word is judged alone (``.text`` holds tens of thousands of data words that no decoder knows,
and the kernel does not care); only a prefixed (ISA 3.1, 8-byte) instruction's suffix word is
refused.  Whether ``emulate_step`` emulates an accepted instruction or it is single-stepped is
what the model of arch/powerpc/lib/sstep.c (``analyse_instr``, :mod:`.emulate`) says of the
word: see :func:`analyse_class`.

Its instruction facts and decode tables are data in ``insn.py``.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from kpatch_core.verdict import Execution, Method, Reason, Refusal

from ..base import Backend, PrepareContext, PtRegsField
from .insn import (
    ARCH_BLACKLIST_AREA,
    BRANCH_RANGE,
    BREAKPOINT_INSTRUCTION,
    DYN_FTRACE_SIZE,
    EVENT_REGISTERS,
    FTRACE_ENTRY_WINDOW,
    INSN_SIZE,
    NOP,
    OPTINSN_SLOT,
    PAGE_ALIGNED_SECTION,
    PAGE_SIZE,
    PREFIXED_SIZE,
    PT_REGS,
    PT_REGS_SIZE,
    REGISTER_ALIASES,
    TEMPLATE_END,
    TEMPLATE_ENTRY,
    Analysis,
    analyse_class,
    is_conditional_branch,
    is_prefixed,
    not_steppable,
    ppc_function_entry_offset,
)

if TYPE_CHECKING:
    from ..base import UprobeSupport
    from kpatch_arch.base import BulkClassifier, SlotSupport

    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image


class Ppc64leBackend(Backend):
    """The ppc64le architecture (arch/powerpc/kernel/kprobes.c, optprobes.c, lib/sstep.c)."""

    name = "ppc64le"
    elf_machine = "EM_PPC64"
    little_endian = True
    # capstone 5's constants (pyproject pins capstone < 6; tests/test_backend_constants.py):
    # the class loads without importing capstone
    capstone_arch = 4  # capstone.CS_ARCH_PPC
    capstone_mode = 8  # capstone.CS_MODE_64 | CS_MODE_LITTLE_ENDIAN
    relative_reloc_type = 22  # R_PPC64_RELATIVE
    absolute_reloc_type = 38  # R_PPC64_ADDR64
    breakpoint = BREAKPOINT_INSTRUCTION.to_bytes(4, "little")
    insn_align = INSN_SIZE
    fill_encodings = (b"\x00\x00\x00\x60", b"\x00\x00\x00\x00")  # nop (ori 0,0,0), zeros
    extable_entry_size = 8  # s32 insn, s32 fixup
    static_call_inline = False
    kretprobe_blacklist = ()
    have_kprobes_on_ftrace = True
    have_optprobes = True
    pt_regs_size = PT_REGS_SIZE
    pt_regs = PT_REGS
    arg_regs = tuple(f"gpr{n}" for n in range(3, 11))  # regs_get_kernel_argument (6.12 only)
    retval_reg = "gpr3"
    stack_reg = "gpr1"
    syscall_prefix = "sys_"  # the wrapper keeps the sys_ names; the argument is pt_regs * in r3
    event_registers = EVENT_REGISTERS

    @functools.cached_property
    def _cs(self) -> Any:
        """capstone, made on first use (a check that decodes nothing never loads it)."""
        import capstone
        return capstone.Cs(self.capstone_arch, self.capstone_mode)

    # -- facts that depend on the kernel's features -------------------------------------------
    adjust_window = FTRACE_ENTRY_WINDOW + 1  # arch_kprobe_on_func_entry: offset <= 16

    def fetch_args_supported(self, features: "FeatureSet") -> bool:
        """``$argN`` in kprobe_events: HAVE_FUNCTION_ARG_ACCESS_API (PPC_FUNCTION_ARG_ACCESS_API)."""
        return features.has("PPC_FUNCTION_ARG_ACCESS_API")

    def register(self, name: str) -> PtRegsField | None:
        """``regs_query_register_offset`` (regoffset_table): ``r3`` and ``gpr3`` are the same
        field; pt_regs members without a table name (orig_gpr3, result...) give None."""
        if name not in EVENT_REGISTERS:
            return None
        return super().register(REGISTER_ALIASES.get(name, name))

    # -- hooks --------------------------------------------------------------------------------
    def within_arch_blacklist(self, image: "Image", addr: int) -> bool:
        # arch_within_kprobe_blacklist: also [_stext, __head_end) (exception vectors)
        start, end = (image.symtab.value(s) for s in ARCH_BLACKLIST_AREA)
        return start is not None and end is not None and start <= addr < end

    def jump_label_size(self, image: "Image", code: int) -> int:
        return 4

    def ftrace_call_adjust(self, image: "Image", record: int) -> int:
        # -mprofile-kernel: the record is the `bl _mcount` itself.  PPC_FTRACE_PATCHABLE_ENTRY
        # (trace/ftrace.c): records in .exit.text are dropped (0), and with
        # ARCH_USING_PATCHABLE_FUNCTION_ENTRY (record = first of two NOPs) the site is record + 4
        if not image.features.has("PPC_FTRACE_PATCHABLE_ENTRY"):
            return record
        begin, end = image.symtab.value("__exittext_begin"), image.symtab.value("__exittext_end")
        if begin is not None and end is not None and begin <= record < end:
            return 0
        if image.features.has("PPC_FTRACE_OUT_OF_LINE"):
            return record  # one patchable NOP, branching to its out-of-line stub when enabled
        if self._word(image, record) == NOP:
            return record + INSN_SIZE
        return record

    def _word(self, image: "Image", addr: int) -> int | None:
        raw = image.read(addr, 4)
        return int.from_bytes(raw, "little") if len(raw) == 4 else None

    def lookup_name(self, image: "Image", name: str, offset: int = 0) -> int | None:
        # kprobe_lookup_name (ELFv2): SYM+0 moves to the ftrace site within the first 16 bytes
        # (KPROBES_ON_FTRACE), else to the local entry point (ppc_function_entry)
        addr = image.kallsyms.lookup(name)
        if addr is None or offset:
            return addr
        if image.config.enabled("KPROBES_ON_FTRACE"):
            if image.features.has("PPC_FTRACE_OUT_OF_LINE"):
                # one-NOP entries: two records can share the 16-byte window (a 2-insn function
                # and the next); ftrace_location_range returns the one its bsearch meets
                page = image.section_alignment(PAGE_ALIGNED_SECTION) or 4096
                found = image.tables.lookup_rec(addr, addr + FTRACE_ENTRY_WINDOW, page,
                                                DYN_FTRACE_SIZE, INSN_SIZE)
                if found:
                    return found
            sites = image.tables.ftrace_sites_in(addr, addr + FTRACE_ENTRY_WINDOW + 1)
            if sites:
                return int(sites[0])
        w0, w1 = self._word(image, addr), self._word(image, addr + 4)
        if w0 is None or w1 is None:
            return addr
        return addr + ppc_function_entry_offset(w0, w1)

    def adjust_kprobe_addr(self, image: "Image", sym_addr: int, offset: int) -> tuple[int, bool]:
        # arch_adjust_kprobe_addr: the address is not moved (kprobe_lookup_name already moved
        # SYM+0); arch_kprobe_on_func_entry: up to 16 bytes past the global entry (8 without
        # KPROBES_ON_FTRACE) still count as the entry, so `r SYM+4..16` are valid kretprobes and
        # (6.12) $argN read the entry registers there
        if image.features.has("PPC_KPROBE_ENTRY_BY_FTRACE_LOCATION"):
            # arch_kprobe_on_func_entry: offset <= ftrace_location(addr) - addr, else <= 8
            func = image.kallsyms.containing(sym_addr)
            size = func.size if func is not None and func.addr == sym_addr else 1
            sites = image.tables.ftrace_sites_in(sym_addr, sym_addr + max(size, 1))
            limit = int(sites[0]) - sym_addr if sites else 8
            return sym_addr + offset, offset <= limit
        limit = 16 if image.config.enabled("KPROBES_ON_FTRACE") else 8
        return sym_addr + offset, offset <= limit

    def mnemonic(self, code: bytes, addr: int) -> str:
        """Text of the instruction (capstone), or the word in hex when capstone cannot."""
        for _, _, mn, ops in self._cs.disasm_lite(code, addr, 1):
            return f"{mn} {ops}".strip()
        return f".long {int.from_bytes(code[:4], 'little'):#010x}"

    # -- arch_prepare_kprobe ------------------------------------------------------------------
    def prepare(self, ctx: PrepareContext) -> Execution | Refusal:
        image, addr = ctx.image, ctx.addr
        word = self._word(image, addr)
        if word is None:
            return Refusal(Reason.UNDECODABLE, "no text at the address")
        why = not_steppable(word)  # can_single_step
        if why is not None:
            return Refusal(Reason.PROHIBITED_INSN, f"{why} cannot be single-stepped")
        if addr % PAGE_SIZE:  # the word before, unless addr starts a page
            prev = self._word(image, addr - 4)
            if prev is not None and is_prefixed(prev):
                return Refusal(Reason.PREFIX_SUFFIX, f"prefix word {prev:#010x} at {addr - 4:#x}")
        size = PREFIXED_SIZE if is_prefixed(word) else INSN_SIZE
        insn = image.read(addr, size)
        text = self.mnemonic(insn, addr)
        if size == PREFIXED_SIZE and addr % 64 == 60:
            text += " [prefixed insn crosses a 64-byte boundary]"
        # kprobe_handler -> try_to_emulate: emulate_step first, the slot copy single-stepped
        # when it returns 0 (EMULATE when it does the word for some register state)
        cls = analyse_class(word)
        method = Method.SINGLESTEP if cls is Analysis.STEP else Method.EMULATE
        return Execution(method, insn, text)

    def optimized_capacity(self, image: "Image") -> int | None:
        """``__ppc_alloc_insn_page`` hands out one page, ``optinsn_slot``, so the insn cache
        has ``slots_per_page`` = PAGE_SIZE / MAX_OPTINSN_SIZE detour buffers in all (the 64 KiB
        area is used only up to PAGE_SIZE); the boot-time rethook trampoline kprobe
        (``arch_init_kprobes``; ``can_optimize`` takes it unconditionally) holds one of them."""
        entry = image.symtab.value(TEMPLATE_ENTRY)
        end = image.symtab.value(TEMPLATE_END)
        page = image.section_alignment(PAGE_ALIGNED_SECTION)  # aligned to PAGE_SIZE
        if entry is None or end is None or end <= entry or not page:
            return None
        return max(page // (end - entry) - 1, 0)

    def optimizable(self, ctx: PrepareContext) -> bool:
        """optprobes.c ``can_optimize``: a kernel address whose instruction ``analyse_instr``
        does fully in registers (returns 1) and that is not a conditional branch; the detour
        (in vmlinux's ``optinsn_slot``) and the return address must be within branch range."""
        image, addr = ctx.image, ctx.addr
        word = self._word(image, addr)
        if word is None or is_prefixed(word) or is_conditional_branch(word):
            return False
        if not_steppable(word) is not None:  # never registered (arch_prepare_kprobe refuses it)
            return False
        if analyse_class(word) is not Analysis.REGS:
            return False
        slot = image.symtab.value(OPTINSN_SLOT)
        if slot is None:
            return False
        lo, hi = BRANCH_RANGE
        return lo <= slot - addr <= hi

    def ftrace_call_adjust_many(self, image: "Image", records: np.ndarray) -> np.ndarray:
        """:meth:`ftrace_call_adjust` vectorised: .exit.text records dropped (0), record + 4
        where the record is the first of two NOPs."""
        records = np.asarray(records, np.uint64)
        if not image.features.has("PPC_FTRACE_PATCHABLE_ENTRY"):
            return records
        if image.features.has("PPC_FTRACE_OUT_OF_LINE"):
            out = records.copy()
        else:
            nop = image.read_u32_at(records) == np.uint32(NOP)
            out = records + np.where(nop, INSN_SIZE, 0).astype(np.uint64)
        begin, end = image.symtab.value("__exittext_begin"), image.symtab.value("__exittext_end")
        if begin is not None and end is not None:
            out[(records >= np.uint64(begin)) & (records < np.uint64(end))] = 0
        return out

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
