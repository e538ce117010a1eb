"""The uprobe properties (shared by tests/test_uprobe_properties.py and
benchmarks/uprobe_properties_long.py), mirroring the kprobe suite's (a)-(d):

(a) a probed run ends like a plain run (registers, flags, memory, next PC);
(b) installing then removing uprobes restores the bytes, and each armed site holds the
    breakpoint meanwhile;
(c) a PC-relative instruction copied to the XOL slot names the same target (x86: through the
    riprel scratch register) or is never copied (emulated/simulated);
(d) the breakpoint encoding traps at its own address.

Each returns an outcome label ("ok:<method>", "faulted:<kind>", "refused:<REASON>",
"excluded:<why>", "kernel-divergent:<why>", "skipped:<oracle defect>") so the long run counts
every example; a violation raises AssertionError.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..features import FeatureSet
from ..testing import fault_kind
from .executor import TextUprobes, UprobeExecutor, UprobeSites
from .probe import uprobe_support
from .verdict import UMethod, URefusal

if TYPE_CHECKING:
    from kpatch_arch.base import Backend

USER_TEXT = 0x400000  # where generated code goes (a non-PIE executable's text)
USER_DATA = 0x10000000  # data pages register values point into
USER_STACK = 0x7FF00000
XOL_VADDR = 0x7FFFF7FF9000
MASK64 = (1 << 64) - 1


def data_pointers(n: int = 4) -> tuple[int, ...]:
    """User data pages that generated register values point into."""
    return tuple(USER_DATA + i * 0x1000 for i in range(n))


def _state(ex: UprobeExecutor, outcome: object, pages: list[int],
           mask: tuple[int, int]) -> dict:
    regs = ex.regs()
    for name, m in ex.cpu.flags_mask.items():
        regs[name] &= m
    memory = {}
    for p in pages:  # a page only one run touched reads the same deterministic fill in the other
        data = bytearray(ex.read(p, ex.cpu.page))
        lo, hi = max(mask[0], p), min(mask[1], p + len(data))
        if lo < hi:  # the probed bytes: the breakpoint stays armed in the probed run
            data[lo - p:hi - p] = bytes(hi - lo)
        memory[p] = bytes(data)
    return {"outcome": None if outcome is None else (outcome.reason, outcome.pc),  # type: ignore[attr-defined]
            "regs": regs, "memory": memory}


def prop_same_end_state(backend: Backend, fs: FeatureSet, code: bytes, vaddr: int,
                        regs: dict[str, int]) -> str:
    """(a) one instruction at ``vaddr``: plain run == probed run (one step each).

    Returns the example's class, counted as in the kprobe property (a) of issue 14:
    ``ok:<method>`` (the instruction executed in both runs and they agree), ``faulted:<kind>``
    (both runs agree, but the plain run faulted on the instruction itself, so it never
    executed: never counted as equality), ``refused:<reason>``, ``excluded:<why>`` (no two runs
    compare: clock, privileged or I/O state), ``kernel-divergent:<why>`` (the real kernel runs
    it differently from the CPU) or ``skipped:<oracle defect>``; raises AssertionError with
    the differences.  Every mapped page is compared except the XOL page (the kernel's
    ``[uprobes]`` mapping), the probed bytes masked."""
    mod = uprobe_support(backend)
    defect = mod.oracle_defect(code)
    if defect is not None:
        return f"skipped:{defect}"
    excluded = mod.not_comparable(code)
    if excluded is not None:
        return f"excluded:{excluded}"
    why = mod.kernel_divergent(code) or mod.kernel_divergent_state(code, regs)
    if why is not None:
        return f"kernel-divergent:{why}"
    insn = code + bytes(mod.MAX_UINSN_BYTES)
    if mod.is_trap_insn(insn, fs):
        return "refused:TRAP_INSN"
    a = mod.analyze_insn(backend, insn, vaddr, fs)
    if isinstance(a, URefusal):
        return f"refused:{a.reason.value}"
    defect = mod.oracle_defect_at(code, vaddr)
    if defect is not None:
        return f"skipped:{defect}"
    tgt = mod.pc_relative_target(backend, code, vaddr)
    if tgt is not None and tgt < vaddr + len(mod.SWBP_INSN) and vaddr < tgt + 64:
        return "skipped:reads-the-breakpoint"  # it reads the breakpoint bytes (real, but not (a))
    states = []
    for probed in (False, True):
        ex = UprobeExecutor(backend, fs, XOL_VADDR)
        ex.map(vaddr, len(code) + 16, fill=False)
        ex.map_code(vaddr, code)
        if tgt is not None:  # its operand exists (unicorn s390x does not map data lazily)
            ex.map(tgt, 16)
        ex.set_regs(regs)
        ex.set(ex.cpu.sp, USER_STACK)
        ex.set(ex.cpu.pc, vaddr)
        hits: list[int] = []
        if probed:
            ex.install(vaddr, a, lambda r, hits=hits: hits.append(1))  # type: ignore[misc]
        out = ex.step()
        if probed:
            assert hits == [1], f"{code.hex()}: handler ran {len(hits)} times ({out})"
        if out is not None and out.reason == "fault":
            ex.set(ex.cpu.pc, vaddr)  # the signal is delivered at the probed address
        states.append((ex, out))
    page = states[0][0].cpu.page
    xol = {x & ~(page - 1) for x in (XOL_VADDR, XOL_VADDR + 127)}
    pages = sorted((states[0][0].mapped | states[1][0].mapped) - xol)
    mask = (vaddr, vaddr + max(len(code), len(mod.SWBP_INSN)))
    sa, sb = (_state(ex, out, pages, mask) for ex, out in states)
    diffs = []
    if sa["outcome"] != sb["outcome"]:
        diffs.append(f"outcome {sa['outcome']} != {sb['outcome']}")
    for k, v in sa["regs"].items():
        if v != sb["regs"].get(k):
            diffs.append(f"{k}: {v:#x} != {sb['regs'].get(k, 0):#x}")
    for p in pages:
        if sa["memory"][p] != sb["memory"][p]:
            i = next(i for i, (x, y) in enumerate(zip(sa["memory"][p], sb["memory"][p])) if x != y)
            diffs.append(f"memory at {p + i:#x} differs")
    assert not diffs, f"{code.hex()} at {vaddr:#x} ({a.mnemonic}, {a.ops}): " + "; ".join(diffs[:6])
    plain = states[0][1]
    if plain is not None and plain.reason == "fault" and plain.pc == vaddr:
        return f"faulted:{fault_kind(backend, plain.detail)}"
    return f"ok:{a.method.value}"


def prop_install_remove(backend: Backend, fs: FeatureSet, codes: list[bytes], base: int,
                        order: list[int]) -> int:
    """(b) uprobes on the instructions ``codes`` laid out from ``base`` in ``order`` (repeats
    share the breakpoint), then removed in reverse: the bytes come back exactly."""
    mod = uprobe_support(backend)
    text = b"".join(codes)
    starts, a = [], base
    for c in codes:
        starts.append(a)
        a += len(c)
    ex: UprobeSites
    if mod.ENGINE == "unicorn":
        ue = UprobeExecutor(backend, fs, XOL_VADDR, lazy=False)
        ue.map(base, len(text) + 32, fill=False)
        ue.map_code(base, text)
        ex = ue
    else:  # no unicorn CPU (ppc64le): the same install/remove over the text bytes
        ex = TextUprobes(backend, base, text, XOL_VADDR)
    armed: list[int] = []
    for i in order:
        va = starts[i]
        insn = ex.read(va, mod.MAX_UINSN_BYTES)
        if va in ex.uprobes:
            insn = ex.uprobes[va].insn
        an = mod.analyze_insn(backend, insn, va, fs)
        if isinstance(an, URefusal) or mod.is_trap_insn(insn, fs):
            continue
        ex.install(va, an)
        if va not in armed:
            armed.append(va)
        assert ex.read(va, len(mod.SWBP_INSN)) == mod.SWBP_INSN
    for va in reversed(armed):
        assert ex.remove(va)
    assert ex.read(base, len(text)) == text and not ex.uprobes
    return len(armed)


def prop_pc_relative(backend: Backend, fs: FeatureSet, code: bytes, vaddr: int,
                     xol_vaddr: int) -> str:
    """(c) the XOL copy of a PC-relative instruction names the same target, or the kernel never
    copies it (emulated/simulated)."""
    mod = uprobe_support(backend)
    insn = code + bytes(mod.MAX_UINSN_BYTES)
    a = mod.analyze_insn(backend, insn, vaddr, fs)
    if isinstance(a, URefusal):
        return f"refused:{a.reason.value}"
    if a.method in (UMethod.EMULATE, UMethod.SIMULATE):
        return f"not-copied:{a.method.value}"
    kd = mod.kernel_divergent(code)
    if kd:
        return f"kernel-divergent:{kd}"
    if not mod.COPIES_PC_RELATIVE:
        raise AssertionError(f"{code.hex()}: a PC-relative form is copied to the slot ({a})")
    target = mod.pc_relative_target(backend, code, vaddr)
    if target is None:
        return "no-pc-relative"
    slot = mod.xol_slot(a, insn, vaddr, xol_vaddr)
    scratch = mod.pre_xol(a, vaddr, xol_vaddr, {})
    assert a.scratch and scratch, (code.hex(), a)
    k = backend.decode(slot, xol_vaddr)  # type: ignore[attr-defined]  # x86_64's decoder
    assert k is not None and k.length == a.length, (slot.hex(), k)
    disp = int.from_bytes(slot[k.disp_offset:k.disp_offset + 4], "little", signed=True)
    modrm = slot[k.disp_offset - 1]
    reg = {6: "si", 7: "di", 3: "bx"}[modrm & 7]
    assert modrm >> 6 == 2 and reg == a.scratch, (slot.hex(), a.scratch)
    assert (scratch[reg] + disp) & MASK64 == target, (hex(scratch[reg] + disp), hex(target))
    return "retargeted"


def prop_breakpoint_traps(backend: Backend, vaddr: int) -> None:
    """(d) ``UPROBE_SWBP_INSN`` executed at ``vaddr`` traps there."""
    mod = uprobe_support(backend)
    if mod.ENGINE != "unicorn":  # qemu-user: the process stops with SIGTRAP
        from .qemu_ppc64le import breakpoint_traps
        assert breakpoint_traps(backend, vaddr) is not False, (mod.SWBP_INSN.hex(), hex(vaddr))
        return
    ex = UprobeExecutor(backend, lazy=False)
    ex.map_code(vaddr, mod.SWBP_INSN + bytes(8))
    ex.set(ex.cpu.pc, vaddr)
    out = ex.step()
    assert out is not None and out.reason == "trap" and out.pc == vaddr, (mod.SWBP_INSN.hex(), out)
