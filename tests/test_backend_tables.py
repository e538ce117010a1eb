"""Consistency of every registered backend's fact tables: breakpoint encodings, pt_regs layout,
register names and calling-convention registers.  Walks ``kpatch_core.registry.backends()``, so
it covers whatever backends are installed and load; x86_64 (the reference) must be among them."""
from __future__ import annotations

import capstone
import pytest

from kpatch_core.registry import backends

BACKENDS = {b.name: b for b in backends()}
# the trap each architecture's BREAKPOINT_INSTRUCTION is, as capstone 5 prints it
TRAP_MNEMONICS = {"x86_64": {"int3"}, "arm64": {"brk"}, "riscv64": {"ebreak", "c.ebreak"},
                  "ppc64le": {"trap"}}
# capstone 5 has no s390 decoding for 0x0002 (the kernel's opcode table calls it "brkpt")
CAPSTONE_CANNOT_DECODE = {"s390x"}


def test_reference_backend_is_registered() -> None:
    assert "x86_64" in BACKENDS
    assert BACKENDS["x86_64"].breakpoint == b"\xcc"


def test_one_backend_per_elf_machine_and_endianness() -> None:
    keys = [(b.elf_machine, b.little_endian) for b in BACKENDS.values()]
    assert len(keys) == len(set(keys))
    assert all(b.name and b.elf_machine.startswith("EM_") for b in BACKENDS.values())


@pytest.fixture(params=sorted(BACKENDS), ids=str)
def backend(request):
    return BACKENDS[request.param]


def test_breakpoint_decodes_as_the_trap(backend) -> None:
    bp = backend.breakpoint
    assert bp and len(bp) % backend.insn_align == 0
    cs = capstone.Cs(backend.capstone_arch, backend.capstone_mode)
    insns = list(cs.disasm(bp, 0))
    if backend.name in CAPSTONE_CANNOT_DECODE:
        assert insns == [], f"capstone now decodes {bp.hex()}: move {backend.name} to TRAP_MNEMONICS"
        return
    assert len(insns) == 1 and insns[0].size == len(bp), (backend.name, bp.hex())
    expected = TRAP_MNEMONICS.get(backend.name, set().union(*TRAP_MNEMONICS.values()))
    assert insns[0].mnemonic in expected


def test_s390x_breakpoint_is_0x0002_when_registered() -> None:
    assert "s390x" in BACKENDS, "the s390x backend did not register"
    assert BACKENDS["s390x"].breakpoint == bytes.fromhex("0002")


def test_pt_regs_layout(backend) -> None:
    fields = backend.pt_regs
    assert fields and backend.pt_regs_size > 0 and backend.pt_regs_size % 8 == 0
    names = [f.name for f in fields]
    offsets = [f.offset for f in fields]
    assert len(set(names)) == len(names), "duplicate pt_regs names"
    assert len(set(offsets)) == len(offsets), "duplicate pt_regs offsets"
    for f in fields:
        assert f.size in (1, 2, 4, 8), f
        assert f.offset % f.size == 0, f"{f.name} misaligned"
        assert 0 <= f.offset and f.offset + f.size <= backend.pt_regs_size, f"{f.name} outside"
    spans = sorted((f.offset, f.offset + f.size) for f in fields)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "overlap"


def test_register_names_resolve(backend) -> None:
    """Every kprobe_events register name resolves to a pt_regs field.  A backend that lists its
    kernel's names (``event_registers``: s390x, ppc64le) must refuse the other pt_regs members;
    otherwise every pt_regs field name is a register name."""
    assert backend.register("no_such_register") is None
    names = getattr(backend, "event_registers", None)
    if names is None:
        for f in backend.pt_regs:
            assert backend.register(f.name) == f
        return
    assert len(set(names)) == len(names)
    for name in names:
        assert backend.register(name) in backend.pt_regs, name
    for f in backend.pt_regs:
        assert backend.register(f.name) in (f, None)
        if f.name not in names:
            assert backend.register(f.name) is None, f.name


def test_calling_convention_registers_exist(backend) -> None:
    assert backend.arg_regs, "no argument registers"
    assert len(set(backend.arg_regs)) == len(backend.arg_regs)
    for name in (*backend.arg_regs, backend.retval_reg, backend.stack_reg):
        assert backend.register(name) is not None, f"{backend.name}: {name} not in pt_regs"


def test_every_shipped_backend_loads() -> None:
    """The registry tolerates a third-party plug-in that fails to import (it is named when its
    image is opened); our own five must all load: a broken backend fails the suite."""
    from kpatch_core import registry
    names = {b.name for b in registry.backends()}
    assert registry.broken_backends() == {}, registry.broken_backends()
    assert {"x86_64", "arm64", "riscv64", "s390x", "ppc64le"} <= names
