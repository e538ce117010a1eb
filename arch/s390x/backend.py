"""s390x backend: 0x0002 breakpoints, length from the first byte, the disassembler's opcode table.

Facts first (pt_regs, register names, opcode patterns), then the decoder, then the hooks that
mirror arch/s390/kernel/kprobes.c and arch/s390/lib/probes.c.  s390 never emulates or boosts:
every accepted non-ftrace probe is single-stepped out of line (PER instruction-fetch event) from
a 6-byte slot and the PSW is fixed up afterwards (``probe_get_fixup_type``).  The kernel refuses
opcodes its disassembler does not know (``is_known_insn``); that table differs between 6.1 and
6.12 and is carried as data in :mod:`kpatch_arch.s390x.opcodes`.

Its instruction facts and decode tables are data in ``insn.py``.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any


from kpatch_core.features import FeatureSet
from kpatch_core.verdict import Execution, Method, Reason, Refusal

from ..base import Backend, PrepareContext, PtRegsField
from .insn import (
    BREAKPOINT_INSTRUCTION,
    EVENT_REGISTERS,
    KERNEL_IMAGE_BASE,
    MAX_INSN_SIZE,
    PT_REGS,
    PT_REGS_SIZE,
    Fixup,
    find_insn,
    fixup_type,
    insn_length,
    is_relative_long,
    opcode_source,
    prohibited,
    relative_long_fixup,
)

if TYPE_CHECKING:
    from ..base import UprobeSupport
    from kpatch_arch.base import BulkClassifier, SlotSupport

    from kpatch_core.image import Image


class S390xBackend(Backend):
    """The s390x architecture (arch/s390/kernel/kprobes.c, arch/s390/lib/probes.c)."""

    name = "s390x"
    elf_machine = "EM_S390"
    little_endian = False
    # capstone 5's constants (pyproject pins capstone < 6; tests/test_backend_constants.py):
    # the class loads without importing capstone
    capstone_arch = 6  # capstone.CS_ARCH_SYSZ
    capstone_mode = 1 << 31  # capstone.CS_MODE_BIG_ENDIAN
    relative_reloc_type = 12  # R_390_RELATIVE
    absolute_reloc_type = 22  # R_390_64 (global asm symbols in pointer tables)
    breakpoint = BREAKPOINT_INSTRUCTION.to_bytes(2, "big")
    insn_align = 2
    fill_encodings = (b"\x07\x07", b"\x47\x00\x07\x00", b"\x00\x00")  # nopr %r7, nop, zeros
    extable_entry_size = 12  # s32 insn, s32 fixup, s16 type, s16 data
    static_call_inline = False
    kretprobe_blacklist = ()
    have_kprobes_on_ftrace = True
    have_optprobes = False
    pt_regs_size = PT_REGS_SIZE
    pt_regs = PT_REGS
    arg_regs = ("r2", "r3", "r4", "r5", "r6")  # regs_get_kernel_argument; $arg6+ on the stack
    retval_reg = "r2"
    stack_reg = "r15"
    syscall_prefix = "__s390x_sys_"  # ARCH_HAS_SYSCALL_WRAPPER (asm/syscall_wrapper.h)
    event_registers = EVENT_REGISTERS

    arg_stack_base = 20  # regs_get_kernel_argument: $arg6.. = stack word 20 + n (r15 + 160)

    @functools.cached_property
    def _cs(self) -> Any:
        """capstone, made on first use (a check that decodes nothing never loads it)."""
        import capstone
        return capstone.Cs(self.capstone_arch, self.capstone_mode)

    def register(self, name: str) -> PtRegsField | None:
        """``regs_query_register_offset``: only ``r<decimal>`` below 16 (``kstrtoul(name + 1, 10)``
        also takes ``r02`` and ``r+2``); ``psw.mask``, ``orig_gpr2``... have no kprobe_events name."""
        if not name.startswith("r"):
            return None
        digits = name[1:].removesuffix("\n")
        digits = digits[1:] if digits.startswith("+") else digits
        if not digits.isascii() or not digits.isdigit():
            return None
        n = int(digits)
        return PT_REGS[3 + n] if n < 16 else None

    # -- hooks --------------------------------------------------------------------------------
    def blacklist_areas(self, features: "FeatureSet") -> tuple[tuple[str, str], ...]:
        return (("__irqentry_text_start", "__irqentry_text_end"),)  # arch_populate_kprobe_blacklist

    def jump_label_size(self, image: "Image", code: int) -> int:
        return 6  # JUMP_LABEL_NOP_SIZE: brcl

    def mnemonic(self, code: bytes, addr: int, source: str) -> str:
        """Text of the instruction (capstone; the kernel table's name when capstone cannot)."""
        for _, _, mn, ops in self._cs.disasm_lite(code[:insn_length(code[0])], addr, 1):
            return f"{mn} {ops}".strip()
        return find_insn(code, source) or code[:insn_length(code[0])].hex()

    def load_offset(self, image: "Image") -> int:
        """From 6.10 the kernel's virtual addresses no longer equal its physical ones: vmlinux
        is linked at TEXT_OFFSET and, with ``nokaslr``, runs at ``__NO_KASLR_START_KERNEL`` =
        ``CONFIG_KERNEL_IMAGE_BASE`` + TEXT_OFFSET (arch/s390/boot/startup.c
        ``setup_kernel_memory_layout``); the relocations went to the decompressor."""
        v = image.banner_version()  # image.features needs symbols, not settled yet
        if v is None or not FeatureSet.decide(v, self.name).has("S390_KERNEL_IMAGE_BASE") \
                or image.link_range[1] >= 1 << 32:
            return 0
        return KERNEL_IMAGE_BASE

    def slot_address(self, image: "Image") -> int | None:
        """The vmlinux insn page (``kprobes_insn_page``) that slots for kernel probes use, on a
        kernel with S390_KPROBES_INSN_PAGE."""
        return image.symtab.value("kprobes_insn_page")

    # -- arch_prepare_kprobe ------------------------------------------------------------------
    def prepare(self, ctx: PrepareContext) -> Execution | Refusal:
        image, addr, func = ctx.image, ctx.addr, ctx.func
        features = ctx.features
        opcodes = opcode_source(features)
        code = self.runtime_bytes(image, func.addr, addr + MAX_INSN_SIZE)
        # can_probe: walk from the symbol start by insn_length.  A preceding 0x00xx halfword
        # stops the walk (-EINVAL) unless it is 0x0002 with a kprobe registered there (then the
        # saved opcode gives the length); offline no other kprobe is registered.
        off = addr - func.addr
        pos = 0
        while pos < off:
            if pos >= len(code):
                return Refusal(Reason.UNDECODABLE, "text ends before the address", errno="EINVAL")
            if code[pos] == 0:
                return Refusal(Reason.NOT_BOUNDARY, f"0x{code[pos:pos + 2].hex()} halfword at "
                               f"+{pos:#x} stops the decoder", errno="EINVAL")
            pos += insn_length(code[pos])
        if pos != off:
            # can_probe() is false: -EINVAL (not -EILSEQ as on x86)
            return Refusal(Reason.NOT_BOUNDARY, f"inside the instruction at "
                           f"+{_last_start(code, off):#x}", errno="EINVAL")
        here = code[off:off + MAX_INSN_SIZE]
        if len(here) < 2:
            return Refusal(Reason.UNDECODABLE, "no text", errno="EINVAL")
        length = insn_length(here[0])
        insn = here[:length]
        why = prohibited(insn, opcodes)
        if why is not None:  # probe_is_prohibited_opcode
            return Refusal(Reason.PROHIBITED_INSN, f"{why} ({insn.hex()})")
        text = self.mnemonic(insn, addr, opcodes)
        fix = fixup_type(insn)
        notes = ["fixup " + "|".join(f.name or "" for f in Fixup if f in fix)]
        if is_relative_long(insn):  # copy_instruction: displacement rewritten for the slot
            slot = self.slot_address(image) if features.has("S390_KPROBES_INSN_PAGE") else None
            if slot is not None and relative_long_fixup(insn, addr, slot) is None:
                notes.append("relative-long displacement does not fit the slot")
            else:
                notes.append("relative-long displacement rewritten")
        return Execution(Method.SINGLESTEP, insn, f"{text} [{'; '.join(notes)}]")

    def syscall_entry_prefixes(self) -> tuple[str, ...]:
        """``__s390x_sys_`` and the 31-bit compat wrappers' ``__s390_sys_``
        (asm/syscall_wrapper.h)."""
        return ("__s390x_sys_", "__s390_sys_")

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


def _last_start(code: bytes, off: int) -> int:
    """Start offset of the instruction that covers ``off`` (decoding from 0)."""
    pos = 0
    while True:
        n = insn_length(code[pos])
        if pos + n > off:
            return pos
        pos += n
