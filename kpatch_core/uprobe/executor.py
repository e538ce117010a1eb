"""Run user code with uprobes installed, in unicorn: the uprobe life cycle, executed.

The breakpoint (``UPROBE_SWBP_INSN``) really executes and must trap at the probed address; then,
as ``handle_swbp`` does [kernel/events/uprobes.c]: the consumers' handlers see the registers,
``arch_uprobe_skip_sstep`` emulates or simulates the instruction, else ``arch_uprobe_pre_xol``
moves the PC to the XOL slot (x86: loads the riprel scratch register), the copy runs for one
instruction (hardware single-step) or up to the slot's ``ebreak`` (riscv), and
``arch_uprobe_post_xol`` applies the fixups.  The CPU engine is :class:`kpatch_core.executor.Machine`
(lazy deterministic pages, register names of pt_regs) with user addresses kept as they are.

>>> ex = UprobeExecutor(elf.backend)                                   # doctest: +SKIP
>>> ex.map_code(0x401000, code); ex.install(0x401000, analysis)
>>> ex.run(0x401000, stop_at={0x401003})
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..executor import MASK64, Machine, Outcome
from ..features import FeatureSet
from .probe import XOL_VADDR_DEFAULT, uprobe_support
from .verdict import Analysis, UMethod

if TYPE_CHECKING:
    from kpatch_arch.base import Backend, UprobeSupport

XOL_TRAP_LIMIT = 64  # engine instructions between entering the slot and its trap (riscv)


@attrs.define
class InstalledUprobe:
    """One armed uprobe: the bytes the breakpoint replaced, its analysis, its slot."""

    vaddr: int
    analysis: Analysis
    insn: bytes  # what copy_insn read (MAX_UINSN_BYTES)
    original: bytes
    slot: bytes
    handlers: list[Callable[[dict[str, int]], object]] = attrs.field(factory=list)
    hits: int = 0


class UprobeSites:
    """The armed uprobes of one text: ``install``/``remove`` as ``install_breakpoint`` and
    ``remove_breakpoint`` do, over the ``read``/``_poke`` of the class that mixes it in."""

    backend: Backend
    mod: UprobeSupport
    xol_vaddr: int
    uprobes: dict[int, InstalledUprobe]

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes of text at ``addr``."""
        raise NotImplementedError

    def _poke(self, addr: int, data: bytes) -> None:
        raise NotImplementedError

    # -- install / remove (install_breakpoint / remove_breakpoint) ------------------------------
    def install(self, vaddr: int, analysis: Analysis,
                handler: Callable[[dict[str, int]], object] | None = None) -> InstalledUprobe:
        """Write the breakpoint at ``vaddr`` (``set_swbp``); a second uprobe at the same address
        adds a consumer to the same breakpoint."""
        old = self.uprobes.get(vaddr)
        if old is not None:
            if handler:
                old.handlers.append(handler)
            return old
        insn = self.read(vaddr, self.mod.MAX_UINSN_BYTES)
        bp = self.mod.SWBP_INSN
        original = insn[:len(bp)]
        slot = self.mod.xol_slot(analysis, insn, vaddr, self.xol_vaddr)
        self._poke(vaddr, bp)
        u = InstalledUprobe(vaddr, analysis, insn, original, slot, [handler] if handler else [])
        self.uprobes[vaddr] = u
        return u

    def remove(self, vaddr: int) -> bool:
        """``set_orig_insn``: the original bytes come back."""
        u = self.uprobes.pop(vaddr, None)
        if u is None:
            return False
        self._poke(vaddr, u.original)
        return True


class TextUprobes(UprobeSites):
    """Uprobes over plain text bytes at ``base`` (no CPU): for an architecture whose execution
    oracle is not unicorn (ppc64le), property (b) runs on this."""

    def __init__(self, backend: Backend, base: int, text: bytes,
                 xol_vaddr: int = XOL_VADDR_DEFAULT) -> None:
        self.backend = backend
        self.mod = uprobe_support(backend)
        self.xol_vaddr = xol_vaddr
        self.uprobes = {}
        self.base = base
        self.text = bytearray(text)

    def read(self, addr: int, n: int) -> bytes:
        """Text bytes (zeros past the end, as the rest of a mapped page)."""
        off = addr - self.base
        return bytes(self.text[off:off + n]).ljust(n, b"\0")

    def _poke(self, addr: int, data: bytes) -> None:
        off = addr - self.base
        self.text[off:off + len(data)] = data


class UprobeExecutor(Machine, UprobeSites):
    """A :class:`Machine` with uprobes; user addresses are engine addresses (no rebase)."""

    def __init__(self, backend: Backend, features: FeatureSet | None = None,
                 xol_vaddr: int = XOL_VADDR_DEFAULT, lazy: bool = True) -> None:
        super().__init__(backend, lazy)
        self.cpu = attrs.evolve(self.cpu, rebase=0)  # user space: addresses as they are
        self.mod = uprobe_support(backend)
        self.features = features or FeatureSet.decide((6, 12), backend.name)
        self.xol_vaddr = xol_vaddr
        self.uprobes = {}

    def read(self, addr: int, n: int) -> bytes:
        """:meth:`Machine.read`."""
        return Machine.read(self, addr, n)

    def _poke(self, addr: int, data: bytes) -> None:
        """Write into (read+execute) text as ``uprobe_write_opcode`` does: through a new page."""
        import unicorn
        page = self.cpu.page
        start = addr & ~(page - 1)
        end = (addr + len(data) + page - 1) & ~(page - 1)
        self.map(addr, len(data))
        self.uc.mem_protect(start, end - start, unicorn.UC_PROT_ALL)
        self.write(addr, data)
        self.uc.ctl_remove_cache(start, end)  # no stale translation of the old bytes
        if self.cpu.protect_text:
            self.uc.mem_protect(start, end - start, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)

    def _on_unmapped(self, uc: Any, access: int, address: int, size: int, value: int,
                     _: object) -> bool:
        """A lazily mapped page, but only in user space: a data access at or above the arch's
        ``USER_TOP`` (TASK_SIZE_MAX) faults, as it does in a real process.  (An instruction
        fetch there is mapped: a branch to kernel space completes, the fault comes with the
        next instruction, which a one-instruction step never runs.)"""
        import unicorn
        top = self.mod.USER_TOP
        if top is not None and address + max(size, 1) > top and access != unicorn.UC_MEM_FETCH_UNMAPPED:
            return False
        return Machine._on_unmapped(self, uc, access, address, size, value, _)

    # -- running ---------------------------------------------------------------------------------
    def step(self) -> Outcome | None:
        """One instruction of the program (a probed one with the whole uprobe life cycle)."""
        pc = self.pc
        err = self._emu(pc, 1)
        if err and "UNMAPPED" in err and self.pc == pc and self._trap is None:
            err = self._emu(pc, 1)  # as for the XOL step: the lazily mapped page now exists
        if self._trap is None:
            return Outcome("fault", pc, 0, err) if err else None
        site = self._trap
        u = self.uprobes.get(site)
        if u is None:
            return Outcome("trap", site, 0, "breakpoint owned by no uprobe")
        return self._handle_swbp(u)

    def _handle_swbp(self, u: InstalledUprobe) -> Outcome | None:
        u.hits += 1
        self.set(self.cpu.pc, u.vaddr)  # uprobe_get_swbp_addr
        regs = self.raw_regs()
        for h in u.handlers:  # handler_chain
            h(dict(regs))
        a = u.analysis
        eff = self.mod.emulate(self.backend, a, u.insn, u.vaddr, self.raw_regs(), self.read)
        if eff is not None:  # arch_uprobe_skip_sstep
            self.set(self.cpu.pc, eff.pc)  # first: unicorn s390x rewrites the PSW mask with it
            self._apply(eff.regs, eff.stores)
            if "SIG" in eff.op:  # the emulation raised a signal (s390 EMU_SPECIFICATION...)
                return Outcome("fault", u.vaddr, 0, eff.op)
            return None
        # xol_get_insn_slot + arch_uprobe_pre_xol
        self._write_slot(u.slot)
        regs = self.raw_regs()
        changes = self.mod.pre_xol(a, u.vaddr, self.xol_vaddr, regs)
        saved = {n: regs[n] for n in changes}
        self._apply(changes, ())
        self.set(self.cpu.pc, self.xol_vaddr)
        if self.mod.XOL_STEP == "single":
            err = self._emu(self.xol_vaddr, 1)
            if err and "UNMAPPED" in err and self.pc == self.xol_vaddr:
                # the lazy page map happened but unicorn reported the access anyway (seen for
                # far, non-canonical data addresses): the copy has not run, run it again now
                # that the page exists -- step() does the same for unprobed instructions
                err = self._emu(self.xol_vaddr, 1)
            if err or self._trap is not None:  # arch_uprobe_xol_was_trapped -> abort
                self._apply(saved, ())
                self.set(self.cpu.pc, u.vaddr)
                return Outcome("fault", u.vaddr, 0, err or "trap in the XOL slot")
        else:
            trap_at = self.xol_vaddr + a.length
            err = self._emu(self.xol_vaddr, XOL_TRAP_LIMIT)
            if err or self._trap != trap_at:
                self._apply(saved, ())
                self.set(self.cpu.pc, u.vaddr)
                return Outcome("fault", u.vaddr, 0, err or f"XOL slot left at {self.pc:#x}")
            self.set(self.cpu.pc, trap_at)
        eff = self.mod.post_xol(a, u.vaddr, self.xol_vaddr, self.raw_regs(), saved)
        self.set(self.cpu.pc, eff.pc)
        self._apply(eff.regs, eff.stores)
        return None

    def _apply(self, regs: Mapping[str, int], stores: Iterable[tuple[int, bytes]]) -> None:
        for a, data in stores:
            self.write(a, data)
        for n, v in regs.items():
            if n in self.cpu.regs and n != self.cpu.pc:
                self.uc.reg_write(self.cpu.regs[n], v & MASK64)

    def _write_slot(self, code: bytes) -> None:
        """``arch_uprobe_copy_ixol`` into the XOL page (read+execute, zeroed when new)."""
        page = self.cpu.page
        start = self.xol_vaddr & ~(page - 1)
        if start not in self.mapped:
            self.map(start, page, fill=False)
        self._poke(self.xol_vaddr, code)

    def run(self, start: int, stop_at: Iterable[int] = (), max_steps: int = 1000) -> Outcome:
        """:meth:`Machine.run` with the uprobe tests' smaller default step budget."""
        return super().run(start, stop_at, max_steps)


def is_emulated(analysis: Analysis) -> bool:
    """True when the kernel never runs the slot for this analysis (emulated or simulated)."""
    return analysis.method in (UMethod.EMULATE, UMethod.SIMULATE)


def load_elf(ex: UprobeExecutor, elf: object, bias: int = 0) -> None:
    """Map every ``PT_LOAD`` segment of ``elf`` (a :class:`~kpatch_core.uprobe.elf.UserElf`)
    at ``vaddr + bias`` as the loader does: file bytes, then zeros up to ``p_memsz``."""
    for s in elf.segments:  # type: ignore[attr-defined]
        data = bytes(elf.data[s.offset:s.offset + s.filesz])  # type: ignore[attr-defined]
        ex.map(s.vaddr + bias, max(s.memsz, 1), fill=False)
        if s.executable:
            ex.map_code(s.vaddr + bias, data)
        else:
            ex.write(s.vaddr + bias, data)


def call_function(ex: UprobeExecutor, vaddr: int, args: Iterable[int], stack_top: int,
                  return_to: int, max_steps: int = 100_000) -> tuple[Outcome, int]:
    """Call the function at ``vaddr`` with integer ``args`` (the backend's argument registers)
    and a return address ``return_to`` (link register, or pushed); run until it returns there.
    Returns (how the run ended, the return-value register)."""
    b = ex.backend
    ex.map(stack_top - 0x4000, 0x5000)  # the stack exists (s390x faults on lazily mapped stores)
    for reg, v in zip(b.arg_regs, args):
        ex.set(reg, v)
    sp = stack_top
    if ex.cpu.link is None:
        sp -= 8
        ex.write(sp, return_to.to_bytes(8, "little" if b.little_endian else "big"))
    else:
        ex.set(ex.cpu.link, return_to)
    ex.set(ex.cpu.sp, sp)
    out = ex.run(vaddr, stop_at={return_to}, max_steps=max_steps)
    return out, ex.get(b.retval_reg)
