"""The placement pipeline, in the kernel's order: kprobe_events layer, then register_kprobe.

``check(image, target)`` answers what ``echo 'p:grp/ev TARGET' >> kprobe_events`` would do on the
kernel the image came from: the first failing rule decides, exactly as in
kernel/trace/trace_kprobe.c (__trace_kprobe_create, __register_trace_kprobe) and
kernel/kprobes.c (register_kprobe, check_kprobe_address_safe) plus the backend's
arch_prepare_kprobe.

>>> v = check(Image.open("vmlinux"), "vfs_read+4")     # doctest: +SKIP
>>> v.ok, v.errno, v.message                            # doctest: +SKIP
(False, 'EILSEQ', 'Probe point is not an instruction boundary')
"""
from __future__ import annotations

import attrs

from kpatch_arch.base import PrepareContext

from .image import Image
from .kstrtox import ULONG_MAX
from .safety import check_kprobe_address_safe
from .symbols import base_name
from .target import Target, parse_target
from .verdict import Execution, Method, Reason, Refusal, Verdict, reason_errno


@attrs.frozen
class _Resolved:
    addr: int
    on_func_entry: bool


class _Refused(Exception):
    def __init__(self, reason: Reason, detail: str = "", errno: str | None = None,
                 addr: int | None = None) -> None:
        self.reason, self.detail, self.errno, self.addr = reason, detail, errno, addr


def _kprobe_addr(image: Image, target: Target) -> _Resolved:
    """``_kprobe_addr``: lookup, +offset, first alias, ``arch_adjust_kprobe_addr``."""
    backend = image.backend
    if target.symbol is not None:
        base = backend.lookup_name(image, target.symbol, target.offset)
        if base is None:
            raise _Refused(Reason.NO_SYMBOL, target.symbol)
        addr = (base + target.offset) & ULONG_MAX  # unsigned long arithmetic: wraps
    else:
        assert target.address is not None
        addr = target.address
    sym = image.kallsyms.containing(addr)
    if sym is None or not (image.tables.is_core_text(addr) or image.tables.is_init_text(addr)
                           or sym.addr <= addr < sym.end):
        raise _Refused(Reason.NOT_IN_KALLSYMS, hex(addr), addr=addr)
    adj, entry = backend.adjust_kprobe_addr(image, sym.addr, addr - sym.addr)
    return _Resolved(adj, entry)


def _kallsyms_name(image: Image, addr: int) -> str | None:
    s = image.kallsyms.containing(addr)
    return None if s is None else f"{s.name}+{addr - s.addr:#x}"


def _within_notrace_func(image: Image, addr: int) -> bool:
    """trace_kprobe.c ``within_notrace_func``: no ftrace record in the containing function
    (and none in the base function of a ``foo.part.0``-style clone)."""
    tables = image.tables

    def no_record(a: int) -> bool:
        s = image.kallsyms.containing(a)
        if s is None:
            return False
        return not tables.has_ftrace_record(s.addr, s.size)

    if not no_record(addr):
        return False
    s = image.kallsyms.containing(addr)
    if s is not None:
        if "." not in s.name:
            return True
        base = image.backend.lookup_name(image, base_name(s.name))
        if base:
            return no_record(base)
    return True


def _check_address_safe(image: Image, addr: int) -> bool:
    """``check_kprobe_address_safe`` (+ ``check_ftrace_location``): the generic check table
    (kpatch_core.safety); returns True if the probe is ftrace-based."""
    hit = check_kprobe_address_safe(image, addr)
    if hit is not None:
        raise _Refused(*hit, addr=addr)
    return image.tables.is_ftrace_site(addr)


def _register_kprobe(image: Image, target: Target) -> tuple[_Resolved, Execution | None]:
    """``register_kprobe``: address resolution, safety checks, then ``arch_prepare_kprobe``."""
    r = _kprobe_addr(image, target)
    if _check_address_safe(image, r.addr):
        return r, Execution(Method.FTRACE)  # arch_prepare_kprobe_ftrace: no decoding
    func = image.kallsyms.containing(r.addr)
    assert func is not None
    backend = image.backend
    if r.addr % backend.insn_align:
        raise _Refused(backend.misaligned_reason, hex(r.addr), addr=r.addr)
    out = backend.prepare(PrepareContext(image, r.addr, func))
    if isinstance(out, Refusal):
        raise _Refused(out.reason, out.detail, out.errno, addr=r.addr)
    return r, out


def check(image: Image, target: Target | str) -> Verdict:
    """The kernel's verdict for one kprobe_events target on ``image``.

    >>> check(img, "r vfs_read+4").errno          # doctest: +SKIP
    'EINVAL'
    """
    t = parse_target(target) if isinstance(target, str) else target
    rules = image.features.rules  # the label outputs print
    exact = image.features.exact
    resolved: _Resolved | None = None
    try:
        if t.module is not None:
            view = image.module_source.view(t.module) if image.module_source else None
            if view is not None:  # the module given, checked as the live module
                return attrs.evolve(check(view, attrs.evolve(t, module=None)), target=t.text)
            # A module that is not loaded: trace_kprobe defers the probe (-ENOENT -> accepted,
            # __register_trace_kprobe; armed by trace_kprobe_module_callback when it loads)
            why = image.module_source.missing(t.module) if image.module_source else \
                f"module {t.module} not given (--module PATH.ko or --modules DIR)"
            return Verdict(t.text, t.kind, True, deferred=True,
                           detail=f"{why}; the kernel registers the probe and arms it when "
                                  f"{t.module} loads, unchecked here", rules=rules, rules_exact=exact)
        if t.address is not None and image.module_source is not None:
            view = image.module_source.view_at(t.address)
            if view is not None:  # 0xADDR inside a module given: that live module's verdict
                return attrs.evolve(check(view, t), target=t.text)
        if t.symbol is not None:
            _events_symbol_checks(image, t)
        probe_addr = _events_address(image, t)
        if probe_addr is not None and _within_notrace_func(image, probe_addr) \
                and not image.config.enabled("KPROBE_EVENTS_ON_NOTRACE"):
            s = image.kallsyms.containing(probe_addr)
            raise _Refused(Reason.NOTRACE, s.name if s else hex(probe_addr), addr=probe_addr)
        if t.kind == "r":
            resolved = _kprobe_addr(image, t)  # register_kretprobe: kprobe_on_func_entry
            if not resolved.on_func_entry:
                raise _Refused(Reason.RETPROBE_NOT_ENTRY, "", "EINVAL", addr=resolved.addr)
            name = image.kallsyms.containing(resolved.addr)
            if name and name.name in image.backend.kretprobe_blacklist:
                raise _Refused(Reason.KRETPROBE_BLACKLIST, name.name, addr=resolved.addr)
        resolved, execution = _register_kprobe(image, t)
    except _Refused as e:
        if e.reason == Reason.NOT_IN_KALLSYMS and t.address is not None:
            # trace_kprobe: -ENOENT from register_kprobe on an address is taken as "module not
            # loaded yet" and accepted without a kprobe behind it
            return Verdict(t.text, t.kind, True, address=t.address,
                           detail="accepted but not registered (no kallsyms symbol)", rules=rules, rules_exact=exact)
        addr = e.addr if e.addr is not None else (resolved.addr if resolved else None)
        return Verdict(t.text, t.kind, False, address=addr,
                       symbol=_kallsyms_name(image, addr) if addr is not None else None,
                       reason=e.reason, errno=e.errno or reason_errno(e.reason), detail=e.detail,
                       rules=rules, rules_exact=exact)
    flags: tuple[str, ...] = ()
    if execution and execution.method == Method.FTRACE:
        flags = ("FTRACE",)
    elif image.config.enabled("OPTPROBES") and image.backend.have_optprobes:
        func = image.kallsyms.containing(resolved.addr)
        if func and image.backend.optimizable(PrepareContext(image, resolved.addr, func)):
            flags = ("OPTIMIZED",)
    return Verdict(t.text, t.kind, True, address=resolved.addr,
                   symbol=_kallsyms_name(image, resolved.addr),
                   method=execution.method if execution else None, flags=flags,
                   on_func_entry=resolved.on_func_entry,
                   insn=execution.insn if execution else b"",
                   mnemonic=execution.mnemonic if execution else "", rules=rules, rules_exact=exact)


def _events_symbol_checks(image: Image, t: Target) -> None:
    """__trace_kprobe_create's parse-time checks on a symbol target, in the kernel's order."""
    assert t.symbol is not None
    features = image.features
    einval = features.has("EVENTS_NONUNIQUE_EINVAL")  # parse_error: -EINVAL

    symbol = t.symbol

    def unique() -> None:  # validate_probe_symbol / number_of_same_symbols
        n = image.kallsyms.count(symbol)
        if n > 1 and features.has("EVENTS_UNIQUE_SYMBOL"):
            raise _Refused(Reason.NON_UNIQUE_SYMBOL, f"{n} symbols",
                           "EINVAL" if einval else "EADDRNOTAVAIL")
        if n == 0:
            raise _Refused(Reason.NO_SYMBOL, symbol, "EINVAL" if einval else "ENOENT")

    def retprobe_at_entry() -> None:  # kprobe_on_func_entry at parse time
        if t.kind != "r":
            return
        try:
            r = _kprobe_addr(image, t)
        except _Refused as e:
            if e.reason in (Reason.NO_SYMBOL, Reason.NOT_IN_KALLSYMS):
                return  # -ENOENT is deferred to registration
            raise
        if not r.on_func_entry:
            raise _Refused(Reason.RETPROBE_NOT_ENTRY, "", "EINVAL", addr=r.addr)

    if t.offset < 0:
        raise _Refused(Reason.NO_SYMBOL, f"negative offset {t.offset}", "EINVAL")
    if features.has("EVENTS_VALIDATE_SYMBOL_FIRST"):
        unique()
        retprobe_at_entry()
    else:
        retprobe_at_entry()
        unique()


def _events_address(image: Image, t: Target) -> int | None:
    """``trace_kprobe_address``: kallsyms_lookup_name(sym) + offset, or the raw address."""
    if t.symbol is not None:
        base = image.kallsyms.lookup(t.symbol)
        return None if base is None else (base + t.offset) & ULONG_MAX
    return t.address


def check_many(image: Image, targets: list[Target | str]) -> list[Verdict]:
    """Verdicts for several targets registered together, in this order (as a tool attaching
    them all, or kprobe_events lines written one after another).

    Each verdict is :func:`check`'s, except where the probes compete for a resource: detour
    buffers for optimized probes (``get_optinsn_slot`` in ``alloc_aggr_kprobe``, at
    registration) are limited on some arches (``Backend.optimized_capacity``, e.g. eight
    on a 4 KiB-page ppc64le kernel), so later probes stay unoptimized.  Probes on an address
    already probed join its aggregate and take no new buffer.
    """
    verdicts = [check(image, t) for t in targets]
    capacity = image.backend.optimized_capacity(image)
    if capacity is None:
        return verdicts
    held: set[int] = set()
    out = []
    for v in verdicts:
        addr = v.address
        if v.ok and "OPTIMIZED" in v.flags and addr is not None:
            if addr not in held and len(held) >= capacity:
                v = attrs.evolve(v, flags=tuple(f for f in v.flags if f != "OPTIMIZED"),
                                 detail=f"not optimized: all {capacity} detour buffers are held "
                                        "by earlier probes (get_optinsn_slot)")
            else:
                held.add(addr)
        out.append(v)
    return out
