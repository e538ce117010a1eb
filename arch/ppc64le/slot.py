"""ppc64le out-of-line execution: the instruction slot.

[arch/powerpc/kernel/kprobes.c: arch_prepare_kprobe] allocates a slot for every probe on
ppc64 and ``patch_instruction`` copies the (4- or 8-byte prefixed) instruction unchanged.  On a
hit ``try_to_emulate`` runs ``emulate_step`` first; only when it declines is the slot copy
single-stepped with MSR_SE, after which ``kprobe_post_handler`` sets NIP to ``addr + len``.
No relocation happens: PC-relative instructions are ones emulate_step always handles.

Not here (yet): an executor (unicorn has no little-endian PPC64 and its 64-bit PPC is broken;
the oracle would be qemu-ppc64le) and emulate_step's effects.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from kpatch_core.slot import Effect, ReadMem, Slot
from kpatch_core.verdict import Execution, Method, Refusal

from . import INSN_SIZE, PREFIXED_SIZE, is_prefixed

if TYPE_CHECKING:
    from kpatch_core.image import Image

    from . import Ppc64leBackend

# module_alloc on book3s64: the vmalloc/module region (ioremap/vmalloc base 0xc008...)
MODULE_SLOT_DEFAULT = 0xC008000000000000
SLOT_SIZE = 8  # kprobe_insn_slots.insn_size: MAX_INSN_SIZE (2) * sizeof(kprobe_opcode_t)


def default_slot_addr(image: "Image | None" = None) -> int:
    """The first insn slot page (module_alloc'd)."""
    return MODULE_SLOT_DEFAULT


def build_slot(backend: "Ppc64leBackend", execution: Execution, addr: int,
               slot_addr: int) -> Slot | Refusal:
    """``patch_instruction(p->ainsn.insn, insn)``: the unchanged copy (also for instructions
    emulate_step handles: the slot exists, it is only used when emulation declines)."""
    word = int.from_bytes(execution.insn[:4], "little")
    n = PREFIXED_SIZE if is_prefixed(word) else INSN_SIZE
    insn = execution.insn[:n]
    note = ("emulate_step first; the copy is single-stepped (MSR_SE) only if it declines"
            if execution.method == Method.EMULATE else "single-stepped with MSR_SE")
    return Slot(addr, slot_addr, insn, insn, execution.method, addr + n, None,
                execution.mnemonic, note)


def simulate(backend: "Ppc64leBackend", insn: bytes, addr: int, regs: Mapping[str, int],
             read: ReadMem) -> Effect:
    """emulate_step is not modelled yet."""
    raise NotImplementedError("ppc64le emulate_step effects are not modelled")


# --- optprobes: the detour buffer [arch/powerpc/kernel/optprobes.c: arch_prepare_optimized_kprobe]
BRANCH_RANGE = (-0x2000000, 0x1FFFFFC)  # is_offset_in_branch_range
DEFAULT_OP = 0xC000000002000000  # stand-in for the kmalloc'd struct optimized_kprobe
TEMPLATE_SYMBOLS = ("optprobe_template_entry", "optprobe_template_op_address",
                    "optprobe_template_call_handler", "optprobe_template_insn",
                    "optprobe_template_call_emulate", "optprobe_template_ret",
                    "optprobe_template_end")


def _addis(rt: int, ra: int, imm: int) -> int:  # PPC_RAW_LIS = addis rt, 0, imm
    return 0x3C000000 | rt << 21 | ra << 16 | (imm & 0xFFFF)


def _ori(ra: int, rs: int, imm: int, shifted: bool = False) -> int:  # PPC_RAW_ORI / ORIS
    return (0x64000000 if shifted else 0x60000000) | rs << 21 | ra << 16 | (imm & 0xFFFF)


def _sldi(ra: int, rs: int, n: int) -> int:  # PPC_RAW_SLDI = rldicr ra, rs, n, 63 - n
    me = 63 - n
    return (0x78000004 | rs << 21 | ra << 16 | (n & 0x1F) << 11 | (n & 0x20) >> 4
            | (me & 0x1F) << 6 | (me & 0x20))


def imm64_load(val: int, reg: int) -> list[int]:
    """``patch_imm64_load_insns``: lis/ori/sldi/oris/ori loading ``val`` into ``reg``."""
    return [_addis(reg, 0, val >> 48), _ori(reg, reg, val >> 32), _sldi(reg, reg, 32),
            _ori(reg, reg, val >> 16, shifted=True), _ori(reg, reg, val)]


def branch(at: int, to: int, link: bool = False) -> int | None:
    """``create_branch``: I-form ``b``/``bl``; None when out of range."""
    off = to - at
    if not BRANCH_RANGE[0] <= off <= BRANCH_RANGE[1] or off & 3:
        return None
    return 0x48000000 | (off & 0x3FFFFFC) | (1 if link else 0)


def next_nip(word: int, addr: int) -> int:
    """``can_optimize``'s nip (analyse_instr + emulate_update_regs on a REGS-class, not
    conditional instruction): the I-form branch target, else ``addr + 4``."""
    if word >> 26 == 18:  # b / ba / bl / bla
        li = word & 0x3FFFFFC
        li = li - (1 << 26) if li & 0x2000000 else li
        return (li if word & 2 else addr + li) & ((1 << 64) - 1)
    return addr + 4


def build_detour(image: "Image", addr: int, insn: bytes, op: int = DEFAULT_OP,
                 slot: int | None = None) -> tuple[int, bytes, bytes] | Refusal:
    """The detour buffer for an optimizable probe at ``addr``: (buffer address, buffer bytes,
    the ``b buff`` written at ``addr`` by arch_optimize_kprobes); a refusal (-ERANGE) when
    the buffer or the return is out of branch range."""
    from kpatch_core.verdict import Reason
    sym = {n: image.symtab.value(n) for n in TEMPLATE_SYMBOLS}
    if any(v is None for v in sym.values()):
        return Refusal(Reason.UNDECODABLE, "no optprobe template in the image")
    entry = sym["optprobe_template_entry"]

    def idx(n: str) -> int:
        return (sym[n] - entry) // 4
    buff = image.symtab.value("optinsn_slot") if slot is None else slot
    if buff is None:
        return Refusal(Reason.UNDECODABLE, "no optinsn_slot")
    word = int.from_bytes(insn[:4], "little")
    nip = next_nip(word, addr)
    ret_at = buff + 4 * idx("optprobe_template_ret")
    if branch(addr, buff) is None or branch(ret_at, nip) is None:
        return Refusal(Reason.RIP_DISP_RANGE, "detour or return out of branch range (-ERANGE)")
    words = [int.from_bytes(image.read(entry + 4 * i, 4), "little")
             for i in range(idx("optprobe_template_end"))]

    def put(i: int, ws: list[int]) -> None:
        words[i:i + len(ws)] = ws
    put(idx("optprobe_template_op_address"), imm64_load(op, 3))
    cb = image.symtab.value("optimized_callback")
    em = image.symtab.value("emulate_step")
    ch = branch(buff + 4 * idx("optprobe_template_call_handler"), cb or 0, link=True)
    ce = branch(buff + 4 * idx("optprobe_template_call_emulate"), em or 0, link=True)
    if ch is None or ce is None:
        return Refusal(Reason.RIP_DISP_RANGE, "optimized_callback/emulate_step out of range")
    put(idx("optprobe_template_call_handler"), [ch])
    put(idx("optprobe_template_call_emulate"), [ce])
    put(idx("optprobe_template_insn"), imm64_load(word, 4))  # ppc_inst_as_ulong
    put(idx("optprobe_template_ret"), [branch(ret_at, nip)])
    code = b"".join(w.to_bytes(4, "little") for w in words)
    return buff, code, branch(addr, buff).to_bytes(4, "little")


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
