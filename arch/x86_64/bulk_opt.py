"""``[OPTIMIZED]`` for every accepted x86_64 instruction at once (kpatch_core.analyze).

The per-address path (:func:`kpatch_arch.x86_64.optprobe.prepare_optimized`) walks the whole
function for each probe; here the same rules are split into what holds for a whole function and
what depends on the address, and both are computed with numpy over all instructions:

* per function (``can_optimize``'s walk): an exception-table user, an undecodable instruction,
  and (6.1, or 6.12 without retpolines/IBT) an indirect jump or a jump into a retpoline thunk
  make every address of the function unoptimizable;
* per address: at least 5 bytes left in the function, no jump of the function into
  ``addr+1 .. addr+5`` (``insn_jump_into_range``), the detour within rel32 reach, and
  ``copy_optimized_instructions`` over the instructions covering 5 bytes: each decodable, not
  int3 / an emulate prefix / an exception-masking move, boostable (``can_boost``), RIP-relative
  displacement still in s32 range from the detour buffer; no ftrace site, jump label or static
  call inside the copied bytes.

Where the table view does not apply (VEX, 3-byte opcodes, prefix runs, a jump with an
operand-size prefix, a possible RIP-relative operand that would not fit, an address moved by
``arch_adjust_kprobe_addr``) the address is returned as *slow*: the caller asks the per-address
path, so the two cannot drift on rare encodings.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import capstone
import numpy as np

from kpatch_core.bulk import mark_ranges

from .insn import JMP32_INSN_SIZE, XEN_KVM_EMULATE_PREFIXES
from .opcode_fields import boostable_opcode, opcode_fields
from .optprobe import DEFAULT_DETOUR, DISP32_SIZE, INT3_INSN_SIZE, TMPL_END_IDX

if TYPE_CHECKING:
    from .bulk import X86BulkClassifier

S32 = 1 << 31
KEY_SHIFT = 40  # (function << 40) + offset: chunk offsets stay far below 2**40


@functools.cache
def rip_forms() -> tuple[np.ndarray, np.ndarray]:
    """Per one-byte opcode and per ``0F xx`` opcode: does ModRM ``05`` after it make the
    instruction RIP-relative (it has a ModRM operand)?  Read off capstone once."""
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    out = []
    for esc in (b"", b"\x0f"):
        t = np.zeros(256, bool)
        for op in range(256):
            for pfx in (b"", b"\x66", b"\xf2", b"\xf3"):  # SSE forms need a mandatory prefix
                for _, _, _, ops in cs.disasm_lite(pfx + esc + bytes([op, 0x05]) + bytes(12), 0, 1):
                    t[op] |= "rip" in ops
        out.append(t)
    return out[0], out[1]


def _any_per(func: np.ndarray, mask: np.ndarray, nf: int) -> np.ndarray:
    """Per function index: is ``mask`` true for any of its instructions?"""
    return np.bincount(func[mask], minlength=nf) > 0


def _le(code: np.ndarray, at: np.ndarray, n: int) -> np.ndarray:
    """Signed little-endian ``n``-byte values at offsets ``at`` of ``code``."""
    v = np.zeros(len(at), np.int64)
    for i in range(n):
        v |= code[np.minimum(at + i, len(code) - 1)].astype(np.int64) << (8 * i)
    return np.where(v >= 1 << (8 * n - 1), v - (1 << (8 * n)), v)


def _overlaps(starts: np.ndarray, ends: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per query: some ``[starts[i], ends[i])`` meets ``[lo, hi)`` (starts sorted)."""
    if not len(starts):
        return np.zeros(len(lo), bool)
    reach = np.maximum.accumulate(ends.astype(np.uint64))  # furthest end among starts <= x
    i = np.searchsorted(starts, hi, side="left") - 1  # last start < hi
    ok = i >= 0
    return ok & (reach[np.maximum(i, 0)] > lo)


def optimized(clf: "X86BulkClassifier", code: np.ndarray, base: int, addrs: np.ndarray,
              lens: np.ndarray, func: np.ndarray, fstart: np.ndarray, fend: np.ndarray,
              cand: np.ndarray, aa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(optimized, slow) for the candidate instructions ``cand`` (indices into the chunk's
    instructions: ``addrs`` sorted, ``lens`` their lengths (0: the decode walk stops there),
    ``func`` their function's index into ``fstart``/``fend``; ``aa`` the probed addresses)."""
    image = clf.image
    tables = image.tables
    new_scan = clf.features.has("X86_OPTPROBE_NO_INDIRECT_SCAN_WITH_RETPOLINE_IBT")
    n = len(addrs)
    nc = len(cand)
    opt = np.zeros(nc, bool)
    slow = np.zeros(nc, bool)
    if nc == 0:
        return opt, slow
    rel = (addrs - np.uint64(base)).astype(np.int64)
    ln = lens.astype(np.int64)
    f = opcode_fields(code, rel, ln)
    one, two, b, b1 = f.one, f.two, f.b, f.b1
    weird = f.slow & (ln > 0)  # decodable, but not by the table view
    nf = len(fstart)
    # --- per function: can_optimize's walk -------------------------------------------------
    bad_func = _any_per(func, ln <= 0, nf)  # the kernel's decoder stops there: no walk
    slow_func = np.zeros(nf, bool)
    if len(tables.extable):
        bad_func |= _any_per(func, mark_ranges(addrs, tables.extable,
                                               tables.extable + np.uint64(1)), nf)
    thunks = tables.area("__indirect_thunk_start", "__indirect_thunk_end")
    check_indirect = not new_scan or not (thunks is not None or
                                          image.config.enabled("X86_KERNEL_IBT"))
    jmp8 = one & (((b >= 0xE0) & (b <= 0xE3)) | (b == 0xEB) | ((b >= 0x70) & (b <= 0x7F)))
    jmp32 = (one & (b == 0xE9)) | (two & ((b1 & 0xF0) == 0x80))
    is_jump = (jmp8 | jmp32) & ~f.slow
    # VEX/EVEX, 3-byte opcodes and ud2 are never jumps: only the other table misses (long
    # prefix runs, odd lengths) and rel16 jumps leave the function-level walk to capstone
    never_jump = (b == 0xC4) | (b == 0xC5) | (b == 0x62) | \
        (two & ((b1 == 0x38) | (b1 == 0x3A) | (b1 == 0x0B)))
    slow_func |= _any_per(func, (weird & ~never_jump) | (is_jump & f.has_66), nf)
    end_rel = rel + ln
    jt = np.nonzero(is_jump)[0]  # jump targets: rel8 or rel32 at the end of the instruction
    ej = end_rel[jt]
    tj = np.where(jmp8[jt], ej + _le(code, ej - 1, 1), ej + _le(code, ej - 4, 4))
    if check_indirect:
        indirect = (one & (b == 0xFF) & ((f.reg & 6) == 4)) | (one & (b == 0xEA))
        bad_func |= _any_per(func, indirect & ~f.slow, nf)
        if not new_scan and thunks is not None:
            t0, t1 = thunks[0] - base, thunks[1] - base
            bad_func |= _any_per(func[jt], (tj >= t0) & (tj <= t1), nf)
    # --- per address ---------------------------------------------------------------------------
    c = cand
    cf = func[c]
    a = addrs[c]
    arel = rel[c]
    moved = aa[c] != a  # moved by arch_adjust_kprobe_addr: the per-address path decides
    slow |= slow_func[cf]
    ok = ~bad_func[cf]
    fe_rel = (fend[cf] - np.uint64(base)).astype(np.int64)
    ok &= fe_rel - arel >= JMP32_INSN_SIZE
    entry = tables.area("__entry_text_start", "__entry_text_end")
    if entry:
        ok &= ~((a >= np.uint64(entry[0])) & (a < np.uint64(entry[1])))
    # insn_jump_into_range: a jump of the same function to addr+1 .. addr+5
    fs_rel = (fstart - np.uint64(base)).astype(np.int64)
    jf = func[jt]
    inside = (tj >= fs_rel[jf]) & (tj <= (fend[jf] - np.uint64(base)).astype(np.int64))
    keys = np.sort((jf[inside].astype(np.int64) << KEY_SHIFT) + tj[inside])
    k0 = (cf.astype(np.int64) << KEY_SHIFT) + arel
    lo = np.searchsorted(keys, k0 + INT3_INSN_SIZE, side="left")
    hi = np.searchsorted(keys, k0 + INT3_INSN_SIZE + DISP32_SIZE, side="right")
    ok &= hi == lo
    # arch_prepare_optimized_kprobe: the detour within rel32 of the probe
    detour = DEFAULT_DETOUR
    dist = (np.uint64(detour) - a).astype(np.int64) + JMP32_INSN_SIZE
    ok &= np.abs(dist) <= 0x7FFFFFFF
    # copy_optimized_instructions: instructions j, j+1, ... until 5 bytes are covered
    boost = boostable_opcode(f, clf.is_group, clf.group_regs)
    emul_prefix = np.zeros(n, bool)
    u = np.nonzero((code[rel] == 0x0F) & (code[np.minimum(rel + 1, len(code) - 1)] == 0x0B))[0]
    for pfx in XEN_KVM_EMULATE_PREFIXES:  # ud2 + "xen" / "kvm"
        m = np.ones(len(u), bool)
        for i, byte in enumerate(pfx):
            m &= code[np.minimum(rel[u] + i, len(code) - 1)] == byte
        emul_prefix[u[m]] = True
    three = two & ((b1 == 0x38) | (b1 == 0x3A))  # can_boost: a 3-byte opcode never boosts
    decided = three | (two & (b1 == 0x0B))  # table misses whose copy verdict is still known
    copy_bad = (ln <= 0) | (one & (b == 0xCC)) | emul_prefix | (one & (b == 0x17)) | \
        (one & (b == 0x8E) & (f.reg == 2)) | ~boost | three
    # an opcode with a ModRM operand whose ModRM has the RIP-relative form (mod 00, rm 101):
    # disp32 follows the ModRM
    one_rip, two_rip = rip_forms()
    riprel = (f.mod == 0) & ((f.modrm & 7) == 5) & ~f.slow & \
        np.where(f.two, two_rip[f.b1], one_rip[f.b])
    disp = np.zeros(n, np.int64)
    ri = np.nonzero(riprel)[0]
    disp[ri] = _le(code, f.op_end[ri] + 1, 4)
    covered = np.zeros(nc, np.int64)
    for k in range(JMP32_INSN_SIZE):
        need = covered < JMP32_INSN_SIZE
        if not need.any():
            break
        j = c + k
        past = need & ((j >= n) | (func[np.minimum(j, n - 1)] != cf))
        slow |= past
        j = np.minimum(j, n - 1)
        act = need & ~past
        undecided = weird[j] & ~decided[j]
        ok &= ~(act & (copy_bad[j] | undecided))
        slow |= act & undecided
        # __copy_instruction: new disp = src + disp - dest must fit in s32
        dest = np.uint64(detour + TMPL_END_IDX) + covered.astype(np.uint64)
        src = addrs[j]
        newdisp = (src - dest).astype(np.int64) + disp[j]
        slow |= act & riprel[j] & ((newdisp < -S32) | (newdisp >= S32))
        covered = covered + np.where(act, np.maximum(ln[j], 1), 0)
    end = a + covered.astype(np.uint64) - np.uint64(1)  # last copied byte
    # ftrace_text_reserved / jump_label_text_reserved / static_call_text_reserved
    fs = tables.ftrace_sites
    ok &= ~_overlaps(fs, fs + np.uint64(5), a, end + np.uint64(1))
    js, je = tables.jump_labels
    ok &= ~_overlaps(js, je, a, end + np.uint64(1))
    sc = tables.static_call_sites
    ok &= ~_overlaps(sc, sc + np.uint64(5), a, end + np.uint64(1))
    # every "no" above is exact; an unknown only matters where nothing else said no
    slow = moved | (slow & ok)
    return ok & ~slow, slow
