"""ppc64le out-of-line execution: the instruction slot.

[arch/powerpc/kernel/kprobes.c: arch_prepare_kprobe] allocates a slot for every probe on
ppc64 and ``patch_instruction`` copies the (4- or 8-byte prefixed) instruction unchanged.  On a
hit ``try_to_emulate`` runs ``emulate_step`` first; only when it declines is the slot copy
single-stepped with MSR_SE, after which ``kprobe_post_handler`` sets NIP to ``addr + len``.
No relocation happens: PC-relative instructions are ones emulate_step always handles.

Not here (yet): an executor (unicorn has no little-endian PPC64 and its 64-bit PPC is broken;
the oracle would be qemu-ppc64le) and emulate_step's effects.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from kpatch_core.slot import Effect, ReadMem, Slot
from kpatch_core.verdict import Execution, Method, Refusal

from . import INSN_SIZE, PREFIXED_SIZE, is_prefixed

if TYPE_CHECKING:
    from kpatch_core.image import Image

    from . import Ppc64leBackend

# module_alloc on book3s64: the vmalloc/module region (ioremap/vmalloc base 0xc008...)
MODULE_SLOT_DEFAULT = 0xC008000000000000
SLOT_SIZE = 8  # kprobe_insn_slots.insn_size: MAX_INSN_SIZE (2) * sizeof(kprobe_opcode_t)


def default_slot_addr(image: "Image | None" = None) -> int:
    """The first insn slot page (module_alloc'd)."""
    return MODULE_SLOT_DEFAULT


def build_slot(backend: "Ppc64leBackend", execution: Execution, addr: int,
               slot_addr: int) -> Slot | Refusal:
    """``patch_instruction(p->ainsn.insn, insn)``: the unchanged copy (also for instructions
    emulate_step handles: the slot exists, it is only used when emulation declines)."""
    word = int.from_bytes(execution.insn[:4], "little")
    n = PREFIXED_SIZE if is_prefixed(word) else INSN_SIZE
    insn = execution.insn[:n]
    note = ("emulate_step first; the copy is single-stepped (MSR_SE) only if it declines"
            if execution.method == Method.EMULATE else "single-stepped with MSR_SE")
    return Slot(addr, slot_addr, insn, insn, execution.method, addr + n, None,
                execution.mnemonic, note)


def simulate(backend: "Ppc64leBackend", insn: bytes, addr: int, regs: Mapping[str, int],
             read: ReadMem) -> Effect:
    """emulate_step is not modelled yet."""
    raise NotImplementedError("ppc64le emulate_step effects are not modelled")
