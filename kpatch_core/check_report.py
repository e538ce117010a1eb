"""``kpatch-analyze check``: targets in, one line (or JSON object) per verdict out.

Targets come from the command line, ``--targets FILE`` (one a line) and ``--from FILE`` (a
bpftrace script, BCC tool, libbpf object or targets list, :mod:`kpatch_core.readers`).  Plain
kprobe targets print exactly as before; other attach types add ``attach`` and ``spelling`` to
their JSON; a refused name (missing, non-unique) gets a ``hint`` and ``candidates``
(:mod:`kpatch_core.namehelp`) and a second text line ``  hint: ...``.  An accepted kprobe at a
site real kernels died of when it was armed gets ``hazard`` (:mod:`kpatch_core.hazard`) and a
text line ``    hazard: ...``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from .attach import AnyVerdict, Unmatched, check_targets
from .attach_verdict import AttachReason, AttachVerdict
from .errors import UsageError
from .hazard import hazard
from .image import Image
from .namehelp import NameHelp, name_help
from .target import Target, parse_target, read_targets
from .verdict import Reason, Verdict

_NAME_REASONS = (Reason.NO_SYMBOL, Reason.NON_UNIQUE_SYMBOL)
_ATTACH_NAME_REASONS = (AttachReason.NO_BTF_FUNC, AttachReason.NO_ADDRESS,
                        AttachReason.FPROBE_NO_MATCH)


ERRNO_WIDTH = 13  # len("EADDRNOTAVAIL"): the verdict column stays aligned for every errno


def _why(message: str, why: str | None, detail: str) -> str:
    """The reason text unless the kernel's message already says it (then only the detail)."""
    if not why:
        return detail
    base = why[: -len(f" ({detail})")] if detail and why.endswith(f" ({detail})") else why
    tail = " ".join(base.lower().split()[-4:])
    if tail and tail in (message or "").lower():
        return detail
    return why


def _line(t: Target, v: AnyVerdict) -> str:
    if v.ok:
        flags = "".join(f"[{f}]" for f in v.flags)
        method = v.method.value if v.method else ""
        extra = f"({v.attach} of {v.count})" if isinstance(v, AttachVerdict) and v.count > 1 else ""
        if isinstance(v, Verdict) and v.deferred:  # MOD:SYM of a module not given
            extra = f"deferred: {v.detail}"
        return (f"{t!s:40s} {'ok':{ERRNO_WIDTH}s} {v.symbol or ''} "
                f"{hex(v.address) if v.address else ''} {method} {flags} {extra}").rstrip() + "\n"
    j = v.to_json()
    where = f"{v.symbol or ''} {hex(v.address)} " if v.address is not None else ""
    detail = getattr(v, "detail", "") or ""
    why = _why(v.message or "", j.get("why"), detail)
    if where and detail and why.endswith(f" ({detail})") and (v.symbol or "").split("+")[0] == detail:
        why = why[: -len(f" ({detail})")]  # the name is in the address column already
    text = f"{v.message}: {why}" if v.message and why else (v.message or why or "")
    return (f"{t!s:40s} {v.errno or '':{ERRNO_WIDTH}s} {where}{text} "
            f"[{j['kernel_function']}]\n")


def _past_end(image: Image, t: Target) -> str | None:
    """A warning for ``SYM+OFF`` past the end of SYM: the kernel takes the address as it is,
    inside whatever symbol follows (``_kprobe_addr`` adds the offset, no size check)."""
    if t.symbol is None or t.module is not None or t.offset <= 0 or t.is_pattern:
        return None
    base = image.kallsyms.lookup(t.symbol)
    sym = image.kallsyms.containing(base) if base is not None else None
    if sym is None or t.offset < sym.size:
        return None
    addr = (base + t.offset) & ((1 << 64) - 1)  # type: ignore[operator]
    other = image.kallsyms.containing(addr)
    into = f"{other.name}+{addr - other.addr:#x}" if other is not None else "no kallsyms symbol"
    return (f"    warning: +{t.offset:#x} is past the end of {t.symbol} (size {sym.size:#x}); "
            f"the kernel takes {addr:#x}, in {into}\n")


def _help(image: Image, t: Target, v: AnyVerdict) -> NameHelp:
    """Name help; a name kallsyms has once but BTF lacks is pointed at a kprobe instead."""
    assert t.symbol is not None
    if isinstance(v, AttachVerdict) and v.reason == AttachReason.NO_BTF_FUNC \
            and image.kallsyms.count(t.symbol) == 1:
        return NameHelp(t.symbol, f"{t.symbol} is in kallsyms but has no BTF FUNC (static, "
                        f"inlined in places, or dropped by pahole): kprobe:{t.symbol} can take it",
                        (f"kprobe:{t.symbol}",))
    return name_help(image, t.symbol)


def _wants_help(t: Target, v: AnyVerdict) -> bool:
    if v.ok or not t.symbol or t.is_pattern:
        return False
    return (v.reason in _NAME_REASONS) or (isinstance(v, AttachVerdict) and v.reason in _ATTACH_NAME_REASONS)


def run(args: argparse.Namespace, open_image: Callable[[argparse.Namespace], Image]) -> int:
    """The ``check`` command: print every verdict; 1 when a name is unknown, else 0."""
    targets = [parse_target(t) for t in args.targets]
    if args.targets_file:
        targets += read_targets(args.targets_file)
    from_file = getattr(args, "from_file", None)
    if not targets and not from_file:
        raise UsageError("check: no targets; give TARGET arguments, --targets FILE or --from FILE")
    image = open_image(args)
    note = image.features.note()  # outside the verified kernel versions (kpatch_core/features.py)
    if note and not args.json:
        print(f"kpatch-analyze: {note}", file=sys.stderr)
    if from_file:
        from .readers import read_probe_file, resolve  # only for --from
        pf = read_probe_file(from_file)
        got = resolve(image, pf)
        for u in pf.unresolved:
            print(f"kpatch-analyze: note: {from_file}: {u}", file=sys.stderr)
        if not got and not targets:
            raise UsageError(f"check: {from_file} ({pf.reader}) asks for no kernel-function probe "
                             f"({len(pf.skipped)} other probes)")
        targets += got
    unknown: list[str] = []
    out = sys.stdout
    for t, v in check_targets(image, targets):  # kprobes registered together, in order
        if isinstance(v, Unmatched):
            unknown.append(str(t))
            if args.json:
                out.write(json.dumps({"target": str(t), "ok": False, "errno": "ENOENT",
                                      "message": None, "reason": "NO_MATCH",
                                      "why": "the pattern matches no function", "attach": t.attach,
                                      "spelling": t.spelling or t.text}) + "\n")
            else:
                out.write(f"{t!s:40s} {'ENOENT':{ERRNO_WIDTH}s} the pattern matches no function\n")
            continue
        if not v.ok and t.symbol and not t.module and image.kallsyms.count(t.kernel_symbol or t.symbol) == 0:
            unknown.append(t.symbol)
        helper = _help(image, t, v) if _wants_help(t, v) and t.symbol else None
        risk = hazard(image, v.address) if isinstance(v, Verdict) and v.ok and v.address else None
        if args.json:
            j: dict[str, Any] = v.to_json()
            if risk is not None:
                j["hazard"] = risk
            if t.spelling and "attach" not in j:
                j["attach"], j["spelling"] = t.attach, t.spelling
            if helper is not None:
                j["hint"], j["candidates"] = helper.hint, list(helper.candidates)
            out.write(json.dumps(j) + "\n")
        else:
            out.write(_line(t, v))
            past = _past_end(image, t)
            if past:
                out.write(past)
            if helper is not None:
                out.write(f"    hint: {helper.hint}\n")
            if risk is not None:
                out.write(f"    hazard: {risk}\n")
    if unknown:
        # the verdicts above are the kernel's answer (ENOENT); the exit code flags the input error
        names = ", ".join(sorted(set(unknown))[:5]) + (" ..." if len(set(unknown)) > 5 else "")
        print(f"kpatch-analyze: error: unknown symbol(s) in {image.path}: {names}; see the hints "
              "above, list names with 'kpatch-analyze list VMLINUX PATTERN', or probe by 0xADDR",
              file=sys.stderr)
        return 1
    return 0
