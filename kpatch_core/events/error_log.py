"""kprobe_events error reporting: the error_log messages and limits of kernel/trace/trace_probe.h
(the ``ERRORS`` table) and ``trace_probe_log`` (kernel/trace/trace_probe.c), which records where
in the command a parse step failed.

The table is the newest verified kernel's; an id that a kernel lacks is tied to the named feature
that added it (:data:`ERROR_FEATURES`), so :func:`error_messages` gives each kernel's table.

>>> error_messages(FeatureSet.decide((6, 1)))["BAD_VAR"]
'Invalid $-valiable specified'
"""
from __future__ import annotations

import attrs

from ..features import VERIFIED, FeatureSet

# --- limits  [kernel/trace/trace_probe.h, trace.h, trace_kprobe.c] -----------------------------
MAX_TRACE_ARGS = 128
MAX_ARGSTR_LEN = 63  # 255 with EVENTS_ARGSTR_LEN_255 (max_argstr_len)
MAX_ARGSTR_LEN_255 = 255
TRACEPROBE_MAX_NESTED_LEVEL = 8  # EVENTS_NESTED_PARSE_STATES
MAX_ARRAY_LEN = 64
MAX_ARG_NAME_LEN = 32
MAX_PROBE_EVENT_SIZE = 3072
MAX_BTF_ARGS_LEN = 128
MAX_EVENT_NAME_LEN = 64
FETCH_INSN_MAX = 16
KRETPROBE_MAXACTIVE_MAX = 4096
WRITE_BUFSIZE = 4096  # trace_parse_run_command: a line holds at most WRITE_BUFSIZE - 2 bytes
RESERVED_FIELD_NAMES = ("common_type", "common_flags", "common_preempt_count", "common_pid",
                        "common_tgid", "__probe_ip", "__probe_ret_ip", "__probe_func")

# errno of each failing kernel call that the parser passes through
EINVAL, ERANGE, ENOENT, E2BIG, EOPNOTSUPP = "EINVAL", "ERANGE", "ENOENT", "E2BIG", "EOPNOTSUPP"

# errno names as other tools spell them -> ours (Linux defines ENOTSUP as EOPNOTSUPP; Python's
# errno.errorcode[95], which kernel-oracle prints, is 'ENOTSUP')
ERRNO_ALIASES = {"ENOTSUP": EOPNOTSUPP}


def errno_name(name: str | None) -> str | None:
    """``name`` as this package spells the errno (``ENOTSUP`` -> ``EOPNOTSUPP``)."""
    return ERRNO_ALIASES.get(name, name) if name is not None else None


# --- error_log messages  [trace_probe.h: ERRORS], 7.3.4 -------------------------------------------
ERRORS: dict[str, str] = {
    "FILE_NOT_FOUND": "Failed to find the given file",
    "NO_REGULAR_FILE": "Not a regular file",
    "BAD_REFCNT": "Invalid reference counter offset",
    "REFCNT_OPEN_BRACE": "Reference counter brace is not closed",
    "BAD_REFCNT_SUFFIX": "Reference counter has wrong suffix",
    "BAD_UPROBE_OFFS": "Invalid uprobe offset",
    "BAD_MAXACT_TYPE": "Maxactive is only for function exit",
    "BAD_MAXACT": "Invalid maxactive number",
    "MAXACT_TOO_BIG": "Maxactive is too big",
    "BAD_PROBE_ADDR": "Invalid probed address or symbol",
    "NON_UNIQ_SYMBOL": "The symbol is not unique",
    "BAD_RETPROBE": "Retprobe address must be an function entry",
    "NO_TRACEPOINT": "Tracepoint is not found",
    "BAD_TP_NAME": "Invalid character in tracepoint name",
    "BAD_ADDR_SUFFIX": "Invalid probed address suffix",
    "NO_GROUP_NAME": "Group name is not specified",
    "GROUP_TOO_LONG": "Group name is too long",
    "BAD_GROUP_NAME": "Group name must follow the same rules as C identifiers",
    "NO_EVENT_NAME": "Event name is not specified",
    "EVENT_TOO_LONG": "Event name is too long",
    "BAD_EVENT_NAME": "Event name must follow the same rules as C identifiers",
    "EVENT_EXIST": "Given group/event name is already used by another event",
    "RETVAL_ON_PROBE": "$retval is not available on probe",
    "NO_RETVAL": "This function returns 'void' type",
    "BAD_STACK_NUM": "Invalid stack number",
    "BAD_ARG_NUM": "Invalid argument number",
    "BAD_VAR": "Invalid $-variable specified",
    "BAD_REG_NAME": "Invalid register name",
    "BAD_MEM_ADDR": "Invalid memory address",
    "BAD_IMM": "Invalid immediate value",
    "IMMSTR_NO_CLOSE": "String is not closed with '\"'",
    "FILE_ON_KPROBE": "File offset is not available for kernel probes",
    "BAD_FILE_OFFS": "Invalid file offset value",
    "SYM_ON_UPROBE": "Symbol is not available with uprobe",
    "TOO_MANY_OPS": "Dereference is too much nested",
    "DEREF_NEED_BRACE": "Dereference needs a brace",
    "BAD_DEREF_OFFS": "Invalid dereference offset",
    "DEREF_OPEN_BRACE": "Dereference brace is not closed",
    "COMM_CANT_DEREF": "$comm can not be dereferenced",
    "BAD_FETCH_ARG": "Invalid fetch argument",
    "ARRAY_NO_CLOSE": "Array is not closed",
    "BAD_ARRAY_SUFFIX": "Array has wrong suffix",
    "BAD_ARRAY_NUM": "Invalid array size",
    "ARRAY_TOO_BIG": "Array number is too big",
    "BAD_TYPE": "Unknown type is specified",
    "BAD_STRING": "String accepts only memory argument",
    "BAD_SYMSTRING": "Symbol String doesn't accept data/userdata",
    "BAD_BITFIELD": "Invalid bitfield",
    "ARG_NAME_TOO_LONG": "Argument name is too long",
    "NO_ARG_NAME": "Argument name is not specified",
    "BAD_ARG_NAME": "Argument name must follow the same rules as C identifiers",
    "USED_ARG_NAME": "This argument name is already used",
    "ARG_TOO_LONG": "Argument expression is too long",
    "NO_ARG_BODY": "No argument expression",
    "BAD_INSN_BNDRY": "Probe point is not an instruction boundary",
    "FAIL_REG_PROBE": "Failed to register probe event",
    "DIFF_PROBE_TYPE": "Probe type is different from existing probe",
    "DIFF_ARG_TYPE": "Argument type or name is different from existing probe",
    "SAME_PROBE": "There is already the exact same probe event",
    "NO_EVENT_INFO": "This requires both group and event name to attach",
    "BAD_ATTACH_EVENT": "Attached event does not exist",
    "BAD_ATTACH_ARG": "Attached event does not have this field",
    "NO_EP_FILTER": "No filter rule after 'if'",
    "NOSUP_BTFARG": "BTF is not available or not supported",
    "NO_BTFARG": "This variable is not found at this probe point",
    "NO_BTF_ENTRY": "No BTF entry for this probe point",
    "BAD_VAR_ARGS": "$arg* must be an independent parameter without name etc.",
    "NOFENTRY_ARGS": "$arg* can be used only on function entry or exit",
    "DOUBLE_ARGS": "$arg* can be used only once in the parameters",
    "ARGS_2LONG": "$arg* failed because the argument list is too long",
    "ARGIDX_2BIG": "$argN index is too big",
    "NO_PTR_STRCT": "This is not a pointer to union/structure.",
    "NOSUP_DAT_ARG": "Non pointer structure/union argument is not supported.",
    "BAD_HYPHEN": "Failed to parse single hyphen. Forgot '>'?",
    "NO_BTF_FIELD": "This field is not found.",
    "BAD_BTF_TID": "Failed to get BTF type info.",
    "BAD_TYPE4STR": "This type does not fit for string.",
    "NEED_STRING_TYPE": "$comm and immediate-string only accepts string type",
    "EVENT_TOO_BIG": "Event too big (too many fields?)",
    "TYPECAST_NOT_EVENT": "Typecasts are only for eprobe fields",
    "NO_EVENT_FIELD": "This event field is not found.",
    "NOSUP_PERCPU": "Per-cpu variable access is only for kernel probes",
    "TOO_MANY_NESTED": "Too many nested typecasts/dereferences",
    "TYPECAST_BAD_ARROW": "Typecast field option does not support -> operator",
    "TYPECAST_NOT_ALIGNED": "Typecast field option is not byte-aligned",
    "TYPECAST_REQ_FIELD": "Typecast requires a field access",
    "TYPECAST_SYM_OFFSET": "@SYM+/-OFFSET with typecast needs parentheses",
}

# ids added by a named feature (a kernel without the feature has no such id)
ERROR_FEATURES: dict[str, str] = {
    "BAD_MAXACT_TYPE": "EVENTS_BAD_MAXACT_TYPE",
    **dict.fromkeys(("NO_TRACEPOINT", "BAD_TP_NAME"), "EVENTS_FPROBE_TRACEPOINT_ERRORS"),
    **dict.fromkeys(("NO_RETVAL", "NOSUP_BTFARG", "NO_BTFARG", "NO_BTF_ENTRY", "NO_PTR_STRCT",
                     "NOSUP_DAT_ARG", "BAD_HYPHEN", "NO_BTF_FIELD", "BAD_BTF_TID", "BAD_TYPE4STR"),
                    "KPROBE_EVENTS_BTF_ARGS"),
    **dict.fromkeys(("BAD_VAR_ARGS", "NOFENTRY_ARGS", "DOUBLE_ARGS", "ARGS_2LONG", "ARGIDX_2BIG"),
                    "EVENTS_META_ARGS"),
    "NEED_STRING_TYPE": "EVENTS_COMM_NEEDS_STRING_TYPE",
    "TYPECAST_NOT_EVENT": "EVENTS_EPROBE_TYPECAST",
    "TOO_MANY_NESTED": "EVENTS_NESTED_PARSE_STATES",
    "NOSUP_PERCPU": "EVENTS_THIS_CPU",
    **dict.fromkeys(("NO_EVENT_FIELD", "TYPECAST_BAD_ARROW", "TYPECAST_NOT_ALIGNED",
                     "TYPECAST_REQ_FIELD", "TYPECAST_SYM_OFFSET"), "EVENTS_KPROBE_TYPECAST"),
}
# what a kernel without EVENTS_BAD_MAXACT_TYPE logs for 'pN' instead of BAD_MAXACT_TYPE
MAXACT_NO_KPROBE = ("MAXACT_NO_KPROBE", "Maxactive is not for kprobe")
BAD_VAR_BEFORE_FIX = "Invalid $-valiable specified"  # without ERRORS_BAD_VAR_SPELLING_FIXED
FILE_ON_KPROBE_BEFORE = "File offset is not available with kprobe"  # 7.2 and before


def error_messages(features: FeatureSet) -> dict[str, str]:
    """The ERRORS table (id -> message) of a kernel with ``features``."""
    out = {k: v for k, v in ERRORS.items()
           if k not in ERROR_FEATURES or features.has(ERROR_FEATURES[k])}
    if not features.has("EVENTS_BAD_MAXACT_TYPE"):
        out[MAXACT_NO_KPROBE[0]] = MAXACT_NO_KPROBE[1]
    if not features.has("ERRORS_BAD_VAR_SPELLING_FIXED"):
        out["BAD_VAR"] = BAD_VAR_BEFORE_FIX
    if not features.has("ERRORS_FILE_ON_KPROBE_KERNEL_PROBES"):
        out["FILE_ON_KPROBE"] = FILE_ON_KPROBE_BEFORE
    return out


def max_argstr_len(features: FeatureSet) -> int:
    """MAX_ARGSTR_LEN of a kernel with ``features``: the longest fetch argument body."""
    return MAX_ARGSTR_LEN_255 if features.has("EVENTS_ARGSTR_LEN_255") else MAX_ARGSTR_LEN


# the tables of the verified kernels, by rule-set label ({"6.1": ..., "6.12": ...})
MESSAGES: dict[str, dict[str, str]] = {
    fs.rules: error_messages(fs) for fs in (FeatureSet.decide(v) for v in VERIFIED)}


@attrs.frozen
class EventError:
    """Why the kernel refuses a kprobe_events line: the error_log entry and the write's errno.

    ``log_id`` is None when the kernel logs nothing (``-ECANCELED``, ``-EEXIST`` from a name
    clash, the 6.1 ``$comm`` type check, too many arguments...).
    """

    errno: str
    log_id: str | None = None
    message: str | None = None
    caret: int | None = None  # the kernel's ``pos`` under the echoed command
    command: str = ""  # argv joined with single spaces, as error_log echoes it
    detail: str = ""

    def error_log(self) -> list[str]:
        """The three error_log lines (without the timestamp), or [] when nothing is logged."""
        if self.log_id is None:
            return []
        return [f"trace_kprobe: error: {self.message}", f"  Command: {self.command}",
                " " * (11 + (self.caret or 0)) + "^"]

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return {"errno": self.errno, "log_id": self.log_id, "message": self.message,
                "caret": self.caret, "command": self.command, "detail": self.detail or None}


class ParseFailure(Exception):
    """A parse step failed: the errno the write returns (the error_log entry is already logged)."""

    def __init__(self, errno: str) -> None:
        self.errno = errno


class TraceProbeLog:
    """``trace_probe_log``: the command being parsed, the argv index being parsed, and the
    entries ``trace_probe_log_err`` recorded; :meth:`error` is what error_log shows."""

    def __init__(self, messages: dict[str, str]) -> None:
        self.messages = messages
        self._log: list[tuple[int, int, str]] = []
        self._argv: list[str] = []
        self._index = 0

    def trace_probe_log_init(self, argv: list[str]) -> None:
        """Start a new command."""
        self._log, self._argv, self._index = [], argv, 0

    def trace_probe_log_set_index(self, index: int) -> None:
        """The argv index later errors point into."""
        self._index = index

    def trace_probe_log_err(self, offset: int, log_id: str) -> None:
        """``trace_probe_log_err(offset, id)`` at the current argv index."""
        assert log_id in self.messages, log_id
        self._log.append((self._index, offset, log_id))

    def fail(self, offset: int, log_id: str, errno: str = EINVAL) -> ParseFailure:
        """Log ``log_id`` at ``offset`` and return the failure to raise."""
        self.trace_probe_log_err(offset, log_id)
        return ParseFailure(errno)

    def error(self, errno: str) -> EventError:
        """The write's error: ``errno`` and the newest error_log entry (the one shown last)."""
        command = " ".join(self._argv)
        if not self._log:
            return EventError(errno, command=command)
        index, offset, log_id = self._log[-1]
        if index >= len(self._argv):
            pos = sum(len(a) + 1 for a in self._argv)
        else:
            pos = sum(len(a) + 1 for a in self._argv[:index]) + offset
        return EventError(errno, log_id, self.messages[log_id], pos, command)
