"""The two fprobe users: fprobe events (``f:``, trace_fprobe.c) and BPF kprobe_multi links
(bpf_trace.c ``bpf_kprobe_multi_link_attach``).

Both hook functions through ftrace, never through a breakpoint: the kprobe blacklist and the
instruction decoder do not apply, only "does ftrace have a record for it".

- fprobe event: ``register_fprobe(fp, SYMBOL, NULL)`` sets an ftrace filter with the symbol as
  a glob (``ftrace_set_filter`` -> ``ftrace_match_records``): nothing matched is ``-EINVAL``,
  logged as FAIL_REG_PROBE.  Kernels without ``CONFIG_FPROBE_EVENTS`` (before 6.7, or Debian
  arm64 6.12) have no handler for ``f``: ``create_dyn_event`` answers ``-EINVAL``.
- kprobe_multi: the symbols are sorted and resolved by ``ftrace_lookup_symbols``: each name
  takes the first kallsyms copy whose address has an ftrace location; one name without one
  fails the whole attach with ``-ESRCH``.  Without ``CONFIG_FPROBE`` the attach is a stub
  returning ``-EOPNOTSUPP`` (Debian 6.1).

>>> check_kprobe_multi(image, ["vfs_read", "memcpy"]).failed     # doctest: +SKIP
('memcpy',)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .attach_verdict import AttachReason, AttachVerdict, refuse
from .spec import available_filter_functions, glob_regex, traceable_names
from .target import Target

if TYPE_CHECKING:
    from .image import Image

FPROBE_EVIDENCE = ("register_fprobe_ips",)  # CONFIG_FPROBE (kernel/trace/fprobe.c)
FPROBE_EVENTS_EVIDENCE = ("trace_fprobe_create",)  # CONFIG_FPROBE_EVENTS (trace_fprobe.c)
MAX_KPROBE_MULTI_CNT = 1 << 20  # bpf_trace.c (6.12)


def _built_in(image: Image, evidence: Sequence[str]) -> bool:
    return any(image.symtab.value(s) is not None for s in evidence)


def _ftrace_location(image: Image, addr: int) -> bool:
    """``ftrace_location(addr)``: a record at ``addr``, or ``addr`` starts a kallsyms symbol
    whose range holds one (``map sym+0 to __fentry__``)."""
    if image.tables.is_ftrace_site(addr):
        return True
    s = image.kallsyms.containing(addr)
    return s is not None and s.addr == addr and image.tables.has_ftrace_record(addr, s.size)


def lookup_symbols(image: Image, names: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """``ftrace_lookup_symbols``: per name the first kallsyms copy with an ftrace location,
    and the names left without one (in sorted order, as the kernel sorts them)."""
    found: dict[str, int] = {}
    missing = []
    for name in sorted(set(names)):
        addr = next((a for a in image.kallsyms.addresses_of(name) if _ftrace_location(image, a)), None)
        if addr is None:
            missing.append(name)
        else:
            found[name] = addr
    return found, missing


def check_kprobe_multi(image: Image, names: Sequence[str], return_probe: bool = False,
                       target: str = "", spelling: str = "") -> AttachVerdict:
    """The verdict for one kprobe_multi link over ``names`` (kretprobe_multi when
    ``return_probe``); ``failed`` lists every name that fails it."""
    attach, kind = ("kretprobe_multi", "r") if return_probe else ("kprobe_multi", "p")
    target = target or ",".join(names)
    common = {"spelling": spelling, "rules": image.version.rules}
    if not _built_in(image, FPROBE_EVIDENCE):  # bpf_kprobe_multi_link_attach stub
        return refuse(target, kind, attach, AttachReason.MULTI_NO_FPROBE, **common)  # type: ignore[arg-type]
    if len(names) > MAX_KPROBE_MULTI_CNT and image.features.has("KPROBE_MULTI_CNT_LIMIT"):
        return refuse(target, kind, attach, AttachReason.MULTI_TOO_MANY, f"{len(names)}", **common)  # type: ignore[arg-type]
    found, missing = lookup_symbols(image, names)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        return AttachVerdict(target, kind, attach, False, reason=AttachReason.MULTI_NOT_FOUND,
                             errno=AttachReason.MULTI_NOT_FOUND.errno, detail=shown,
                             failed=tuple(missing), count=len(set(names)), **common)  # type: ignore[arg-type]
    first = min(found.values()) if found else None
    return AttachVerdict(target, kind, attach, True, address=first, count=len(found),
                         flags=("FTRACE",), **common)  # type: ignore[arg-type]


def check_kprobe_multi_target(image: Image, target: Target) -> AttachVerdict:
    """libbpf ``SEC("kprobe.multi/PATTERN")``: the pattern matched against
    ``available_filter_functions`` (libbpf 1.2+), then one kprobe_multi attach of the matches."""
    assert target.symbol is not None
    ret = target.attach == "kretprobe_multi"
    if target.is_pattern:
        rx = glob_regex(target.symbol)
        names = list(dict.fromkeys(n for n in available_filter_functions(image) if rx.match(n)))
        if not names:  # libbpf attach_kprobe_multi: no matching symbols
            return refuse(str(target), target.kind, target.attach, AttachReason.MULTI_NO_MATCH,
                          target.symbol, spelling=target.spelling, rules=image.version.rules)
    else:
        names = [target.symbol]
    return check_kprobe_multi(image, names, ret, str(target), target.spelling)


def check_fprobe_event(image: Image, target: Target) -> AttachVerdict:
    """``echo 'f[:EVENT] SYMBOL[%return]' >> dynamic_events`` (trace_fprobe.c
    ``__trace_fprobe_create`` -> ``register_fprobe``)."""
    assert target.symbol is not None
    common = {"spelling": target.spelling, "rules": image.version.rules}
    t, kind, attach = str(target), target.kind, target.attach
    if not _built_in(image, FPROBE_EVENTS_EVIDENCE):  # create_dyn_event: no 'f' handler
        return refuse(t, kind, attach, AttachReason.FPROBE_EVENTS_MISSING, **common)  # type: ignore[arg-type]
    if target.module:  # a module's functions are not in this image: not modelled
        return AttachVerdict(t, kind, attach, True, detail="module function: not checked", **common)  # type: ignore[arg-type]
    if target.is_pattern:  # ftrace_set_filter: the symbol is an ftrace glob
        rx = glob_regex(target.symbol)
        names = [n for n in dict.fromkeys(available_filter_functions(image)) if rx.match(n)]
    elif image.features.has("FPROBE_FILTER_BY_KALLSYMS"):  # filter_match_callback: any alias
        names = [target.symbol] if any(_ftrace_location(image, a) for a in
                                       image.kallsyms.addresses_of(target.symbol)) else []
    else:
        names = [target.symbol] if target.symbol in traceable_names(image) else []
    if not names:  # ftrace_set_hash: !ftrace_match_records -> -EINVAL
        return refuse(t, kind, attach, AttachReason.FPROBE_NO_MATCH, target.symbol, **common)  # type: ignore[arg-type]
    addr = next((a for a in image.kallsyms.addresses_of(names[0]) if _ftrace_location(image, a)), None)
    return AttachVerdict(t, kind, attach, True, address=addr,
                         symbol=f"{names[0]}+0x0" if len(names) == 1 else None,
                         count=len(names), flags=("FTRACE",), **common)  # type: ignore[arg-type]
