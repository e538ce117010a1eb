"""Install and remove probes on a text buffer, as ``arm_kprobe``/``disarm_kprobe`` do.

A :class:`ProbeSet` keeps, per probed address, the original bytes it overwrote, the slot the
kernel built, and how many probes share the breakpoint.  The kernel's placement rules for
several probes [kernel/kprobes.c: register_kprobe, register_aggr_kprobe; arch can_probe with
``recover_probed_instruction``]:

* a second probe at the same address is **aggregated** (one breakpoint, several handlers);
* a probe inside an instruction another probe covers is decoded on the *recovered* text, so
  it is refused like any mid-instruction address (``-EILSEQ`` on x86); on x86 an optimized
  probe's jump covers 5 bytes: a new probe inside it unoptimizes the first one
  (``arch_check_optimized_kprobe``), it is not refused.

>>> text = TextBuffer(0x1000, bytearray(code))              # doctest: +SKIP
>>> ps = ProbeSet(backend, text); p = ps.apply(0x1000, execution)
>>> ps.remove(0x1000); bytes(text.buf) == code               # doctest: +SKIP
True
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import attrs

from .slot import Slot, arch_slots, build_slot
from .verdict import Execution, Method, Reason, Refusal

if TYPE_CHECKING:
    from kpatch_arch.base import Backend


class Memory(Protocol):
    """Anything that reads and writes bytes by (kernel) address."""

    def read(self, addr: int, n: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


@attrs.define
class TextBuffer:
    """A writable copy of kernel text starting at ``base``."""

    base: int
    buf: bytearray

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes at ``addr`` (fewer at the end of the buffer)."""
        off = addr - self.base
        if off < 0 or off > len(self.buf):
            raise IndexError(f"{addr:#x} outside the text buffer")
        return bytes(self.buf[off:off + n])

    def write(self, addr: int, data: bytes) -> None:
        """Overwrite ``len(data)`` bytes at ``addr``."""
        off = addr - self.base
        if off < 0 or off + len(data) > len(self.buf):
            raise IndexError(f"{addr:#x}+{len(data)} outside the text buffer")
        self.buf[off:off + len(data)] = data


Handler = Callable[..., object]


@attrs.define
class InstalledProbe:
    """One armed breakpoint (possibly shared by aggregated probes)."""

    addr: int
    execution: Execution
    slot: Slot
    original: bytes  # the bytes the breakpoint (or jump) replaced
    patch: bytes  # what was written at addr
    pre_handlers: list[Handler] = attrs.field(factory=list)
    post_handlers: list[Handler] = attrs.field(factory=list)
    count: int = 1
    optimized: object = None  # an optprobe detour (arch object) when jump-optimized

    @property
    def length(self) -> int:
        return len(self.execution.insn) or len(self.patch)


def breakpoint_for(backend: "Backend", insn: bytes) -> bytes:
    """The breakpoint the kernel writes over ``insn`` (riscv: c.ebreak over a 2-byte insn)."""
    mod = backend.slot_support()
    return mod.breakpoint_for(insn) if mod is not None else backend.breakpoint


class ProbeSet:
    """The probes armed on one text buffer (or a live :class:`kpatch_core.executor.Machine`)."""

    def __init__(self, backend: "Backend", text: Memory, slot_base: int | None = None,
                 slot_memory: Memory | None = None) -> None:
        self.backend = backend
        self.text = text
        self.slot_memory = slot_memory
        mod = arch_slots(backend)
        self.slot_base = mod.default_slot_addr(None) if slot_base is None else slot_base
        self.slot_size = mod.SLOT_SIZE
        self.probes: dict[int, InstalledProbe] = {}
        self._next_slot = 0
        self._free: list[int] = []

    def _alloc_slot(self) -> int:
        """``get_insn_slot``: the next free ``insn_size`` unit of the slot page."""
        if self._free:
            return self._free.pop()
        a = self.slot_base + self._next_slot * self.slot_size
        self._next_slot += 1
        return a

    def covering(self, addr: int) -> InstalledProbe | None:
        """The installed probe whose instruction (or optimized jump) covers ``addr``."""
        for p in self.probes.values():
            end = p.addr + max(p.length, len(p.patch))
            if p.addr <= addr < end:
                return p
        return None

    def recovered(self, addr: int, n: int) -> bytes:
        """``recover_probed_instruction``: text with every installed patch undone."""
        buf = bytearray(self.text.read(addr, n))
        for p in self.probes.values():
            for i, b in enumerate(p.original):
                j = p.addr + i - addr
                if 0 <= j < len(buf):
                    buf[j] = b
        return bytes(buf)

    def apply(self, addr: int, execution: Execution, pre: Handler | None = None,
              post: Handler | None = None, slot_addr: int | None = None) -> InstalledProbe | Refusal:
        """Arm a probe at ``addr`` whose ``arch_prepare_kprobe`` gave ``execution``.

        Same address: aggregated (handlers added, no new bytes).  Inside another probe's
        instruction: refused as not an instruction boundary.  A slot that cannot be placed
        is refused (and nothing is written).
        """
        old = self.probes.get(addr)
        if old is not None:  # register_aggr_kprobe
            old.count += 1
            if pre:
                old.pre_handlers.append(pre)
            if post:
                old.post_handlers.append(post)
            return old
        cover = self.covering(addr)
        if cover is not None and cover.optimized is None:
            return Refusal(Reason.NOT_BOUNDARY,
                           f"inside the instruction probed at {cover.addr:#x}")
        if execution.method == Method.FTRACE:
            return Refusal(Reason.FTRACE_SITE, "ftrace-based probes patch the ftrace call, not text")
        if cover is not None:  # arch_check_optimized_kprobe: the optimized probe is unoptimized
            self.unoptimize(cover.addr)
        if post is not None and execution.method == Method.BOOST:
            # prepare_singlestep (x86): a kprobe with a post_handler gets int3 after its copy,
            # not the jmp back. An aggregate keeps the first probe's slot (add_new_kprobe):
            # a post_handler added later to a boosted probe is never called, as in the kernel.
            execution = attrs.evolve(execution, method=Method.SINGLESTEP)
        sa = self._alloc_slot() if slot_addr is None else slot_addr
        slot = build_slot(self.backend, execution, addr, sa)
        if isinstance(slot, Refusal):
            if slot_addr is None:
                self._free.append(sa)
            return slot
        insn = execution.insn
        original = self.text.read(addr, len(insn) or 1)
        if insn and original != insn:
            return Refusal(Reason.BREAKPOINT_INSN,
                           f"text at {addr:#x} is {original.hex()}, expected {insn.hex()}")
        bp = breakpoint_for(self.backend, insn)
        original = original[:len(bp)]
        if slot.code and self.slot_memory is not None:
            self.slot_memory.write(slot.slot_addr, slot.code)
        self.text.write(addr, bp)  # arch_arm_kprobe
        p = InstalledProbe(addr, execution, slot, original, bp,
                           [pre] if pre else [], [post] if post else [])
        self.probes[addr] = p
        return p

    def remove(self, addr: int) -> bool:
        """Unregister one probe at ``addr``; the bytes come back when the last one goes.
        Returns False when no probe is installed there."""
        p = self.probes.get(addr)
        if p is None:
            return False
        p.count -= 1
        if p.count > 0:
            return True
        if p.optimized is not None:
            self.unoptimize(addr)
        self.text.write(addr, p.original)  # arch_disarm_kprobe
        del self.probes[addr]
        if p.slot.code:
            self._free.append(p.slot.slot_addr)
        return True

    def optimize(self, addr: int, detour: object, jump: bytes, replaced: bytes) -> None:
        """Replace the breakpoint at ``addr`` by ``jump`` (``arch_optimize_kprobes``); the
        bytes under it are kept to be written back on unoptimize."""
        p = self.probes[addr]
        p.optimized = detour
        p.original = replaced
        p.patch = jump
        self.text.write(addr, jump)

    def unoptimize(self, addr: int) -> None:
        """``arch_unoptimize_kprobe``: the jump becomes the breakpoint again."""
        p = self.probes[addr]
        if p.optimized is None:
            return
        bp = breakpoint_for(self.backend, p.execution.insn)
        self.text.write(addr, p.original)
        self.text.write(addr, bp)
        p.original = p.original[:len(bp)]
        p.patch = bp
        p.optimized = None
