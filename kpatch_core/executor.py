"""Run kernel code with probes installed, in unicorn: the kprobe life cycle, executed.

A breakpoint hit calls a Python pre-handler with a :class:`PtRegs` view (fields by their
pt_regs names, ``$argN`` by the calling convention), then runs the copied instruction in its
slot until the trailing breakpoint (single-step), through the slot and its jump back (boost),
or applies the kernel's emulation/simulation (:func:`kpatch_core.slot.simulate`), then the
post-handler, then resumes -- the order of ``kprobe_int3_handler``/``kprobe_breakpoint_handler``.
Kretprobes hijack the return address (stack or link register) and call their handler with
the return value at the trampoline.

Kernel addresses are kept in the API; the engine runs them ``CpuFacts.rebase`` lower (unicorn
cannot fetch x86 code at 0xffff8000_00000000 and above), which keeps every relative distance.
Pages nobody mapped are created on first touch with content derived from their address, so two
runs of the same code see the same memory.

>>> m = Executor(backend)                                          # doctest: +SKIP
>>> m.map_code(0xffffffff81000000, code)
>>> m.add_kprobe(0xffffffff81000000, execution, pre=lambda regs: print(regs.arg(1)))
>>> m.run(0xffffffff81000000, stop_at={0xffffffff81000010})
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping

import attrs
import unicorn

from kpatch_arch.base import SlotSupport

from .patching import InstalledProbe, ProbeSet
from .slot import CpuFacts, arch_slots
from .verdict import Execution, Method, Refusal

if TYPE_CHECKING:
    from kpatch_arch.base import Backend

MASK64 = (1 << 64) - 1
# where kretprobe trampolines and unmapped-fill live unless told otherwise
TRAMPOLINE_DEFAULT = 0xFFFFFFFFC0F00000
SLOT_STEP_LIMIT = 1 << 16  # engine instructions allowed between entering a slot and its trap


def page_fill(page_addr: int, size: int) -> bytes:
    """Deterministic content of a lazily mapped page (same address -> same bytes)."""
    out = bytearray()
    seed = page_addr.to_bytes(8, "little")
    i = 0
    while len(out) < size:
        out += hashlib.blake2b(seed + i.to_bytes(4, "little"), digest_size=64).digest()
        i += 1
    return bytes(out[:size])


class PtRegs:
    """A ``struct pt_regs`` view for handlers: ``regs["di"]``, ``regs.di``, ``regs.arg(1)``,
    ``regs.retval``; assignments are written back to the CPU when the handler returns."""

    _backend: "Backend"
    _values: dict[str, int]
    _read: Callable[[int, int], bytes] | None
    _dirty: set[str]

    def __init__(self, backend: "Backend", values: dict[str, int],
                 read: Callable[[int, int], bytes] | None = None) -> None:
        object.__setattr__(self, "_backend", backend)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_read", read)
        object.__setattr__(self, "_dirty", set())

    def __getitem__(self, name: str) -> int:
        return self._values[name]

    def __setitem__(self, name: str, value: int) -> None:
        if name not in self._values:
            raise KeyError(f"{self._backend.name} pt_regs has no field {name!r}")
        self._values[name] = value & MASK64
        self._dirty.add(name)

    def __getattr__(self, name: str) -> int:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: int) -> None:
        self[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def arg(self, n: int) -> int:
        """``$argN`` (``regs_get_kernel_argument``): argument registers, then the stack."""
        regs = self._backend.arg_regs
        if 1 <= n <= len(regs):
            return self._values[regs[n - 1]]
        if self._read is None or n < 1:
            raise IndexError(f"$arg{n}")
        sp = self._values[self._backend.stack_reg]
        base = self._backend.arg_stack_base
        if base is None:  # regs_get_kernel_argument reads 0 past the argument registers
            return 0
        off = 8 * (base + n - 1 - len(regs))  # $stack(arg_stack_base + n - len(arg_regs))
        return int.from_bytes(self._read(sp + off, 8), "little" if self._backend.little_endian
                              else "big")

    @property
    def retval(self) -> int:
        """``$retval`` (``regs_return_value``)."""
        return self._values[self._backend.retval_reg]

    def as_dict(self) -> dict[str, int]:
        """Every field with its value."""
        return dict(self._values)

    def raw(self) -> bytes:
        """The structure as the kernel lays it out (``pt_regs_size`` bytes, by field offset)."""
        b = self._backend
        out = bytearray(b.pt_regs_size)
        order: Literal["little", "big"] = "little" if b.little_endian else "big"
        for f in b.pt_regs:
            v = self._values.get(f.name, 0)
            out[f.offset:f.offset + f.size] = (v & ((1 << (8 * f.size)) - 1)).to_bytes(f.size, order)
        return bytes(out)


@attrs.frozen
class Outcome:
    """How a run ended: ``reason`` is "stop" (reached a stop address), "steps" (budget used),
    "fault" (engine error, ``detail`` says which) or "trap" (a breakpoint no probe owns)."""

    reason: str
    pc: int
    steps: int
    detail: str = ""


@attrs.define
class Hit:
    """One recorded probe event (for tests and reports)."""

    kind: str  # "pre", "post", "ret"
    addr: int
    regs: dict[str, int]


SMC_TIMEOUT_US = 100_000  # bound on re-running one dropped instruction
SMC_REFETCH_LIMIT = 3  # fetches of the same instruction in that re-run (QEMU's SMC restart
# refetches it once; more is a jump to itself)


class Machine:
    """A unicorn CPU addressed with kernel addresses, lazily mapping untouched pages."""

    def __init__(self, backend: "Backend", lazy: bool = True) -> None:
        self.backend = backend
        self.arch = arch_slots(backend)
        self.cpu: CpuFacts = self.arch.CPU
        self.uc = unicorn.Uc(self.cpu.uc_arch, self.cpu.uc_mode)
        self.lazy = lazy
        self.mapped: set[int] = set()  # kernel page addresses
        self._trap: int | None = None
        self._interrupt: int | None = None
        self._retry = False
        self._cs: Any = None  # capstone.Cs, made on first use
        self.arch.setup_cpu(self.uc)
        self.uc.hook_add(unicorn.UC_HOOK_INTR, self._on_intr)
        if lazy:
            self.uc.hook_add(unicorn.UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        if type(self.arch).on_insn_invalid is not SlotSupport.on_insn_invalid:  # overridden
            self.uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, self._on_invalid)

    # -- addresses ------------------------------------------------------------------------------
    def emu(self, addr: int) -> int:
        """Kernel address -> engine address."""
        return (addr - self.cpu.rebase) & MASK64

    def kaddr(self, emu_addr: int) -> int:
        """Engine address -> kernel address."""
        return (emu_addr + self.cpu.rebase) & MASK64

    def map(self, addr: int, size: int, fill: bool = True) -> None:
        """Map the pages covering ``[addr, addr + size)`` (deterministic content if ``fill``)."""
        page = self.cpu.page
        start = addr & ~(page - 1)
        end = (addr + size + page - 1) & ~(page - 1)
        for p in range(start, end, page):
            if p in self.mapped:
                continue
            self.uc.mem_map(self.emu(p), page)
            self.mapped.add(p)
            if fill:
                self.uc.mem_write(self.emu(p), page_fill(p, page))

    def map_code(self, addr: int, code: bytes) -> None:
        """Map and write ``code`` at kernel address ``addr``; its pages become read+execute
        only, as kernel text and instruction slots are (a store there faults)."""
        self.map(addr, len(code))
        self.write(addr, code)
        if not self.cpu.protect_text:
            return
        page = self.cpu.page
        start = addr & ~(page - 1)
        end = (addr + len(code) + page - 1) & ~(page - 1)
        self.uc.mem_protect(self.emu(start), end - start, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes at kernel address ``addr`` (mapping the pages if needed)."""
        self.map(addr, n)
        return bytes(self.uc.mem_read(self.emu(addr), n))

    def write(self, addr: int, data: bytes) -> None:
        """Write ``data`` at kernel address ``addr`` (mapping the pages if needed)."""
        self.map(addr, len(data))
        self.uc.mem_write(self.emu(addr), bytes(data))

    # -- registers ------------------------------------------------------------------------------
    def get(self, name: str) -> int:
        """A register by pt_regs name (the PC as a kernel address)."""
        v = self.uc.reg_read(self.cpu.regs[name])
        return self.kaddr(v) if name == self.cpu.pc else v

    def set(self, name: str, value: int) -> None:
        """Write a register by pt_regs name (the PC as a kernel address)."""
        if name == self.cpu.pc:
            value = self.emu(value)
        self.uc.reg_write(self.cpu.regs[name], value & MASK64)

    def regs(self) -> dict[str, int]:
        """Every engine-visible pt_regs field."""
        return {n: self.get(n) for n in self.cpu.regs}

    def set_regs(self, values: Mapping[str, int]) -> None:
        """Write several registers."""
        for n, v in values.items():
            if n in self.cpu.regs:
                self.set(n, v)

    @property
    def pc(self) -> int:
        return self.get(self.cpu.pc)

    def ptr(self, addr: int) -> int:
        """The value a register or memory word holds for kernel code address ``addr``.

        Only the PC is translated by :meth:`get`/:meth:`set`; return addresses and function
        pointers live in registers and memory as the engine sees them (``addr - rebase``)."""
        return self.emu(addr)

    def raw_regs(self) -> dict[str, int]:
        """Every register as the engine holds it (the PC untranslated)."""
        return {n: self.uc.reg_read(r) for n, r in self.cpu.regs.items()}

    def read_raw(self, emu_addr: int, n: int) -> bytes:
        """Read at an engine address (as register values point)."""
        return self.read(self.kaddr(emu_addr), n)

    # -- hooks ----------------------------------------------------------------------------------
    def _on_intr(self, uc: unicorn.Uc, intno: int, _: object) -> None:
        if intno in self.cpu.interrupt_numbers:
            pc = self.pc
            # the interrupt also reports other exceptions: is it our breakpoint?
            self._trap = self.arch.trap_site(self, intno, pc)
            if self._trap is None:
                self._interrupt = intno
            elif self._trap < 0:  # spurious (a fetch hit an unmapped page, now mapped)
                self._trap = None
                self._retry = True
        else:
            self._interrupt = intno
        uc.emu_stop()

    def _on_invalid(self, uc: unicorn.Uc, _: object) -> bool:
        site = self.arch.on_insn_invalid(self)
        if site is None:
            return False
        self._trap = site
        uc.emu_stop()
        return True

    def _insn_length(self, pc: int) -> int:
        """Length of the instruction at ``pc`` as capstone decodes it (0: undecodable)."""
        cs = self._cs
        if cs is None:
            import capstone
            b = self.backend
            cs = self._cs = capstone.Cs(b.capstone_arch, b.capstone_mode | (
                0 if b.little_endian else capstone.CS_MODE_BIG_ENDIAN))
        for _, size, _, _ in cs.disasm_lite(self.read(pc, 16), pc, 1):
            return size
        return 0

    def _on_unmapped(self, uc: unicorn.Uc, access: int, address: int, size: int, value: int,
                     _: object) -> bool:
        k = self.kaddr(address)
        try:
            self.map(k, max(size, 1))
        except unicorn.UcError:
            return False
        self._retry = True  # with count=1 unicorn may stop before the access is redone
        return True

    def _emu(self, pc: int, count: int) -> str:
        """Run from ``pc`` for at most ``count`` instructions; "" or an error text."""
        for _ in range(3):
            self._trap = self._interrupt = None
            self._retry = False
            try:
                self.uc.emu_start(self.emu(pc), 0, count=count)
            except unicorn.UcError as e:
                if self._trap is not None:  # a breakpoint reported through an error hook
                    return ""
                return str(e)
            if self._retry and self.pc == pc and self._interrupt is None:
                continue  # a page was mapped before anything ran (an exception is final:
                # running again would turn a contributory fault into a double fault)
            break
        if count == 1 and self._trap is None and self._interrupt is None and self.pc == pc:
            # unicorn 2 drops an instruction that stores into a page holding translated code
            # when it runs with count=1 (QEMU's self-modifying-code restart eats the count):
            # run it again up to its end, bounded in time (a jump to itself stays put)
            n = self._insn_length(pc)
            if n:
                err = self._rerun(pc, n)
                if err:
                    return err
        if self._interrupt is not None:
            return f"interrupt {self._interrupt}"
        return ""


    def _rerun(self, pc: int, n: int) -> str:
        """Run the instruction at ``pc`` (``n`` bytes) again until the next one starts.

        Bounded by a code hook, not by unicorn's timer thread alone: under load that thread's
        stop can land before the engine starts and be lost, and a jump to itself then spins
        forever.  The hook stops the engine when a second instruction fetch starts (the next
        instruction, or the same one again: a jump to itself stays put)."""
        start, fetches = self.emu(pc), [0]

        def on_code(uc: unicorn.Uc, address: int, size: int, _: object) -> None:
            fetches[0] += 1
            if fetches[0] > 1 and (address != start or fetches[0] > SMC_REFETCH_LIMIT):
                uc.emu_stop()

        h = self.uc.hook_add(unicorn.UC_HOOK_CODE, on_code)
        try:
            self.uc.emu_start(start, self.emu(pc + n), timeout=SMC_TIMEOUT_US)
        except unicorn.UcError as e:
            if self._trap is None:
                return str(e)
        finally:
            self.uc.hook_del(h)
        return ""

    def step(self) -> Outcome | None:
        """Execute one instruction of the original program (subclasses add probes)."""
        raise NotImplementedError("a Machine subclass runs the program (Executor, UprobeExecutor)")

    def run(self, start: int, stop_at: Iterable[int] = (), max_steps: int = 10_000) -> Outcome:
        """Run from ``start`` until the PC reaches an address in ``stop_at``, a fault, an
        unowned trap, or ``max_steps`` original instructions."""
        stops = set(stop_at)
        self.set(self.cpu.pc, start)
        for i in range(max_steps):
            if self.pc in stops:
                return Outcome("stop", self.pc, i)
            out = self.step()
            if out is not None:
                return attrs.evolve(out, steps=i)
        return Outcome("steps", self.pc, max_steps)


class Executor(Machine):
    """A :class:`Machine` with kprobes, kretprobes and optimized probes."""

    def __init__(self, backend: "Backend", slot_base: int | None = None,
                 trampoline: int = TRAMPOLINE_DEFAULT, lazy: bool = True) -> None:
        super().__init__(backend, lazy)
        self.probes = ProbeSet(backend, self, slot_base, slot_memory=_CodeWriter(self))
        self.trampoline = trampoline
        self.kretprobes: dict[int, Callable[[PtRegs], object]] = {}
        self._ret_stack: list[tuple[int, int]] = []  # (function, original return address)
        self.hits: list[Hit] = []
        self.callbacks: dict[int, Callable[["Executor"], object]] = {}
        self.write(trampoline, backend.breakpoint)

    # -- probes ---------------------------------------------------------------------------------
    def add_kprobe(self, addr: int, execution: Execution,
                   pre: Callable[[PtRegs], object] | None = None,
                   post: Callable[[PtRegs], object] | None = None,
                   slot_addr: int | None = None) -> InstalledProbe | Refusal:
        """Arm a kprobe at ``addr`` (``execution`` from ``arch_prepare_kprobe``)."""
        return self.probes.apply(addr, execution, pre, post, slot_addr)

    def remove_kprobe(self, addr: int) -> bool:
        """Unregister one kprobe at ``addr``."""
        return self.probes.remove(addr)

    def add_kretprobe(self, addr: int, execution: Execution,
                      handler: Callable[[PtRegs], object],
                      entry: Callable[[PtRegs], object] | None = None) -> InstalledProbe | Refusal:
        """A kretprobe on the function entry ``addr``: ``handler`` sees the return value."""
        def pre(regs: PtRegs) -> None:  # pre_handler_kretprobe + arch_prepare_kretprobe
            if entry:
                entry(regs)
            tramp = self.emu(self.trampoline)
            if self.cpu.link is None:  # the return address is on the stack
                sp = regs[self.cpu.sp]
                orig = int.from_bytes(self.read_raw(sp, 8), self._order)
                self.write(self.kaddr(sp), tramp.to_bytes(8, self._order))
            else:
                orig = regs[self.cpu.link]
                regs[self.cpu.link] = tramp
            self._ret_stack.append((addr, self.kaddr(orig)))
        self.kretprobes[addr] = handler
        return self.add_kprobe(addr, execution, pre=pre)

    @property
    def _order(self) -> Literal["little", "big"]:
        return "little" if self.backend.little_endian else "big"

    def _view(self, pc: int) -> PtRegs:
        values = self.regs()
        for f in self.backend.pt_regs:
            values.setdefault(f.name, 0)
        values[self.cpu.pc] = pc
        return PtRegs(self.backend, values, self.read_raw)

    def _write_back(self, view: PtRegs) -> None:
        for n in view._dirty:
            if n in self.cpu.regs:
                self.set(n, view[n])

    # -- running --------------------------------------------------------------------------------
    def step(self) -> Outcome | None:
        """Execute one instruction of the original program (a probed one with its whole probe
        life cycle).  None when it completed, else how the run must stop."""
        pc = self.pc
        err = self._emu(pc, 1)
        if err:
            return Outcome("fault", pc, 0, err)
        if self._trap is None:
            return None
        site = self._trap
        if site in self.callbacks:
            before = self.pc
            self.callbacks[site](self)
            if not self.cpu.breakpoint_pc_advance and self.pc == before:
                self.set(self.cpu.pc, site + len(self.backend.breakpoint))
            return None
        p = self.probes.probes.get(site)
        if site == self.trampoline and self._ret_stack:
            return self._kretprobe_return()
        if p is None:
            return Outcome("trap", site, 0, "breakpoint owned by no probe")
        return self._hit(p, site)

    def _hit(self, p: InstalledProbe, site: int) -> Outcome | None:
        # kprobe_int3_handler / kprobe_breakpoint_handler
        after = site + len(p.patch) if self.cpu.breakpoint_pc_advance else site
        view = self._view(after)
        skip = False
        for h in p.pre_handlers:
            self.hits.append(Hit("pre", p.addr, view.as_dict()))
            skip = bool(h(view)) or skip
        self._write_back(view)
        if skip:  # the handler changed the PC: no single-step
            self.set(self.cpu.pc, view[self.cpu.pc])
            return None
        slot = p.slot
        method = p.execution.method
        if method == Method.BOOST:
            self.set(self.cpu.pc, slot.slot_addr)
            for _ in range(SLOT_STEP_LIMIT):  # the copied instruction, then the jump back
                err = self._emu(self.pc, 1)
                if err:
                    return Outcome("fault", p.addr, 0, err)
                if not slot.slot_addr <= self.pc < slot.slot_addr + len(slot.code):
                    return None
            return Outcome("fault", self.pc, 0, "boosted slot did not jump back")
        if method in (Method.EMULATE, Method.SIMULATE):
            # simulated where the engine runs it: pushed return addresses and loaded pointers
            # are then engine values like everything else in registers and memory
            raw = self.raw_regs()
            raw[self.cpu.pc] = self.emu(p.addr)
            eff = self.arch.simulate(self.backend, p.execution.insn, self.emu(p.addr), raw,
                                     self.read_raw)
            for a, data in eff.stores:
                self.write(self.kaddr(a), data)
            for n, v in eff.regs.items():
                if n in self.cpu.regs and n != self.cpu.pc:
                    self.uc.reg_write(self.cpu.regs[n], v & MASK64)
            self.set(self.cpu.pc, self.kaddr(eff.pc))
        else:
            stepped = self._single_step(p)
            if stepped:
                return stepped
        view = self._view(self.pc)
        for h in p.post_handlers:
            self.hits.append(Hit("post", p.addr, view.as_dict()))
            h(view)
        self._write_back(view)
        return None

    def _single_step(self, p: InstalledProbe) -> Outcome | None:
        slot = p.slot
        self.arch.before_slot(self, slot)
        self.set(self.cpu.pc, slot.slot_addr)
        if slot.trap_offset is None:  # hardware single-step (s390 PER, ppc MSR_SE)
            err = self._emu(slot.slot_addr, 1)
            if err:  # kprobe_fault_handler: the fault is reported at the probed address
                return Outcome("fault", p.addr, 0, err)
            self.arch.after_step(self, slot, self.pc)
            return None
        # the copy, then the trailing breakpoint (a REP string copy counts one per iteration)
        err = self._emu(slot.slot_addr, SLOT_STEP_LIMIT)
        trap_at = slot.slot_addr + slot.trap_offset
        if err:
            return Outcome("fault", p.addr, 0, err)
        if self._trap != trap_at:
            return Outcome("fault", p.addr, 0,
                           f"single-step left the slot at {self.pc:#x} without the trap")
        self.set(self.cpu.pc, self.arch.after_slot(slot, self._trap))
        return None

    def _kretprobe_return(self) -> Outcome | None:
        func, orig = self._ret_stack.pop()  # __kretprobe_trampoline_handler
        view = self._view(orig)
        self.hits.append(Hit("ret", func, view.as_dict()))
        self.kretprobes[func](view)
        self._write_back(view)
        self.set(self.cpu.pc, orig)
        return None

    def add_callback(self, addr: int, fn: Callable[["Executor"], object], tail: bytes = b"") -> None:
        """A breakpoint at ``addr`` that calls ``fn(executor)`` (a kernel C function the code
        calls, e.g. ``optimized_callback``); execution continues after the breakpoint, where
        ``tail`` (e.g. a return instruction) is written."""
        self.write(addr, self.backend.breakpoint + tail)
        self.callbacks[addr] = fn



class _CodeWriter:
    """Slot memory: written like code (read+execute pages), on zeroed pages like the kernel's
    slot pages (unicorn s390x also trips over random bytes after a single-stepped insn)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def read(self, addr: int, n: int) -> bytes:
        return self.machine.read(addr, n)

    def write(self, addr: int, data: bytes) -> None:
        self.machine.map(addr, len(data), fill=False)  # a fresh slot page is zeroed
        self.machine.map_code(addr, data)
