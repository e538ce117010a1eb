"""Probe targets as tracing tools write them.

kprobe_events / perf probe: ``SYM``, ``SYM+OFF``, ``0xADDR``, ``MOD:SYM``, ``SYM%return``,
whole lines ``p:grp/ev SYM args``, ``r:ev SYM``, fprobe events ``f:ev SYM`` / ``f SYM%return``;
bpftrace: ``kprobe:f``, ``kretprobe:f``, ``kprobe:mod:f``, ``fentry:f``/``fexit:f``
(``kfunc:``/``kretfunc:``), ``lsm:HOOK``; libbpf section names: ``kprobe/f``, ``kretprobe/f``,
``fentry/f``, ``fexit/f``, ``fmod_ret/f`` (``.s/`` sleepable), ``lsm/HOOK``, ``lsm.s/HOOK``,
``kprobe.multi/PATTERN``, ``ksyscall/NAME``, ``kretsyscall/NAME``.
Names may be globs (``vfs_*``); :mod:`kpatch_core.spec` expands them against an image.

>>> parse_target("vfs_read+0x10")
Target(text='vfs_read+0x10', kind='p', symbol='vfs_read', offset=16, address=None, module=None, attach='kprobe', spelling='', syscall=False, sleepable=False)
>>> parse_target("r 0xffffffff81000000").kind
'r'
>>> t = parse_target("kretprobe:vfs_read")
>>> t.kind, t.attach, t.symbol, str(t)
('r', 'kretprobe', 'vfs_read', 'kretprobe:vfs_read')
"""
from __future__ import annotations

import re

import attrs

from .errors import UsageError
from .inputs import read_text
from .kstrtox import parse_long, parse_ulong

_SYM = re.compile(r"^(?:(?P<mod>[A-Za-z0-9_\-]+):)?(?P<sym>[A-Za-z_.$][\w.$]*)(?:(?P<sign>[+-])(?P<off>\w+))?$")
# a name with shell-style wildcards, as bpftrace, perf probe and libbpf's kprobe.multi take them
_GLOB = re.compile(r"^(?:(?P<mod>[A-Za-z0-9_\-]+):)?(?P<sym>[\w.$*?\[\]!-]*[*?\[][\w.$*?\[\]!-]*)$")

# Attach types (what the kernel is asked to do) and whether each is a return probe.
ATTACH_TYPES: dict[str, str] = {
    "kprobe": "p", "kretprobe": "r",  # register_kprobe / register_kretprobe
    "fentry": "p", "fexit": "r",  # BPF trampoline (bpf_trampoline_link_prog)
    "fmod_ret": "p",  # BPF trampoline, BPF_MODIFY_RETURN (check_attach_modify_return)
    "lsm": "p",  # BPF trampoline on bpf_lsm_HOOK, BPF_PROG_TYPE_LSM (bpf_lsm_verify_prog)
    "fprobe": "p", "fprobe_return": "r",  # fprobe events (trace_fprobe.c), 6.7+
    "kprobe_multi": "p", "kretprobe_multi": "r",  # bpf_kprobe_multi_link_attach
}

LSM_PREFIX = "bpf_lsm_"  # kernel/bpf/bpf_lsm.c: LSM_HOOK -> bpf_lsm_##NAME (libbpf lsm/HOOK)

# Spellings with a prefix, per tool: prefix -> (attach type, separator, source).
# bpftrace: src/probe_matcher.cpp / ast probe types (k, kr, f, fr are its short aliases)
# libbpf:   section_defs[] in tools/lib/bpf/libbpf.c
_PREFIXES: dict[tuple[str, str], tuple[str, str]] = {
    ("kprobe", ":"): ("kprobe", "bpftrace"), ("k", ":"): ("kprobe", "bpftrace"),
    ("kretprobe", ":"): ("kretprobe", "bpftrace"), ("kr", ":"): ("kretprobe", "bpftrace"),
    ("fentry", ":"): ("fentry", "bpftrace"), ("kfunc", ":"): ("fentry", "bpftrace"),
    ("f", ":"): ("fentry", "bpftrace"),
    ("fexit", ":"): ("fexit", "bpftrace"), ("kretfunc", ":"): ("fexit", "bpftrace"),
    ("fr", ":"): ("fexit", "bpftrace"),
    ("kprobe", "/"): ("kprobe", "libbpf"), ("kretprobe", "/"): ("kretprobe", "libbpf"),
    ("fentry", "/"): ("fentry", "libbpf"), ("fexit", "/"): ("fexit", "libbpf"),
    ("fentry.s", "/"): ("fentry", "libbpf"), ("fexit.s", "/"): ("fexit", "libbpf"),
    ("fmod_ret", "/"): ("fmod_ret", "libbpf"), ("fmod_ret.s", "/"): ("fmod_ret", "libbpf"),
    ("lsm", "/"): ("lsm", "libbpf"), ("lsm.s", "/"): ("lsm", "libbpf"),
    ("lsm", ":"): ("lsm", "bpftrace"),
    ("kprobe.multi", "/"): ("kprobe_multi", "libbpf"),
    ("kretprobe.multi", "/"): ("kretprobe_multi", "libbpf"),
    ("ksyscall", "/"): ("kprobe", "libbpf"), ("kretsyscall", "/"): ("kretprobe", "libbpf"),
}
# Probe types of the same tools that do not probe a kernel function (told apart from MOD:SYM).
NON_KERNEL_PREFIXES = frozenset({
    "uprobe", "uretprobe", "u", "ur", "usdt", "U", "tracepoint", "t", "rawtracepoint", "rt",
    "software", "s", "hardware", "h", "profile", "p", "interval", "i", "watchpoint", "w",
    "asyncwatchpoint", "aw", "BEGIN", "END", "iter", "it", "tp", "tp_btf", "raw_tp",
    "raw_tracepoint", "uprobe.multi", "uretprobe.multi", "xdp", "tc", "lsm_cgroup",
    "struct_ops", "syscall", "socket", "sk_skb", "cgroup", "perf_event",
})
_EVENT = re.compile(r"^(?P<type>[prf])(?P<maxactive>\d*)(?::(?P<event>\S*))?\s+(?P<target>\S+)(?:\s+.*)?$")


@attrs.frozen
class Target:
    """One probe target: a symbol with an offset, or an absolute address, and how to attach.

    ``attach`` is one of :data:`ATTACH_TYPES`; ``spelling`` is the text as a tool wrote it when
    that is not plain kprobe_events syntax (``kprobe:vfs_read``, ``fentry/tcp_sendmsg``), else
    ``''``; ``syscall`` marks libbpf's ``ksyscall/NAME`` (the arch's syscall entry of NAME);
    ``sleepable`` a sleepable BPF program (libbpf ``fentry.s/``, ``fexit.s/``, ``fmod_ret.s/``,
    ``lsm.s/``: ``BPF_F_SLEEPABLE``).  For ``lsm`` the symbol is the LSM hook (``file_open``),
    whose BPF attach point is the function ``bpf_lsm_file_open``.
    """

    text: str
    kind: str = "p"  # "p" entry, "r" return
    symbol: str | None = None
    offset: int = 0
    address: int | None = None
    module: str | None = None
    attach: str = attrs.field(default=attrs.Factory(
        lambda self: "kretprobe" if self.kind == "r" else "kprobe", takes_self=True))
    spelling: str = ""
    syscall: bool = False
    sleepable: bool = False

    def __str__(self) -> str:
        if self.spelling:
            return self.spelling
        return ("r " if self.kind == "r" else "") + self.text

    @property
    def is_pattern(self) -> bool:
        """True when the symbol is a glob (``vfs_*``) to expand against kallsyms."""
        return self.symbol is not None and any(c in self.symbol for c in "*?[")

    @property
    def kernel_symbol(self) -> str | None:
        """The kernel function the attach looks up: ``bpf_lsm_<hook>`` for ``lsm`` (as libbpf and
        bpftrace name an LSM hook's attach point), else the symbol."""
        if self.attach == "lsm" and self.symbol is not None:
            return LSM_PREFIX + self.symbol
        return self.symbol

    @property
    def is_kprobe(self) -> bool:
        """True for a plain kprobe or kretprobe (the kprobe_events/perf/BPF kprobe path)."""
        return self.attach in ("kprobe", "kretprobe")


def spelling_source(target: Target) -> str:
    """Which tool's syntax ``target`` was written in: ``bpftrace``, ``libbpf``, ``bcc``, ``fprobe_events``,
    ``kprobe_events`` (a ``p:``/``r:`` line) or ``perf`` (a bare ``SYM``, ``SYM%return``, glob)."""
    s = target.spelling
    if not s:
        return "perf"
    if target.attach in ("fprobe", "fprobe_return"):
        return "fprobe_events"
    if s.startswith(("attach_kprobe(", "attach_kretprobe(", "kprobe__", "kretprobe__",
                     "KFUNC_PROBE(", "KRETFUNC_PROBE(")):
        return "bcc"
    if _EVENT.match(s):
        return "kprobe_events"
    m = re.match(r"^([A-Za-z_][\w.]*)([:/])", s)
    hit = _PREFIXES.get((m.group(1), m.group(2))) if m else None
    return hit[1] if hit else "perf"




def _malformed(spec: str) -> UsageError:
    return UsageError(f"malformed target {spec.strip()!r}: expected SYM, SYM+OFF, 0xADDR or "
                      "MOD:SYM (prefix 'r ' for a return probe), or a tool's spelling such as "
                      "kprobe:SYM, kretprobe:SYM, fentry:SYM, kprobe/SYM, ksyscall/NAME")


def _symbol_target(line: str, kind: str, allow_glob: bool) -> Target:
    """``[MOD:]SYM[+-OFF][%return]``, ``0xADDR`` or (``allow_glob``) ``[MOD:]GLOB``."""
    if line.endswith("%return"):  # perf probe / kprobe_events 'SYM%return' [trace_kprobe.c]
        line, kind = line[: -len("%return")], "r"
        if not line:
            raise UsageError("malformed target '%return': expected SYM%return")
    if re.match(r"^(0[xX][0-9a-fA-F]+|[0-9]+)$", line):  # trace_kprobe_create: kstrtoul
        try:
            return Target(line, kind, address=parse_ulong(line))
        except ValueError as e:
            raise UsageError(f"malformed target {line!r}: bad address ({e})") from None
    m = _SYM.match(line)
    if not m and allow_glob:
        g = _GLOB.match(line)
        if g:
            return Target(line, kind, symbol=g.group("sym"), module=g.group("mod"))
    if not m:
        raise UsageError(f"malformed target {line!r}: expected SYM, SYM+OFF (decimal or 0x), "
                         "0xADDR or MOD:SYM")
    off = 0
    if m.group("off") is not None:
        try:  # traceprobe_split_symbol_offset: kstrtol of the signed offset
            off = parse_long(m.group("sign") + m.group("off"))
        except ValueError as e:
            raise UsageError(f"malformed target {line!r}: offset {m.group('off')!r}: {e}") from None
    return Target(line, kind, symbol=m.group("sym"), offset=off, module=m.group("mod"))


def _tool_spelling(line: str) -> Target | None:
    """A bpftrace or libbpf spelling (``kprobe:f``, ``fentry/f`` ...), or None if it is not one."""
    m = re.match(r"^([A-Za-z_][\w.]*)([:/])(.*)$", line)
    if not m:
        return None
    prefix, sep, rest = m.groups()
    hit = _PREFIXES.get((prefix, sep))
    if hit is None:
        if prefix in NON_KERNEL_PREFIXES:
            raise UsageError(f"{line!r} is a {prefix} probe, not a kernel function probe; "
                             "only kprobe/kretprobe/fentry/fexit/lsm/kprobe_multi/fprobe are checked")
        return None
    attach, _source = hit
    kind = ATTACH_TYPES[attach]
    if sep == ":" and re.match(r"^[A-Za-z0-9_\-]+:", rest):  # bpftrace kprobe:MOD:FUNC
        mod, _, rest = rest.partition(":")
        if mod == "vmlinux":  # bpftrace fentry:vmlinux:f names the kernel itself
            mod = ""
        rest = (mod + ":" if mod else "") + rest
    if not rest:
        raise UsageError(f"malformed target {line!r}: nothing after {prefix}{sep}")
    allow_offset = attach in ("kprobe",)  # kprobe:f+off (bpftrace), SEC("kprobe/f+0x10")
    syscall = prefix in ("ksyscall", "kretsyscall")
    t = _symbol_target(rest, kind, allow_glob=not syscall)
    if t.address is not None and attach not in ("kprobe", "kretprobe"):
        raise UsageError(f"malformed target {line!r}: {attach} takes a function name, not an address")
    if t.offset and not allow_offset:
        raise UsageError(f"malformed target {line!r}: {attach} takes a function name without +offset")
    if t.kind != kind:  # 'kprobe:f%return' is not a spelling any tool accepts
        raise UsageError(f"malformed target {line!r}: %return in a {prefix}{sep} spelling")
    return attrs.evolve(t, attach=attach, spelling=line, syscall=syscall,
                        sleepable=prefix.endswith(".s"))


def parse_target(spec: str) -> Target:
    """Parse one target line, in any spelling of the module docstring; raises UsageError.

    >>> parse_target("p:grp/ev vfs_read+4 x=%di").offset
    4
    >>> parse_target("f:ev vfs_read%return").attach
    'fprobe_return'
    """
    line = spec.split("#", 1)[0].strip()
    if not line:
        raise _malformed(spec)
    m = _EVENT.match(line)
    if m and (m.group("event") is not None or m.group("type") == "f"):
        # a whole kprobe_events / dynamic_events line: TYPE[:[GRP/]EVENT] TARGET [FETCHARGS]
        typ, target = m.group("type"), m.group("target")
        if m.group("maxactive") and typ != "r":
            raise _malformed(spec)
        t = _symbol_target(target, "r" if typ == "r" else "p", allow_glob=False)
        if typ == "f":  # trace_fprobe.c: f[:[GRP/][EVENT]] [MOD:]SYM[%return]
            if t.address is not None or t.offset:
                raise UsageError(f"malformed target {line!r}: an fprobe event takes a function "
                                 "name without offset")
            return attrs.evolve(t, attach="fprobe_return" if t.kind == "r" else "fprobe",
                                spelling=line)
        return attrs.evolve(t, spelling=line)
    kind = "p"
    m = re.match(r"^([pr])(?:\s+|:)(.*)$", line)
    if m:
        kind, line = m.group(1), m.group(2).strip()
    if not line or " " in line:
        raise _malformed(spec)
    if kind == "p" and not m:
        tool = _tool_spelling(line)
        if tool is not None:
            return tool
    t = _symbol_target(line, kind, allow_glob=True)  # perf probe takes globs: 'vfs_*'
    return attrs.evolve(t, spelling=line) if line.endswith("%return") else t


def read_targets(path: str) -> list[Target]:
    """Read a targets file (one target a line, ``#`` comments, ``r `` for return probes)."""
    lines = read_text(path, "a file of targets, one a line", "targets file").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.split("#", 1)[0].strip():
            continue
        try:
            out.append(parse_target(line))
        except UsageError as e:
            raise UsageError(f"{path}:{n}: {e}") from None
    return out
