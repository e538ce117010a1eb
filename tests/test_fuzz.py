"""Hostile inputs through the whole CLI (bounded CI profile of benchmarks/fuzz_long.py).

Each strategy of :mod:`kpatch_core.testing.fuzz` draws inputs that once gave tracebacks, hangs
or wrong acceptances (issue 13); every one must end with exit 0/1/2, one stderr line for an
error, no traceback, no hang, and no ``ok`` for an input the kernel refuses.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from kpatch_core.testing import fuzz

CI = settings(max_examples=60, database=None, deadline=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


def _check(case: fuzz.Case) -> None:
    r = fuzz.run_case(case, timeout=30)
    assert not fuzz.problems(case, r), (case, r)


@CI
@given(fuzz.elf_cases())
def test_elf_mutations(case):
    _check(case)


@CI
@given(fuzz.special_file_cases())
def test_special_files(case):
    _check(case)


@CI
@given(fuzz.target_cases())
def test_target_strings(case):
    _check(case)


@CI
@given(fuzz.event_cases())
def test_event_lines(case):
    _check(case)


@CI
@given(fuzz.config_cases())
def test_config_files(case):
    _check(case)


@CI
@given(fuzz.set_cases())
def test_set_facts(case):
    _check(case)


X86 = str(fuzz.TESTDATA / "x86_64" / "vmlinux")


@pytest.mark.parametrize("argv,code", [
    (["check", X86, "plain_func+\u0664"], 2),  # Arabic-Indic four: kstrtol takes ASCII only
    (["check", X86, "\uff11\uff10\uff13\uff10"], 2),  # fullwidth digits are no address
    (["check", X86, "0x10000000000000000"], 2),  # 2^64: kstrtoul -ERANGE
    (["check", X86, "plain_func+0x8000000000000000"], 2),  # past LONG_MAX: kstrtol -ERANGE
    (["check", X86, "plain_func", "--set", "PREEMPTON=n"], 2),  # unknown fact
    (["event", X86, "p:ev plain_func +\u0664($arg1)"], 1),  # refused line: exit 1
])
def test_known_findings_are_refused(argv, code):
    """The instances issue 13 reported, as regression checks of their classes."""
    r = fuzz.run_case(fuzz.Case("regression", tuple(argv), (), True), timeout=30)
    assert r.code == code and r.traceback is None and r.stderr.count("\n") == 1, r
    assert "ok" not in r.stdout.split()


def test_fifo_image_does_not_block():
    r = fuzz.run_case(fuzz.Case("special", ("check", "@f", "plain_func"), (("f", "fifo"),), True),
                      timeout=10)
    assert not r.hang and r.code == 1 and "FIFO" in r.stderr, r


def test_section_wrapping_past_2_64_is_refused():
    import struct
    data = bytearray((fuzz.TESTDATA / "x86_64" / "vmlinux").read_bytes())
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    for k in range(shnum):  # .text moved to 16 bytes below 2^64: its end wraps
        h = shoff + k * shentsize
        if struct.unpack_from("<Q", data, h + 8)[0] & 4:  # SHF_EXECINSTR
            struct.pack_into("<Q", data, h + 16, (1 << 64) - 16)
            break
    case = fuzz.Case("elf", ("summary", "@img", "--jobs", "1", "--no-progress", "--no-cache"),
                     (("img", bytes(data)),), True)
    r = fuzz.run_case(case, timeout=30)
    assert r.code == 1 and "wraps past 2^64" in r.stderr, r
