"""uprobe target syntax: what perf, bpftrace and uprobe_events users write.

* ``PATH:SYMBOL[+OFF]`` and ``PATH:0xOFFSET`` (a file offset, as uprobe_events takes it);
* uprobe_events lines [kernel/trace/trace_uprobe.c: __trace_uprobe_create]:
  ``p[:[GRP/]EVENT] PATH:OFFSET[(REF_CTR_OFFSET)][%return] [FETCHARGS]`` and ``r...``;
* bpftrace ``uprobe:PATH:SYM[+OFF]`` / ``uretprobe:PATH:SYM`` (also ``u:``/``ur:``), where a
  numeric location is a virtual address;
* ``usdt:PATH:[PROVIDER:]NAME`` -- a USDT probe of ``.note.stapsdt``.

>>> parse_uprobe_target("p:grp/ev /bin/ls:0x4a0(0x1234)%return")
UprobeTarget(path='/bin/ls', kind='r', symbol=None, sym_offset=0, offset=1184, vaddr=None, ...)
"""
from __future__ import annotations

import re

import attrs

from ..errors import UsageError


@attrs.frozen
class UprobeTarget:
    """One requested uprobe, before it is resolved against the ELF file."""

    path: str
    kind: str = "p"  # "p" (uprobe) or "r" (uretprobe)
    symbol: str | None = None
    sym_offset: int = 0
    offset: int | None = None  # file offset (uprobe_events, PATH:0xOFF)
    vaddr: int | None = None  # virtual address (bpftrace numeric location)
    ref_ctr_offset: int = 0  # (REF_CTR_OFFSET): the USDT semaphore's file offset
    usdt: tuple[str, str] | None = None  # (provider or "", name)
    group: str | None = None
    event: str | None = None
    args: tuple[str, ...] = ()
    text: str = ""

    def __str__(self) -> str:
        return self.text or f"{self.path}:{self.symbol or hex(self.offset or 0)}"


def kstrtoul(s: str) -> int:
    """``kstrtoul(s, 0, ...)``: decimal, ``0x`` hex or leading-``0`` octal; ValueError else."""
    if not s or not s[0].isdigit():
        raise ValueError(s)
    if s.lower().startswith("0x"):
        return int(s, 16)
    if s.startswith("0") and len(s) > 1:
        return int(s[1:], 8)
    return int(s, 10)


_SYM_OFF = re.compile(r"^(?P<sym>[^+\s]+)(?:\+(?P<off>0[xX][0-9a-fA-F]+|\d+))?$")
_EVENT = re.compile(r"^(?:(?P<group>[A-Za-z_][\w.]*)/)?(?P<event>[A-Za-z_][\w.]*)?$")


def _num(s: str, what: str, text: str) -> int:
    try:
        return kstrtoul(s)
    except ValueError:
        raise UsageError(f"{text!r}: bad {what} {s!r} (decimal, 0x hex or 0 octal)") from None


def _parse_events_line(text: str) -> UprobeTarget:
    """``__trace_uprobe_create``: the uprobe_events grammar, with its checks and order."""
    argv = text.split()
    head = argv[0]
    kind = "r" if head[0] == "r" else "p"
    if len(head) > 1 and head[1] != ":":
        raise UsageError(f"{text!r}: expected p[:[GRP/]EVENT] or r[:[GRP/]EVENT] first")
    group = event = None
    if head[1:2] == ":":
        m = _EVENT.match(head[2:])
        if not m or not head[2:] or head[2:].endswith("/"):
            raise UsageError(f"{text!r}: bad event name {head[2:]!r} (BAD_EVENT_NAME)")
        group, event = m["group"], m["event"]
    if len(argv) < 2 or "/" not in argv[1]:
        raise UsageError(f"{text!r}: expected PATH:OFFSET with an absolute or relative path")
    filename, sep, arg = argv[1].rpartition(":")  # strrchr: the path may contain ':'
    if not sep or not arg[:1].isdigit():
        raise UsageError(f"{text!r}: expected PATH:OFFSET (the offset starts with a digit)")
    ref = 0
    if "(" in arg:
        arg, _, rest = arg.partition("(")
        if ")" not in rest:
            raise UsageError(f"{text!r}: reference counter has no ')' (REFCNT_OPEN_BRACE)")
        rctr, _, suffix = rest.partition(")")
        if suffix:
            raise UsageError(f"{text!r}: text after the reference counter (BAD_REFCNT_SUFFIX)")
        ref = _num(rctr, "reference counter offset (BAD_REFCNT)", text)
    if "%" in arg:
        arg, _, suffix = arg.partition("%")
        if suffix != "return":
            raise UsageError(f"{text!r}: unknown suffix %{suffix} (BAD_ADDR_SUFFIX)")
        kind = "r"
    offset = _num(arg, "uprobe offset (BAD_UPROBE_OFFS)", text)
    if len(argv) - 2 > 128:  # MAX_TRACE_ARGS
        raise UsageError(f"{text!r}: more than 128 arguments (E2BIG)")
    return UprobeTarget(filename, kind, offset=offset, ref_ctr_offset=ref, group=group,
                        event=event, args=tuple(argv[2:]), text=text)


def _sym_or_number(path: str, loc: str, kind: str, text: str, numeric_is_vaddr: bool) -> UprobeTarget:
    if loc[:1].isdigit():
        n = _num(loc, "address" if numeric_is_vaddr else "file offset", text)
        if numeric_is_vaddr:
            return UprobeTarget(path, kind, vaddr=n, text=text)
        return UprobeTarget(path, kind, offset=n, text=text)
    m = _SYM_OFF.match(loc)
    if not m:
        raise UsageError(f"{text!r}: expected SYMBOL[+OFF] or 0xOFFSET after the path")
    off = _num(m["off"], "symbol offset", text) if m["off"] else 0
    return UprobeTarget(path, kind, symbol=m["sym"], sym_offset=off, text=text)


def parse_uprobe_target(text: str, default_path: str | None = None) -> UprobeTarget:
    """Parse one uprobe target in any of the accepted syntaxes (:class:`UsageError` if bad).

    Without a path (``SYMBOL[+OFF]``, ``0xOFFSET``, ``r SYMBOL``) ``default_path`` is used.
    """
    t = text.strip()
    if not t:
        raise UsageError("empty uprobe target")
    first = t.split()[0]
    if first[0] in "pr" and (len(first) == 1 or first[1] == ":") and len(t.split()) > 1 \
            and (len(first) > 1 or "/" in t.split()[1]):
        return _parse_events_line(t)
    if first == "r" and len(t.split()) == 2:  # 'r SYMBOL' as kprobe targets write it
        inner = parse_uprobe_target(t.split()[1], default_path)
        return attrs.evolve(inner, kind="r", text=t)
    for prefix, kind in (("uretprobe:", "r"), ("ur:", "r"), ("uprobe:", "p"), ("u:", "p")):
        if t.startswith(prefix):
            path, sep, loc = t[len(prefix):].rpartition(":")
            if not sep or not path or not loc:
                raise UsageError(f"{text!r}: expected {prefix}PATH:SYMBOL")
            return _sym_or_number(path, loc, kind, t, numeric_is_vaddr=True)
    if t.startswith("usdt:"):
        parts = t[5:].split(":")
        if len(parts) == 2:
            return UprobeTarget(parts[0], usdt=("", parts[1]), text=t)
        if len(parts) == 3:
            return UprobeTarget(parts[0], usdt=(parts[1], parts[2]), text=t)
        raise UsageError(f"{text!r}: expected usdt:PATH:[PROVIDER:]NAME")
    if ":" in t and ("/" in t.rpartition(":")[0] or default_path is None):
        path, _, loc = t.rpartition(":")
        if not path or not loc:
            raise UsageError(f"{text!r}: expected PATH:SYMBOL[+OFF] or PATH:0xOFFSET")
        return _sym_or_number(path, loc, "p", t, numeric_is_vaddr=False)
    if default_path is None:
        raise UsageError(f"{text!r}: no path; expected PATH:SYMBOL[+OFF] or PATH:0xOFFSET")
    return _sym_or_number(default_path, t, "p", t, numeric_is_vaddr=False)
