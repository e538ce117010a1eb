"""Test helpers shared by kpatch-core's suites and other tools.

:class:`RawImage` stands in for :class:`kpatch_core.image.Image` over a few raw bytes, so a
backend's real ``arch_prepare_kprobe`` can judge generated instructions without a vmlinux.
:mod:`kpatch_core.testing.strategies` holds the hypothesis strategies.

>>> img = RawImage(backend)                                         # doctest: +SKIP
>>> prepare_raw(img, bytes.fromhex("4889e5"), 0xffffffff81000000)   # doctest: +SKIP
Execution(method=<Method.SINGLESTEP: 'singlestep'>, insn=b'H\\x89\\xe5', ...)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from kpatch_core.features import FeatureSet
from kpatch_core.image import KernelVersion
from kpatch_core.slot import arch_slots
from kpatch_core.symbols import KSym
from kpatch_core.verdict import Execution, Method, Refusal

if TYPE_CHECKING:
    from kpatch_arch.base import Backend
    from kpatch_core.executor import Executor
    from kpatch_core.executor import Outcome as ExecOutcome
    from kpatch_core.events import EventSet
    from kpatch_core.image import Image
    from kpatch_core.verdict import Verdict

__all__ = ["RawImage", "prepare_raw", "differential", "diff_states", "data_pointers",
           "register_names", "initial_flags", "prop_same_end_state", "prop_install_remove",
           "prop_breakpoint_traps", "prop_displacement_reach", "oracle_verdicts",
           "guest_cpuinfo", "image_on_guest_cpu", "replay_event_answers"]


class _NoSymbols:
    def value(self, name: str) -> int | None:
        return None


class _Config:
    def __init__(self, facts: dict[str, bool]) -> None:
        self.facts = facts

    def enabled(self, name: str) -> bool:
        return self.facts.get(name, False)


class _Tables:
    def __init__(self) -> None:
        self.extable: set[int] = set()
        self.ftrace: list[int] = []

    def ftrace_sites_in(self, start: int, end: int) -> list[int]:
        return [s for s in self.ftrace if start <= s < end]

    def is_ftrace_site(self, addr: int) -> bool:
        return addr in self.ftrace

    def has_extable(self, addr: int) -> bool:
        return addr in self.extable

    def extable_in(self, start: int, end: int):
        return iter(sorted(a for a in self.extable if start <= a < end))

    def jump_label_hit(self, addr: int) -> int | None:
        return None

    def area(self, start: str, end: str) -> tuple[int, int] | None:
        return None

    def static_call_hit(self, addr: int) -> int | None:
        return None


class RawImage:
    """Raw code at a base address, with just enough of ``Image`` for a backend's ``prepare``.

    One instance can be reloaded with :meth:`load` (backends cache per image object).
    ``config`` holds the facts ``prepare`` reads (default: Debian's, PREEMPTION on).
    """

    def __init__(self, backend: "Backend", version: KernelVersion | None = None,
                 config: dict[str, bool] | None = None) -> None:
        self.backend = backend
        if version is None:  # the rule set of the real kernel we test against
            mod = backend.slot_support()
            version = KernelVersion(*mod.TEST_KERNEL, 0) if mod is not None else \
                KernelVersion(6, 1, 0)
        self.version = version
        self.features = FeatureSet.decide(version, backend.name)
        self.symtab = _NoSymbols()
        self.config = _Config({"PREEMPTION": True, **(config or {})})
        self.tables = _Tables()
        self.little_endian = backend.little_endian
        self.endian = "<" if backend.little_endian else ">"
        self.base = 0
        self.code = b""

    def load(self, code: bytes, base: int) -> "RawImage":
        """Replace the bytes (the code starts at ``base``)."""
        self.code, self.base = bytes(code), base
        return self

    def read(self, addr: int, n: int) -> bytes:
        off = addr - self.base
        if off < 0 or off >= len(self.code):
            return b""
        return self.code[off:off + n]

    def read_words(self, start: int, end: int, dtype: str) -> np.ndarray:
        raw = self.read(start, end - start)
        dt = np.dtype(self.endian + dtype)
        return np.frombuffer(raw[:len(raw) - len(raw) % dt.itemsize], dtype=dt)


def prepare_raw(image: RawImage, code: bytes, addr: int) -> Execution | Refusal:
    """``arch_prepare_kprobe`` on ``code`` placed at ``addr`` (its own one-function symbol)."""
    from kpatch_arch.base import PrepareContext

    image.load(code, addr)
    # a RawImage answers what prepare asks of an Image
    return image.backend.prepare(PrepareContext(cast("Image", image), addr,
                                                KSym("raw", addr, len(code))))


# --- differential execution: a run with the probe installed against one without -------------
DATA_BASE = 0xFFFF888000100000  # x86 direct map; any page the engine can map works
STACK_TOP = 0xFFFFC90000004000


def _state(ex: "Executor", outcome: "ExecOutcome | None") -> dict:
    cpu = ex.cpu
    regs = ex.regs()
    for name, mask in cpu.flags_mask.items():
        regs[name] &= mask
    return {"outcome": None if outcome is None else (outcome.reason, outcome.pc, outcome.detail),
            "regs": regs, "pages": set(ex.mapped)}


def _masked(data: bytes, page: int, masks: list[tuple[int, int]]) -> bytes:
    """``data`` (the page at ``page``) with the byte ranges ``masks`` ([start, end)) zeroed."""
    out = bytearray(data)
    for start, end in masks:
        lo, hi = max(start, page), min(end, page + len(out))
        if lo < hi:
            out[lo - page:hi - page] = bytes(hi - lo)
    return bytes(out)


def differential(backend: "Backend", image: RawImage, code: bytes, addr: int, slot_addr: int,
                 regs: dict[str, int], post: bool = False) -> tuple[dict, dict] | Refusal:
    """Run the instruction ``code`` at ``addr`` once plainly and once with a kprobe (slot at
    ``slot_addr``); return both end states (outcome, registers, flags, touched memory) or the
    kernel's refusal of the probe.  Register values are engine values (see ``Machine.ptr``)."""
    from kpatch_core.executor import Executor

    execution = prepare_raw(image, code + b"\x90" * 16, addr)
    if isinstance(execution, Refusal):
        return execution
    states = []
    machines = []
    slot_bytes = (slot_addr, slot_addr)
    for probed in (False, True):
        ex = Executor(backend, slot_base=slot_addr)
        ex.map(addr, len(code), fill=False)  # zeros around the instruction, in both runs
        ex.map(slot_addr, 32, fill=False)  # and around the slot: both runs compare that page
        ex.map_code(addr, code)
        ex.set_regs(regs)
        ex.set(ex.cpu.sp, ex.ptr(STACK_TOP) - 0x100)
        ex.set(ex.cpu.pc, addr)
        hits: list[int] = []
        if probed:
            p = ex.add_kprobe(addr, execution, pre=lambda r: hits.append(r[ex.cpu.pc]),
                              post=(lambda r: None) if post else None, slot_addr=slot_addr)
            if isinstance(p, Refusal):
                return p
            slot_bytes = (p.slot.slot_addr, p.slot.slot_addr + len(p.slot.code))
        out = ex.step()
        if probed:  # the breakpoint trapped and the pre-handler ran exactly once
            assert len(hits) == 1, f"{code.hex()}: pre-handler ran {len(hits)} times ({out})"
        if out is not None and out.reason == "fault":
            ex.set(ex.cpu.pc, addr)  # kprobe_fault_handler: reported at the probed address
        states.append((ex, out))
        machines.append(ex)
    # every page either run mapped is compared, the instruction's and the slot's included; only
    # the bytes the probe itself owns differ by design: the probed instruction (the breakpoint
    # stays armed), the slot and the kretprobe trampoline
    cpu = machines[0].cpu
    masks = [(addr, addr + len(code)), slot_bytes,
             (machines[0].trampoline, machines[0].trampoline + len(backend.breakpoint))]
    a, b = (_state(ex, out) for ex, out in states)
    pages = sorted({p & ~(cpu.page - 1) for p in a["pages"] | b["pages"]})
    a["memory"] = {p: _masked(machines[0].read(p, cpu.page), p, masks) for p in pages}
    b["memory"] = {p: _masked(machines[1].read(p, cpu.page), p, masks) for p in pages}
    a["plain_fault"] = states[0][1] is not None and states[0][1].reason == "fault" \
        and states[0][1].pc == addr
    plain = states[0][1]
    a["fault_detail"] = plain.detail if a["plain_fault"] and plain is not None else ""
    del a["pages"], b["pages"]
    return a, b


def diff_states(a: dict, b: dict) -> list[str]:
    """Human-readable differences between two :func:`differential` states."""
    out = []
    if a["outcome"] != b["outcome"]:
        out.append(f"outcome {a['outcome']} != {b['outcome']}")
    for k in a["regs"]:
        if a["regs"][k] != b["regs"].get(k):
            out.append(f"{k}: {a['regs'][k]:#x} != {b['regs'].get(k, 0):#x}")
    for p in a["memory"]:
        if a["memory"][p] != b["memory"][p]:
            i = next(i for i, (x, y) in enumerate(zip(a["memory"][p], b["memory"][p])) if x != y)
            out.append(f"memory at {p + i:#x} differs")
    return out


# --- the properties (shared by tests/test_properties.py and benchmarks/properties_long.py) ----
def data_pointers(backend: "Backend", n: int = 4) -> tuple[int, ...]:
    """Engine values of ``n`` data pages (register values that point at mapped memory)."""
    cpu = arch_slots(backend).CPU
    return tuple(((DATA_BASE + i * 0x1000) - cpu.rebase) & ((1 << 64) - 1) for i in range(n))


def register_names(backend: "Backend") -> tuple[str, ...]:
    """General registers a property may set (not the PC, SP or flags)."""
    cpu = arch_slots(backend).CPU
    return tuple(n for n in cpu.regs if n not in (cpu.pc, cpu.sp) and n not in cpu.flags_mask)


def initial_flags(backend: "Backend", bits: int) -> dict[str, int]:
    """Flag registers from random ``bits``, limited to what the property compares."""
    cpu = arch_slots(backend).CPU
    fixed = arch_slots(backend).FLAGS_FIXED
    return {n: (bits & m & ~fixed.get(n, 0)) | fixed.get(n, 0) for n, m in cpu.flags_mask.items()}


def prop_same_end_state(backend: "Backend", image: RawImage, code: bytes, addr: int,
                        slot_addr: int, regs: dict[str, int]) -> str:
    """(a) the probed run ends like the plain run: returns "ok" (the instruction executed and
    both runs agree), "faulted:<kind>" (both runs agree, but the plain run faulted on the
    instruction itself, so it never executed: counted apart, never as equality),
    "refused:<reason>", "excluded:<why>" (not comparable: time, privileged state),
    "kernel-divergent:<why>" or "skipped:<oracle defect>"; raises
    AssertionError with the differences."""
    mod = arch_slots(backend)
    defect = mod.oracle_defect(code)
    if defect is not None:  # the emulator mis-executes it: neither run can be trusted
        return f"skipped:{defect}"
    excluded = mod.not_comparable(code)
    if excluded is not None:  # no two runs of it compare (time, privileged or I/O state)
        return f"excluded:{excluded}"
    kernel = mod.kernel_divergent(code) or mod.kernel_divergent_state(code, regs)
    if kernel is not None:  # the real kernel's handling differs from the CPU's: not comparable
        return f"kernel-divergent:{kernel}"
    target = mod.pc_relative_target(backend, code, addr)
    page = mod.CPU.page
    if target is not None and {target // page, (target + 15) // page} & \
            {slot_addr // page, (slot_addr + 31) // page}:
        return "skipped:target-in-slot-page"  # it would read the slot bytes (harness artefact)
    r = differential(backend, image, code, addr, slot_addr, regs)
    if isinstance(r, Refusal):
        return f"refused:{r.reason.value}"
    d = diff_states(*r)
    assert not d, f"{code.hex()} at {addr:#x} slot {slot_addr:#x}: " + "; ".join(d[:6])
    if r[0]["plain_fault"]:  # the instruction never completed in the plain run: nothing compared
        return f"faulted:{fault_kind(backend, r[0]['fault_detail'])}"
    return "ok"


def fault_kind(backend: "Backend", detail: str) -> str:
    """The class of an execution-oracle fault: the arch's exception numbers
    (``SlotSupport.FAULT_CLASSES``), else from unicorn's error: ``undefined-instruction``
    (UC_ERR_INSN_INVALID), ``memory`` (an access fault), ``other``."""
    known = arch_slots(backend).FAULT_CLASSES.get(detail)
    if known is not None:
        return known
    d = detail.upper()
    if "INSN_INVALID" in d:
        return "undefined-instruction"
    if any(k in d for k in ("READ", "WRITE", "FETCH", "MAP", "PROT")):
        return "memory"
    return "other"


def plain_run_fault(backend: "Backend", code: bytes, addr: int) -> str | None:
    """The fault class when ``code`` does not execute at ``addr`` in the execution oracle, with
    zeroed registers and lazily mapped memory (None: it executes).  Decides which generated
    instructions the oracle implements (:func:`kpatch_core.testing.strategies.executable_instruction`)."""
    from kpatch_core.executor import Executor

    if arch_slots(backend).oracle_defect(code) is not None:
        return None  # never run (it may abort the engine): the properties count an oracle defect
    ex = Executor(backend)
    ex.map(addr, len(code), fill=False)
    ex.map_code(addr, code)
    ex.set(ex.cpu.sp, ex.ptr(STACK_TOP) - 0x100)
    ex.set(ex.cpu.pc, addr)
    out = ex.step()
    if out is None or out.reason != "fault" or out.pc != addr:
        return None
    kind = fault_kind(backend, out.detail)
    return None if kind == "memory" else kind


def prop_install_remove(backend: "Backend", image: RawImage, codes: list[bytes], base: int,
                        order: list[int]) -> int:
    """(b) install probes on the instructions ``codes`` laid out from ``base`` in ``order``
    (indices; repeats aggregate), then remove them in reverse: the bytes are restored exactly
    and each armed site holds the breakpoint meanwhile.  Returns the number armed."""
    from kpatch_core.patching import ProbeSet, TextBuffer, breakpoint_for

    text_bytes = b"".join(codes)
    starts = []
    a = base
    for c in codes:
        starts.append(a)
        a += len(c)
    buf = TextBuffer(base, bytearray(text_bytes))
    ps = ProbeSet(backend, buf)
    armed = []
    for i in order:
        e = prepare_raw(image, text_bytes[starts[i] - base:] + b"\0" * 16, starts[i])
        if isinstance(e, Refusal):
            continue
        p = ps.apply(starts[i], e)
        if isinstance(p, Refusal):
            continue
        armed.append(starts[i])
        bp = breakpoint_for(backend, e.insn)
        assert buf.read(starts[i], len(bp)) == bp
        assert ps.recovered(base, len(text_bytes)) == text_bytes
    for s in reversed(armed):
        assert ps.remove(s)
    assert bytes(buf.buf) == text_bytes and not ps.probes
    return len(armed)


def prop_breakpoint_traps(backend: "Backend", addr: int) -> None:
    """(d) the breakpoint encoding, executed at ``addr``, traps with its site reported."""
    from kpatch_core.executor import Executor

    for bp in arch_slots(backend).BREAKPOINTS or (backend.breakpoint,):
        ex = Executor(backend, lazy=False)
        ex.map_code(addr, bp + b"\0" * 8)
        ex.set(ex.cpu.pc, addr)
        out = ex.step()
        assert out is not None and out.reason == "trap" and out.pc == addr, (bp.hex(), out)


def prop_displacement_reach(backend: "Backend", image: RawImage, code: bytes, addr: int,
                            slot_addr: int) -> str:
    """(c) a PC-relative operand copied to ``slot_addr`` names the same target, or the probe is
    refused because it cannot (``RIP_DISP_RANGE``) -- never wrong bytes; where the kernel
    simulates PC-relative forms (arm64, riscv64) they are never copied into a slot at all."""
    from kpatch_core.slot import Slot, build_slot

    mod = arch_slots(backend)
    e = prepare_raw(image, code + b"\x90" * 16, addr)
    if isinstance(e, Refusal):
        return f"refused:{e.reason.value}"
    if not mod.COPIES_PC_RELATIVE:  # arm64/riscv64: PC-relative forms are simulated
        kernel = mod.kernel_divergent(code)
        if kernel is not None:  # the kernel copies it anyway (and reads relative to the slot)
            return f"kernel-divergent:{kernel}"
        s = build_slot(backend, e, addr, slot_addr)
        assert e.method == Method.SIMULATE and isinstance(s, Slot) and not s.code, (e, s)
        return "simulated"
    target = mod.pc_relative_target(backend, code, addr)
    s = build_slot(backend, e, addr, slot_addr)
    if target is None:
        assert isinstance(s, Slot), s
        return "no-pc-relative"
    if isinstance(s, Refusal):
        assert s.reason.value == "RIP_DISP_RANGE", s
        assert not mod.reachable(target, slot_addr, len(e.insn))
        return "refused:RIP_DISP_RANGE"
    assert mod.reachable(target, slot_addr, len(e.insn))
    # checked by a decoder that is not ours: capstone names the same target from the original
    # at addr and from the slot's copy at slot_addr
    want = capstone_pc_target(backend, code, addr)
    assert want == target, f"{code.hex()}: our target {target:#x}, capstone's {want}"
    got = capstone_pc_target(backend, s.code, slot_addr)
    assert got == target, f"{code.hex()} -> slot {s.code.hex()}: capstone reads {got}, want {target:#x}"
    return "retargeted"


def capstone_pc_target(backend: "Backend", code: bytes, addr: int) -> int | None:
    """The absolute address a PC-relative operand of ``code`` at ``addr`` names, as capstone
    decodes it (independent of the backends' own decoders): a memory operand based on the
    program counter (``[rip + disp]``), else the last immediate, which capstone gives as an
    absolute address for relative-long forms.  None when capstone sees no such operand."""
    import capstone

    cs = capstone.Cs(backend.capstone_arch, backend.capstone_mode)
    cs.detail = True
    insn = next(cs.disasm(code, addr, 1), None)
    if insn is None:
        return None
    imm = None
    for o in insn.operands:
        if o.type == capstone.CS_OP_MEM and o.mem.base and insn.reg_name(o.mem.base) in ("rip", "pc"):
            return (addr + insn.size + o.mem.disp) & ((1 << 64) - 1)
        if o.type == capstone.CS_OP_IMM:
            imm = o.imm & ((1 << 64) - 1)
    return imm


def guest_cpuinfo(meta: dict) -> dict[str, str]:
    """The kernel oracle guest's ``/proc/cpuinfo`` (first CPU) as field -> value, from an answer
    set's results.meta.json (``guest.cpuinfo``); {} when it was not recorded."""
    info: dict[str, str] = {}
    for line in (meta.get("guest") or {}).get("cpuinfo") or []:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def image_on_guest_cpu(path: str, meta: dict) -> "Image":
    """``path`` opened with the runtime CPU facts (``Backend.cpu_facts``) of the CPU the oracle's
    kernel ran on, so its answers replay as that CPU patched the text at boot."""
    from ..image import Image
    image = Image.open(path)
    facts = image.backend.cpu_facts(guest_cpuinfo(meta),
                                    dict((meta.get("guest") or {}).get("vulnerabilities") or {}))
    return Image.open(path, overrides=facts) if facts else image


def replay_event_answers(events: "EventSet", rows: list[dict], readback: bool = False
                         ) -> tuple[int, list]:
    """A kernel oracle's events-mode answers (``rows``) replayed in its protocol on ``events``
    (``clear`` empties it, ``!keep`` lines append): (lines judged, disagreements on ok, errno,
    error_log message and caret; with ``readback``, also on an accepted line's read-back, the
    kernel's default maxactive ignored)."""
    import re

    from ..events import errno_name
    wrong: list = []
    n = 0
    maxactive = re.compile(r"^r\d*:")  # the kernel prints its default maxactive
    for rec in rows:
        if rec.get("op") == "clear":
            events.clear()
            continue
        line = rec["line"].removeprefix("!keep ")
        r = events.write(line, keep=rec.get("op") == "keep")
        if rec.get("crash"):
            continue
        n += 1
        e = r.error
        ours = (r.ok, e.errno if e else None, e.message if e else None, e.caret if e else None)
        theirs = (bool(rec.get("ok")), errno_name(rec.get("error")), rec.get("error_message"),
                  rec.get("caret"))
        if ours != theirs:
            wrong.append((line, theirs, ours))
        elif readback and r.ok and r.event is not None and rec.get("readback"):
            want = maxactive.sub("r:", rec["readback"][-1])
            if want != maxactive.sub("r:", r.event.readback()):
                wrong.append((line, want, r.event.readback()))
    return n, wrong


def oracle_verdicts(image: "Image", rows: list[dict], chunk: int = 200) -> dict[int, "Verdict"]:
    """Our verdicts for kernel-oracle answer rows (``index``, ``kind``, ``target``), by index:
    the oracle registers and arms each job's ``chunk`` probes together, in index order, so each
    job is one :func:`kpatch_core.probe.check_many` (probes compete for detour buffers)."""
    from kpatch_core.probe import check_many

    jobs: dict[int, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["index"]):
        jobs.setdefault(r["index"] // chunk, []).append(r)
    out: dict[int, "Verdict"] = {}
    for job in jobs.values():
        targets = [("r " if r.get("kind", "p") == "r" else "") + r["target"] for r in job]
        out.update(zip((r["index"] for r in job), check_many(image, targets)))
    return out
