"""One entry point for every attach type: kprobes, fentry/fexit, fprobe events, kprobe_multi.

:func:`check_targets` expands each target as its tool would (:mod:`kpatch_core.spec`), then
asks the rules of its attach type:

- kprobe/kretprobe: :func:`kpatch_core.probe.check_many` (all kprobes registered together, in
  order).  A kprobe written in a BPF tool's spelling (bpftrace, libbpf, BCC) is created through
  perf's kprobe PMU, ``create_local_trace_kprobe``, whose ``validate_probe_symbol`` answers a
  missing name ``-ENOENT`` and a non-unique one ``-EADDRNOTAVAIL`` on every kernel (only a
  kprobe_events write turns them into ``-EINVAL`` on newer kernels);
- fentry/fexit/fmod_ret: :mod:`kpatch_core.bpf_trampoline`;
- fprobe events and kprobe_multi: :mod:`kpatch_core.fprobe`.

>>> [(str(t), v.ok) for t, v in check_targets(image, [parse_target("kretprobe:vfs_read")])]  # doctest: +SKIP
[('kretprobe:vfs_read', True)]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from .attach_verdict import AttachVerdict
from .errors import UsageError
from .probe import check_many
from .spec import expand
from .target import Target, spelling_source
from .verdict import Reason, Verdict

if TYPE_CHECKING:
    from .image import Image

AnyVerdict = Verdict | AttachVerdict
# validate_probe_symbol's own errnos (create_local_trace_kprobe returns them unchanged)
_PERF_ERRNO = {Reason.NO_SYMBOL: "ENOENT", Reason.NON_UNIQUE_SYMBOL: "EADDRNOTAVAIL"}


@attrs.frozen
class Unmatched:
    """A glob that matched no function (the tool attaches nothing and reports it)."""

    target: Target


def _perf_kprobe(v: Verdict, t: Target) -> Verdict:
    """A kprobe_events verdict as perf's kprobe PMU would give it for a BPF tool's spelling."""
    if spelling_source(t) in ("bpftrace", "libbpf", "bcc") and v.reason in _PERF_ERRNO:
        return attrs.evolve(v, errno=_PERF_ERRNO[v.reason])
    return v


def check_targets(image: Image, targets: Sequence[Target]) -> list[tuple[Target, AnyVerdict | Unmatched]]:
    """Every target expanded and checked, in order; kprobes are registered together."""
    expanded: list[tuple[Target, Target | None]] = []
    for t in targets:
        got = expand(image, t)
        if not got:
            expanded.append((t, None))
        expanded.extend((t, e) for e in got)
    kprobes = [e for _, e in expanded if e is not None and e.is_kprobe]
    kverdicts = iter(check_many(image, list(kprobes))) if kprobes else iter(())
    out: list[tuple[Target, AnyVerdict | Unmatched]] = []
    for orig, e in expanded:
        if e is None:
            out.append((orig, Unmatched(orig)))
        elif e.is_kprobe:
            out.append((e, _perf_kprobe(next(kverdicts), e)))
        else:
            out.append((e, check_one(image, e)))
    return out


def check_one(image: Image, target: Target) -> AnyVerdict:
    """The verdict for one already-expanded target of any attach type."""
    if target.is_kprobe:
        return _perf_kprobe(check_many(image, [target])[0], target)
    # the BPF-trampoline and fprobe layers are imported only for their attach types (a plain
    # kprobe check starts without them)
    if target.attach in ("fentry", "fexit", "fmod_ret", "lsm"):
        from .bpf_trampoline import check_fentry
        return check_fentry(image, target)
    from .fprobe import check_fprobe_event, check_kprobe_multi_target
    if target.attach in ("fprobe", "fprobe_return"):
        return check_fprobe_event(image, target)
    return check_kprobe_multi_target(image, target)


def check_request(image: Image, request: str) -> AnyVerdict:
    """The verdict for one tools/bpf-attach-oracle request line (``fentry NAME``, ``fexit
    NAME``, ``fmod_ret NAME``, ``kmulti A,B``, ``kretmulti A``, ``fprobe NAME``,
    ``fprobe_return NAME``, ``kprobe NAME[+OFF]``, ``kretprobe NAME``, ``lsm HOOK``, and
    ``fentry.s``/``fexit.s``/``fmod_ret.s``/``lsm.s`` for sleepable programs), so our answers and
    the kernel's can be compared line by line."""
    kind, _, arg = request.partition(" ")
    if kind in ("kmulti", "kretmulti"):
        from .fprobe import check_kprobe_multi
        return check_kprobe_multi(image, arg.split(","), kind == "kretmulti")
    if kind in ("kprobe", "kretprobe"):  # perf's kprobe PMU, as the BPF tools create them
        name, _, off = arg.partition("+")
        return check_one(image, Target(arg, "r" if kind == "kretprobe" else "p", symbol=name,
                                       offset=int(off, 0) if off else 0, attach=kind,
                                       spelling=f"{kind}:{arg}"))
    sleepable = kind.endswith(".s")  # fentry.s, fexit.s, fmod_ret.s, lsm.s: BPF_F_SLEEPABLE
    kind = kind.removesuffix(".s")
    if kind not in ("fentry", "fexit", "fmod_ret", "lsm", "fprobe", "fprobe_return") or not arg \
            or (sleepable and kind not in ("fentry", "fexit", "fmod_ret", "lsm")):
        raise UsageError(f"bad oracle request {request!r}: expected ATTACH NAME")
    ret = kind in ("fexit", "fprobe_return")
    return check_one(image, Target(arg, "r" if ret else "p", symbol=arg, attach=kind,
                                   sleepable=sleepable))
