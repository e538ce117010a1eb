"""Verdict values: why the kernel accepts or refuses a probe, and how it runs it.

A :class:`Verdict` is what ``register_kprobe()`` plus the kprobe_events layer would say about one
target.  Rejections carry a :class:`Reason` (the kernel rule, its errno and the kernel function
it comes from); accepted probes carry a :class:`Method` (how the probed instruction executes).
"""
from __future__ import annotations

import enum

import attrs


class Method(enum.Enum):
    """How the kernel executes the probed instruction after the breakpoint hits."""

    FTRACE = "ftrace"  # arch_prepare_kprobe_ftrace: no breakpoint, the ftrace call site
    BOOST = "boost"  # x86 can_boost: slot ends in a jmp back, no second trap
    SINGLESTEP = "singlestep"  # copied to an out-of-line slot, stepped there
    EMULATE = "emulate"  # x86 prepare_emulation / ppc emulate_step: done in the handler
    SIMULATE = "simulate"  # arm64/riscv simulate_*: done in the handler, no slot


# (errno, kprobe_events error_log id, kernel function, one-line text)
_REASONS: dict[str, tuple[str, str, str, str]] = {
    # kprobe_events / perf / BPF layer  [kernel/trace/trace_kprobe.c]
    "NO_SYMBOL": ("ENOENT", "BAD_PROBE_ADDR", "validate_probe_symbol", "symbol not in kallsyms"),
    "NON_UNIQUE_SYMBOL": ("EADDRNOTAVAIL", "NON_UNIQ_SYMBOL", "validate_probe_symbol",
                          "symbol name is not unique in kallsyms"),
    "RETPROBE_NOT_ENTRY": ("EINVAL", "BAD_RETPROBE", "__trace_kprobe_create",
                           "return probe is not at the function entry"),
    "NOTRACE": ("EINVAL", "FAIL_REG_PROBE", "within_notrace_func",
                "function has no ftrace record (notrace)"),
    # generic kprobes core  [kernel/kprobes.c]
    "NOT_IN_KALLSYMS": ("ENOENT", "BAD_PROBE_ADDR", "_kprobe_addr",
                        "address is not inside any kallsyms symbol"),
    "FTRACE_SITE": ("EINVAL", "FAIL_REG_PROBE", "check_ftrace_location",
                    "address is an ftrace call site and the kernel has no KPROBES_ON_FTRACE"),
    "NOT_TEXT": ("EINVAL", "FAIL_REG_PROBE", "check_kprobe_address_safe",
                 "address is outside [_stext, _etext)"),
    "BLACKLIST_NOKPROBE": ("EINVAL", "FAIL_REG_PROBE", "within_kprobe_blacklist",
                           "function is on the NOKPROBE_SYMBOL list"),
    "BLACKLIST_AREA": ("EINVAL", "FAIL_REG_PROBE", "within_kprobe_blacklist",
                       "address is in a blacklisted text area"),
    "BLACKLIST_SUFFIX": ("EINVAL", "FAIL_REG_PROBE", "within_kprobe_blacklist",
                         "the base function of this compiler clone is blacklisted"),
    "JUMP_LABEL": ("EINVAL", "FAIL_REG_PROBE", "jump_label_text_reserved",
                   "address is inside a jump-label site"),
    "STATIC_CALL": ("EINVAL", "FAIL_REG_PROBE", "static_call_text_reserved",
                    "address is inside a static-call site"),
    "BUG_SITE": ("EINVAL", "FAIL_REG_PROBE", "find_bug", "address is a BUG()/WARN() trap"),
    "CFI_PREAMBLE": ("EINVAL", "FAIL_REG_PROBE", "is_cfi_preamble_symbol",
                     "address is in a __cfi_/__pfx_ preamble"),
    "KRETPROBE_BLACKLIST": ("EINVAL", "FAIL_REG_PROBE", "register_kretprobe",
                            "function is on the kretprobe blacklist"),
    # architecture decoders  [arch/*/kernel/kprobes*]
    "NOT_BOUNDARY": ("EILSEQ", "BAD_INSN_BNDRY", "can_probe",
                     "address is not an instruction boundary"),
    "MISALIGNED": ("EINVAL", "FAIL_REG_PROBE", "arch_prepare_kprobe",
                   "address is not aligned to the instruction size"),
    "UNDECODABLE": ("EINVAL", "FAIL_REG_PROBE", "arch_prepare_kprobe",
                    "instruction cannot be decoded"),
    "PROHIBITED_INSN": ("EINVAL", "FAIL_REG_PROBE", "arch_prepare_kprobe",
                        "instruction is one the kernel refuses to probe"),
    "EMULATE_UNSUPPORTED": ("EOPNOTSUPP", "FAIL_REG_PROBE", "prepare_emulation",
                            "instruction can neither be stepped nor emulated"),
    "BREAKPOINT_INSN": ("EINVAL", "FAIL_REG_PROBE", "__copy_instruction",
                        "address already holds a breakpoint instruction"),
    "EXCEPTION_INSN": ("EILSEQ", "BAD_INSN_BNDRY", "is_exception_insn",
                       "instruction raises an exception (INT/UD)"),
    "RIP_DISP_RANGE": ("EINVAL", "FAIL_REG_PROBE", "__copy_instruction",
                       "RIP-relative displacement does not fit the slot"),
    "INSN_TOO_LONG": ("ENOSPC", "FAIL_REG_PROBE", "prepare_singlestep",
                      "no room for the trailing breakpoint in the slot"),
    "EXTABLE": ("EINVAL", "FAIL_REG_PROBE", "arch_prepare_kprobe",
                "instruction has an exception-table fixup"),
    "EXCLUSIVE_WINDOW": ("EINVAL", "FAIL_REG_PROBE", "is_probed_address_atomic",
                         "address is inside a load/store-exclusive sequence"),
    "PREFIX_SUFFIX": ("EINVAL", "FAIL_REG_PROBE", "arch_prepare_kprobe",
                      "address is the suffix word of a prefixed instruction"),
}

class Reason(str, enum.Enum):
    """Why the kernel refuses a probe: one member per kernel rule (a row of ``_REASONS``)."""

    NO_SYMBOL = "NO_SYMBOL"
    NON_UNIQUE_SYMBOL = "NON_UNIQUE_SYMBOL"
    RETPROBE_NOT_ENTRY = "RETPROBE_NOT_ENTRY"
    NOTRACE = "NOTRACE"
    NOT_IN_KALLSYMS = "NOT_IN_KALLSYMS"
    FTRACE_SITE = "FTRACE_SITE"
    NOT_TEXT = "NOT_TEXT"
    BLACKLIST_NOKPROBE = "BLACKLIST_NOKPROBE"
    BLACKLIST_AREA = "BLACKLIST_AREA"
    BLACKLIST_SUFFIX = "BLACKLIST_SUFFIX"
    JUMP_LABEL = "JUMP_LABEL"
    STATIC_CALL = "STATIC_CALL"
    BUG_SITE = "BUG_SITE"
    CFI_PREAMBLE = "CFI_PREAMBLE"
    KRETPROBE_BLACKLIST = "KRETPROBE_BLACKLIST"
    NOT_BOUNDARY = "NOT_BOUNDARY"
    MISALIGNED = "MISALIGNED"
    UNDECODABLE = "UNDECODABLE"
    PROHIBITED_INSN = "PROHIBITED_INSN"
    EMULATE_UNSUPPORTED = "EMULATE_UNSUPPORTED"
    BREAKPOINT_INSN = "BREAKPOINT_INSN"
    EXCEPTION_INSN = "EXCEPTION_INSN"
    RIP_DISP_RANGE = "RIP_DISP_RANGE"
    INSN_TOO_LONG = "INSN_TOO_LONG"
    EXTABLE = "EXTABLE"
    EXCLUSIVE_WINDOW = "EXCLUSIVE_WINDOW"
    PREFIX_SUFFIX = "PREFIX_SUFFIX"


assert [r.value for r in Reason] == list(_REASONS), "Reason and _REASONS must list the same rules"


def reason_errno(reason: Reason) -> str:
    """The errno name the kernel returns for ``reason``; e.g. ``reason_errno(Reason.NOT_BOUNDARY)`` -> ``'EILSEQ'``."""
    return _REASONS[reason.value][0]


def reason_log_id(reason: Reason) -> str:
    """The kprobe_events error_log id for ``reason`` (``BAD_INSN_BNDRY``, ``FAIL_REG_PROBE``...)."""
    return _REASONS[reason.value][1]


def reason_kernel_function(reason: Reason) -> str:
    """The kernel function the rule comes from."""
    return _REASONS[reason.value][2]


def reason_text(reason: Reason) -> str:
    """One line of text a user can read."""
    return _REASONS[reason.value][3]


# kprobe_events error_log messages  [kernel/trace/trace_probe.h: ERRORS]
LOG_MESSAGES: dict[str, str] = {
    "BAD_PROBE_ADDR": "Invalid probed address or symbol",
    "NON_UNIQ_SYMBOL": "The symbol is not unique",
    "BAD_RETPROBE": "Retprobe address must be an function entry",
    "BAD_INSN_BNDRY": "Probe point is not an instruction boundary",
    "FAIL_REG_PROBE": "Failed to register probe event",
}


@attrs.frozen
class Refusal:
    """An architecture hook's refusal: the rule and a detail (e.g. the mnemonic)."""

    reason: Reason
    detail: str = ""
    errno: str | None = None  # overrides the reason's default errno (e.g. s390 mid-insn EINVAL)


@attrs.frozen
class Execution:
    """An architecture hook's acceptance: how the instruction runs, and what it is."""

    method: Method
    insn: bytes = b""
    mnemonic: str = ""
    boostable: bool = False


@attrs.frozen
class Verdict:
    """The kernel's answer for one probe target.

    >>> v = check(image, "vfs_read")          # doctest: +SKIP
    >>> v.ok, v.method, v.flags                # doctest: +SKIP
    (True, <Method.FTRACE: 'ftrace'>, ('FTRACE',))
    """

    target: str
    kind: str  # "p" or "r"
    ok: bool
    address: int | None = None
    symbol: str | None = None  # kallsyms name+offset of the resolved address
    reason: Reason | None = None
    errno: str | None = None
    detail: str = ""
    method: Method | None = None
    flags: tuple[str, ...] = ()
    on_func_entry: bool = False
    insn: bytes = b""
    mnemonic: str = ""
    rules: str = ""  # which kernel rule set decided ("6.1" / "6.12")
    rules_exact: bool = True  # the kernel's version lies within the verified ones (features.py)
    deferred: bool = False  # MOD:SYM of a module not given: registered when the module loads

    @property
    def message(self) -> str | None:
        """The kprobe_events error_log message the kernel would print, or None when accepted."""
        if self.ok or self.reason is None:
            return None
        log = reason_log_id(self.reason)
        if log == "BAD_INSN_BNDRY" and self.errno != "EILSEQ":
            log = "FAIL_REG_PROBE"  # __trace_kprobe_create logs BAD_INSN_BNDRY for -EILSEQ only
        return LOG_MESSAGES[log]

    def to_json(self) -> dict:
        """A JSON-ready dict (the ``check --json`` schema)."""
        return {
            "target": self.target,
            "kind": self.kind,
            "ok": self.ok,
            "errno": None if self.ok else self.errno,
            "message": self.message,
            "reason": self.reason.value if self.reason else None,
            "kernel_function": reason_kernel_function(self.reason) if self.reason else None,
            "why": (reason_text(self.reason) + (f" ({self.detail})" if self.detail else ""))
            if self.reason else (self.detail if self.deferred else None),
            "address": None if self.address is None else hex(self.address),
            "symbol": self.symbol,
            "method": self.method.value if self.method else None,
            "flags": list(self.flags),
            "on_func_entry": self.on_func_entry,
            "insn": self.insn.hex() if self.insn else None,
            "mnemonic": self.mnemonic or None,
            "deferred": self.deferred,
            "rules": self.rules,
            "rules_exact": self.rules_exact,
        }
