"""``kpatch-analyze event``: validate kprobe_events lines against an image, print them resolved.

    kpatch-analyze event VMLINUX 'LINE' ['LINE' ...] [--arch OTHER_VMLINUX] [--json]

Each LINE is written in order to one set of events (so a multi-probe append sees the lines
before it), exactly as ``echo 'LINE' >> kprobe_events`` would be.  An accepted line is printed
with this architecture's register names (``$arg1`` -> ``%di`` on x86_64, ``%x0`` on arm64);
a refused one as the kernel's error_log entry.  ``--arch`` also prints the equivalent line for
another image (argument registers translated by position, ``$argN`` kept) and validates it there.
"""
from __future__ import annotations

import argparse
import json
import sys

from .events import EventResult, EventSet, ImageEnv, translate_line


def add_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add the ``event`` subcommand to the CLI's subparsers."""
    from .cmdline import add_image_args
    p = subparsers.add_parser(
        "event", help="validate kprobe_events definitions (arguments, types, BTF names)",
        description="Validate kprobe_events lines as the image's kernel would: probe point, "
                    "fetch arguments, types and limits; prints the error_log entry for a refusal "
                    "and the definition with this architecture's registers for an acceptance.")
    add_image_args(p)
    p.add_argument("lines", nargs="+", metavar="LINE",
                   help="a kprobe_events line, quoted, e.g. 'p:grp/ev vfs_read buf=+0($arg2):string'")
    p.add_argument("--arch", dest="other", metavar="OTHER_VMLINUX",
                   help="also print (and validate) the equivalent line for this other image")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    from .module_cmd import add_module_args
    add_module_args(p)  # 'p:ev MOD:SYM+OFF' checked against the live module
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``event``; returns the exit code: 0 when every line is accepted, 1 when the kernel
    would refuse one (its error_log entry is printed on stdout, one line on stderr says so)."""
    from .cmdline import open_image
    from .module_cmd import attach_modules
    image = open_image(args)
    attach_modules(image, args)
    note = image.features.note()
    if note and not args.json:
        print(f"kpatch-analyze: {note}", file=sys.stderr)
    events = EventSet(ImageEnv(image))
    other_events = None
    if args.other:
        from .image import Image
        other_image = Image.open(args.other)
        other_events = EventSet(ImageEnv(other_image))
    out = sys.stdout
    refused = 0
    for line in args.lines:
        r = events.write(line)
        refused += not r.ok
        other = None
        if other_events is not None:
            tline, notes = translate_line(line, image.backend, other_events.env.backend)
            other = (tline, notes, other_events.write(tline))
        if args.json:
            obj = {"arch": image.backend.name, "kernel": str(image.version), **r.to_json()}
            if other is not None:
                obj["other"] = {"arch": other_events.env.backend.name,  # type: ignore[union-attr]
                                "kernel": str(other_events.env.image.version),  # type: ignore
                                "line": other[0], "translation_notes": other[1],
                                **other[2].to_json()}
            out.write(json.dumps(obj) + "\n")
            continue
        _print(out, r, f"{image.backend.name}, kernel {image.version} rules {r.rules}")
        if other is not None:
            assert other_events is not None
            ob = other_events.env.backend.name
            out.write(f"  on {ob}: {other[0]}\n")
            for n in other[1]:
                out.write(f"    note: {n}\n")
            _print(out, other[2], f"{ob}, rules {other[2].rules}", indent="    ")
    if refused:
        print(f"kpatch-analyze: error: the kernel refuses {refused} of {len(args.lines)} "
              "line(s) (see the error_log entries above)", file=sys.stderr)
        return 1
    return 0


def _print(out, r: EventResult, where: str, indent: str = "") -> None:
    if r.ok and r.event is None:
        out.write(f"{indent}accepted  {r.line.strip()}  ({r.op}; {where})\n")
        return
    if not r.ok:
        e = r.error
        assert e is not None
        if e.log_id:
            out.write(f"{indent}refused   {e.errno:13s} {e.message}  [{e.log_id}]  ({where})\n")
            for ln in e.error_log()[1:]:
                out.write(f"{indent}{ln}\n")
        else:
            why = e.detail or "nothing in error_log"
            out.write(f"{indent}refused   {e.errno:13s} ({why}; {where})\n")
        return
    ev = r.event
    assert ev is not None
    out.write(f"{indent}accepted  {ev.readback()}  ({where})\n")
    v = ev.verdict
    if v is not None and v.address is not None:
        how = v.method.value if v.method else ""
        flags = "".join(f"[{f}]" for f in v.flags)
        entry = ", function entry" if v.on_func_entry else ""
        out.write(f"{indent}  probe     {v.symbol} {hex(v.address)} {how} {flags}{entry}\n")
    elif v is not None and v.detail:
        out.write(f"{indent}  probe     {v.detail}\n")
    for a in ev.args:
        src = f"  ({a.btf})" if a.btf else ""
        out.write(f"{indent}  {a.name:14s} {a.fetch}:{a.type}{f'[{a.count}]' if a.count else ''}"
                  f"{src}\n")
    out.write(f"{indent}  resolved  {ev.resolved()}\n")
    for n in r.notes:
        out.write(f"{indent}  note: {n}\n")
