"""uprobe verdict values: the kernel's answer for one uprobe, and our own warnings.

The kernel's checks come in two places [kernel/events/uprobes.c]: ``__uprobe_register`` (when
the uprobe_events line is written or the perf/BPF link is made: offset within the file, aligned)
and ``prepare_uprobe`` (when the breakpoint is installed into a process that maps the file:
``copy_insn``, ``is_trap_insn``, ``arch_uprobe_analyze_insn``).  The kernel never checks that
the offset starts an instruction: a breakpoint in the middle of one is accepted and corrupts the
probed process.  :class:`Warning` values are our own checks, kept apart from the verdict.
"""
from __future__ import annotations

import enum

import attrs

# (errno, kernel function, one-line text)
_UREASONS: dict[str, tuple[str, str, str]] = {
    # the tool's own resolution (perf/bpftrace/libbpf before the kernel sees the probe)
    "NO_SYMBOL": ("ENOENT", "elf_resolve_syms_offsets", "no such symbol in .symtab/.dynsym"),
    "NOT_MAPPED": ("EINVAL", "elf_sym_offset", "address is in no PT_LOAD segment of the file"),
    "NO_USDT": ("ENOENT", "collect_usdt_targets", "no such USDT probe in .note.stapsdt"),
    # __uprobe_register / uprobe_register
    "OFFSET_BEYOND_FILE": ("EINVAL", "__uprobe_register", "offset > i_size_read(inode)"),
    "OFFSET_MISALIGNED": ("EINVAL", "__uprobe_register",
                          "offset not aligned to UPROBE_SWBP_INSN_SIZE"),
    "REF_CTR_MISALIGNED": ("EINVAL", "__uprobe_register",
                           "ref_ctr_offset not aligned to sizeof(short)"),
    # prepare_uprobe
    "NO_INSN": ("EIO", "copy_insn", "no byte of the file at the offset (offset == file size)"),
    "TRAP_INSN": ("ENOTSUPP", "prepare_uprobe", "is_trap_insn: the offset holds a trap instruction"),
    # arch_uprobe_analyze_insn
    "UNDECODABLE": ("ENOEXEC", "uprobe_init_insn", "insn_decode failed"),
    "BAD_PREFIX": ("ENOTSUPP", "is_prefix_bad", "ES/CS/SS/DS segment or LOCK prefix"),
    "MASKING_EXCEPTION": ("ENOTSUPP", "insn_masking_exception", "mov to SS / pop SS"),
    "BAD_OPCODE": ("ENOTSUPP", "uprobe_init_insn", "opcode not in good_insns_64/good_2byte_insns"),
    "BRANCH_OPSIZE": ("ENOTSUPP", "branch_setup_xol_ops", "0x66 prefix on a call/jmp/jcc"),
    "MISALIGNED": ("EINVAL", "arch_uprobe_analyze_insn", "address not aligned to the instruction size"),
    "REJECTED": ("EINVAL", "arch_uprobe_analyze_insn",
                 "the decoder rejects the instruction (neither steppable nor simulated)"),
    "PREFIXED_CROSSES_64B": ("EINVAL", "arch_uprobe_analyze_insn",
                             "prefixed instruction crosses a 64-byte boundary"),
    "CANNOT_SINGLE_STEP": ("ENOTSUPP", "can_single_step",
                           "instruction cannot be single-stepped (rfid, mtmsr, sc, trap...)"),
}

class UReason(str, enum.Enum):
    """Why a uprobe is refused: one member per rule (kernel or tool); see ``_UREASONS``."""

    NO_SYMBOL = "NO_SYMBOL"
    NOT_MAPPED = "NOT_MAPPED"
    NO_USDT = "NO_USDT"
    OFFSET_BEYOND_FILE = "OFFSET_BEYOND_FILE"
    OFFSET_MISALIGNED = "OFFSET_MISALIGNED"
    REF_CTR_MISALIGNED = "REF_CTR_MISALIGNED"
    NO_INSN = "NO_INSN"
    TRAP_INSN = "TRAP_INSN"
    UNDECODABLE = "UNDECODABLE"
    BAD_PREFIX = "BAD_PREFIX"
    MASKING_EXCEPTION = "MASKING_EXCEPTION"
    BAD_OPCODE = "BAD_OPCODE"
    BRANCH_OPSIZE = "BRANCH_OPSIZE"
    MISALIGNED = "MISALIGNED"
    REJECTED = "REJECTED"
    PREFIXED_CROSSES_64B = "PREFIXED_CROSSES_64B"
    CANNOT_SINGLE_STEP = "CANNOT_SINGLE_STEP"


assert {r.value for r in UReason} == set(_UREASONS)

# kernel errno values a user sees from the write(2) or perf_event_open(2)
ERRNO_VALUES = {"ENOENT": 2, "EIO": 5, "ENOEXEC": 8, "EINVAL": 22, "ENOTSUPP": 524}


def ureason_errno(r: UReason) -> str:
    """The errno name (``ENOTSUPP`` is the kernel's 524, shown as 'Unknown error 524')."""
    return _UREASONS[r.value][0]


def ureason_function(r: UReason) -> str:
    """The kernel (or tool) function the rule lives in."""
    return _UREASONS[r.value][1]


def ureason_text(r: UReason) -> str:
    """One line a user can read."""
    return _UREASONS[r.value][2]


class UMethod(enum.Enum):
    """How the kernel runs the probed instruction after the breakpoint hits."""

    EMULATE = "emulate"  # arch_uprobe_skip_sstep: x86 branch/push ops, s390 RIL, ppc emulate_step
    SIMULATE = "simulate"  # arm64/riscv auprobe->simulate: simulate_*() in the handler
    XOL = "xol"  # copied to the XOL slot and single-stepped there
    EMULATE_OR_XOL = "emulate_or_xol"  # ppc: emulate_step at hit time, else single-stepped


class WarningKind(enum.Enum):
    """Our own checks: the kernel accepts, the process suffers."""

    NOT_BOUNDARY = "NOT_BOUNDARY"  # inside an instruction of its function: corrupts the process
    UNDECODABLE_FUNCTION = "UNDECODABLE_FUNCTION"  # the walk from the symbol start fails before it
    OUTSIDE_FUNCTION = "OUTSIDE_FUNCTION"  # in no function symbol: boundary unknown
    NOT_EXECUTABLE = "NOT_EXECUTABLE"  # in a non-executable segment: the breakpoint is never hit
    NOT_LOADED = "NOT_LOADED"  # in no PT_LOAD segment: no mapping, never installed


@attrs.frozen
class UWarning:
    """One of our warnings with its detail."""

    kind: WarningKind
    detail: str = ""


@attrs.frozen
class Analysis:
    """``arch_uprobe_analyze_insn`` accepted: how the instruction runs and what the arch keeps.

    ``ops`` names the kernel's ops (``branch_xol_ops``, ``push_xol_ops``, ``default_xol_ops``,
    ``simulate_b_bl``...), ``fixups`` the post-XOL fixups (x86 ``UPROBE_FIX_*``, s390
    ``FIXUP_*``), ``ixol`` the instruction bytes as rewritten for the slot (x86 riprel)."""

    method: UMethod
    length: int
    mnemonic: str = ""
    ops: str = ""
    fixups: tuple[str, ...] = ()
    ixol: bytes = b""
    scratch: str | None = None  # x86 riprel scratch register (pt_regs name)


@attrs.frozen
class URefusal:
    """A refusal with its rule and detail."""

    reason: UReason
    detail: str = ""


@attrs.frozen
class UprobeVerdict:
    """The kernel's answer for one uprobe target, plus our warnings.

    >>> v = check_uprobe(elf, "/bin/ls:main")           # doctest: +SKIP
    >>> v.ok, v.method, v.warnings                        # doctest: +SKIP
    (True, <UMethod.XOL: 'xol'>, ())
    """

    target: str
    kind: str
    ok: bool
    offset: int | None = None
    vaddr: int | None = None
    symbol: str | None = None  # function+offset
    reason: UReason | None = None
    detail: str = ""
    method: UMethod | None = None
    ops: str = ""
    insn: bytes = b""
    mnemonic: str = ""
    ref_ctr_offset: int = 0
    rules: str = ""
    warnings: tuple[UWarning, ...] = ()
    xol: bytes = b""

    @property
    def errno(self) -> str | None:
        return None if self.ok or self.reason is None else ureason_errno(self.reason)

    @property
    def safe(self) -> bool:
        """Accepted and no warning of ours: the probe neither fails nor corrupts."""
        return self.ok and not self.warnings

    def to_json(self) -> dict:
        """A JSON-ready dict (``kpatch-analyze uprobe --json``)."""
        return {
            "target": self.target, "kind": self.kind, "ok": self.ok, "errno": self.errno,
            "errno_value": ERRNO_VALUES.get(self.errno or "", None),
            "reason": self.reason.value if self.reason else None,
            "kernel_function": ureason_function(self.reason) if self.reason else None,
            "why": (ureason_text(self.reason) + (f" ({self.detail})" if self.detail else ""))
            if self.reason else None,
            "offset": None if self.offset is None else hex(self.offset),
            "vaddr": None if self.vaddr is None else hex(self.vaddr),
            "symbol": self.symbol, "method": self.method.value if self.method else None,
            "ops": self.ops or None, "insn": self.insn.hex() or None,
            "mnemonic": self.mnemonic or None,
            "ref_ctr_offset": hex(self.ref_ctr_offset) if self.ref_ctr_offset else None,
            "rules": self.rules,
            "warnings": [{"kind": w.kind.value, "detail": w.detail} for w in self.warnings],
            "xol": self.xol.hex() or None,
        }
