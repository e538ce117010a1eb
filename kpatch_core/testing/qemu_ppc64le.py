"""The qemu-user harness for ppc64le: execution facts unicorn cannot give (it has no
little-endian PPC64), checked with Debian's qemu-ppc64le-static in user mode -- one program
per run (:func:`qemu_output`, :func:`slot_equivalence`) or many instructions per process
driven by a signal handler (:func:`qemu_batch`, :func:`prove_emulation`,
:func:`prove_single_step`, :func:`run_detour`).  Used by the tests and
benchmarks/properties_long.py; the slot rules themselves are in kpatch_arch.ppc64le.slot.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Mapping

from kpatch_arch.ppc64le import is_prefixed
from kpatch_arch.ppc64le.slot import DEFAULT_OP, build_detour, imm64_load

if TYPE_CHECKING:
    from kpatch_core.slot import Effect, ReadMem


# --- qemu-user oracle --------------------------------------------------------------------------
# unicorn cannot run little-endian PPC64, so execution facts are checked with Debian's
# qemu-ppc64le-static on a minimal static ELF (user mode: addresses are user addresses).
QEMU = "qemu-ppc64le-static"
USER_BASE = 0x10000000
EXIT_0 = [0x38000001, 0x38600000, 0x44000002]  # li r0,__NR_exit; li r3,0; sc


def user_elf(words: list[int], base: int = USER_BASE, at: int | None = None) -> bytes:
    """A static ELFv2 ppc64le executable whose entry runs ``words``, placed at ``at``
    (default: right after the headers) in one R+X segment at ``base``."""
    import struct
    hdr = 64 + 56
    code_off = hdr if at is None else at - base
    if code_off < hdr:
        raise ValueError("code would overlap the ELF headers")
    body = b"".join(w.to_bytes(4, "little") for w in words)
    size = code_off + len(body)
    eh = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,
                     2, 21, 1, base + code_off, 64, 0, 2, 64, 56, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x10000)
    return (eh + ph).ljust(code_off, b"\0") + body


def qemu_run(words: list[int], at: int | None = None, timeout: float = 10.0) -> int | None:
    """Run ``words`` under qemu-ppc64le; the exit status (negative: killed by that signal),
    or None when qemu is not installed."""
    import os
    import shutil
    import subprocess
    import tempfile
    exe = shutil.which(QEMU)
    if exe is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".elf", delete=False) as f:
        f.write(user_elf(words, at=at))
        path = f.name
    try:
        os.chmod(path, 0o755)
        return subprocess.run([exe, "-cpu", "power9", path], capture_output=True,
                              timeout=timeout).returncode
    finally:
        os.unlink(path)


DATA_OFF = 0x8000  # register dump area inside the (RWX) test segment


def _std(rs: int, ra: int, off: int) -> int:
    return 0xF8000000 | rs << 21 | ra << 16 | (off & 0xFFFC)


def _b(at: int, to: int) -> int:
    return 0x48000000 | ((to - at) & 0x3FFFFFC)


def slot_equivalence_program(insn: bytes, regs: list[int], addr: int, slot: int | None) -> list[int]:
    """Words of a program that loads r0..r30 from ``regs``, runs ``insn`` at ``addr`` (or its
    slot copy at ``slot``, then continues at ``addr + len`` as kprobe_post_handler sets NIP),
    stores r0..r30, CR, LR, CTR, XER and writes them to stdout.  ``addr``/``slot`` are offsets
    from :data:`USER_BASE` + 0x1000 chosen by the caller (word aligned)."""
    base = USER_BASE
    start = base + 0x100
    words: list[int] = []
    for r, v in enumerate(regs[:31]):
        words += imm64_load(v, r) if r else imm64_load(v, 0)
    pre_end = start + 4 * len(words)
    n = len(insn) // 4
    ins = [int.from_bytes(insn[4 * i:4 * i + 4], "little") for i in range(n)]
    layout: dict[int, int] = {}
    if slot is None:
        words.append(_b(pre_end, addr))
        for i, w in enumerate(ins):
            layout[addr + 4 * i] = w
    else:
        words.append(_b(pre_end, slot))
        for i, w in enumerate(ins):
            layout[slot + 4 * i] = w
        layout[slot + 4 * n] = _b(slot + 4 * n, addr + 4 * n)
    tail = addr + 4 * n
    dump = imm64_load(base + DATA_OFF, 31)
    dump += [_std(r, 31, 8 * r) for r in range(31)]
    dump += [0x7C000026 | 30 << 21, _std(30, 31, 8 * 31)]  # mfcr r30
    dump += [0x7C0802A6 | 30 << 21, _std(30, 31, 8 * 32)]  # mflr r30
    dump += [0x7C0902A6 | 30 << 21, _std(30, 31, 8 * 33)]  # mfctr r30
    dump += [0x7C0102A6 | 30 << 21, _std(30, 31, 8 * 34)]  # mfxer r30
    dump += [0x38000004, 0x38600001, 0x7FE4FB78, 0x38A00000 | 8 * 35, 0x44000002]  # write(1,..)
    dump += EXIT_0
    for i, w in enumerate(dump):
        layout[tail + 4 * i] = w
    for i, w in enumerate(words):
        layout[start + 4 * i] = w
    lo, hi = base + 0x78, max(layout) + 4
    out = [0x60000000] * ((hi - lo) // 4)
    for a, w in layout.items():
        out[(a - lo) // 4] = w
    return out


def qemu_output(words: list[int], timeout: float = 10.0) -> tuple[int, bytes] | None:
    """(exit status, stdout) of ``words`` (starting at USER_BASE + 0x78) under qemu."""
    import os
    import shutil
    import subprocess
    import tempfile
    exe = shutil.which(QEMU)
    if exe is None:
        return None
    elf = bytearray(user_elf(words))
    elf = elf.ljust(DATA_OFF + 8 * 36, b"\0")
    import struct
    struct.pack_into("<I", elf, 64 + 4, 7)  # p_flags RWX: the dump area is in the segment
    struct.pack_into("<QQ", elf, 64 + 32, len(elf), len(elf))
    with tempfile.NamedTemporaryFile(suffix=".elf", delete=False) as f:
        f.write(bytes(elf))
        path = f.name
    try:
        os.chmod(path, 0o755)
        p = subprocess.run([exe, "-cpu", "power9", path], capture_output=True, timeout=timeout)
        return p.returncode, p.stdout
    finally:
        os.unlink(path)


def slot_equivalence(insn: bytes, regs: list[int], addr: int, slot: int) -> tuple[object, object] | None:
    """Run ``insn`` at ``addr`` and its slot copy at ``slot`` (then NIP = addr + len) under
    qemu: both (exit status, r0-r30/CR/LR/CTR/XER dump); None without qemu.  r31 is the
    dump's base register and is not compared."""
    a = qemu_output(slot_equivalence_program(insn, regs, addr, None))
    if a is None:
        return None
    b = qemu_output(slot_equivalence_program(insn, regs, addr, slot))
    return a, b


# --- batched qemu oracle: one process runs many instructions -----------------------------------
# A signal handler drives the run: every example's instruction is written at SITE (followed
# by an illegal word) and started by returning from the handler with the example's register
# file in the signal frame; whatever stops it next (SIGILL at the following word, SIGSEGV at
# a branch target or on a faulting access) re-enters the handler, which records the frame's
# registers (all 32 GPRs, NIP, CTR, LR, XER, CR: nothing is clobbered by the harness) and the
# data buffer, then starts the next example.  qemu handles the code rewrite at SITE
# (self-modifying code in linux-user).
MASK64 = (1 << 64) - 1
SITE_PAGE = 0x40000000  # one zero-filled RWX page, far (> 32 MiB) from everything else
SITE = SITE_PAGE + 0x8000
SLOT_PAGE = 0x60000000  # a second zero-filled RWX page: where slot copies run
SLOT_SITE = SLOT_PAGE + 0x8000
BUF = 0x50000000  # the data buffer (RW, not executable): loads and stores aim here
BUF_SIZE = 0x1000
HDATA = 0x10100000  # the harness's data: parameters, inputs, outputs, altstack
IN_REC = 40 * 8  # gpr0..31, ctr, link, xer, ccr, insn (2 words), site, pad
OUT_GREGS = 40  # mcontext gregs copied per example: gpr0..31 nip msr orig_gpr3 ctr link xer ccr ..
OUT_REC = (OUT_GREGS + 1) * 8 + BUF_SIZE
UC_REGS_PTR = 224  # ucontext -> uc_mcontext.regs (pointer to gregs), ppc64 (qemu target_ucontext)
SIGNALS = (4, 5, 7, 8, 11)  # SIGILL SIGTRAP SIGBUS SIGFPE SIGSEGV
G_NIP, G_CTR, G_LINK, G_XER, G_CCR = 32, 35, 36, 37, 38
GREG_NAMES = {**{r: f"gpr{r}" for r in range(32)}, G_NIP: "nip", G_CTR: "ctr", G_LINK: "link",
              G_XER: "xer", G_CCR: "ccr"}


def _d(op: int, rt: int, ra: int, d: int) -> int:  # D-form
    return op << 26 | rt << 21 | ra << 16 | (d & 0xFFFF)


def _ds(rt: int, ra: int, d: int, op: int = 58, xo: int = 0) -> int:  # ld/ldu/std/stdu
    return op << 26 | rt << 21 | ra << 16 | (d & 0xFFFC) | xo


def _x31(rt: int, ra: int, rb: int, xo: int, rc: int = 0) -> int:
    return 31 << 26 | rt << 21 | ra << 16 | rb << 11 | xo << 1 | rc


def _li(rt: int, v: int) -> int:
    return _d(14, rt, 0, v)


def _mtspr(spr: int, rs: int) -> int:
    return _x31(rs, spr & 0x1F, spr >> 5, 467)


def _assemble(items: list, at: int) -> list[int]:
    """Words of ``items`` placed at ``at``: ints are words, ("L", name) labels,
    ("bc", bo, bi, name) conditional branches, ("b", name) branches."""
    labels, pc = {}, at
    for it in items:
        if isinstance(it, tuple) and it[0] == "L":
            labels[it[1]] = pc
        else:
            pc += 4
    out, pc = [], at
    for it in items:
        if isinstance(it, tuple):
            if it[0] == "L":
                continue
            if it[0] == "bc":
                out.append(16 << 26 | it[1] << 21 | it[2] << 16 | ((labels[it[3]] - pc) & 0xFFFC))
            else:
                out.append(_b(pc, labels[it[1]]))
        else:
            out.append(it)
        pc += 4
    return out


def _copy(src_minus_8: list[int], dst_minus_8: list[int], n: int, lab: str) -> list:
    """Copy n doublewords (r11/r12 set by the given words to source-8 / destination-8)."""
    return [_li(10, n), _mtspr(9, 10), *src_minus_8, *dst_minus_8,
            ("L", lab), _ds(0, 11, 8, 58, 1), _ds(0, 12, 8, 62, 1), ("bc", 16, 0, lab)]


def batch_program(n: int) -> tuple[list[int], list[int], dict[str, int]]:
    """(start code, handler code, layout) of the batched oracle for ``n`` examples."""
    lay = {"code": USER_BASE + 0x1000, "handler": USER_BASE + 0x2000, "params": HDATA,
           "in": HDATA + 0x1000, "pristine": 0, "out": 0, "altstack": 0}
    lay["pristine"] = lay["in"] + (n * IN_REC + 0xFFF & ~0xFFF)
    lay["out"] = lay["pristine"] + BUF_SIZE
    lay["altstack"] = lay["out"] + (n * OUT_REC + 0xFFF & ~0xFFF)
    lay["end"] = lay["altstack"] + 0x10000
    start: list = [0x38000000 | 185, *imm64_load(HDATA + 16, 3), _li(4, 0), 0x44000002]
    for sig in SIGNALS:  # rt_sigaction(sig, &act, NULL, 8)
        start += [_li(0, 173), _li(3, sig), *imm64_load(HDATA + 0x40, 4), _li(5, 0),
                  _li(6, 8), 0x44000002]
    start.append(0)  # SIGILL: the handler starts example 0
    h: list = [*imm64_load(HDATA, 7), _ds(6, 5, UC_REGS_PTR), _ds(8, 7, 0),
               _d(11, 1, 8, 0),  # cmpdi cr0, r8, 0 (L=1)
               ("bc", 12, 0, "next"),  # blt
               *imm64_load(lay["out"], 9), _d(7, 10, 8, OUT_REC), _x31(9, 9, 10, 266)]
    h += _copy([_d(14, 11, 6, -8)], [_d(14, 12, 9, -8)], OUT_GREGS, "c1")
    h += [_ds(3, 9, 8 * OUT_GREGS, 62)]  # the signal number
    h += _copy(imm64_load(BUF - 8, 11), [_d(14, 12, 9, 8 * OUT_GREGS)], BUF_SIZE // 8, "c2")
    h += [("L", "next"), _d(14, 8, 8, 1), _ds(8, 7, 0, 62), _ds(10, 7, 8),
          _x31(1 << 2 | 1, 8, 10, 0) & ~(7 << 23) | 1 << 21,  # cmpd cr0, r8, r10
          ("bc", 12, 0, "more"),
          _li(0, 4), _li(3, 1), *imm64_load(lay["out"], 4), _d(7, 5, 10, OUT_REC), 0x44000002,
          _li(0, 234), _li(3, 0), 0x44000002,
          ("L", "more"), *imm64_load(lay["in"], 9), _d(7, 10, 8, IN_REC), _x31(9, 9, 10, 266)]
    h += _copy([_d(14, 11, 9, -8)], [_d(14, 12, 6, -8)], 32, "c3")
    h += [_ds(10, 9, 8 * 37), _ds(10, 6, 8 * G_NIP, 62)]  # the example's site
    for i, gi in enumerate((G_CTR, G_LINK, G_XER, G_CCR)):
        h += [_ds(0, 9, 8 * (32 + i)), _ds(0, 6, 8 * gi, 62)]
    h += [_d(32, 0, 9, 8 * 36), _d(36, 0, 10, 0), _d(32, 0, 9, 8 * 36 + 4), _d(36, 0, 10, 4),
          _li(0, 0), _d(36, 0, 10, 8)]
    h += _copy(imm64_load(lay["pristine"] - 8, 11), imm64_load(BUF - 8, 12), BUF_SIZE // 8, "c4")
    # every example starts with FPRs/FPSCR and the vector registers zero: the frame's
    # mc_fregs (after the 48 gregs) and the area v_regs points to (32 VRs, VSCR, VRSAVE,
    # then the low doublewords of VSR0-31)
    h += [_li(0, 0), _li(10, 33), _mtspr(9, 10), _d(14, 12, 6, 8 * 48 - 8),
          ("L", "z1"), _ds(0, 12, 8, 62, 1), ("bc", 16, 0, "z1"),
          _ds(12, 6, 8 * (48 + 33)), _li(10, 68 + 32), _mtspr(9, 10),
          _d(14, 12, 12, -8), ("L", "z2"), _ds(0, 12, 8, 62, 1), ("bc", 16, 0, "z2")]
    h += [0x4E800020]  # blr: to the sigreturn trampoline
    return _assemble(start, lay["code"]), _assemble(h, lay["handler"]), lay


def _elf(segments: list[tuple[int, bytes, int, int]], entry: int) -> bytes:
    """A static ELFv2 (e_flags 2: qemu then calls signal handlers at their address) ppc64le
    executable from (vaddr, file bytes, memory size, flags) PT_LOAD segments."""
    import struct
    n = len(segments)
    off = 0x10000
    eh = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,
                     2, 21, 1, entry, 64, 0, 2, 64, 56, n, 0, 0, 0)
    phs, body = b"", b""
    for vaddr, data, memsz, flags in segments:
        if data:
            phs += struct.pack("<IIQQQQQQ", 1, flags, off + len(body), vaddr, vaddr, len(data),
                               memsz, 0x10000)
            body += data + b"\0" * (-len(data) % 0x10000)
        else:
            phs += struct.pack("<IIQQQQQQ", 1, flags, 0, vaddr, vaddr, 0, memsz, 0x10000)
    return (eh + phs).ljust(off, b"\0") + body


def _words(ws: list[int]) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in ws)


def qemu_batch(examples: list[tuple], buffer: bytes, timeout: float = 60.0,
               preload: Mapping[int, bytes] | None = None) -> list[dict] | None:
    """Run every (instruction, pt_regs-named register file[, site]) at its site (default
    :data:`SITE`; :data:`SLOT_SITE` is the other one) under qemu-ppc64le (one process), the
    data buffer at :data:`BUF` reset to ``buffer`` before
    each; per example: {"sig", "gregs" (gpr0..31 nip msr orig_gpr3 ctr link xer ccr ...),
    "buf"}.  ``preload`` puts code into the site page (address -> bytes).  None without
    qemu; raises RuntimeError when the run does not complete."""
    import os
    import shutil
    import struct
    import subprocess
    import tempfile
    exe = shutil.which(QEMU)
    if exe is None:
        return None
    n = len(examples)
    start, handler, lay = batch_program(n)
    code = bytearray(0x3000)
    code[0x1000:0x1000 + 4 * len(start)] = _words(start)
    code[0x2000:0x2000 + 4 * len(handler)] = _words(handler)
    data = bytearray(lay["out"] - HDATA)
    struct.pack_into("<qq", data, 0, -1, n)
    struct.pack_into("<QiiQ", data, 16, lay["altstack"], 0, 0, 0x10000)  # stack_t
    struct.pack_into("<QQQQ", data, 0x40, lay["handler"], 0x4 | 0x08000000, 0, 0)  # SIGINFO|ONSTACK
    for i, ex in enumerate(examples):
        insn, regs = ex[0], ex[1]
        vals = [regs.get(f"gpr{r}", 0) & MASK64 for r in range(32)]
        vals += [regs.get(k, 0) & MASK64 for k in ("ctr", "link", "xer", "ccr")]
        struct.pack_into("<36Q", data, lay["in"] - HDATA + i * IN_REC, *vals)
        struct.pack_into("<Q", data, lay["in"] - HDATA + i * IN_REC + 8 * 37,
                         ex[2] if len(ex) > 2 else SITE)
        at = lay["in"] - HDATA + i * IN_REC + 288
        data[at:at + 8] = insn[:8].ljust(8, b"\0")
    data[lay["pristine"] - HDATA:lay["pristine"] - HDATA + BUF_SIZE] = buffer[:BUF_SIZE]
    site_page = b""
    if preload:
        page = bytearray(0x10000)
        for at, blob in preload.items():
            page[at - SITE_PAGE:at - SITE_PAGE + len(blob)] = blob
        site_page = bytes(page)
    elf = _elf([(USER_BASE, bytes(code), len(code), 5), (HDATA, bytes(data), lay["end"] - HDATA, 6),
                (SITE_PAGE, site_page, 0x10000, 7), (SLOT_PAGE, b"", 0x10000, 7),
                (BUF, b"", 0x10000, 6)], lay["code"])
    with tempfile.NamedTemporaryFile(suffix=".elf", delete=False) as f:
        f.write(elf)
        path = f.name
    try:
        os.chmod(path, 0o755)
        p = subprocess.run([exe, "-cpu", "power9", path], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("qemu batch timed out (an instruction looped?)") from e
    finally:
        os.unlink(path)
    if p.returncode != 0 or len(p.stdout) != n * OUT_REC:
        raise RuntimeError(f"qemu batch failed: status {p.returncode}, {len(p.stdout)} bytes, "
                           f"{p.stderr[-200:]!r}")
    out = []
    for i in range(n):
        rec = p.stdout[i * OUT_REC:(i + 1) * OUT_REC]
        g = struct.unpack_from(f"<{OUT_GREGS}Q", rec, 0)
        out.append({"sig": struct.unpack_from("<q", rec, 8 * OUT_GREGS)[0], "gregs": g,
                    "buf": rec[8 * (OUT_GREGS + 1):]})
    return out


# --- proof by execution: emulate_step model vs the instruction run by qemu ---------------------
def _proof_msr() -> int:
    """The MSR the proof runs the model with: the kernel's, with FP/VEC/VSX on as qemu user
    mode runs (with them off the kernel skips FP/vector accesses; the hardware would trap)."""
    from kpatch_arch.ppc64le.emulate import MSR_FP, MSR_KERNEL, MSR_VEC, MSR_VSX
    return MSR_KERNEL | MSR_FP | MSR_VEC | MSR_VSX


def self_branch(word: int, regs: Mapping[str, int], at: int = SITE) -> bool:
    """True when ``word`` at ``at`` may branch to itself (it would loop under the oracle)."""
    op = word >> 26
    if op in (16, 18):
        bits = 16 if op == 16 else 26
        d = word & ((1 << bits) - 4)
        d = d - (1 << bits) if d >> (bits - 1) else d
        return ((d if word & 2 else at + d) & MASK64) == at
    if op == 19 and (word >> 1) & 0x3FF in (16, 528, 560):
        return (regs.get("ctr" if word & 0x400 else "link", 0) & ~3) == at
    return False


def _buffer_read(buffer: bytes) -> "ReadMem":
    def read(addr: int, n: int) -> bytes:
        off = addr - BUF
        if 0 <= off and off + n <= len(buffer):
            return buffer[off:off + n]
        return b""
    return read


def qemu_batch_robust(examples: list[tuple], buffer: bytes) -> list[dict | None] | None:
    """:func:`qemu_batch`, splitting a batch that does not complete (an instruction that
    kills or hangs qemu) down to the examples responsible, which give None."""
    try:
        got = qemu_batch(examples, buffer, timeout=20.0 + 0.05 * len(examples))
        if got is None:
            return None
        done: list[dict | None] = [*got]
        return done
    except RuntimeError:
        if len(examples) == 1:
            return [None]
    half = len(examples) // 2
    a = qemu_batch_robust(examples[:half], buffer)
    b = qemu_batch_robust(examples[half:], buffer)
    return None if a is None or b is None else a + b


def prove_emulation(examples: list[tuple[bytes, Mapping[str, int]]], buffer: bytes,
                    batch: int = 250, msr: int | None = None
                    ) -> tuple[dict[str, int], list[dict]] | None:
    """Check :func:`kpatch_arch.ppc64le.emulate.emulate_step` against execution: each
    (instruction, register file) runs at :data:`SITE` under qemu-ppc64le with ``buffer`` at
    :data:`BUF`, and the model's Effect applied to the same state must give the same 32 GPRs,
    NIP, LR, CTR, CR, XER (SO/OV/CA/OV32/CA32/byte count: regs->xer goes back through mtxer)
    and buffer.  ``msr``: the MSR the model runs with (default :func:`_proof_msr`, the
    kernel's; uprobes pass a user one).  Returns (counts, divergences); None without qemu.

    Bits the ISA leaves undefined for the original instruction are not compared
    (:func:`~kpatch_arch.ppc64le.emulate.hardware_undefined`: the high word of divw/mulhw...);
    invalid forms are counted, not run.  NIP is compared with its low two bits clear, as
    rfid resumes.

    Counts: ``ok``; ``invalid-form``; ``declined`` (the kernel single-steps: the slot
    property covers it);
    ``refused``; ``not-modelled:<what>``; ``oracle-sigill`` (qemu user mode cannot run the word:
    privileged, or an encoding it rejects); ``self-branch`` (not run: it would loop);
    ``oracle-crash`` (qemu died on it); ``DIVERGED``."""
    import collections

    from kpatch_arch.ppc64le.emulate import (XER_IMPLEMENTED, Declined, NotModelled, Refused, emulate_step,
                          hardware_undefined)
    counts: collections.Counter = collections.Counter()
    diverged: list[dict] = []
    msr = _proof_msr() if msr is None else msr
    read = _buffer_read(buffer)
    runs: list[tuple[bytes, Mapping[str, int], Effect]] = []
    for insn, regs in examples:
        word = int.from_bytes(insn[:4], "little")
        eff = emulate_step(insn, SITE, regs, read, msr=msr)
        if isinstance(eff, Declined):
            counts["declined"] += 1
        elif isinstance(eff, Refused):
            counts["refused"] += 1
        elif isinstance(eff, NotModelled):
            counts[f"not-modelled:{eff.what}"] += 1
        elif self_branch(word, regs) or eff.pc == SITE:
            counts["self-branch"] += 1
        elif isinstance(hardware_undefined(word), str):
            counts["invalid-form"] += 1
        else:
            runs.append((insn, regs, eff))
    for i in range(0, len(runs), batch):
        chunk = runs[i:i + batch]
        res = qemu_batch_robust([(c[0], c[1]) for c in chunk], buffer)
        if res is None:
            return None
        for (insn, regs, eff), got in zip(chunk, res):
            if got is None:
                counts["oracle-crash"] += 1
                continue
            g = got["gregs"]
            if got["sig"] == 4 and g[G_NIP] == SITE:
                counts["oracle-sigill"] += 1
                continue
            want = [eff.regs.get(f"gpr{r}", regs.get(f"gpr{r}", 0)) & MASK64 for r in range(32)]
            exp = {f"gpr{r}": want[r] for r in range(32)}
            exp["nip"] = eff.pc
            for k in ("ctr", "link"):
                exp[k] = eff.regs.get(k, regs.get(k, 0)) & MASK64
            exp["xer"] = eff.regs.get("xer", regs.get("xer", 0)) & XER_IMPLEMENTED
            exp["ccr"] = eff.regs.get("ccr", regs.get("ccr", 0)) & 0xFFFFFFFF
            act = {f"gpr{r}": g[r] for r in range(32)}
            act.update(nip=g[G_NIP], ctr=g[G_CTR], link=g[G_LINK], xer=g[G_XER] & XER_IMPLEMENTED,
                       ccr=g[G_CCR] & 0xFFFFFFFF)
            mem = bytearray(buffer[:BUF_SIZE])
            for a, data in eff.stores:
                mem[a - BUF:a - BUF + len(data)] = data
            # rfid resumes at regs->nip with the low two bits clear (a bclr/bcctr target)
            exp["nip"] &= ~3
            undef = hardware_undefined(int.from_bytes(insn[:4], "little")) or {}
            assert isinstance(undef, dict)
            for k, defined in undef.items():
                exp[k] &= defined
                act[k] &= defined
            diff: dict[str, object] = {k: (hex(exp[k]), hex(act[k])) for k in exp if exp[k] != act[k]}
            if bytes(mem) != got["buf"]:
                diff["memory"] = [hex(BUF + j) for j in range(BUF_SIZE)
                                  if mem[j] != got["buf"][j]][:8]
            if diff:
                counts["DIVERGED"] += 1
                diverged.append({"insn": insn.hex(), "op": eff.op, "sig": got["sig"], "diff": diff,
                                 "regs": {k: hex(v) for k, v in regs.items()}})
            else:
                counts["ok"] += 1
    return dict(counts), diverged


# words of the classes emulate_step handles, for the proof's generators
_OP31_XO = (0, 32, 508, 8, 9, 10, 11, 40, 73, 75, 104, 136, 138, 200, 202, 232, 233, 234, 235,
            265, 266, 267, 457, 459, 489, 491, 425, 393, 777, 779, 26, 58, 28, 60, 122, 124, 154,
            186, 252, 284, 316, 378, 412, 444, 476, 506, 538, 570, 922, 954, 986, 24, 536, 792,
            824, 27, 539, 794, 826, 827, 890, 891, 19, 144, 128, 339, 467, 598, 854,
            23, 55, 87, 119, 21, 53, 149, 181, 151, 183, 215, 247, 279, 311, 341, 373, 343, 375,
            407, 439, 532, 534, 660, 662, 790, 918, 20, 84, 52, 116, 54, 86, 246, 278, 982, 1014,
            520, 522, 778, 616)  # last four: OE=1 forms (declined)
_OP19_XO = (0, 16, 528, 560, 150, 33, 129, 193, 225, 257, 289, 417, 449)
_OPS = (4, 7, 8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30,
        31, 31, 31, 31, 31, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 58, 62)


def random_emulated_word(rng: random.Random) -> int:
    """A random instruction word of a class analyse_instr handles (random operand fields)."""
    op = rng.choice(_OPS)
    w = op << 26 | rng.getrandbits(26)
    if op == 31:
        x = rng.choice(_OP31_XO)
        if rng.random() < 0.08:
            x = 15 | rng.getrandbits(5) << 5  # isel
        w = w & ~(0x3FF << 1) | x << 1
        if x in (339, 467):
            spr = rng.choice((1, 8, 9, 1, 8, 9, 3, 256))
            w = w & ~(0x3FF << 11) | (spr & 0x1F) << 16 | (spr >> 5) << 11
        if x in (0, 32):
            w &= ~(1 << 22)  # cmp: the reserved bit
    elif op == 19:
        x = rng.choice(_OP19_XO)
        w = w & ~(0x3FF << 1) | x << 1
        if rng.random() < 0.1:
            w = w & ~(0x1F << 1) | 2 << 1  # addpcis
    elif op == 4:
        w = w & ~0x3F | rng.choice((48, 49, 51))
    elif op in (16, 18) and rng.random() < 0.5:
        w = w & ~0xFFFC | (rng.randrange(-64, 64) * 4) & 0xFFFC
    return w & 0xFFFFFFFF


def random_register_file(rng: random.Random, word: int | None = None) -> dict[str, int]:
    """A pt_regs register file (gpr0..31, ctr, link, xer, ccr) with edge values, pointers
    into :data:`BUF`, and (for loads/stores) the base register aimed at the buffer."""
    from kpatch_arch.ppc64le.emulate import XER_IMPLEMENTED, effective_address

    def val() -> int:
        k = rng.random()
        if k < 0.35:
            return rng.getrandbits(64)
        if k < 0.55:
            return rng.randint(0, 70)
        if k < 0.65:
            return rng.choice((MASK64, 1 << 63, (1 << 63) - 1, 0x80000000, 0x7FFFFFFF,
                               0xFFFFFFFF, 0xFFFFFFFF80000000, 0x100000000))
        if k < 0.8:
            return (rng.getrandbits(32) ^ (MASK64 << 32 if rng.random() < 0.5 else 0)) & MASK64
        return BUF + rng.randrange(0, BUF_SIZE)
    regs = {f"gpr{r}": val() for r in range(32)}
    regs["ctr"] = rng.choice((0, 1, 2, rng.getrandbits(64), rng.randint(0, 5)))
    regs["link"] = rng.getrandbits(64) if rng.random() < 0.7 else rng.randint(0, 1 << 20) * 4
    regs["xer"] = rng.getrandbits(32) & XER_IMPLEMENTED
    regs["ccr"] = rng.getrandbits(32)
    if word is not None and rng.random() < 0.85:
        ea = effective_address(word, regs)
        if ea is not None and ea[1]:
            size = 1 << rng.randint(0, 3)
            target = BUF + rng.randrange(0, BUF_SIZE - 256) // size * size + (
                rng.randint(1, 3) if rng.random() < 0.1 else 0)
            regs[f"gpr{ea[1]}"] = (regs[f"gpr{ea[1]}"] + target - ea[0]) & MASK64
    return regs


TIME_BASE_SPRS = frozenset({268, 269})  # mftb/mftbu: differ between two runs
LE_MULTIPLE_XO = frozenset({533, 597, 661, 725})  # lswx lswi stswx stswi (and lmw/stmw)


def prove_single_step(examples: list[tuple[bytes, Mapping[str, int]]], buffer: bytes,
                      batch: int = 250) -> tuple[dict[str, int], list[dict]] | None:
    """The slot copy run like the kernel single-steps it (at :data:`SLOT_SITE`, then NIP =
    addr + len as kprobe_post_handler sets it) against the original at :data:`SITE`, many
    examples per qemu process: same signal, NIP, 32 GPRs, CTR, LR, XER, CR and buffer.
    Every example starts with the FP, VMX and VSX registers zero.
    lmw/stmw/lsw*/stsw* are not run (little-endian: an alignment interrupt qemu-user
    aborts on; emulate_step emulates them in the kernel anyway).
    Returns (counts ``ok`` / ``faulted`` (both runs faulted on the instruction: equal, but it
    never executed) / ``nondeterministic`` / ``oracle-le-multiple`` / ``oracle-crash`` /
    ``DIVERGED``,
    divergences); None without qemu."""
    import collections
    counts: collections.Counter = collections.Counter()
    diverged: list[dict] = []
    runs = []
    for insn, regs in examples:
        word = int.from_bytes(insn[:4], "little")
        spr = ((word >> 16) & 0x1F) | ((word >> 6) & 0x3E0)
        if word >> 26 in (46, 47) or word >> 26 == 31 and (word >> 1) & 0x3FF in LE_MULTIPLE_XO:
            counts["oracle-le-multiple"] += 1  # qemu-user aborts on their LE alignment trap
            continue
        if word >> 26 == 31 and ((word >> 1) & 0x3FF == 371 or
                                 (word >> 1) & 0x3FF == 339 and spr in TIME_BASE_SPRS):
            counts["nondeterministic"] += 1
            continue
        runs.append((insn, regs))
    for i in range(0, len(runs), batch):
        chunk = runs[i:i + batch]
        todo = [x for c in chunk for x in ((c[0], c[1], SITE), (c[0], c[1], SLOT_SITE))]
        res = qemu_batch_robust(todo, buffer)
        if res is None:
            return None
        for j, (insn, regs) in enumerate(chunk):
            a, b = res[2 * j], res[2 * j + 1]
            if a is None or b is None:
                counts["oracle-crash"] += 1
                continue
            n = 8 if is_prefixed(int.from_bytes(insn[:4], "little")) else 4
            nip_b = b["gregs"][G_NIP]
            # kprobe_post_handler fixes NIP only when the step ended at slot + len (NIP =
            # addr + len); kprobe_fault_handler (KPROBE_HIT_SS) points a step that faulted back
            # at the probe address; anywhere else NIP stays where the slot copy sent it
            if nip_b == SLOT_SITE + n:
                nip_b = SITE + n
            elif nip_b == SLOT_SITE and b["sig"] not in (0, None):
                nip_b = SITE
            ga, gb = list(a["gregs"]), list(b["gregs"])
            gb[G_NIP] = nip_b
            keep = [*range(32), G_NIP, G_CTR, G_LINK, G_XER, G_CCR]
            diff: dict[str, object] = {GREG_NAMES[k]: (hex(ga[k]), hex(gb[k])) for k in keep
                                       if ga[k] != gb[k]}
            if a["sig"] != b["sig"]:
                diff["sig"] = (a["sig"], b["sig"])
            if a["buf"] != b["buf"]:
                diff["memory"] = True
            if diff:
                counts["DIVERGED"] += 1
                d = {"insn": insn.hex(), "diff": diff}
                if set(diff) == {"link"} and b["gregs"][G_LINK] == SLOT_SITE + n:
                    d["note"] = ("LR = slot + 4: a branch-and-link emulate_step declines "
                                 "(bctarl) ran out of line; the kernel's real behaviour")
                diverged.append(d)
            elif a["gregs"][G_NIP] == SITE and a["sig"] not in (0, None):
                counts["faulted"] += 1  # the original faulted on itself: it never executed
            else:
                counts["ok"] += 1
    return dict(counts), diverged


# --- the optprobe detour buffer run under qemu -----------------------------------------------
# optprobes_head.S with the Debian 6.1 ppc64le asm-offsets (checked against the real vmlinux's
# template by tests when it is cached): INT_FRAME_SIZE 784, STACK_FRAME_OVERHEAD 112,
# PACAIRQSOFTMASK 2354, PACATOC 16.
TEMPLATE_OFFSETS_6_1 = {"int_frame": 784, "overhead": 112, "paca_softmask": 2354, "paca_toc": 16}
MFMSR_R5, MTMSR_R5 = 0x7CA000A6, 0x7CA00124
USER_MSR = 0x1033  # what the user-mode run substitutes for mfmsr (privileged under qemu-user)


def template_from_source(int_frame: int = 784, overhead: int = 112, paca_softmask: int = 2354,
                         paca_toc: int = 16) -> tuple[list[int], dict[str, int]]:
    """optprobe_template_entry..end as [arch/powerpc/kernel/optprobes_head.S] assembles on
    ppc64: (words, symbol -> word index)."""
    from kpatch_arch.ppc64le import NOP
    pt = overhead  # pt_regs in the frame

    def st(r: int, off: int) -> int:
        return _ds(r, 1, off, 62)

    def ld(r: int, off: int) -> int:
        return _ds(r, 1, off)
    w = [_ds(1, 1, -int_frame, 62, 1), st(0, pt), _d(14, 0, 1, int_frame), st(0, pt + 8)]
    w += [st(r, pt + 8 * r) for r in range(2, 32)]  # SAVE_GPRS(2, 31)
    w += [MFMSR_R5, st(5, pt + 264), _li(5, 0x700), st(5, pt + 320), _li(5, 0),
          st(5, pt + 272), st(5, pt + 344), _x31(5, 9, 0, 339), st(5, pt + 280),
          _x31(5, 8, 0, 339), st(5, pt + 288), _x31(5, 1, 0, 339), st(5, pt + 296),
          _x31(5, 0, 0, 19), st(5, pt + 304),
          _d(34, 5, 13, paca_softmask), st(5, pt + 312), _ds(2, 13, paca_toc)]
    sym = {"optprobe_template_entry": 0, "optprobe_template_op_address": len(w)}
    w += [NOP] * 5 + [_d(14, 4, 1, pt)]
    sym["optprobe_template_call_handler"] = len(w)
    w += [NOP, _d(14, 3, 1, pt)]
    sym["optprobe_template_insn"] = len(w)
    w += [NOP] * 5
    sym["optprobe_template_call_emulate"] = len(w)
    w += [NOP, ld(5, pt + 264), MTMSR_R5, ld(5, pt + 280), _mtspr(9, 5), ld(5, pt + 288),
          _mtspr(8, 5), ld(5, pt + 296), _mtspr(1, 5), ld(5, pt + 304),
          _x31(5, 0, 0, 144) | 0xFF << 12,  # mtcr r5 (mtcrf 0xff)
          ld(0, pt)]
    w += [ld(r, pt + 8 * r) for r in range(2, 32)]  # REST_GPRS(2, 31)
    w += [_d(14, 1, 1, int_frame)]
    sym["optprobe_template_ret"] = len(w)
    w += [NOP]
    sym["optprobe_template_end"] = len(w)
    return w, sym


class TemplateImage:
    """The few Image facts build_detour reads (``symtab.value``, ``read``), for running a
    detour buffer in user space."""

    def __init__(self, words: list[int], sym: Mapping[str, int], at: int,
                 extra: Mapping[str, int]) -> None:
        self._mem = (at, _words(words))
        self._sym = {k: at + 4 * v for k, v in sym.items()} | dict(extra)
        self.symtab = self

    def value(self, name: str) -> int | None:
        return self._sym.get(name)

    def read(self, addr: int, n: int) -> bytes:
        at, blob = self._mem
        return blob[addr - at:addr - at + n] if at <= addr <= at + len(blob) - n else b""


DETOUR_PROBE = SITE  # the probed address (its word becomes ``b buff``)
DETOUR_BUFF = SITE_PAGE + 0x1000
DETOUR_CALLBACK = SITE_PAGE + 0x2000  # optimized_callback stub
DETOUR_EMULATE = SITE_PAGE + 0x2100  # emulate_step stub
DETOUR_TEMPLATE = SITE_PAGE + 0x3000  # where the fake image keeps the template (not run)
DETOUR_STACK = BUF + 0xF80  # r1: the frame is BUF+0xC70..0xF80
DETOUR_PACA = BUF + 0x240  # r13: PACATOC at +16, PACAIRQSOFTMASK at +2354 (BUF+0xB72)
CALLBACK_REC, EMULATE_REC = BUF, BUF + 0x200


def _stubs(marker: int | None) -> tuple[list[int], list[int]]:
    """optimized_callback(op, regs): records r3, r4 and the 48 pt_regs doublewords at
    CALLBACK_REC.  emulate_step(regs, insn): records r3, r4 at EMULATE_REC and, with
    ``marker``, stores it into regs->gpr[7] (an effect the restore must carry back)."""
    cb = [*imm64_load(CALLBACK_REC, 11), _ds(3, 11, 0, 62), _ds(4, 11, 8, 62), _li(12, 48),
          _mtspr(9, 12), _d(14, 12, 4, -8), _d(14, 11, 11, 8),
          ("L", "l"), _ds(0, 12, 8, 58, 1), _ds(0, 11, 8, 62, 1), ("bc", 16, 0, "l"), 0x4E800020]
    em = [*imm64_load(EMULATE_REC, 11), _ds(3, 11, 0, 62), _ds(4, 11, 8, 62)]
    if marker is not None:
        em += [_li(0, marker), _ds(0, 3, 8 * 7, 62)]
    em += [_li(3, 1), 0x4E800020]  # returns 1: emulated
    return _assemble(cb, DETOUR_CALLBACK), _assemble(em, DETOUR_EMULATE)


def run_detour(template: tuple[list[int], Mapping[str, int]], insn: bytes,
               regs: Mapping[str, int], op: int = DEFAULT_OP, marker: int | None = None,
               buffer: bytes | None = None) -> dict | None:
    """Build the detour for ``insn`` probed at :data:`DETOUR_PROBE` from ``template``
    (words, symbol -> index) with :func:`build_detour`, write the ``b buff`` at the probe,
    and run it under qemu from ``regs`` (r1 and r13 are set to a stack and a paca in the
    buffer) with stub optimized_callback/emulate_step.  The two privileged words (mfmsr r5,
    mtmsr r5) are replaced by ``li r5, USER_MSR`` / nop.  Returns {"regs" (the start
    registers), "end" (gregs at the next stop), "sig", "callback": (r3, r4, pt_regs words),
    "emulate": (r3, r4), "buff", "code"}; None without qemu."""
    import struct
    words, sym = template
    img = TemplateImage(words, sym, DETOUR_TEMPLATE,
                        {"optinsn_slot": DETOUR_BUFF, "optimized_callback": DETOUR_CALLBACK,
                         "emulate_step": DETOUR_EMULATE})
    built = build_detour(img, DETOUR_PROBE, insn, op=op)  # type: ignore[arg-type]
    if not isinstance(built, tuple):
        raise ValueError(f"build_detour refused: {built}")
    buff, code, jump = built
    ws = [int.from_bytes(code[i:i + 4], "little") for i in range(0, len(code), 4)]
    ws = [_li(5, USER_MSR) if w == MFMSR_R5 else 0x60000000 if w == MTMSR_R5 else w for w in ws]
    cb, em = _stubs(marker)
    regs = dict(regs)
    regs["gpr1"], regs["gpr13"] = DETOUR_STACK, DETOUR_PACA
    buf = bytes(buffer) if buffer is not None else bytes(BUF_SIZE)
    res = qemu_batch([(jump + b"\0" * 4, regs, DETOUR_PROBE)], buf,
                     preload={buff: _words(ws), DETOUR_CALLBACK: _words(cb),
                              DETOUR_EMULATE: _words(em)})
    if res is None:
        return None
    r = res[0]
    out = r["buf"]
    c3, c4 = struct.unpack_from("<QQ", out, CALLBACK_REC - BUF)
    ptr = struct.unpack_from("<48Q", out, CALLBACK_REC - BUF + 16)
    e3, e4 = struct.unpack_from("<QQ", out, EMULATE_REC - BUF)
    return {"regs": regs, "end": r["gregs"], "sig": r["sig"], "callback": (c3, c4, ptr),
            "emulate": (e3, e4), "buff": buff, "code": code, "buffer": buf}
