"""Out-of-line execution: the slot the kernel builds for a probed instruction, and what the
kprobe handler does instead of running it (emulation / simulation).

Every architecture keeps its rules in ``kpatch_arch.<arch>.slot``, as a
:class:`kpatch_arch.base.SlotSupport` (found through ``Backend.slot_support()``: the slot bytes,
the kernel's emulate/simulate functions, the executor's CPU facts and hooks, each with a
documented default); this module holds the value types and the generic entry points.

>>> s = slot_for(image, "vfs_read+4")                  # doctest: +SKIP
>>> s.code.hex(), hex(s.slot_addr)                     # doctest: +SKIP
('4889e5cc', '0xffffffffc0000000')
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

import attrs

from .verdict import Execution, Method, Reason, Refusal, Verdict

if TYPE_CHECKING:
    from kpatch_arch.base import Backend, SlotSupport

    from .image import Image

ReadMem = Callable[[int, int], bytes]


@attrs.frozen
class Slot:
    """The instruction slot of one probe, as the kernel fills it.

    ``code`` is empty when the kernel allocates no slot (ftrace-based probes, arm64/riscv
    simulated instructions); ``resume`` is where execution continues after the slot when the
    copied instruction falls through (``addr + len``); ``trap_offset`` is the offset of the
    trailing breakpoint in ``code`` (None when the slot jumps back or is hardware-stepped).
    """

    addr: int
    slot_addr: int
    insn: bytes
    code: bytes
    method: Method
    resume: int
    trap_offset: int | None = None
    mnemonic: str = ""
    note: str = ""

    @property
    def used(self) -> bool:
        """True when the slot is executed on a hit (single-step or boost), False when the
        kernel emulates/simulates or the probe is ftrace-based."""
        return self.method in (Method.SINGLESTEP, Method.BOOST) and bool(self.code)

    def to_json(self) -> dict:
        """A JSON-ready dict (for ``kpatch-analyze func``)."""
        return {"addr": hex(self.addr), "slot_addr": hex(self.slot_addr), "insn": self.insn.hex(),
                "slot": self.code.hex(), "method": self.method.value, "resume": hex(self.resume),
                "trap_offset": self.trap_offset, "mnemonic": self.mnemonic, "note": self.note}


def _regs_dict(regs: Mapping[str, int]) -> dict[str, int]:
    return dict(regs)


@attrs.frozen
class Effect:
    """What an emulate/simulate function does to the machine: new PC, register writes (pt_regs
    names, e.g. the link register of a call or the value of a PC-relative load), memory
    writes (e.g. the return address an x86 call pushes) and the loads it made."""

    pc: int
    regs: Mapping[str, int] = attrs.field(factory=dict, converter=_regs_dict)
    stores: tuple[tuple[int, bytes], ...] = ()
    loads: tuple[tuple[str, int, int], ...] = ()  # (register, address, size)
    op: str = ""  # the kernel function, e.g. "kprobe_emulate_call"


@attrs.frozen
class CpuFacts:
    """How :mod:`kpatch_core.executor` runs one architecture in unicorn (or another engine).

    ``regs`` maps pt_regs field names to unicorn register ids; ``rebase`` is subtracted from
    every kernel address before it reaches the engine (x86: unicorn cannot fetch at
    0xffff8000_00000000 and above), so relative distances are kept.
    """

    uc_arch: int
    uc_mode: int
    regs: Mapping[str, int]
    pc: str
    sp: str
    link: str | None  # register holding the return address at function entry (None: stack)
    rebase: int = 0
    page: int = 0x1000
    breakpoint_pc_advance: bool = False  # PC already past the breakpoint when the trap fires
    interrupt_numbers: tuple[int, ...] = ()  # unicorn intno of a breakpoint trap
    flags_mask: Mapping[str, int] = attrs.field(factory=dict)  # compared bits of flag registers
    protect_text: bool = True  # map text and slots read+execute (unicorn s390x cannot run them)


def arch_slots(backend: "Backend") -> "SlotSupport":
    """The backend's :class:`SlotSupport`; raises NotImplementedError when it has none."""
    mod = backend.slot_support()
    if mod is None:
        raise NotImplementedError(f"{backend.name}: no out-of-line slot support yet")
    return mod


def build_slot(backend: "Backend", execution: Execution, addr: int,
               slot_addr: int) -> Slot | Refusal:
    """The slot for an accepted probe at ``addr`` whose ``arch_prepare_kprobe`` gave
    ``execution``; a :class:`Refusal` when the copy cannot be placed at ``slot_addr``."""
    if execution.method == Method.FTRACE:
        return Slot(addr, slot_addr, b"", b"", Method.FTRACE, addr,
                    note="ftrace-based: no breakpoint, no slot (arch_prepare_kprobe_ftrace)")
    return arch_slots(backend).build_slot(backend, execution, addr, slot_addr)


def simulate(backend: "Backend", insn: bytes, addr: int, regs: Mapping[str, int],
             read: ReadMem) -> Effect:
    """The kernel's emulation (x86 ``emulate_op``, ppc ``emulate_step``) or simulation
    (arm64/riscv ``simulate_*``) of ``insn`` at ``addr`` on pt_regs values ``regs``."""
    return arch_slots(backend).simulate(backend, insn, addr, regs, read)


def slot_for(image: "Image", verdict_or_addr: Verdict | int | str,
             slot_addr: int | None = None) -> Slot | Refusal:
    """The slot the kernel would build for a probe on ``image``.

    ``verdict_or_addr`` is a :class:`Verdict` from :func:`kpatch_core.probe.check`, an address,
    or a kprobe_events target string.  ``slot_addr`` defaults to the architecture's realistic
    first slot (the module area).  A refused probe gives the kernel's :class:`Refusal`; a
    slot that the displacement cannot reach gives ``Reason.RIP_DISP_RANGE`` (never wrong bytes).
    """
    from .probe import check

    if isinstance(verdict_or_addr, Verdict):
        v = verdict_or_addr
    elif isinstance(verdict_or_addr, int):
        v = check(image, hex(verdict_or_addr))
    else:
        v = check(image, verdict_or_addr)
    if not v.ok:
        if v.reason is None:
            return Refusal(Reason.NOT_IN_KALLSYMS, v.detail)
        return Refusal(v.reason, v.detail, v.errno)
    if v.address is None or v.method is None:
        return Refusal(Reason.NOT_IN_KALLSYMS, v.detail or "accepted without a kprobe")
    mod = arch_slots(image.backend)
    if slot_addr is None:
        slot_addr = mod.default_slot_addr(image)
    execution = Execution(v.method, v.insn, v.mnemonic,
                          v.method == Method.BOOST)
    return build_slot(image.backend, execution, v.address, slot_addr)
