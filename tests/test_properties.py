"""Property-based cross-arch tests (bounded example counts; benchmarks/properties_long.py runs
the same properties with the `long` profile).

(a) a run with the probe installed ends in the same registers, flags, memory and next PC as a
run without it; (b) install then remove restores the exact bytes; (c) an unreachable
displacement is refused, not mis-encoded; (d) each breakpoint encoding traps on its arch.
"""
from __future__ import annotations

import collections

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpatch_core.registry import backend_named
from kpatch_core.testing import (RawImage, data_pointers, initial_flags, prepare_raw,
                                 prop_breakpoint_traps, prop_displacement_reach,
                                 prop_install_remove, prop_same_end_state, register_names)
from kpatch_core.testing import strategies as S
from kpatch_core.verdict import Method, Refusal

CI = settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def need(arch: str):
    """The registered backend of ``arch`` with its slot support; any failure fails the test."""
    b = backend_named(arch)
    assert b.slot_support() is not None, f"{arch}: backend without slot support"
    return b


# the architectures the executor runs (ppc64le's slots are proven under qemu-user instead)
ARCHES = [a for a in S.ARCHES if backend_named(a).slot_support().EXECUTABLE]


@pytest.mark.parametrize("arch", ARCHES)
def test_a_probed_run_ends_like_the_plain_run(arch: str) -> None:
    b = need(arch)
    img = RawImage(b)
    names, ptrs = register_names(b), data_pointers(b)
    seen = []

    @CI
    @given(code=S.executable_instruction(arch), addr=S.text_address(arch), slot=S.slot_address(arch),
           regs=S.register_file(names, ptrs), bits=st.integers(0, (1 << 64) - 1))
    def prop(code, addr, slot, regs, bits):
        seen.append(prop_same_end_state(b, img, code, addr, slot, {**regs, **initial_flags(b, bits)}))
    prop()
    # "ok" only when the probed instruction executed in both runs (faults, refusals, exclusions
    # and kernel-divergent forms are counted apart, never as equality)
    counts = collections.Counter(":".join(x.split(":")[:2]) for x in seen)
    executed = counts["ok"]
    print(f"{arch}: {executed} of {len(seen)} examples executed the probed instruction; "
          f"{dict(counts)}; not generated (the oracle lacks them): "
          f"{ {k: v for k, v in S.NOT_EXECUTABLE.items() if k.startswith(arch + ':')} }")
    assert executed >= 75 and executed >= len(seen) // 2, dict(counts)


@pytest.mark.parametrize("arch", [*ARCHES, "ppc64le"])
def test_b_install_then_remove_restores_bytes(arch: str) -> None:
    b = need(arch)
    img = RawImage(b)
    armed = []

    @CI
    @given(codes=st.lists(S.instruction(arch), min_size=1, max_size=6),
           addr=S.text_address(arch), data=st.data())
    def prop(codes, addr, data):
        order = data.draw(st.lists(st.integers(0, len(codes) - 1), min_size=1, max_size=8))
        armed.append(prop_install_remove(b, img, codes, addr, order))
    prop()
    print(f"{arch}: {sum(1 for n in armed if n)} of {len(armed)} examples armed a probe ({sum(armed)} armed)")
    assert sum(1 for n in armed if n) >= len(armed) * 9 // 10, armed[:40]


@pytest.mark.parametrize("arch", ARCHES)
def test_c_unreachable_displacement_is_refused(arch: str) -> None:
    b = need(arch)
    img = RawImage(b)
    kinds = []
    far = st.integers(0, (1 << 64) - 16).map(lambda a: a & ~15)

    @CI
    @given(code=S.pc_relative_instruction(arch),
           addr=S.text_address(arch), slot=st.one_of(S.slot_address(arch), far))
    def prop(code, addr, slot):
        kinds.append(prop_displacement_reach(b, img, code, addr, slot))
    prop()
    counts = collections.Counter(kinds)
    print(f"{arch}: {dict(counts)}")
    if b.slot_support().COPIES_PC_RELATIVE:  # copied and relocated
        assert counts["retargeted"] >= len(kinds) // 5 and counts["refused:RIP_DISP_RANGE"] >= 5, counts
    else:  # simulated by the kernel: never in a slot
        assert kinds.count("simulated") > len(kinds) // 2, kinds[:20]


@pytest.mark.parametrize("arch", ARCHES)
def test_d_breakpoint_traps(arch: str) -> None:
    b = need(arch)

    @settings(max_examples=30, deadline=None, derandomize=True)
    @given(addr=S.text_address(arch))
    def prop(addr):
        prop_breakpoint_traps(b, addr)
    prop()


def test_d_ppc64le_breakpoint_traps_under_qemu() -> None:
    """ppc64le has no unicorn engine: qemu-ppc64le-static is the oracle (SIGTRAP = -5)."""
    from kpatch_arch.ppc64le import BREAKPOINT_INSTRUCTION, NOP
    from kpatch_core.testing import qemu_ppc64le as qppc
    if qppc.qemu_run(qppc.EXIT_0) is None:
        pytest.skip("qemu-ppc64le-static not installed")
    assert qppc.qemu_run(qppc.EXIT_0) == 0  # the harness exits cleanly without the trap

    @settings(max_examples=5, deadline=None, derandomize=True)
    @given(st.integers(0, 0x3FF))
    def prop(k):
        at = qppc.USER_BASE + 0x1000 + 4 * k
        assert qppc.qemu_run([NOP, BREAKPOINT_INSTRUCTION] + qppc.EXIT_0, at=at) == -5
    prop()


def test_a_ppc64le_slot_copy_runs_like_the_original_under_qemu() -> None:
    """(a) for ppc64le, oracle qemu-ppc64le-static: an instruction emulate_step leaves to the
    slot, single-stepped there with NIP set to addr + len afterwards, ends like the original."""
    from kpatch_core.testing import qemu_ppc64le as qppc
    if qppc.qemu_run(qppc.EXIT_0) is None:
        pytest.skip("qemu-ppc64le-static not installed")
    b = backend_named("ppc64le")
    img = RawImage(b)
    ran = []

    @settings(max_examples=25, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(code=S.instruction("ppc64le"), k=st.integers(0, 0x3FF), seed=st.integers(0, 1 << 30))
    def prop(code, k, seed):
        from hypothesis import assume
        e = prepare_raw(img, code + b"\0" * 8, 0xC000000000A00000 + 4 * k)
        assume(not isinstance(e, Refusal) and e.method == Method.SINGLESTEP)
        import random
        r = random.Random(seed)
        regs = [r.choice([r.getrandbits(64), r.randint(0, 64), qppc.USER_BASE + 0x8000])
                for _ in range(31)]
        addr = qppc.USER_BASE + 0x1000 + 4 * k
        a, s = qppc.slot_equivalence(code, regs, addr, qppc.USER_BASE + 0x6000)
        assert a == s, (code.hex(), a, s)
        ran.append(a[0])
    prop()
    assert ran


@pytest.mark.parametrize("arch", ["arm64", "riscv64"])
def test_pc_relative_forms_are_valid_encodings(arch: str) -> None:
    """Every fixed-bits form of the PC-relative strategy decodes (capstone) at any operand."""
    import random

    import capstone
    md = {"arm64": capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM),
          "riscv64": capstone.Cs(capstone.CS_ARCH_RISCV,
                                 capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)}[arch]
    rng = random.Random(5)
    for value, mask, size in S._PC_RELATIVE_FORMS[arch]:
        for _ in range(200):
            w = (rng.getrandbits(32) & ~mask | value) & ((1 << 8 * size) - 1)
            code = w.to_bytes(size, "little")
            assert list(md.disasm_lite(code, 0x1000)), (hex(value), code.hex())


@pytest.mark.parametrize("code", ["0296", "0286"])  # c.jalr a2, c.jr a2
def test_riscv_c_jr_jalr_keeps_bit_0_like_the_kernel(code: str) -> None:
    # simulate_c_jr_jalr: instruction_pointer_set(regs, jump_addr) without & ~1 (6.1, 6.12); the
    # CPU clears bit 0, so an odd target is the kernel's own divergence, counted as such
    b = need("riscv64")
    raw = bytes.fromhex(code)
    got = prop_same_end_state(b, RawImage(b), raw, 0xFFFFFFFF80002000, 0xFFFFFFFF01000000,
                              {"a2": 0x29})
    assert got == "kernel-divergent:c-jr-jalr-target-keeps-bit-0"
    assert prop_same_end_state(b, RawImage(b), raw, 0xFFFFFFFF80002000, 0xFFFFFFFF01000000,
                               {"a2": 0x28}) == "ok"
