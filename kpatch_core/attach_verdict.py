"""Verdicts for the attach types beside kprobes: fentry/fexit, fprobe events, kprobe_multi.

An :class:`AttachVerdict` prints like a kprobe :class:`~kpatch_core.verdict.Verdict` (same
``check`` text line and ``check --json`` fields) plus ``attach`` and ``spelling``, and for
kprobe_multi the symbols that fail the attach.  Its reasons are an enum of kernel rules, each
with the errno the attaching tool sees and the kernel function it comes from
(``ENOTSUPP`` is the kernel-internal 524 that libbpf prints as "Unknown error 524").

>>> AttachReason.DENY_LIST.errno, AttachReason.DENY_LIST.kernel_function
('EINVAL', 'check_attach_btf_id')
"""
from __future__ import annotations

import enum
from typing import Any

import attrs


class AttachReason(enum.Enum):
    """Why the kernel (or the loader before it) refuses an fentry/fprobe/kprobe_multi attach."""

    # (errno, kernel function, one-line text)
    NO_BTF_FUNC = ("ESRCH", "find_kernel_btf_id (libbpf) / bpf_check_attach_target",
                   ("no BTF FUNC of this name in vmlinux BTF (inlined, a compiler clone, or "
                   "dropped by pahole): the loader finds no attach_btf_id"))
    NO_BTF = ("ESRCH", "bpf_get_btf_vmlinux", "the image has no .BTF (CONFIG_DEBUG_INFO_BTF off)")
    BTF_TOO_MANY_ARGS = ("EINVAL", "btf_distill_func_proto",
                         "more than MAX_BPF_FUNC_ARGS (12) arguments")
    BTF_VARARGS = ("EINVAL", "btf_distill_func_proto", "function with variable arguments")
    BTF_RET_TYPE = ("EINVAL", "btf_distill_func_proto",
                    "return type is a struct/union or not int, enum or pointer")
    BTF_ARG_TYPE = ("EINVAL", "btf_distill_func_proto",
                    "argument is not int, enum, pointer or a struct of at most 16 bytes")
    BTF_RET_SIZE = ("EOPNOTSUPP", "bpf_check_attach_target",
                    "return value larger than 8 bytes (fexit/fmod_ret read it)")
    NO_ADDRESS = ("ENOENT", "bpf_check_attach_target",
                  "kallsyms_lookup_name finds no address for the BTF function")
    NOT_MODIFIABLE = ("EINVAL", "check_attach_modify_return",
                      ("fmod_ret needs an ALLOW_ERROR_INJECTION function (without "
                      "CONFIG_FUNCTION_ERROR_INJECTION on 7.x: a syscall entry) or a security_ "
                      "hook"))
    NOT_SLEEPABLE = ("EINVAL", "btf_id_allow_sleepable / check_attach_sleepable",
                     ("a sleepable program (.s) needs an ALLOW_ERROR_INJECTION function not on "
                     "btf_non_sleepable_error_inject (without CONFIG_FUNCTION_ERROR_INJECTION "
                     "on 7.x: a syscall entry)"))
    LSM_NOT_SLEEPABLE = ("EINVAL", "btf_id_allow_sleepable / bpf_lsm_is_sleepable_hook",
                         "a sleepable LSM program (lsm.s) needs a hook in sleepable_lsm_hooks")
    LSM_DISABLED_HOOK = ("EINVAL", "bpf_lsm_verify_prog",
                         "the LSM hook is on bpf_lsm_disabled_hooks")
    LSM_NOT_A_HOOK = ("EINVAL", "bpf_lsm_verify_prog",
                      "bpf_lsm_<name> is not an LSM hook (not in bpf_lsm_hooks)")
    DENY_LIST = ("EINVAL", "check_attach_btf_id",
                 "function is on the verifier's btf_id_deny list")
    NORETURN_DENY = ("EINVAL", "check_attach_btf_id",
                     "fexit/fmod_ret on a __noreturn function (noreturn_deny)")
    NO_DIRECT_CALLS = ("ENOTSUPP", "register_fentry",
                       "the kernel has no DYNAMIC_FTRACE_WITH_DIRECT_CALLS (no trampoline fops)")
    NO_FTRACE_LOCATION = ("ENOTSUPP", "register_fentry / bpf_arch_text_poke",
                          ("function has no ftrace location at its entry (notrace/noinstr): "
                          "the trampoline cannot be attached by ftrace, and the arch refuses "
                          "to patch the entry directly"))
    ENTRY_CPU_ALTERNATIVE = ("EBUSY", "bpf_arch_text_poke / apply_alternatives",
                             ("function has no ftrace location and its entry is a CPU-feature "
                             "alternative: boot patching leaves there the NOP the arch patches "
                             "only on a CPU with the feature (-EBUSY without it)"))
    TRAMPOLINE_ARGS = ("ENOTSUPP", "arch_prepare_bpf_trampoline",
                       "more argument registers than the arch trampoline saves")
    TRAMPOLINE_STRUCT_ARGS = ("ENOTSUPP", "arch_prepare_bpf_trampoline",
                              "struct passed by value: the arch trampoline does not support it")
    MULTI_NO_FPROBE = ("EOPNOTSUPP", "bpf_kprobe_multi_link_attach",
                       "kernel built without CONFIG_FPROBE (kprobe_multi is a stub)")
    MULTI_NOT_FOUND = ("ESRCH", "ftrace_lookup_symbols",
                       "symbol(s) without a kallsyms address that has an ftrace location")
    MULTI_NO_MATCH = ("ENOENT", "attach_kprobe_multi (libbpf)", "pattern matches no function")
    MULTI_TOO_MANY = ("E2BIG", "bpf_kprobe_multi_link_attach",
                      "more than MAX_KPROBE_MULTI_CNT (1 << 20) symbols")
    FPROBE_EVENTS_MISSING = ("EINVAL", "create_dyn_event",
                             ("kernel has no fprobe events (CONFIG_FPROBE_EVENTS, 6.7+): every "
                             "dynamic_events handler answers -ECANCELED to 'f'"))
    FPROBE_NO_MATCH = ("EINVAL", "register_fprobe / ftrace_set_filter",
                       "no ftrace record matches the symbol (missing, or notrace)")

    @property
    def errno(self) -> str:
        """The errno name the tool sees."""
        return self.value[0]

    @property
    def kernel_function(self) -> str:
        """Where the rule lives."""
        return self.value[1]

    @property
    def text(self) -> str:
        """One line a user can read."""
        return self.value[2]


# error_log messages of dynamic_events for fprobe events  [kernel/trace/trace_probe.h: ERRORS]
_FPROBE_LOG = {"EINVAL": "Failed to register probe event", "ENOENT": "Invalid probed address or symbol"}


@attrs.frozen
class AttachVerdict:
    """The kernel's answer for one fentry/fexit, fprobe event or kprobe_multi target.

    >>> v = AttachVerdict("fentry/vfs_read", "p", "fentry", True, address=0xffffffff81000000)
    >>> v.to_json()["attach"], v.to_json()["ok"]
    ('fentry', True)
    """

    target: str
    kind: str  # "p" entry, "r" return
    attach: str
    ok: bool
    address: int | None = None
    symbol: str | None = None
    reason: AttachReason | None = None
    errno: str | None = None
    detail: str = ""
    spelling: str = ""
    rules: str = ""
    failed: tuple[str, ...] = ()  # kprobe_multi: the symbols that fail the attach
    count: int = 0  # kprobe_multi: symbols in the attach
    method: None = None  # printed like Verdict.method
    flags: tuple[str, ...] = ()

    @property
    def message(self) -> str | None:
        """The error_log line for an fprobe event; '<attach> attach refused' otherwise (the
        reason's text is in ``why``)."""
        if self.ok or self.reason is None:
            return None
        if self.attach in ("fprobe", "fprobe_return") and \
                self.reason != AttachReason.FPROBE_EVENTS_MISSING:
            return _FPROBE_LOG.get(self.errno or "", self.reason.text)
        return f"{self.attach} attach refused"

    def to_json(self) -> dict[str, Any]:
        """The ``check --json`` schema of a kprobe verdict, plus ``attach``, ``spelling`` and
        (kprobe_multi) ``count`` and ``failed``."""
        out: dict[str, Any] = {
            "target": self.target,
            "kind": self.kind,
            "ok": self.ok,
            "errno": None if self.ok else self.errno,
            "message": self.message,
            "reason": self.reason.name if self.reason else None,
            "kernel_function": self.reason.kernel_function if self.reason else None,
            "why": (self.reason.text + (f" ({self.detail})" if self.detail else ""))
            if self.reason else None,
            "address": None if self.address is None else hex(self.address),
            "symbol": self.symbol,
            "method": None,
            "flags": list(self.flags),
            "on_func_entry": self.ok,
            "insn": None,
            "mnemonic": None,
            "rules": self.rules,
            "attach": self.attach,
            "spelling": self.spelling,
        }
        if self.attach in ("kprobe_multi", "kretprobe_multi"):
            out["count"] = self.count
            out["failed"] = list(self.failed)
        return out


def refuse(target: str, kind: str, attach: str, reason: AttachReason, detail: str = "", *,
           spelling: str = "", rules: str = "", address: int | None = None,
           symbol: str | None = None, errno: str | None = None,
           flags: tuple[str, ...] = ()) -> AttachVerdict:
    """An :class:`AttachVerdict` refusing with ``reason`` (its errno unless ``errno`` is given)."""
    return AttachVerdict(target, kind, attach, False, address=address, symbol=symbol,
                         reason=reason, errno=errno or reason.errno, detail=detail,
                         spelling=spelling, rules=rules, flags=flags)
