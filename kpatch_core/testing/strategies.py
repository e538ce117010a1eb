"""Hypothesis strategies for kprobe tests: valid instructions per architecture, probe and slot
addresses, initial register files.

Instructions are generated as raw encodings and kept when capstone decodes them (no
assembler in the loop, so encodings an assembler would never emit are covered too).

>>> from hypothesis import given
>>> @given(instruction("x86_64"), text_address("x86_64"))       # doctest: +SKIP
... def test(insn, addr): ...
"""
from __future__ import annotations

import collections
import functools
import random
from typing import Any, Callable

import capstone
from hypothesis import assume
from hypothesis import strategies as st

from kpatch_core.registry import backend_named, backends

__all__ = ["instruction", "executable_instruction", "NOT_EXECUTABLE", "rip_relative_instruction",
           "text_address", "slot_address", "register_file", "ARCHES", "decode_one"]

MASK64 = (1 << 64) - 1

# the per-arch facts come from the registered backends: their slot support's typical text and
# module-area ranges (start, size), capstone mode and instruction alignment
_SLOTS = {b.name: s for b in backends() if (s := b.slot_support()) is not None}
ARCHES = tuple(_SLOTS)  # every registered backend with out-of-line execution
TEXT = {name: s.TEXT_RANGE for name, s in _SLOTS.items()}
MODULES = {name: s.MODULE_RANGE for name, s in _SLOTS.items()}


@functools.cache
def _cs(arch: str) -> capstone.Cs:
    b = backend_named(arch)
    cs = capstone.Cs(b.capstone_arch, b.capstone_mode | (0 if b.little_endian else
                                                          capstone.CS_MODE_BIG_ENDIAN))
    cs.detail = True
    return cs


def decode_one(arch: str, code: bytes, addr: int = 0) -> Any:
    """The first instruction capstone decodes from ``code`` at ``addr``, or None."""
    return next(_cs(arch).disasm(code, addr, 1), None)


# --- x86_64 ------------------------------------------------------------------------------------
_X86_PREFIXES = [0x66, 0xF2, 0xF3, 0x2E, 0x3E, 0x26, 0x64, 0x65, 0x36, 0xF0, 0x67]
_X86_MODRM_OPS = [b"\x8b", b"\x89", b"\x03", b"\x01", b"\x3b", b"\x39", b"\x8d", b"\xc7", b"\xf7",
                  b"\x85", b"\x0f\xb6", b"\x0f\xb7", b"\x0f\xaf", b"\x0f\x10", b"\x0f\x28",
                  b"\x80", b"\x81", b"\x83", b"\xc6", b"\x88", b"\x8a", b"\xff", b"\xfe",
                  b"\x0f\x44", b"\x0f\xba", b"\x63", b"\x87", b"\x0f\xb1", b"\xd1"]


# prepare_emulation's opcodes (jcc, jmp, call, loop, ret, pushf/popf, cli/sti, call/jmp *reg)
_X86_EMULATED_OPS = [bytes([b]) for b in (*range(0x70, 0x80), 0xE0, 0xE1, 0xE2, 0xE3, 0xE8,
                                          0xE9, 0xEB, 0xC3, 0x9C, 0x9D, 0xFA, 0xFB)] + \
    [bytes([0x0F, b]) for b in range(0x80, 0x90)] + \
    [bytes([0xFF, 0xD0 | r]) for r in range(8)] + [bytes([0xFF, 0xE0 | r]) for r in range(8)]


@st.composite
def _x86_instruction(draw: Callable) -> bytes:
    prefixes = bytes(draw(st.lists(st.sampled_from(_X86_PREFIXES), max_size=2)))
    rex = draw(st.sampled_from([b""] * 3 + [bytes([r]) for r in range(0x40, 0x50)]))
    op = draw(st.one_of(st.integers(0, 255).map(lambda b: bytes([b])),
                        st.integers(0, 255).map(lambda b: bytes([0x0F, b])),
                        st.sampled_from(_X86_MODRM_OPS),
                        st.sampled_from(_X86_EMULATED_OPS)))
    tail = draw(st.binary(min_size=12, max_size=12))
    raw = prefixes + rex + op + tail
    # a REX byte must come last before the opcode; REX + legacy prefix (or a second REX) is
    # ill-formed: the CPU ignores that REX, the kernel's decoder takes the prefix as the opcode
    assume(not (rex and (op[0] in _X86_PREFIXES or 0x40 <= op[0] <= 0x4F)))
    insn = decode_one("x86_64", raw[:15])
    assume(insn is not None)  # every valid encoding; the property counts what it cannot compare
    return raw[:insn.size]


@st.composite
def _x86_rip_relative(draw: Callable) -> bytes:
    op = draw(st.sampled_from([o for o in _X86_MODRM_OPS if o not in (b"\xff", b"\xfe")]))
    rex = draw(st.sampled_from([b"", b"\x48", b"\x4c", b"\x41"]))
    reg = draw(st.integers(0, 7))
    disp = draw(st.one_of(st.integers(-(1 << 31), (1 << 31) - 1),
                          st.sampled_from([0, 1, -1, 0x7FFFFFFF, -0x80000000, 0x100, -0x100])))
    imm = draw(st.binary(min_size=4, max_size=4))
    raw = rex + op + bytes([(reg << 3) | 5]) + (disp & 0xFFFFFFFF).to_bytes(4, "little") + imm
    insn = decode_one("x86_64", raw)
    assume(insn is not None)
    # a read that covers the probed byte sees the int3 (the kernel's text is patched)
    assume(not -insn.size - 32 <= disp < -insn.size + 1)
    assume(any(o.type == capstone.x86.X86_OP_MEM and o.mem.base == capstone.x86.X86_REG_RIP
               for o in insn.operands))
    return raw[:insn.size]


# --- arm64 / riscv64: raw words filtered by capstone --------------------------------------------
@st.composite
def _word_instruction(draw: Callable, arch: str) -> bytes:
    word = draw(st.one_of(st.integers(0, 0xFFFFFFFF),
                          # bias towards the classes kprobes simulate (branches, adr, literals)
                          st.tuples(st.sampled_from([0x14000000, 0x94000000, 0x54000000, 0x34000000,
                                                     0x36000000, 0x10000000, 0x90000000, 0x18000000,
                                                     0x58000000, 0x98000000, 0xD61F0000]),
                                    st.integers(0, 0x03FFFFFF)).map(lambda t: t[0] | t[1])))
    raw = word.to_bytes(4, "little")
    insn = decode_one(arch, raw)
    assume(insn is not None and insn.size == 4)
    return raw


@st.composite
def _riscv_instruction(draw: Callable) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # compressed
        raw = draw(st.integers(0, 0xFFFF)).to_bytes(2, "little")
        assume(raw[0] & 3 != 3)
    elif kind == 1:  # the classes kprobes simulate: jal, jalr, auipc, branch
        opc = draw(st.sampled_from([0x6F, 0x67, 0x17, 0x63]))
        raw = ((draw(st.integers(0, (1 << 25) - 1)) << 7) | opc).to_bytes(4, "little")
    else:
        raw = (draw(st.integers(0, 0xFFFFFFFF)) | 3).to_bytes(4, "little")
    insn = decode_one("riscv64", raw)
    assume(insn is not None and insn.size == len(raw))
    return raw


@st.composite
def _s390x_instruction(draw: Callable) -> bytes:
    first = draw(st.one_of(st.integers(0, 255),
                           st.sampled_from([0xA7, 0xC0, 0xC4, 0xC6, 0x05, 0x0D, 0x07, 0x47, 0xE3,
                                            0xEB, 0xEC, 0x45, 0x4D, 0x86, 0x87, 0x46, 0x06])))
    n = 2 if first < 0x40 else (4 if first < 0xC0 else 6)
    raw = bytes([first]) + draw(st.binary(min_size=n - 1, max_size=n - 1))
    insn = decode_one("s390x", raw)
    assume(insn is not None and insn.size == n)
    return raw


@st.composite
def _ppc_step_candidate(draw: Callable) -> bytes:
    """ppc64 words from the opcode groups emulate_step tends to leave to the slot (VMX, FP,
    VSX, SPR moves, CR logic)."""
    op = draw(st.sampled_from([4, 59, 63, 60, 31, 19]))
    word = op << 26 | draw(st.integers(0, (1 << 26) - 1))
    raw = word.to_bytes(4, "little")
    insn = decode_one("ppc64le", raw)
    assume(insn is not None and insn.size == 4)
    return raw



def instruction(arch: str) -> st.SearchStrategy[bytes]:
    """One valid instruction encoding of ``arch`` (exactly its bytes)."""
    if arch == "x86_64":
        return st.one_of(_x86_instruction(), _x86_rip_relative())
    if arch == "riscv64":
        return _riscv_instruction()
    if arch == "s390x":
        return _s390x_instruction()
    if arch == "ppc64le":
        return st.one_of(_word_instruction("ppc64le"), _ppc_step_candidate())
    return _word_instruction(arch)


# encodings executable_instruction() set aside because the execution oracle does not execute
# them (by arch and fault class): counted, so reports say what was not generated
NOT_EXECUTABLE: collections.Counter[str] = collections.Counter()


def executable_instruction(arch: str) -> st.SearchStrategy[bytes]:
    """:func:`instruction` limited to encodings the execution oracle executes (a plain run with
    zeroed registers does not raise an undefined-instruction or program exception); each one
    set aside is counted in :data:`NOT_EXECUTABLE`."""
    from . import plain_run_fault
    backend = backend_named(arch)
    start = TEXT[arch][0]

    def executes(code: bytes) -> bool:
        why = plain_run_fault(backend, code, start)
        if why is not None:
            NOT_EXECUTABLE[f"{arch}:{why}"] += 1
        return why is None
    return instruction(arch).filter(executes)


def rip_relative_instruction() -> st.SearchStrategy[bytes]:
    """An x86_64 instruction with a RIP-relative memory operand."""
    return _x86_rip_relative()


def text_address(arch: str) -> st.SearchStrategy[int]:
    """A kernel text address (instruction-aligned for the architecture)."""
    start, size = TEXT[arch]
    align = backend_named(arch).insn_align
    return st.integers(0, size // align - 1).map(lambda i: start + i * align)


def slot_address(arch: str) -> st.SearchStrategy[int]:
    """An instruction-slot address in the module area (slot-size aligned)."""
    start, size = MODULES[arch]
    return st.integers(0, size // 16 - 1).map(lambda i: start + i * 16)


def pc_relative_instruction(arch: str) -> st.SearchStrategy[bytes]:
    """An instruction whose meaning depends on its address: x86 RIP-relative and s390
    relative-long (copied, displacement rewritten), arm64 and riscv64 PC-relative forms
    (simulated, never copied)."""
    if arch == "x86_64":
        return _x86_rip_relative()
    if arch == "s390x":  # RIL-b/c: larl, brasl, brcl, lgrl, lrl, stgrl, exrl ... (first byte C0/C4/C6)
        return st.tuples(st.sampled_from([b"\xc0\x00", b"\xc0\x05", b"\xc0\xf4", b"\xc4\x08",
                                          b"\xc4\x0d", b"\xc4\x0b", b"\xc6\x0d", b"\xc6\x02"]),
                         st.integers(-(1 << 31), (1 << 31) - 1)).map(
            lambda t: t[0][:1] + bytes([t[0][1] | 0x10]) + (t[1] & 0xFFFFFFFF).to_bytes(4, "big"))
    if arch in _PC_RELATIVE_FORMS:  # arm64/riscv64: (fixed bits, mask of the fixed bits, size)
        forms = _PC_RELATIVE_FORMS[arch]
        return st.tuples(st.sampled_from(forms), st.integers(0, 0xFFFFFFFF)).map(
            lambda t: ((t[1] & ~t[0][1] | t[0][0]) & ((1 << 8 * t[0][2]) - 1)).to_bytes(
                t[0][2], "little"))
    return instruction(arch)


# PC-relative encodings the kernel simulates (arm64 simulate-insn.c, riscv simulate-insn.c):
# random operand bits under each form's fixed bits, every form an allocated encoding (checked
# against capstone by tests/test_properties.py).  (value, mask, bytes)
_PC_RELATIVE_FORMS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "arm64": (
        (0x10000000, 0x9F000000, 4), (0x90000000, 0x9F000000, 4),  # adr, adrp
        (0x18000000, 0xFF000000, 4), (0x58000000, 0xFF000000, 4),  # ldr w/x literal
        (0x98000000, 0xFF000000, 4), (0xD8000000, 0xFF000000, 4),  # ldrsw literal, prfm literal
        (0x1C000000, 0xFF000000, 4), (0x5C000000, 0xFF000000, 4),  # ldr s/d (literal)
        (0x9C000000, 0xFF000000, 4),  # ldr q (literal); opc=11 with V=1 is unallocated
        (0x14000000, 0xFC000000, 4), (0x94000000, 0xFC000000, 4),  # b, bl
        (0x54000000, 0xFF000010, 4),  # b.cond
        (0x34000000, 0x7E000000, 4), (0x36000000, 0x7E000000, 4),  # cbz/cbnz, tbz/tbnz
    ),
    "riscv64": (
        (0x00000017, 0x0000007F, 4), (0x0000006F, 0x0000007F, 4),  # auipc, jal
        (0x00000063, 0x0000607F, 4), (0x00004063, 0x0000407F, 4),  # beq/bne, blt/bge/bltu/bgeu
        (0xA001, 0xE003, 2), (0xC001, 0xE003, 2), (0xE001, 0xE003, 2),  # c.j, c.beqz, c.bnez
    ),
}


def register_file(names: tuple[str, ...], pointers: tuple[int, ...]) -> st.SearchStrategy[dict]:
    """Register values: mostly ``pointers`` (engine addresses of mapped data) plus small
    offsets, sometimes small integers or arbitrary 64-bit values.  Drawn from one seed (cheap
    to generate: the long runs are dominated by example generation otherwise)."""
    def build(seed: int) -> dict[str, int]:
        r = random.Random(seed)
        out = {}
        for n in names:
            k = r.random()
            if k < 0.6:
                out[n] = (r.choice(pointers) + r.randint(-256, 256) * 8) & MASK64
            elif k < 0.8:
                out[n] = r.randint(0, 64)
            else:
                out[n] = r.getrandbits(64)
        return out
    return st.integers(0, MASK64).map(build)


def register_profiles() -> None:
    """Hypothesis profiles: ``ci`` (bounded, deterministic) and ``long`` (>= 100,000 examples
    per architecture, used by benchmarks/properties_long.py)."""
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
    settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True,
                              suppress_health_check=quiet)
    settings.register_profile("long", max_examples=100_000, deadline=None, database=None,
                              suppress_health_check=quiet)


register_profiles()
