"""ppc64le out-of-line execution: the instruction slot.

[arch/powerpc/kernel/kprobes.c: arch_prepare_kprobe] allocates a slot for every probe on
ppc64 and ``patch_instruction`` copies the (4- or 8-byte prefixed) instruction unchanged.  On a
hit ``try_to_emulate`` runs ``emulate_step`` first; only when it declines is the slot copy
single-stepped with MSR_SE, after which ``kprobe_post_handler`` sets NIP to ``addr + len``.
No relocation happens: PC-relative instructions are ones emulate_step always handles.

emulate_step's effects are modelled in :mod:`kpatch_arch.ppc64le.emulate` (:func:`simulate`).
There is no unicorn executor (unicorn has no little-endian PPC64 and its 64-bit PPC is
broken): execution facts are checked with qemu-ppc64le-static in user mode by the test harness
:mod:`kpatch_core.testing.qemu_ppc64le`.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Mapping

from kpatch_arch.base import Backend, SlotSupport
from kpatch_core.slot import Effect, ReadMem, Slot
from kpatch_core.verdict import Execution, Method, Refusal

from .insn import INSN_SIZE, PREFIXED_SIZE, is_prefixed

if TYPE_CHECKING:
    from kpatch_core.image import Image

    from .backend import Ppc64leBackend

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


class NotEmulated(Exception):
    """emulate_step does not emulate the instruction: ``result`` is the model's
    :class:`~kpatch_arch.ppc64le.emulate.Declined` (the slot is single-stepped) or
    :class:`~kpatch_arch.ppc64le.emulate.Refused` (try_to_emulate BUG()s)."""

    def __init__(self, result: object) -> None:
        super().__init__(getattr(result, "reason", str(result)))
        self.result = result


def simulate(backend: "Ppc64leBackend", insn: bytes, addr: int, regs: Mapping[str, int],
             read: ReadMem) -> Effect:
    """``emulate_step`` on pt_regs values ``regs``
    (:func:`kpatch_arch.ppc64le.emulate.emulate_step`): the Effect when the kernel emulates the instruction; :class:`NotEmulated` when it declines
    (single-step) or refuses; NotImplementedError for what the model does not compute
    (:data:`kpatch_arch.ppc64le.emulate.NOT_MODELLED`)."""
    from .emulate import NotModelled, emulate_step
    r = emulate_step(insn, addr, regs, read)
    if isinstance(r, Effect):
        return r
    if isinstance(r, NotModelled):
        raise NotImplementedError(f"emulate_step not modelled: {r.what} {r.detail}".strip())
    raise NotEmulated(r)


# --- optprobes: the detour buffer [arch/powerpc/kernel/optprobes.c: arch_prepare_optimized_kprobe]
BRANCH_RANGE = (-0x2000000, 0x1FFFFFC)  # is_offset_in_branch_range
DEFAULT_OP = 0xC000000002000000  # stand-in for the kmalloc'd struct optimized_kprobe
TEMPLATE_SYMBOLS = ("optprobe_template_entry", "optprobe_template_op_address",
                    "optprobe_template_call_handler", "optprobe_template_insn",
                    "optprobe_template_call_emulate", "optprobe_template_ret",
                    "optprobe_template_end")


def _addis(rt: int, ra: int, imm: int) -> int:  # PPC_RAW_LIS = addis rt, 0, imm
    return 0x3C000000 | rt << 21 | ra << 16 | (imm & 0xFFFF)


def _ori(ra: int, rs: int, imm: int, shifted: bool = False) -> int:  # PPC_RAW_ORI / ORIS
    return (0x64000000 if shifted else 0x60000000) | rs << 21 | ra << 16 | (imm & 0xFFFF)


def _sldi(ra: int, rs: int, n: int) -> int:  # PPC_RAW_SLDI = rldicr ra, rs, n, 63 - n
    me = 63 - n
    return (0x78000004 | rs << 21 | ra << 16 | (n & 0x1F) << 11 | (n & 0x20) >> 4
            | (me & 0x1F) << 6 | (me & 0x20))


def imm64_load(val: int, reg: int) -> list[int]:
    """``patch_imm64_load_insns``: lis/ori/sldi/oris/ori loading ``val`` into ``reg``."""
    return [_addis(reg, 0, val >> 48), _ori(reg, reg, val >> 32), _sldi(reg, reg, 32),
            _ori(reg, reg, val >> 16, shifted=True), _ori(reg, reg, val)]


def branch(at: int, to: int, link: bool = False) -> int | None:
    """``create_branch``: I-form ``b``/``bl``; None when out of range."""
    off = to - at
    if not BRANCH_RANGE[0] <= off <= BRANCH_RANGE[1] or off & 3:
        return None
    return 0x48000000 | (off & 0x3FFFFFC) | (1 if link else 0)


def next_nip(word: int, addr: int) -> int:
    """``can_optimize``'s nip (analyse_instr + emulate_update_regs on a REGS-class, not
    conditional instruction): the I-form branch target, else ``addr + 4``."""
    if word >> 26 == 18:  # b / ba / bl / bla
        li = word & 0x3FFFFFC
        li = li - (1 << 26) if li & 0x2000000 else li
        return (li if word & 2 else addr + li) & ((1 << 64) - 1)
    return addr + 4


def build_detour(image: "Image", addr: int, insn: bytes, op: int = DEFAULT_OP,
                 slot: int | None = None) -> tuple[int, bytes, bytes] | Refusal:
    """The detour buffer for an optimizable probe at ``addr``: (buffer address, buffer bytes,
    the ``b buff`` written at ``addr`` by arch_optimize_kprobes); a refusal (-ERANGE) when
    the buffer or the return is out of branch range."""
    from kpatch_core.verdict import Reason
    found = {n: image.symtab.value(n) for n in TEMPLATE_SYMBOLS}
    sym = {n: v for n, v in found.items() if v is not None}
    if len(sym) != len(found):
        return Refusal(Reason.UNDECODABLE, "no optprobe template in the image")
    entry = sym["optprobe_template_entry"]

    def idx(n: str) -> int:
        return (sym[n] - entry) // 4
    buff = image.symtab.value("optinsn_slot") if slot is None else slot
    if buff is None:
        return Refusal(Reason.UNDECODABLE, "no optinsn_slot")
    word = int.from_bytes(insn[:4], "little")
    nip = next_nip(word, addr)
    ret_at = buff + 4 * idx("optprobe_template_ret")
    to_buff, back = branch(addr, buff), branch(ret_at, nip)
    if to_buff is None or back is None:
        return Refusal(Reason.RIP_DISP_RANGE, "detour or return out of branch range (-ERANGE)")
    words = [int.from_bytes(image.read(entry + 4 * i, 4), "little")
             for i in range(idx("optprobe_template_end"))]

    def put(i: int, ws: list[int]) -> None:
        words[i:i + len(ws)] = ws
    put(idx("optprobe_template_op_address"), imm64_load(op, 3))
    cb = image.symtab.value("optimized_callback")
    em = image.symtab.value("emulate_step")
    ch = branch(buff + 4 * idx("optprobe_template_call_handler"), cb or 0, link=True)
    ce = branch(buff + 4 * idx("optprobe_template_call_emulate"), em or 0, link=True)
    if ch is None or ce is None:
        return Refusal(Reason.RIP_DISP_RANGE, "optimized_callback/emulate_step out of range")
    put(idx("optprobe_template_call_handler"), [ch])
    put(idx("optprobe_template_call_emulate"), [ce])
    put(idx("optprobe_template_insn"), imm64_load(word, 4))  # ppc_inst_as_ulong
    put(idx("optprobe_template_ret"), [back])
    code = b"".join(w.to_bytes(4, "little") for w in words)
    return buff, code, to_buff.to_bytes(4, "little")


class Ppc64leSlotSupport(SlotSupport):
    """ppc64le out-of-line execution: the module functions above as the backend's hooks."""

    TEXT_RANGE = (0xC000000000008000, 0x1000000)  # (start, size) of a typical kernel text
    MODULE_RANGE = (0xC008000000000000, 0x7F000000)  # the module area: where slots go
    SLOT_SIZE = SLOT_SIZE
    default_slot_addr = staticmethod(default_slot_addr)
    build_slot = staticmethod(build_slot)
    simulate = staticmethod(simulate)


@functools.cache  # one per backend: Backend.slot_support() is asked often
def slot_support(backend: "Backend") -> Ppc64leSlotSupport:
    """The ppc64le :class:`~kpatch_arch.base.SlotSupport` for ``backend``."""
    return Ppc64leSlotSupport(backend)
