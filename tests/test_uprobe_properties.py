"""uprobe properties (a)-(d) with hypothesis, the bounded ``ci`` profile
(benchmarks/uprobe_properties_long.py runs the ``long`` one)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpatch_core.registry import backend_named
from kpatch_core.testing import initial_flags, register_names
from kpatch_core.testing import strategies as S
from kpatch_core.uprobe import properties as P
from kpatch_core.uprobe.probe import features_for, uprobe_support

ARCHES = ("x86_64", "arm64", "riscv64", "s390x")
ALIGN = {"x86_64": 1, "arm64": 4, "riscv64": 2, "s390x": 2}
SECOND = {"x86_64": "ok:emulate", "arm64": "ok:simulate", "riscv64": "ok:simulate",
          "s390x": "ok:xol"}  # s390x emulates only relative-long forms: test_a_s390x_ril


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("kernel", [(6, 1), (6, 12)])
def test_a_probed_run_equals_plain_run(arch: str, kernel: tuple[int, int]) -> None:
    b = backend_named(arch)
    fs = features_for(b, kernel)
    seen: list[str] = []

    @settings(settings.get_profile("ci"))
    @given(code=S.instruction(arch), off=st.integers(0, 0xFFF),
           regs=S.register_file(register_names(b), P.data_pointers()), bits=st.integers(0, 2**32 - 1))
    def run(code: bytes, off: int, regs: dict[str, int], bits: int) -> None:
        va = P.USER_TEXT + off - off % ALIGN[arch]
        seen.append(P.prop_same_end_state(b, fs, code, va, {**regs, **initial_flags(b, bits)}))

    run()
    ok = [s for s in seen if s.startswith("ok:")]
    assert len(ok) > len(seen) // 2, sorted(set(seen))  # most examples really compared
    assert {"ok:xol", SECOND[arch]} <= set(ok)


@pytest.mark.parametrize("code", ["c01000000100", "c41800000100", "c41b00000100", "c61800000100",
                                  "c60d00000080", "c40200000041", "c41f00000042"])
def test_a_s390x_ril(code: str) -> None:
    """larl, lgrl, stgrl, cgrl, crl, llhrl, strl: handle_insn_ril's emulation ends like the CPU
    (operands aligned: unicorn raises no specification exception)."""
    b = backend_named("s390x")
    fs = features_for(b)
    for regs in ({"r1": 5, "r2": 0x1234}, {"r1": 1 << 63, "r2": 7, "r0": 3}):
        assert P.prop_same_end_state(b, fs, bytes.fromhex(code), P.USER_TEXT, regs) == \
            "ok:emulate"


@pytest.mark.parametrize("arch", ARCHES)
def test_b_install_remove_restores_bytes(arch: str) -> None:
    b = backend_named(arch)
    fs = features_for(b)

    @settings(settings.get_profile("ci"))
    @given(codes=st.lists(S.instruction(arch), min_size=1, max_size=8), data=st.data())
    def run(codes: list[bytes], data: st.DataObject) -> None:
        order = data.draw(st.lists(st.integers(0, len(codes) - 1), max_size=12))
        P.prop_install_remove(b, fs, codes, P.USER_TEXT + 0x100, order)

    run()


@pytest.mark.parametrize("arch", ARCHES)
def test_c_pc_relative_copies(arch: str) -> None:
    b = backend_named(arch)
    fs = features_for(b)
    seen: list[str] = []

    @settings(settings.get_profile("ci"))
    @given(code=S.pc_relative_instruction(arch), off=st.integers(0, 1 << 40),
           xol=st.integers(0x7F0000000000, 0x7FFFFFFFF000))
    def run(code: bytes, off: int, xol: int) -> None:
        va = 0x400000 + off - off % ALIGN[arch]
        seen.append(P.prop_pc_relative(b, fs, code, va, xol & ~0x7F))

    run()
    expect = {"x86_64": "retargeted", "s390x": "not-copied:emulate"}.get(arch, "not-copied:simulate")
    assert expect in seen


@pytest.mark.parametrize("arch", ("x86_64", "arm64", "riscv64", "s390x"))
def test_d_breakpoint_traps(arch: str) -> None:
    b = backend_named(arch)

    @settings(settings.get_profile("ci"), max_examples=30)
    @given(off=st.integers(0, 1 << 30))
    def run(off: int) -> None:
        P.prop_breakpoint_traps(b, 0x400000 + off - off % uprobe_support(b).SWBP_INSN_SIZE)

    run()
