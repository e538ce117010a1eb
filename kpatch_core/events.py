"""kprobe_events definitions: parse, validate and resolve a line as the kernel would.

``EventSet(env).write(line)`` answers what ``echo 'LINE' >> kprobe_events`` does on the kernel of
``env`` (an image, its backend, its BTF): the same checks in the same order as
kernel/trace/trace_kprobe.c ``__trace_kprobe_create`` and kernel/trace/trace_probe.c
(``traceprobe_parse_event_name``, ``traceprobe_expand_meta_args``, ``traceprobe_parse_probe_arg``,
``parse_probe_arg``, ``parse_probe_vars``, ``parse_btf_arg``, ``finalize_fetch_insn``), with the
rule set of the image's version ("6.1" or "6.12").  A refusal is an :class:`EventError` carrying
the kernel's error_log id and message, the errno of the write and the caret position; the probe
point itself is decided by :func:`kpatch_core.probe.check`.

>>> s = EventSet(ImageEnv(Image.open("vmlinux")))           # doctest: +SKIP
>>> r = s.write("p vfs_read %none_reg")                     # doctest: +SKIP
>>> r.error.log_id, r.error.caret, r.error.errno            # doctest: +SKIP
('BAD_REG_NAME', 11, 'EINVAL')
"""
from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Protocol

import attrs

from .btf import INT, PTR, STRUCT, UNION, Btf, BtfType, FuncProto
from .target import Target
from .verdict import Reason, Verdict

if TYPE_CHECKING:
    from kpatch_arch.base import Backend

    from .image import Image

# --- limits  [kernel/trace/trace_probe.h, trace.h, trace_kprobe.c] -----------------------------
MAX_TRACE_ARGS = 128
MAX_ARGSTR_LEN = 63
MAX_ARRAY_LEN = 64
MAX_ARG_NAME_LEN = 32
MAX_PROBE_EVENT_SIZE = 3072
MAX_BTF_ARGS_LEN = 128
MAX_EVENT_NAME_LEN = 64
FETCH_INSN_MAX = 16
KRETPROBE_MAXACTIVE_MAX = 4096
WRITE_BUFSIZE = 4096  # trace_parse_run_command: a line holds at most WRITE_BUFSIZE - 2 bytes
UINT_MAX = 0xFFFFFFFF
ULONG_MAX = (1 << 64) - 1
LONG_MAX = (1 << 63) - 1
RESERVED_FIELD_NAMES = ("common_type", "common_flags", "common_preempt_count", "common_pid",
                        "common_tgid", "__probe_ip", "__probe_ret_ip", "__probe_func")

# --- error_log messages  [trace_probe.h: ERRORS], 6.12.107 --------------------------------------
MESSAGES_612: dict[str, str] = {
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
    "FILE_ON_KPROBE": "File offset is not available with kprobe",
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
}
_ONLY_612 = frozenset({"BAD_MAXACT_TYPE", "NO_TRACEPOINT", "BAD_TP_NAME", "NO_RETVAL", "NOSUP_BTFARG",
                       "NO_BTFARG", "NO_BTF_ENTRY", "BAD_VAR_ARGS", "NOFENTRY_ARGS", "DOUBLE_ARGS",
                       "ARGS_2LONG", "ARGIDX_2BIG", "NO_PTR_STRCT", "NOSUP_DAT_ARG", "BAD_HYPHEN",
                       "NO_BTF_FIELD", "BAD_BTF_TID", "BAD_TYPE4STR", "NEED_STRING_TYPE"})
# 6.1.176: no BTF/tracepoint ids, MAXACT_NO_KPROBE instead of BAD_MAXACT_TYPE, and its spelling
MESSAGES_61: dict[str, str] = {
    **{k: v for k, v in MESSAGES_612.items() if k not in _ONLY_612},
    "MAXACT_NO_KPROBE": "Maxactive is not for kprobe",
    "BAD_VAR": "Invalid $-valiable specified",
}
MESSAGES = {"6.1": MESSAGES_61, "6.12": MESSAGES_612}

# --- fetch types  [trace_probe.c: probe_fetch_types]: name -> (size, is_string, is_signed) -------
# strings are __data_loc u32 fields that the format file marks signed
_FETCH_TYPES_61: dict[str, tuple[int, bool, bool]] = {
    "string": (4, True, True), "ustring": (4, True, True), "symstr": (4, True, True),
    **{f"{s}{b}": (b // 8, False, s == "s") for s in "usx" for b in (8, 16, 32, 64)},
    "symbol": (8, False, False),
}
FETCH_TYPES = {"6.1": _FETCH_TYPES_61, "6.12": {**_FETCH_TYPES_61, "char": (1, False, False)}}
DEFAULT_FETCH_TYPE = "u64"  # u<BITS_PER_LONG>

# errno of each failing kernel call that the parser passes through
EINVAL, ERANGE, ENOENT, E2BIG, EOPNOTSUPP = "EINVAL", "ERANGE", "ENOENT", "E2BIG", "EOPNOTSUPP"


# --- kernel string helpers (lib/kstrtox.c, lib/vsprintf.c) ----------------------------------------
def _radix(s: str, base: int) -> tuple[str, int]:
    """``_parse_integer_fixup_radix``."""
    if base == 0:
        if s[:1] == "0":
            base = 16 if s[1:2].lower() == "x" and s[2:3] and s[2] in "0123456789abcdefABCDEF" else 8
        else:
            base = 10
    if base == 16 and s[:2].lower() == "0x":
        s = s[2:]
    return s, base


def _digits(s: str, base: int) -> int:
    """How many leading characters of ``s`` are digits in ``base``."""
    n = 0
    for ch in s:
        v = int(ch, 36) if ch.isascii() and ch.isalnum() else 99
        if v >= base:
            break
        n += 1
    return n


def kstrtoull(s: str, base: int = 0) -> tuple[int | None, str]:
    """``kstrtoull``: (value, "") or (None, errno); a leading '+' is allowed."""
    if s.startswith("+"):
        s = s[1:]
    s, base = _radix(s, base)
    n = _digits(s, base)
    if n == 0 or s[n:] not in ("", "\n"):
        return None, EINVAL
    v = int(s[:n], base)
    if v > ULONG_MAX:
        return None, ERANGE
    return v, ""


def kstrtoul(s: str, base: int = 0) -> tuple[int | None, str]:
    """``kstrtoul`` (64-bit)."""
    return kstrtoull(s, base)


def kstrtouint(s: str, base: int = 0) -> tuple[int | None, str]:
    """``kstrtouint``."""
    v, err = kstrtoull(s, base)
    if v is not None and v > UINT_MAX:
        return None, ERANGE
    return v, err


def kstrtol(s: str, base: int = 0) -> tuple[int | None, str]:
    """``kstrtol`` (64-bit long)."""
    if s.startswith("-"):
        v, err = kstrtoull(s[1:], base)
        if v is None:
            return None, err
        if v > LONG_MAX + 1:
            return None, ERANGE
        return -v, ""
    v, err = kstrtoull(s, base)
    if v is not None and v > LONG_MAX:
        return None, ERANGE
    return v, err


def simple_strtoul(s: str, base: int = 0) -> tuple[int, int]:
    """``simple_strtoul``: (value, index of the first unparsed character)."""
    rest, base = _radix(s, base)
    skipped = len(s) - len(rest)
    n = _digits(rest, base)
    return (int(rest[:n], base) & ULONG_MAX if n else 0), skipped + n


def is_good_name(name: str) -> bool:
    """``is_good_name``: a C identifier."""
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name))


def is_good_system_name(name: str) -> bool:
    """``is_good_system_name``: like a C identifier, with '-' allowed."""
    return bool(re.fullmatch(r"[A-Za-z_-][A-Za-z0-9_-]*", name))


# --- results ---------------------------------------------------------------------------------------
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


@attrs.frozen
class FetchArg:
    """One parsed fetch argument: name, type and how it reads its value on this architecture."""

    name: str
    comm: str  # the argument body as written (the kernel's ``parg->comm``)
    type: str  # fetch type name ('u64', 'string', 'b4@4/32' keeps its bitfield text)
    type_id: str  # identity the kernel compares for multi-probe events ('u32' for b4@4/32)
    count: int  # array length, 0 if not an array
    fetch: str  # the fetch program with this arch's register names, e.g. '+0(%si)'
    ops: tuple[str, ...]  # the kernel's fetch_insn ops, e.g. ('ARG', 'DEREF', 'ST_STRING')
    btf: str = ""  # the BTF parameter it came from, e.g. 'char *buf' (6.12)
    symbols: tuple[str, ...] = ()  # @SYM[+|-OFFS] texts, resolved at registration

    def to_json(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class ProbeEvent:
    """A kprobe event as the kernel would hold it after the line is accepted."""

    group: str
    event: str
    is_return: bool
    maxactive: int
    symbol: str | None  # as written, module prefix included
    offset: int
    address: int | None
    args: tuple[FetchArg, ...]
    on_func_entry: bool | None
    verdict: Verdict | None

    @property
    def place(self) -> str:
        """``trace_kprobe_match_command_head``'s text for the probe point."""
        if self.symbol is None:
            return f"0x{self.address or 0:x}"
        return f"{self.symbol}+{self.offset}" if self.offset else self.symbol

    def readback(self) -> str:
        """The line ``cat kprobe_events`` would show (maxactive as given; the kernel prints its
        default, max(10, 2 * CPUs), when none was given)."""
        head = ("r" + (str(self.maxactive) if self.maxactive else "")) if self.is_return else "p"
        return " ".join([f"{head}:{self.group}/{self.event}", self.place,
                         *(f"{a.name}={a.comm}" for a in self.args)])

    def resolved(self) -> str:
        """The definition with every argument written as this architecture fetches it."""
        head = ("r" + (str(self.maxactive) if self.maxactive else "")) if self.is_return else "p"
        return " ".join([f"{head}:{self.group}/{self.event}", self.place,
                         *(f"{a.name}={a.fetch}" + _type_suffix(a) for a in self.args)])

    def to_json(self) -> dict:
        return {"group": self.group, "event": self.event, "is_return": self.is_return,
                "maxactive": self.maxactive, "symbol": self.symbol, "offset": self.offset,
                "address": None if self.address is None else hex(self.address),
                "on_func_entry": self.on_func_entry, "readback": self.readback(),
                "resolved": self.resolved(), "args": [a.to_json() for a in self.args],
                "probe": self.verdict.to_json() if self.verdict else None}


def _type_suffix(a: FetchArg) -> str:
    return (f":{a.type}" if a.type != DEFAULT_FETCH_TYPE else "") + (f"[{a.count}]" if a.count else "")


@attrs.frozen
class EventResult:
    """The kernel's answer to one written line."""

    line: str
    ok: bool
    op: str  # 'create', 'delete', 'empty'
    event: ProbeEvent | None = None
    error: EventError | None = None
    rules: str = ""
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """A JSON-ready dict (the ``event --json`` schema)."""
        return {"line": self.line, "ok": self.ok, "op": self.op, "rules": self.rules,
                "event": self.event.to_json() if self.event else None,
                "error": self.error.to_json() if self.error else None, "notes": list(self.notes)}


# --- what the parser asks of the kernel image ------------------------------------------------------
@attrs.frozen
class PlaceInfo:
    """What the kprobes core says about a probe point, at the moments the parser asks.

    ``entry`` is ``kprobe_on_func_entry``: True (0), False (-EINVAL) or None (-ENOENT).
    ``parse_error`` is a refusal before the event name is parsed (``validate_probe_symbol`` /
    ``number_of_same_symbols`` / ``BAD_RETPROBE``) as (log id, errno).  ``notrace`` and
    ``register_errno`` come from registration, after every argument parsed.
    """

    entry: bool | None
    parse_error: tuple[str, str] | None = None
    notrace: bool = False
    register_errno: str | None = None
    verdict: Verdict | None = None


class ProbeEnv(Protocol):
    """The kernel facts the events parser needs (an image, or a stand-in in tests)."""

    rules: str  # "6.1" or "6.12"
    backend: "Backend"
    fetch_args: bool  # CONFIG_HAVE_FUNCTION_ARG_ACCESS_API
    btf_args: bool  # CONFIG_PROBE_EVENTS_BTF_ARGS (6.12, needs fetch_args and .BTF)
    btf: Btf | None

    def place(self, kind: str, symbol: str | None, offset: int, address: int | None) -> PlaceInfo:
        """The probe point's verdict, split by the stage of __trace_kprobe_create that sees it."""

    def symbol_address(self, name: str) -> int | None:
        """``kallsyms_lookup_name`` (for ``@SYM`` arguments)."""


class ImageEnv:
    """:class:`ProbeEnv` of a vmlinux image: kallsyms, probe.check, .BTF, the backend."""

    def __init__(self, image: "Image") -> None:
        self.image = image
        self.backend = image.backend
        self.rules = image.version.rules
        # a --config file (or --set) decides; else 6.12's store_trace_entry_data shows the API;
        # else the backend's answer for this version
        known = self._fact("HAVE_FUNCTION_ARG_ACCESS_API")
        if known is None and image.symtab.value("store_trace_entry_data") is not None:
            known = True
        self.fetch_args = known if known is not None else \
            self.backend.fetch_args_supported(image.version)

    def _fact(self, name: str) -> bool | None:
        f = self.image.config.facts.get(name)
        return None if f is None else f.value

    @functools.cached_property
    def btf(self) -> Btf | None:
        return Btf.from_image(self.image)

    @functools.cached_property
    def btf_args(self) -> bool:
        # PROBE_EVENTS_BTF_ARGS (6.12): default y, depends on HAVE_FUNCTION_ARG_ACCESS_API and
        # DEBUG_INFO_BTF (a .BTF section)
        if self.rules != "6.12" or not self.fetch_args or self.btf is None:
            return False
        known = self._fact("PROBE_EVENTS_BTF_ARGS")
        return True if known is None else known

    def symbol_address(self, name: str) -> int | None:
        return self.image.kallsyms.lookup(name)

    def place(self, kind: str, symbol: str | None, offset: int, address: int | None) -> PlaceInfo:
        from .probe import _kprobe_addr, _Refused, check
        module = None
        sym = symbol
        if symbol is not None and ":" in symbol:
            module, sym = symbol.split(":", 1)
        if address is not None:
            text = hex(address)
        else:
            text = f"{symbol}+{offset:#x}" if offset else str(symbol)
        t = Target(text, kind, symbol=sym, offset=offset, address=address, module=module)
        v = check(self.image, t)
        entry: bool | None = None
        if sym is not None and module is None:
            try:  # kprobe_on_func_entry(NULL, symbol, offset)
                entry = _kprobe_addr(self.image, Target(text, "p", symbol=sym,
                                                        offset=offset)).on_func_entry
            except _Refused:
                entry = None
        if v.ok:
            return PlaceInfo(entry, verdict=v)
        parse_error = None
        if symbol is not None:
            if v.reason == Reason.NO_SYMBOL:
                parse_error = ("BAD_PROBE_ADDR", v.errno or ENOENT)
            elif v.reason == Reason.NON_UNIQUE_SYMBOL:
                parse_error = ("NON_UNIQ_SYMBOL", v.errno or EINVAL)
            elif v.reason == Reason.RETPROBE_NOT_ENTRY and kind == "r":
                parse_error = ("BAD_RETPROBE", EINVAL)
        if parse_error:
            return PlaceInfo(entry, parse_error=parse_error, verdict=v)
        return PlaceInfo(entry, notrace=v.reason == Reason.NOTRACE,
                         register_errno=v.errno or EINVAL, verdict=v)


# --- the parser --------------------------------------------------------------------------------
class _Fail(Exception):
    """A parse step failed: the errno the write returns (the error_log entry is already logged)."""

    def __init__(self, errno: str) -> None:
        self.errno = errno


@attrs.define
class _Insn:
    """One ``struct fetch_insn`` slot."""

    op: str = "NOP"
    param: int = 0
    offset: int = 0
    data: str = ""
    reg: str = ""


@attrs.define
class _ArgCtx:
    """``struct traceprobe_parse_context`` plus the logging state of ``trace_probe_log``."""

    flags: frozenset[str]
    funcname: str | None
    offset: int = 0
    proto: FuncProto | None = None
    btf_queried: bool = False
    last_type: BtfType | None = None
    last_bitoffs: int = 0
    last_bitsize: int = 0
    btf_param: str = ""

    def entry(self) -> bool:
        """``tparg_is_function_entry``."""
        return self.flags == frozenset({"KERNEL", "FENTRY"})

    def ret(self) -> bool:
        """``tparg_is_function_return``."""
        return self.flags == frozenset({"KERNEL", "RETURN"})


class EventSet:
    """The kprobe events of one kernel, changed line by line as writes to kprobe_events do.

    >>> s = EventSet(env)                                          # doctest: +SKIP
    >>> s.write("p:kprobes/testevent kernel_clone abcd=\\\\1").ok   # doctest: +SKIP
    True
    >>> s.write("p:kprobes/testevent kernel_clone bcd=\\\\1").error.log_id   # doctest: +SKIP
    'DIFF_ARG_TYPE'
    """

    def __init__(self, env: ProbeEnv) -> None:
        self.env = env
        self.rules = env.rules
        self.messages = MESSAGES[self.rules]
        self.types = FETCH_TYPES[self.rules]
        self.param_max_stack = env.backend.thread_size // 8  # PARAM_MAX_STACK
        self.events: dict[tuple[str, str], list[ProbeEvent]] = {}
        self._log: list[tuple[int, int, str]] = []
        self._argv: list[str] = []
        self._index = 0

    # -- the public entry points ---------------------------------------------------------------
    def clear(self) -> None:
        """``> kprobe_events``: delete every event."""
        self.events.clear()

    def write(self, line: str, keep: bool = True) -> EventResult:
        """Write one line; the event is kept (appended) when accepted and ``keep`` is True."""
        text = line.split("\n", 1)[0]
        if len(text) > WRITE_BUFSIZE - 2:
            return EventResult(line, False, "create", rules=self.rules, error=EventError(
                EINVAL, detail=f"line is {len(text)} bytes; tracefs takes at most "
                               f"{WRITE_BUFSIZE - 2} (Line length is too long)"))
        text = text.split("#", 1)[0]  # trace_parse_run_command drops comments
        argv = text.split()  # argv_split: blanks separate, no quoting
        if not argv:
            return EventResult(line, True, "empty", rules=self.rules)
        if text[0] == "-":  # create_or_delete_trace_kprobe looks at the raw first byte
            return self._delete(line, argv)
        self._log, self._argv, self._index = [], argv, 0
        try:
            ev, notes = self._create(argv)
        except _Fail as f:
            return EventResult(line, False, "create", error=self._error(f.errno), rules=self.rules)
        if keep:
            self.events.setdefault((ev.group, ev.event), []).append(ev)
        return EventResult(line, True, "create", event=ev, rules=self.rules, notes=tuple(notes))

    # -- error_log -----------------------------------------------------------------------------
    def _err(self, offset: int, log_id: str) -> None:
        """``trace_probe_log_err(offset, id)`` at the current argv index."""
        assert log_id in self.messages, (self.rules, log_id)
        self._log.append((self._index, offset, log_id))

    def _fail(self, offset: int, log_id: str, errno: str = EINVAL) -> _Fail:
        self._err(offset, log_id)
        return _Fail(errno)

    def _error(self, errno: str) -> EventError:
        command = " ".join(self._argv)
        if not self._log:
            return EventError(errno, command=command)
        index, offset, log_id = self._log[-1]  # the newest entry is the one error_log shows last
        if index >= len(self._argv):
            pos = sum(len(a) + 1 for a in self._argv)
        else:
            pos = sum(len(a) + 1 for a in self._argv[:index]) + offset
        return EventError(errno, log_id, self.messages[log_id], pos, command)

    # -- __trace_kprobe_create -----------------------------------------------------------------
    def _create(self, argv: list[str]) -> tuple[ProbeEvent, list[str]]:
        env, rules = self.env, self.rules
        notes: list[str] = []
        a0 = argv[0]
        if a0[0] not in "pr" or len(argv) < 2:
            raise _Fail(EINVAL)  # -ECANCELED: not a kprobe command -> -EINVAL, nothing logged
        is_return = a0[0] == "r"
        colon = a0.find(":", 1)
        event: str | None = a0[colon + 1:] if colon >= 0 else None
        maxactive = 0
        if a0[1:2].isdigit():
            if not is_return:
                raise self._fail(1, "BAD_MAXACT_TYPE" if rules == "6.12" else "MAXACT_NO_KPROBE")
            mtext = a0[1:colon] if colon >= 0 else a0[1:]
            if len(mtext) > MAX_EVENT_NAME_LEN - 1:
                raise self._fail(1, "BAD_MAXACT")
            v, _ = kstrtouint(mtext, 0)
            if not v:
                raise self._fail(1, "BAD_MAXACT")
            if v > KRETPROBE_MAXACTIVE_MAX:
                raise self._fail(1, "MAXACT_TOO_BIG")
            maxactive = v

        flags = {"KERNEL"}
        symbol: str | None = None
        offset = 0
        addr, _ = kstrtoul(argv[1], 0)
        place: PlaceInfo | None = None
        if addr is None:
            self._index = 1
            if "/" in argv[1] and ":" in argv[1]:
                raise _Fail(EINVAL)  # a uprobe spec: -ECANCELED
            symbol = argv[1]
            pct = symbol.find("%")
            if pct >= 0:
                if symbol[pct:] == "%return":
                    symbol, is_return = symbol[:pct], True
                else:
                    raise self._fail(pct, "BAD_ADDR_SUFFIX")
            m = re.search(r"[+-]", symbol)  # traceprobe_split_symbol_offset
            if m:
                off, _ = kstrtol(symbol[m.start():], 0)
                symbol = symbol[:m.start()]
                if off is None or off < 0 or off > UINT_MAX:
                    raise self._fail(0, "BAD_PROBE_ADDR")
                offset = off
            place = env.place("r" if is_return else "p", symbol, offset, None)
            if place.parse_error:  # validate_probe_symbol / number_of_same_symbols / BAD_RETPROBE
                raise self._fail(0, *place.parse_error)
            if is_return:
                flags.add("RETURN")
            if place.entry and (rules == "6.1" or not is_return):
                flags.add("FENTRY")
        else:
            place = env.place("r" if is_return else "p", None, 0, addr)

        self._index = 0
        group = "kprobes"
        if event is not None:
            group_ev = self._parse_event_name(event, colon + 1)
            if group_ev[0] is not None:
                group = group_ev[0]
            event = group_ev[1]
        if not event:
            if symbol is not None:
                name = f"{'r' if is_return else 'p'}_{symbol}_{offset}"
            else:
                name = f"{'r' if is_return else 'p'}_0x{addr:016x}"
                notes.append("the kernel names address probes with a hashed pointer (%p)")
            name = name[:MAX_EVENT_NAME_LEN - 1]
            bad = ":.*" if rules == "6.12" else ":."
            event = name[0] + "".join("_" if c in bad else c for c in name[1:])  # sanitize_event_name

        ctx = _ArgCtx(frozenset(flags), symbol)
        args_in = argv[2:]
        if rules == "6.12":
            args_in = self._expand_meta_args(args_in, ctx)
            if len(args_in) > MAX_TRACE_ARGS:
                raise _Fail(E2BIG)
            offs = self._dentry_offsets()
            args_in = [_expand_dentry(a, *offs) for a in args_in]
        else:
            if len(args_in) > MAX_TRACE_ARGS:
                notes.append(f"{len(args_in) - MAX_TRACE_ARGS} arguments past {MAX_TRACE_ARGS} "
                             "are ignored by 6.1")
            args_in = args_in[:MAX_TRACE_ARGS]
        args: list[FetchArg] = []
        size = 0
        for i, a in enumerate(args_in):
            self._index = i + 2  # argv index in the error_log (the original argv, not expanded)
            ctx.offset = 0
            fa, size = self._parse_probe_arg(a, i, args, ctx, size)
            args.append(fa)

        ev = ProbeEvent(group, event, is_return, maxactive, symbol, offset, addr, tuple(args),
                        place.entry if place else None, place.verdict if place else None)
        self._register(ev, place)
        return ev, notes

    def _dentry_offsets(self) -> tuple[int, int]:
        """offsetof(struct dentry, d_name.name) and offsetof(struct file, f_path.dentry), from
        BTF when the image has it (else 6.12.107's 64-bit values, read from riscv64 BTF)."""
        btf = self.env.btf
        d = btf.member_offset("dentry", "d_name.name") if btf else None
        f = btf.member_offset("file", "f_path.dentry") if btf else None
        return (0x28 if d is None else d), (0x48 if f is None else f)

    def _parse_event_name(self, event: str, offset: int) -> tuple[str | None, str | None]:
        """``traceprobe_parse_event_name``: (group or None, event or None for an auto name)."""
        group = None
        slash = event.find("/")
        if slash < 0:
            slash = event.find(".")
        if slash >= 0:
            if slash == 0:
                raise self._fail(offset, "NO_GROUP_NAME")
            if slash + 1 > MAX_EVENT_NAME_LEN:
                raise self._fail(offset, "GROUP_TOO_LONG")
            group = event[:slash]
            if not is_good_system_name(group):
                raise self._fail(offset, "BAD_GROUP_NAME")
            offset += slash + 1
            event = event[slash + 1:]
        if not event:
            if slash >= 0:
                return group, None
            raise self._fail(offset, "NO_EVENT_NAME")
        if len(event) >= MAX_EVENT_NAME_LEN:
            raise self._fail(offset, "EVENT_TOO_LONG")
        if not is_good_name(event):
            raise self._fail(offset, "BAD_EVENT_NAME")
        return group, event

    # -- registration (register_trace_kprobe, append_trace_kprobe, __register_trace_kprobe) ----
    def _register(self, ev: ProbeEvent, place: PlaceInfo | None) -> None:
        old = self.events.get((ev.group, ev.event))
        if old:
            if old[0].is_return != ev.is_return:
                self._index = 0
                raise self._fail(0, "DIFF_PROBE_TYPE", "EEXIST")
            ret = _compare_arg_type(ev.args, old[0].args)
            if ret:
                self._index = ret + 1
                raise self._fail(0, "DIFF_ARG_TYPE", "EEXIST")
            for o in old:  # trace_kprobe_has_same_kprobe
                if (o.symbol or "unknown") == (ev.symbol or "unknown") and o.offset == ev.offset \
                        and all(x.comm == y.comm for x, y in zip(o.args, ev.args)):
                    self._index = 0
                    raise self._fail(0, "SAME_PROBE", "EEXIST")
        errno = None
        if place is not None and place.notrace:
            errno = place.register_errno or EINVAL
        if errno is None:
            errno = self._update_args(ev)  # traceprobe_update_arg: @SYM resolved now
        if errno is None and place is not None:
            errno = place.register_errno
        if errno is None:
            return
        if errno == ENOENT and ev.symbol is None:
            return  # -ENOENT and no module symbol: "might be able to register" -> accepted
        if errno == ENOENT and ev.symbol is not None and ":" in ev.symbol:
            return  # module not loaded: deferred
        self._index = 1
        if errno == "EILSEQ":
            raise self._fail(0, "BAD_INSN_BNDRY", errno)
        if errno == ENOENT:
            raise self._fail(0, "BAD_PROBE_ADDR", errno)
        if errno in ("ENOMEM", "EEXIST"):
            raise _Fail(errno)
        raise self._fail(0, "FAIL_REG_PROBE", errno)

    def _update_args(self, ev: ProbeEvent) -> str | None:
        """``traceprobe_update_arg``: each ``@SYM[+|-OFFS]`` split and looked up in kallsyms."""
        for a in ev.args:
            for data in a.symbols:
                m = re.search(r"[+-]", data)
                name = data
                if m:
                    off, err = kstrtol(data[m.start():], 0)
                    if off is None:
                        return err
                    name = data[:m.start()]
                if not self.env.symbol_address(name):
                    return ENOENT
        return None

    # -- 6.12: traceprobe_expand_meta_args, traceprobe_expand_dentry_args -------------------------
    def _expand_meta_args(self, argv: list[str], ctx: _ArgCtx) -> list[str]:
        args_idx = -1
        found = False
        for i, a in enumerate(argv):  # argv_has_var_arg
            if not a.startswith("$arg"):
                continue
            self._index = i + 2
            if not ctx.entry() and not ctx.ret():
                raise self._fail(0, "NOFENTRY_ARGS")
            if a[4:5].isdigit():
                found = True
                continue
            if a[4:5] != "*":
                raise self._fail(0, "BAD_VAR")
            if 0 <= args_idx < len(argv):
                raise self._fail(0, "DOUBLE_ARGS")
            found, args_idx = True, i
        if not found:
            return argv
        proto = self._query_btf(ctx)
        if proto is None or not proto.params:
            if args_idx != -1:
                # "$arg* requires BTF info": logged, but the kernel returns NULL (not an error)
                # and goes on to parse '$arg*' as it stands
                self._err(0, "NOSUP_BTFARG")
            return argv
        out: list[str] = []
        used = 0
        for i, a in enumerate(argv):
            self._index = i + 2
            if i == args_idx:
                for n in range(len(proto.params)):
                    s = self._nth_btf_arg(n, "", proto, MAX_BTF_ARGS_LEN - used)
                    out.append(s)
                    used += len(s) + 1
                continue
            if a.startswith("$arg"):
                n, end = simple_strtoul(a[4:], 10)
                rest = a[4 + end:]
                if rest and rest[0] != ":":
                    raise self._fail(0, "BAD_VAR", ENOENT)
                if n == 0:
                    raise self._fail(0, "BAD_ARG_NUM")
                s = self._nth_btf_arg(n - 1, rest, proto, MAX_BTF_ARGS_LEN - used)
                out.append(s)
                used += len(s) + 1
            else:
                out.append(a)
        return out

    def _nth_btf_arg(self, idx: int, type_: str, proto: FuncProto, bufsize: int) -> str:
        """``sprint_nth_btf_arg``."""
        if idx >= len(proto.params):
            raise self._fail(0, "NO_BTFARG", ENOENT)
        name = proto.params[idx].name
        if not name:
            raise self._fail(0, "NO_BTF_ENTRY", ENOENT)
        s = name + type_
        if len(s) >= bufsize:
            raise self._fail(0, "ARGS_2LONG", E2BIG)
        return s

    def _query_btf(self, ctx: _ArgCtx) -> FuncProto | None:
        """``query_btf_context``: the probed function's prototype, or None."""
        if not self.env.btf_args:
            return None
        if not ctx.btf_queried:
            ctx.btf_queried = True
            btf = self.env.btf
            ctx.proto = btf.func(ctx.funcname) if (btf is not None and ctx.funcname) else None
        return ctx.proto

    # -- traceprobe_parse_probe_arg ------------------------------------------------------------
    def _parse_probe_arg(self, arg: str, i: int, prev: list[FetchArg], ctx: _ArgCtx,
                         size: int) -> tuple[FetchArg, int]:
        eq = arg.find("=")
        if eq >= 0:
            if eq > MAX_ARG_NAME_LEN:
                raise self._fail(0, "ARG_NAME_TOO_LONG")
            if eq == 0:
                raise self._fail(0, "NO_ARG_NAME")
            name, body, body_off = arg[:eq], arg[eq + 1:], eq + 1
        else:
            name = None
            if self.rules == "6.12" and self.env.btf_args:  # generate_probe_arg_name
                cand = arg.split(":", 1)[0]
                name = cand if is_good_name(cand) else None
            name = name or f"arg{i + 1}"
            body, body_off = arg, 0
        if not is_good_name(name):
            raise self._fail(0, "BAD_ARG_NAME")
        if name in RESERVED_FIELD_NAMES or any(p.name == name for p in prev):
            raise self._fail(0, "USED_ARG_NAME")
        ctx.offset = body_off
        return self._parse_body(body, name, ctx, size)

    def _parse_body(self, body: str, name: str, ctx: _ArgCtx, size: int) -> tuple[FetchArg, int]:
        """``traceprobe_parse_probe_arg_body`` (+ ``parse_probe_arg_type``, ``finalize_fetch_insn``)."""
        v612 = self.rules == "6.12"
        if len(body) > MAX_ARGSTR_LEN:
            raise self._fail(ctx.offset, "ARG_TOO_LONG", E2BIG if v612 else EINVAL)
        if not body:
            raise self._fail(ctx.offset, "NO_ARG_BODY")
        body_offset = ctx.offset
        # split the type: first ':'; an array suffix '[N]'
        colon = body.find(":")
        arg, t = (body[:colon], body[colon + 1:]) if colon >= 0 else (body, None)
        count = 0
        if t is not None:
            lb = t.find("[")
            if lb >= 0:
                inner = t[lb + 1:]
                t = t[:lb]
                t2 = colon + 1 + lb + 1  # index of the array size in body
                rb = inner.find("]")
                if rb < 0:
                    raise self._fail(ctx.offset + t2 + len(inner), "ARRAY_NO_CLOSE")
                if inner[rb + 1:]:
                    raise self._fail(ctx.offset + t2 + rb + 1, "BAD_ARRAY_SUFFIX")
                n, _ = kstrtouint(inner[:rb], 0)
                if not n:
                    raise self._fail(ctx.offset + t2, "BAD_ARRAY_NUM")
                if n > MAX_ARRAY_LEN:
                    raise self._fail(ctx.offset + t2, "ARRAY_TOO_BIG")
                count = n
        toff = colon + 1 if t is not None else 0
        if arg in ("$comm", "$COMM") or arg.startswith('\\"'):
            if count or (t is not None and t != "string"):
                if not v612:
                    raise _Fail(EINVAL)  # 6.1: plain -EINVAL, nothing logged
                raise self._fail(ctx.offset + toff, "NEED_STRING_TYPE")
            ftype = "string"
        else:
            ftype = self._find_fetch_type(t)
        if ftype is None:
            raise self._fail(ctx.offset + toff, "BAD_TYPE")

        if not v612:  # 6.1 checks the event size before parsing the fetch program
            size = self._add_size(size, ftype, count, ctx.offset)
        code = [_Insn() for _ in range(FETCH_INSN_MAX)]
        code[FETCH_INSN_MAX - 1].op = "END"
        ctx.last_type, ctx.btf_param = None, ""
        pc = [0]
        self._parse_arg(arg, pc, FETCH_INSN_MAX - 1, code, ctx)
        if not v612:
            ctx.offset = body_offset  # 6.1 passes the offset by value
        display_type = t if t is not None else ftype
        if v612 and self.env.btf_args and ctx.last_type is not None:
            if t is None:
                ftype = self._btf_fetch_type(ctx)
                display_type = ftype
            elif "string" in t:
                self._btf_string_fetch(t, pc, code, ctx)
        if v612:
            size = self._add_size(size, ftype, count, ctx.offset)
        fetch = _render(code, self.env.backend)  # before finalize turns DEREF into ST_MEM
        ops = self._finalize(code, pc[0], ftype, t, count, toff, ctx)
        type_id = ftype
        syms = tuple(i.data for i in code if i.op == "NOP_SYMBOL")
        return FetchArg(name, body, display_type or ftype, type_id, count, fetch, ops,
                        ctx.btf_param, syms), size

    def _add_size(self, size: int, ftype: str, count: int, offset: int) -> int:
        size += self.types[ftype][0] * (count or 1)
        if size > MAX_PROBE_EVENT_SIZE:
            raise self._fail(offset, "EVENT_TOO_BIG", E2BIG)
        return size

    def _find_fetch_type(self, t: str | None) -> str | None:
        """``find_fetch_type``: the fetch type's name ('u16' for a bitfield in a u16)."""
        if t is None:
            return DEFAULT_FETCH_TYPE
        if t.startswith("b"):
            slash = t.find("/")
            if slash < 0:
                return None
            bs, _ = kstrtoul(t[slash + 1:], 0)
            return {8: "u8", 16: "u16", 32: "u32", 64: "u64"}.get(bs or 0)
        return t if t in self.types else None

    # -- parse_probe_arg (recursive) -----------------------------------------------------------
    def _parse_arg(self, arg: str, pc: list[int], end: int, code: list[_Insn], ctx: _ArgCtx) -> None:
        v612 = self.rules == "6.12"
        c = pc[0]  # the local 'code' pointer
        c0 = code[c]
        head = arg[:1]
        if head == "$":
            self._parse_vars(arg, pc, end, code, ctx)
        elif head == "%":
            f = self.env.backend.register(arg[1:])  # regs_query_register_offset
            if f is None:
                raise self._fail(ctx.offset, "BAD_REG_NAME")
            c0.op, c0.param, c0.reg = "REG", f.offset, f.name
        elif head == "@":
            deref_off = 0
            if arg[1:2].isdigit():
                v, err = kstrtoul(arg[1:], 0)
                if v is None:
                    raise self._fail(ctx.offset, "BAD_MEM_ADDR", err)
                c0.op, c0.param = "IMM", v
            elif arg[1:2] == "+":
                raise self._fail(ctx.offset, "FILE_ON_KPROBE")  # TPARG_FL_KERNEL
            else:
                c0.op, c0.data = "NOP_SYMBOL", arg[1:]
                c += 1
                if c == end:
                    raise self._fail(ctx.offset, "TOO_MANY_OPS")
                code[c].op = "IMM"
            c += 1
            if c == end:
                raise self._fail(ctx.offset, "TOO_MANY_OPS")
            pc[0] = c
            code[c].op, code[c].offset = "DEREF", deref_off
        elif head in ("+", "-"):
            deref = "DEREF"
            a = arg
            if a[1:2] == "u":
                deref = "UDEREF"
                a = a[0] + a[2:]
            if a[0] == "+":
                a = a[1:]
            lp = a.find("(")
            if lp < 0:
                raise self._fail(ctx.offset, "DEREF_NEED_BRACE")
            off, err = kstrtol(a[:lp], 0)
            if off is None:
                raise self._fail(ctx.offset, "BAD_DEREF_OFFS", err)
            ctx.offset += (lp + 1) + (1 if a[0] != "-" else 0)
            inner = a[lp + 1:]
            rp = inner.rfind(")")
            if rp < 0:
                raise self._fail(ctx.offset + len(inner), "DEREF_OPEN_BRACE")
            cur_offs = ctx.offset
            sub = [c]
            self._parse_arg(inner[:rp], sub, end, code, ctx)
            c = sub[0]
            ctx.offset = cur_offs
            if code[c].op in ("COMM", "DATA"):
                raise self._fail(ctx.offset, "COMM_CANT_DEREF")
            c += 1
            if c == end:
                raise self._fail(ctx.offset, "TOO_MANY_OPS")
            pc[0] = c
            code[c].op, code[c].offset = deref, off  # text after the last ')' is ignored
            ctx.last_type = None
        elif head == "\\":
            if arg[1:2] == '"':
                s = arg[2:]
                if not s or s[-1] != '"':
                    raise self._fail(ctx.offset + 2 + len(s), "IMMSTR_NO_CLOSE")
                c0.op, c0.data = "DATA", s[:-1]
            else:
                v, err = _str_to_immediate(arg[1:])
                if v is None:
                    raise self._fail(ctx.offset + 1, "BAD_IMM", err)
                c0.op, c0.param, c0.data = "IMM", v & ULONG_MAX, arg[1:]
        elif v612 and (head.isalpha() or head == "_") and head.isascii():  # BTF variable
            if not ctx.entry() and not ctx.ret():
                raise self._fail(ctx.offset, "NOSUP_BTFARG")
            self._parse_btf_arg(arg, pc, end, code, ctx)
        if c0.op == "NOP":
            raise self._fail(ctx.offset, "BAD_FETCH_ARG")

    def _parse_vars(self, orig: str, pc: list[int], end: int, code: list[_Insn], ctx: _ArgCtx) -> None:
        """``parse_probe_vars``."""
        v612 = self.rules == "6.12"
        c0 = code[pc[0]]
        arg = orig[1:]
        if (v612 and arg.startswith("retval")) or arg == "retval":
            if "RETURN" not in ctx.flags:
                raise self._fail(ctx.offset, "RETVAL_ON_PROBE")
            if v612 and self.env.btf_args:
                self._parse_btf_arg(orig, pc, end, code, ctx)
                return
            c0.op = "RETVAL"
            return
        if arg.startswith("stack"):
            rest = arg[5:]
            if rest == "":
                c0.op = "STACKP"
                return
            if rest[0].isdigit():
                n, _ = kstrtoul(rest, 10)
                if n is None:
                    raise self._fail(ctx.offset, "BAD_VAR")
                if n > self.param_max_stack:
                    raise self._fail(ctx.offset, "BAD_STACK_NUM")
                c0.op, c0.param = "STACK", n
                return
            raise self._fail(ctx.offset, "BAD_VAR")
        if arg in ("comm", "COMM"):
            c0.op = "COMM"
            return
        if self.env.fetch_args and arg.startswith("arg") and (v612 or ctx.entry()):
            n, _ = kstrtoul(arg[3:], 10)
            if n is None:
                raise self._fail(ctx.offset, "BAD_VAR")
            if not n or n > self.param_max_stack:
                raise self._fail(ctx.offset, "BAD_ARG_NUM")
            if ctx.entry():
                c0.op, c0.param = "ARG", n - 1
            elif ctx.ret():
                c0.op, c0.param = "EDATA", n - 1  # captured by the kretprobe entry handler
            else:
                raise self._fail(ctx.offset, "NOFENTRY_ARGS")
            return
        raise self._fail(ctx.offset, "BAD_VAR")

    # -- 6.12 BTF arguments  [trace_probe.c: parse_btf_arg, parse_btf_field, split_next_field] --
    def _split_next_field(self, varname: str, ctx: _ArgCtx) -> tuple[int, str, str | None]:
        """(is_ptr, head, next field or None)."""
        m = re.search(r"[.-]", varname)
        if not m:
            return 0, varname, None
        i = m.start()
        if varname[i] == "-" and varname[i + 1:i + 2] == ">":
            return 1, varname[:i], varname[i + 2:]
        if varname[i] == ".":
            return 0, varname[:i], varname[i + 1:]
        raise self._fail(ctx.offset + i, "BAD_HYPHEN")

    def _parse_btf_arg(self, varname: str, pc: list[int], end: int, code: list[_Insn],
                       ctx: _ArgCtx) -> None:
        if not self.env.btf_args:
            raise self._fail(ctx.offset, "NOSUP_BTFARG", EOPNOTSUPP)
        btf = self.env.btf
        assert btf is not None
        c0 = code[pc[0]]
        is_ptr, head, field = self._split_next_field(varname, ctx)
        if not is_ptr and field is not None:
            raise self._fail(ctx.offset + len(head) + 1, "NOSUP_DAT_ARG", EOPNOTSUPP)
        field_pos = len(head) + (2 if is_ptr else 1)
        if "RETURN" in ctx.flags and head == "$retval":
            c0.op = "RETVAL"
            proto = self._query_btf(ctx)
            if proto is not None:
                if proto.returns_void:
                    raise self._fail(ctx.offset, "NO_RETVAL", ENOENT)
                tid = proto.ret_type_id
                ctx.btf_param = f"{proto.ret_ctype} (return value)"
            else:
                if field is not None:
                    raise self._fail(ctx.offset + field_pos, "NO_BTF_ENTRY", ENOENT)
                return
        else:
            proto = self._query_btf(ctx)
            if proto is None or not proto.params:
                raise self._fail(ctx.offset, "NO_BTF_ENTRY", ENOENT)
            for i, p in enumerate(proto.params):
                if p.name and p.name == head:
                    if ctx.entry():
                        c0.op, c0.param = "ARG", i
                    elif ctx.ret():
                        c0.op, c0.param = "EDATA", i
                    tid = p.type_id
                    ctx.btf_param = p.ctype + ("" if p.ctype.endswith("*") else " ") + p.name
                    break
            else:
                raise self._fail(ctx.offset, "NO_BTFARG", ENOENT)
        _, t = btf.skip_modifiers(tid)
        if t is None:
            raise self._fail(ctx.offset, "BAD_BTF_TID")
        ctx.last_type, ctx.last_bitoffs, ctx.last_bitsize = t, 0, 0
        if field is not None:
            ctx.offset += field_pos
            self._parse_btf_field(field, t, pc, end, code, ctx)

    def _parse_btf_field(self, fieldname: str, t: BtfType, pc: list[int], end: int,
                         code: list[_Insn], ctx: _ArgCtx) -> None:
        btf = self.env.btf
        assert btf is not None
        c = pc[0]
        name: str | None = fieldname
        while name is not None:
            if t.kind != PTR:
                raise self._fail(ctx.offset, "NO_PTR_STRCT")
            _, st = btf.skip_modifiers(t.size_or_type)
            if st is None:
                raise self._fail(ctx.offset, "BAD_BTF_TID")
            bitoffs = 0
            while True:  # the '.' chain inside one struct
                is_ptr, head, nxt = self._split_next_field(name, ctx)
                if st.kind not in (STRUCT, UNION):
                    raise self._fail(ctx.offset, "BAD_BTF_TID")
                m = btf.find_member(st, head)
                if m is None:
                    raise self._fail(ctx.offset, "NO_BTF_FIELD", ENOENT)
                bitoffs += m.anon_offset
                if st.kflag:  # btf_type_kflag of the outer type, as the kernel reads it
                    bitoffs += m.raw_offset & 0xFFFFFF
                    ctx.last_bitsize = m.raw_offset >> 24
                else:
                    bitoffs += m.raw_offset
                    ctx.last_bitsize = 0
                _, mt = btf.skip_modifiers(m.type_id)
                if mt is None:
                    raise self._fail(ctx.offset, "BAD_BTF_TID")
                if nxt is not None:
                    ctx.offset += len(head) + (2 if is_ptr else 1)
                name = nxt
                if is_ptr or name is None:
                    break
                st = mt
            c += 1
            if c == end:
                raise self._fail(ctx.offset, "TOO_MANY_OPS")
            code[c].op, code[c].offset = "DEREF", bitoffs // 8
            pc[0] = c
            ctx.last_bitoffs = bitoffs % 8
            ctx.last_type = t = mt

    def _btf_fetch_type(self, ctx: _ArgCtx) -> str:
        """``find_fetch_type_from_btf_type``."""
        btf, t = self.env.btf, ctx.last_type
        assert btf is not None and t is not None
        if t.kind == INT:
            enc, boff, bits = btf.int_info(t)
            if not enc & 1 and bits not in (8, 16, 32, 64):
                ctx.last_bitsize = bits
                ctx.last_bitoffs += boff
        return btf.fetch_type(t.id)

    def _btf_string_fetch(self, t: str, pc: list[int], code: list[_Insn], ctx: _ArgCtx) -> None:
        """``check_prepare_btf_string_fetch``: char[] as is, char * dereferenced, else an error."""
        btf, lt = self.env.btf, ctx.last_type
        assert btf is not None and lt is not None
        if btf.is_char_array(lt):
            return
        if btf.is_char_ptr(lt):  # the kernel reads lt->type without checking for a pointer
            c = pc[0] + 1
            if code[c].op == "END":
                raise self._fail(ctx.offset, "TOO_MANY_OPS", E2BIG)
            code[c].op, code[c].offset = ("UDEREF" if t[0] == "u" else "DEREF"), 0
            pc[0] = c
            return
        raise self._fail(ctx.offset, "BAD_TYPE4STR")

    # -- finalize_fetch_insn -------------------------------------------------------------------
    def _finalize(self, code: list[_Insn], c: int, ftype: str, t: str | None, count: int,
                  toff: int, ctx: _ArgCtx) -> tuple[str, ...]:
        size, is_string, _ = self.types[ftype]
        op = code[c].op
        if is_string:
            if ftype == "symstr":
                if op not in ("REG", "STACK", "RETVAL", "ARG", "DEREF", "TP_ARG"):
                    raise self._fail(ctx.offset + toff, "BAD_SYMSTRING")
            elif op not in ("DEREF", "UDEREF", "IMM", "COMM", "DATA", "TP_ARG"):
                raise self._fail(ctx.offset + toff, "BAD_STRING")
            if ftype == "symstr" or op in ("IMM", "COMM", "DATA", "TP_ARG") or count:
                c += 1
                if code[c].op != "NOP":
                    raise self._fail(ctx.offset, "TOO_MANY_OPS")
            if ftype == "ustring" or code[c].op == "UDEREF":
                code[c].op = "ST_USTRING"
            elif ftype == "symstr":
                code[c].op = "ST_SYMSTR"
            else:
                code[c].op = "ST_STRING"
        elif op == "DEREF":
            code[c].op = "ST_MEM"
        elif op == "UDEREF":
            code[c].op = "ST_UMEM"
        else:
            c += 1
            if code[c].op != "NOP":
                raise self._fail(ctx.offset, "TOO_MANY_OPS", E2BIG)
            code[c].op = "ST_RAW"
        scode = c
        if t is not None:
            if not _bitfield_ok(t, size, code, c):
                raise self._fail(ctx.offset + toff, "BAD_BITFIELD")
            if t.startswith("b"):
                c += 1
        elif self.rules == "6.12" and self.env.btf_args and ctx.last_type is not None:
            if not (ctx.last_bitsize % 8 == 0 and ctx.last_bitoffs == 0):  # parse_btf_bitfield
                c += 1
                if code[c].op != "NOP":
                    raise self._fail(ctx.offset, "TOO_MANY_OPS")
                code[c].op = "MOD_BF"
        if count:
            if code[scode].op not in ("ST_MEM", "ST_STRING", "ST_USTRING"):
                raise self._fail(ctx.offset + toff, "BAD_STRING")
            c += 1
            if code[c].op != "NOP":
                raise self._fail(ctx.offset, "TOO_MANY_OPS", E2BIG)
            code[c].op = "LP_ARRAY"
        return tuple(i.op for i in code[:c + 1])

    # -- deletion (dyn_event_release) ----------------------------------------------------------
    def _delete(self, line: str, argv: list[str]) -> EventResult:
        a0 = argv[0]
        if a0[1:2] != ":":
            return EventResult(line, False, "delete", error=EventError(EINVAL), rules=self.rules)
        event = a0[2:]
        system = None
        if "/" in event:
            system, event = event.split("/", 1)
        if system is None and not event:
            return EventResult(line, False, "delete", error=EventError(EINVAL), rules=self.rules)
        hit = False
        for key in list(self.events):
            grp, name = key
            if name != event or (system is not None and grp != system):
                continue
            keep = []
            for ev in self.events[key]:
                if _match_command_head(ev, argv[1:]):
                    hit = True
                else:
                    keep.append(ev)
            if keep:
                self.events[key] = keep
            else:
                del self.events[key]
        if not hit:
            return EventResult(line, False, "delete", error=EventError(ENOENT), rules=self.rules)
        return EventResult(line, True, "delete", rules=self.rules)


# --- helpers ---------------------------------------------------------------------------------------
def _str_to_immediate(s: str) -> tuple[int | None, str]:
    """``str_to_immediate``."""
    if s[:1].isdigit():
        return kstrtoul(s, 0)
    if s[:1] == "-":
        return kstrtol(s, 0)
    if s[:1] == "+":
        return kstrtol(s[1:], 0)
    return None, EINVAL


def _bitfield_ok(t: str, size: int, code: list[_Insn], c: int) -> bool:
    """``__parse_bitfield_probe_arg``: ``b<width>@<offset>/<container>`` fits its container."""
    if not t.startswith("b"):
        return True
    bw, i = simple_strtoul(t[1:], 0)
    tail = t[1 + i:]
    if bw == 0 or not tail.startswith("@"):
        return False
    rest = tail[1:]
    bo, j = simple_strtoul(rest, 0)
    if j == 0 or rest[j:j + 1] != "/":
        return False
    if code[c + 1].op != "NOP":
        return False
    code[c + 1].op = "MOD_BF"
    return size * 8 >= bw + bo


def _compare_arg_type(a: tuple[FetchArg, ...], b: tuple[FetchArg, ...]) -> int:
    """``trace_probe_compare_arg_type``: 0, or the 1-based position of the first difference."""
    if len(a) < len(b):
        return len(a) + 1
    if len(a) > len(b):
        return len(b) + 1
    for i, (x, y) in enumerate(zip(a, b)):
        if x.type_id != y.type_id or x.count != y.count or x.name != y.name:
            return i + 1
    return 0


def _match_command_head(ev: ProbeEvent, argv: list[str]) -> bool:
    """``trace_kprobe_match_command_head`` + ``trace_probe_match_command_args``."""
    if not argv:
        return True
    if argv[0] != ev.place:
        return False
    rest = argv[1:]
    if len(ev.args) < len(rest):
        return False
    return all(r == f"{a.name}={a.comm}" for r, a in zip(rest, ev.args))


def _expand_dentry(arg: str, d_name: int, f_dentry: int) -> str:
    """``traceprobe_expand_dentry_args`` (6.12): ``ARG:%pd`` / ``ARG:%pD`` to string fetches,
    with the offsets of ``dentry.d_name.name`` and ``file.f_path.dentry``."""
    m = re.fullmatch(r"(.*):%p([dD])", arg)
    if not m:
        return arg
    head, kind = m.group(1), m.group(2)
    name, eq, val = head.partition("=")
    target = val if eq else name
    prefix = f"{name}=" if eq else ""
    if kind == "d":
        return f"{prefix}+0x0(+0x{d_name:x}({target})):string"
    return f"{prefix}+0x0(+0x{d_name:x}(+0x{f_dentry:x}({target}))):string"


def _render(code: list[_Insn], backend: "Backend") -> str:
    """The fetch program written back as a fetch argument, with this arch's register names."""
    out = ""
    i = 0
    while i < len(code):
        ins = code[i]
        op = ins.op
        if op in ("NOP", "END") or op.startswith("ST_") or op in ("MOD_BF", "LP_ARRAY"):
            break
        if op == "REG":
            out = f"%{ins.reg}"
        elif op == "STACK":
            out = f"$stack{ins.param}"
        elif op == "STACKP":
            out = "$stack"
        elif op == "RETVAL":
            out = "$retval"
        elif op == "COMM":
            out = "$comm"
        elif op == "DATA":
            out = f'\\"{ins.data}"'
        elif op == "IMM":
            if i + 1 < len(code) and code[i + 1].op == "DEREF" and not out:
                out = f"@0x{ins.param:x}"
                i += 2
                continue
            out = f"\\{ins.data}"
        elif op == "NOP_SYMBOL":
            out = f"@{ins.data}"
            i += 3  # NOP_SYMBOL, IMM, DEREF
            continue
        elif op in ("ARG", "EDATA"):
            out = argument_fetch(backend, ins.param)
        elif op in ("DEREF", "UDEREF"):
            u = "u" if op == "UDEREF" else ""
            sign = "-" if ins.offset < 0 else "+"
            out = f"{sign}{u}{abs(ins.offset)}({out})"
        i += 1
    return out


def argument_fetch(backend: "Backend", n: int) -> str:
    """What ``regs_get_kernel_argument(regs, n)`` reads (n is 0-based): ``%di``, ``$stack1``
    or ``0`` where the architecture reads no argument past its registers.

    >>> argument_fetch(X86_64Backend(), 6)         # doctest: +SKIP
    '$stack1'
    """
    regs = backend.arg_regs
    if n < len(regs):
        return f"%{regs[n]}"
    if backend.arg_stack_base is None:
        return "\\0"
    return f"$stack{backend.arg_stack_base + n - len(regs)}"


def translate_line(line: str, src: "Backend", dst: "Backend") -> tuple[str, list[str]]:
    """The equivalent kprobe_events line for another architecture, and notes on what may differ.

    ``%REG`` that is the n-th argument register of ``src`` becomes the n-th of ``dst`` (on a
    return probe the return-value register maps to the return-value register first); the stack
    pointer maps to the stack pointer; ``$argN``, offsets and everything else are kept.  A syscall
    wrapper prefix (``__x64_sys_``) becomes the other architecture's.

    >>> translate_line("p vfs_read +0(%si):string", X86_64Backend(), Arm64Backend())[0]  # doctest: +SKIP
    'p vfs_read +0(%x1):string'
    """
    argv = line.split("#", 1)[0].split()
    notes: list[str] = []
    if len(argv) < 2 or argv[0][:1] not in ("p", "r", "-"):
        return line.strip(), notes
    is_return = argv[0][0] == "r" or argv[1].endswith("%return")
    place = argv[1]
    if src.syscall_prefix and dst.syscall_prefix and place.startswith(src.syscall_prefix):
        place = dst.syscall_prefix + place[len(src.syscall_prefix):]
        notes.append(f"syscall wrapper {src.syscall_prefix}* is {dst.syscall_prefix}* on {dst.name}")
    m = re.search(r"\+(\w+)", place)
    if m and m.group(1).strip("0x") not in ("", "0"):
        notes.append(f"offset +{m.group(1)} counts bytes of {src.name} code; the instruction "
                     f"there is at another offset on {dst.name}")

    def reg(mm: re.Match) -> str:
        name = mm.group(1)
        order = [("ret", src.retval_reg, dst.retval_reg)] if is_return else []
        if name in src.arg_regs:
            i = src.arg_regs.index(name)
            if i < len(dst.arg_regs):
                order.append(("arg", name, dst.arg_regs[i]))
            else:
                notes.append(f"%{name} is argument {i + 1}; {dst.name} passes it on the stack: "
                             f"use $arg{i + 1}")
                return f"$arg{i + 1}"
        order.append(("sp", src.stack_reg, dst.stack_reg))
        for _kind, s, d in order:
            if s and d and name == s:
                return f"%{d}"
        if dst.register(name) is not None:
            return f"%{name}"
        notes.append(f"%{name} has no counterpart on {dst.name}")
        return f"%{name}"

    args = [re.sub(r"%([A-Za-z0-9_]+)", reg, a) for a in argv[2:]]
    return " ".join([argv[0], place, *args]), notes
