"""The backends carry capstone's architecture and mode numbers as plain ints (so a backend loads
without importing capstone, and a cold ``check`` that decodes nothing never does): they must be
capstone's own values for these architectures."""
from __future__ import annotations

import capstone
import pytest

from kpatch_core.registry import backends

BACKENDS = {b.name: b for b in backends()}
EXPECTED = {
    "x86_64": (capstone.CS_ARCH_X86, capstone.CS_MODE_64),
    "arm64": (capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM),
    "riscv64": (capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC),
    "s390x": (capstone.CS_ARCH_SYSZ, capstone.CS_MODE_BIG_ENDIAN),
    "ppc64le": (capstone.CS_ARCH_PPC, capstone.CS_MODE_64 | capstone.CS_MODE_LITTLE_ENDIAN),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capstone_numbers_are_capstones(name: str) -> None:
    b = BACKENDS[name]
    assert (b.capstone_arch, b.capstone_mode) == EXPECTED[name]
    cs = capstone.Cs(b.capstone_arch, b.capstone_mode)  # and capstone accepts them
    assert cs.arch == b.capstone_arch


def test_a_backend_loads_without_capstone() -> None:
    import subprocess
    import sys
    prog = ("import sys; from kpatch_core.registry import backends; backends(); "
            "print('capstone' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
