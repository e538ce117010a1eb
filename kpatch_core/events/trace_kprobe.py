"""kprobe_events command handling, as kernel/trace/trace_kprobe.c does it.

``EventSet(env).write(line)`` answers what ``echo 'LINE' >> kprobe_events`` does on the kernel of
``env``: ``create_or_delete_trace_kprobe``, ``__trace_kprobe_create`` (with the arguments parsed
by :class:`~.trace_probe.TraceProbeParser`), ``register_trace_kprobe`` (multi-probe events) and
``dyn_event_release`` for ``-:`` lines, in the kernel's order for its
:class:`~kpatch_core.features.FeatureSet`.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

from ..kstrtox import UINT_MAX, is_digit, kstrtol, kstrtoul, kstrtouint
from ..verdict import Verdict
from .error_log import (
    E2BIG,
    EINVAL,
    ENOENT,
    KRETPROBE_MAXACTIVE_MAX,
    MAX_ARGSTR_LEN,
    MAX_EVENT_NAME_LEN,
    MAX_TRACE_ARGS,
    WRITE_BUFSIZE,
    EventError,
    ParseFailure,
)
from .probe_env import PlaceInfo
from .trace_probe import (
    DEFAULT_FETCH_TYPE,
    FetchArg,
    ParseContext,
    TraceProbeParser,
    expand_dentry_arg,
    trace_probe_compare_arg_type,
)

if TYPE_CHECKING:
    from .probe_env import ProbeEnv


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
    rules_exact: bool = True  # the kernel's version lies within the verified ones

    def to_json(self) -> dict:
        """A JSON-ready dict (the ``event --json`` schema)."""
        return {"line": self.line, "ok": self.ok, "op": self.op, "rules": self.rules,
                "rules_exact": self.rules_exact,
                "event": self.event.to_json() if self.event else None,
                "error": self.error.to_json() if self.error else None, "notes": list(self.notes)}



class EventSet(TraceProbeParser):
    """The kprobe events of one kernel, changed line by line as writes to kprobe_events do.

    >>> s = EventSet(env)                                          # doctest: +SKIP
    >>> s.write("p:kprobes/testevent kernel_clone abcd=\\\\1").ok   # doctest: +SKIP
    True
    >>> s.write("p:kprobes/testevent kernel_clone bcd=\\\\1").error.log_id   # doctest: +SKIP
    'DIFF_ARG_TYPE'
    """

    def __init__(self, env: "ProbeEnv") -> None:
        super().__init__(env)
        self.events: dict[tuple[str, str], list[ProbeEvent]] = {}

    def _result(self, line: str, ok: bool, op: str, **kw: object) -> EventResult:
        """An :class:`EventResult` carrying this kernel's rule-set label and exactness."""
        return EventResult(line, ok, op, rules=self.rules, rules_exact=self.features.exact,
                           **kw)  # type: ignore[arg-type]

    # -- the public entry points ---------------------------------------------------------------
    def clear(self) -> None:
        """``> kprobe_events``: delete every event."""
        self.events.clear()

    def write(self, line: str, keep: bool = True) -> EventResult:
        """Write one line; the event is kept (appended) when accepted and ``keep`` is True."""
        text = line.split("\n", 1)[0]
        if len(text) > WRITE_BUFSIZE - 2:
            return self._result(line, False, "create", error=EventError(
                EINVAL, detail=f"line is {len(text)} bytes; tracefs takes at most "
                               f"{WRITE_BUFSIZE - 2} (Line length is too long)"))
        text = text.split("#", 1)[0]  # trace_parse_run_command drops comments
        argv = text.split()  # argv_split: blanks separate, no quoting
        if not argv:
            return self._result(line, True, "empty")
        if text[0] == "-":  # create_or_delete_trace_kprobe looks at the raw first byte
            return self.dyn_event_release(line, argv)
        self.log.trace_probe_log_init(argv)
        try:
            ev, notes = self.trace_kprobe_create(argv)
        except ParseFailure as f:
            return self._result(line, False, "create", error=self.log.error(f.errno))
        if keep:
            self.events.setdefault((ev.group, ev.event), []).append(ev)
        return self._result(line, True, "create", event=ev, notes=tuple(notes))


    # -- __trace_kprobe_create -----------------------------------------------------------------
    def trace_kprobe_create(self, argv: list[str]) -> tuple[ProbeEvent, list[str]]:
        env = self.env
        notes: list[str] = []
        a0 = argv[0]
        if a0[0] not in "pr" or len(argv) < 2:
            raise ParseFailure(EINVAL)  # -ECANCELED: not a kprobe command -> -EINVAL, nothing logged
        is_return = a0[0] == "r"
        colon = a0.find(":", 1)
        event: str | None = a0[colon + 1:] if colon >= 0 else None
        maxactive = 0
        if is_digit(a0[1:2]):
            if not is_return:
                raise self.log.fail(1, "BAD_MAXACT_TYPE" if self.has("EVENTS_BAD_MAXACT_TYPE")
                                    else "MAXACT_NO_KPROBE")
            mtext = a0[1:colon] if colon >= 0 else a0[1:]
            if len(mtext) > MAX_EVENT_NAME_LEN - 1:
                raise self.log.fail(1, "BAD_MAXACT")
            v, _ = kstrtouint(mtext, 0)
            if not v:
                raise self.log.fail(1, "BAD_MAXACT")
            if v > KRETPROBE_MAXACTIVE_MAX:
                raise self.log.fail(1, "MAXACT_TOO_BIG")
            maxactive = v

        flags = {"KERNEL"}
        symbol: str | None = None
        offset = 0
        addr, _ = kstrtoul(argv[1], 0)
        place: PlaceInfo | None = None
        if addr is None:
            self.log.trace_probe_log_set_index(1)
            if "/" in argv[1] and ":" in argv[1]:
                raise ParseFailure(EINVAL)  # a uprobe spec: -ECANCELED
            symbol = argv[1]
            pct = symbol.find("%")
            if pct >= 0:
                if symbol[pct:] == "%return":
                    symbol, is_return = symbol[:pct], True
                else:
                    raise self.log.fail(pct, "BAD_ADDR_SUFFIX")
            m = re.search(r"[+-]", symbol)  # traceprobe_split_symbol_offset
            if m:
                off, _ = kstrtol(symbol[m.start():], 0)
                symbol = symbol[:m.start()]
                if off is None or off < 0 or off > UINT_MAX:
                    raise self.log.fail(0, "BAD_PROBE_ADDR")
                offset = off
            place = env.place("r" if is_return else "p", symbol, offset, None)
            if place.parse_error:  # validate_probe_symbol / number_of_same_symbols / BAD_RETPROBE
                raise self.log.fail(0, *place.parse_error)
            if is_return:
                flags.add("RETURN")
            if place.entry and (not self.has("EVENTS_RETPROBE_ARGS") or not is_return):
                flags.add("FENTRY")
        else:
            place = env.place("r" if is_return else "p", None, 0, addr)

        self.log.trace_probe_log_set_index(0)
        group = "kprobes"
        if event is not None:
            group_ev = self.traceprobe_parse_event_name(event, colon + 1)
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
            bad = ":.*" if self.has("EVENTS_SANITIZE_ASTERISK") else ":."
            event = name[0] + "".join("_" if c in bad else c for c in name[1:])  # sanitize_event_name

        ctx = ParseContext(frozenset(flags), symbol)
        args_in = argv[2:]
        if self.has("EVENTS_META_ARGS"):
            args_in = self.traceprobe_expand_meta_args(args_in, ctx)
            if len(args_in) > MAX_TRACE_ARGS:
                raise ParseFailure(E2BIG)
        else:
            if len(args_in) > MAX_TRACE_ARGS:
                notes.append(f"{len(args_in) - MAX_TRACE_ARGS} arguments past {MAX_TRACE_ARGS} "
                             f"are ignored by {self.rules}")
            args_in = args_in[:MAX_TRACE_ARGS]
        if self.has("EVENTS_DENTRY_ARGS"):  # traceprobe_expand_dentry_args
            offs = self.dentry_offsets()
            args_in = [expand_dentry_arg(a, *offs) for a in args_in]
        args: list[FetchArg] = []
        size = 0
        for i, a in enumerate(args_in):
            self.log.trace_probe_log_set_index(i + 2)  # index in the original argv, not expanded
            ctx.offset = 0
            fa, size = self.traceprobe_parse_probe_arg(a, i, args, ctx, size)
            args.append(fa)

        ev = ProbeEvent(group, event, is_return, maxactive, symbol, offset, addr, tuple(args),
                        place.entry if place else None, place.verdict if place else None)
        self.register_trace_kprobe(ev, place)
        return ev, notes


    # -- registration (register_trace_kprobe, append_trace_kprobe, __register_trace_kprobe) ----
    def register_trace_kprobe(self, ev: ProbeEvent, place: PlaceInfo | None) -> None:
        old = self.events.get((ev.group, ev.event))
        if old:
            if old[0].is_return != ev.is_return:
                self.log.trace_probe_log_set_index(0)
                raise self.log.fail(0, "DIFF_PROBE_TYPE", "EEXIST")
            ret = trace_probe_compare_arg_type(ev.args, old[0].args)
            if ret:
                self.log.trace_probe_log_set_index(ret + 1)
                raise self.log.fail(0, "DIFF_ARG_TYPE", "EEXIST")
            for o in old:  # trace_kprobe_has_same_kprobe
                if (o.symbol or "unknown") == (ev.symbol or "unknown") and o.offset == ev.offset \
                        and all(x.comm == y.comm for x, y in zip(o.args, ev.args)):
                    self.log.trace_probe_log_set_index(0)
                    raise self.log.fail(0, "SAME_PROBE", "EEXIST")
        errno = None
        if place is not None and place.notrace:
            errno = place.register_errno or EINVAL
        if errno is None:
            errno = self.traceprobe_update_arg(ev.args)  # traceprobe_update_arg: @SYM resolved now
        if errno is None and place is not None:
            errno = place.register_errno
        if errno is None:
            return
        if errno == ENOENT and ev.symbol is None:
            return  # -ENOENT and no module symbol: "might be able to register" -> accepted
        if errno == ENOENT and ev.symbol is not None and ":" in ev.symbol:
            return  # module not loaded: deferred
        self.log.trace_probe_log_set_index(1)
        if errno == "EILSEQ":
            raise self.log.fail(0, "BAD_INSN_BNDRY", errno)
        if errno == ENOENT:
            raise self.log.fail(0, "BAD_PROBE_ADDR", errno)
        if errno in ("ENOMEM", "EEXIST"):
            raise ParseFailure(errno)
        raise self.log.fail(0, "FAIL_REG_PROBE", errno)


    # -- deletion (create_or_delete_trace_kprobe -> dyn_event_release) --------------------------
    def dyn_event_release(self, line: str, argv: list[str]) -> EventResult:
        a0 = argv[0]
        if a0[1:2] != ":":
            return self._result(line, False, "delete", error=EventError(EINVAL))
        event = a0[2:]
        system = None
        if "/" in event:
            system, event = event.split("/", 1)
        if system is None and not event:
            return self._result(line, False, "delete", error=EventError(EINVAL))
        hit = False
        for key in list(self.events):
            grp, name = key
            if name != event or (system is not None and grp != system):
                continue
            keep = []
            for ev in self.events[key]:
                if trace_kprobe_match_command_head(
                        ev, argv[1:], self.has("EVENTS_MATCH_HEAD_FULL_PLACE")):
                    hit = True
                else:
                    keep.append(ev)
            if keep:
                self.events[key] = keep
            else:
                del self.events[key]
        if not hit:
            return self._result(line, False, "delete", error=EventError(ENOENT))
        return self._result(line, True, "delete")



def trace_kprobe_match_command_head(ev: ProbeEvent, argv: list[str], full_place: bool = True) -> bool:
    """``trace_kprobe_match_command_head`` + ``trace_probe_match_command_args``; without
    ``full_place`` (EVENTS_MATCH_HEAD_FULL_PLACE) the kernel compares the place as snprintf left
    it in ``char buf[MAX_ARGSTR_LEN + 1]``: its first 63 characters."""
    if not argv:
        return True
    if argv[0] != (ev.place if full_place else ev.place[:MAX_ARGSTR_LEN]):
        return False
    rest = argv[1:]
    if len(ev.args) < len(rest):
        return False
    return all(r == f"{a.name}={a.comm}" for r, a in zip(rest, ev.args))


