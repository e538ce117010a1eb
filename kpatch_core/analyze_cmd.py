"""The full-analysis commands of ``kpatch-analyze`` (parsing and printing only):

    kpatch-analyze VMLINUX [VMLINUX ...] [--json] [--html FILE] [--jobs N] [--no-cache]
    kpatch-analyze func VMLINUX NAME [--json] [--slots]
    kpatch-analyze diff OLD NEW [--json] [--limit N]
"""
from __future__ import annotations

import argparse
from types import ModuleType
import json
import re
import sys
from typing import TYPE_CHECKING

from .errors import InputError, UsageError

if TYPE_CHECKING:
    from .analysis import Analysis
    from .outcome import Outcome
    from .image import Image


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="kernel config (/boot/config-*) to read facts from")
    p.add_argument("--set", metavar="FACT=y|n", action="append", default=[],
                   help="override one configuration or runtime fact (e.g. PREEMPTION=n)")
    p.add_argument("--system-map", metavar="FILE", help="System.map of a boot image (default: "
                   "System.map-RELEASE beside it, else the image's own kallsyms tables)")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="worker processes (default: every core)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not read or write the results cache (~/.cache/kpatch-core)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``summary`` (the default command), ``func`` and ``diff``."""
    s = sub.add_parser("summary", help="full analysis of one or more images (the default command)")
    s.add_argument("vmlinux", nargs="+", help="vmlinux ELF image(s) (unstripped)")
    _common(s)
    s.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per text symbol (README: JSON Lines schema)")
    s.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    s.add_argument("--optimized", action="store_true",
                   help="also predict [OPTIMIZED] (jump-optimized kprobes) per instruction")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    f = sub.add_parser("func", help="every instruction of one function with its verdict")
    f.add_argument("vmlinux", help="vmlinux ELF image (unstripped)")
    f.add_argument("name", help="function name (every symbol of that name is shown)")
    _common(f)
    f.add_argument("--json", action="store_true", help="one JSON object per instruction")
    f.add_argument("--slots", action="store_true",
                   help="also build each accepted instruction's slot (kpatch_core.slot)")
    f.add_argument("--optimized", action="store_true",
                   help="also predict [OPTIMIZED] per accepted instruction (can_optimize; slower)")
    from .module_cmd import add_module_args
    add_module_args(f)  # func --module X.ko [MOD:]NAME: a module function (module_cmd.run_func)
    d = sub.add_parser("diff", help="what changed between two kernels")
    d.add_argument("old", help="old vmlinux")
    d.add_argument("new", help="new vmlinux")
    _common(d)
    d.add_argument("--json", action="store_true", help="print the differences as one JSON object")
    d.add_argument("--limit", type=int, default=25, metavar="N",
                   help="names listed per category in the terminal output (default 25; 0: all)")


def _open(path: str, args: argparse.Namespace) -> "Image":
    from .cmdline import open_image
    return open_image(argparse.Namespace(vmlinux=path, config=args.config, set=args.set,
                                         system_map=getattr(args, "system_map", None)))


def _analyze(path: str, args: argparse.Namespace, show_progress: bool,
             facts: bool = True) -> tuple["Image", "Analysis"]:
    """The analysis of ``path`` (through the results cache unless ``--no-cache``); ``facts``
    False: the per-symbol facts only on first use when no cache is written (the summary)."""
    from . import cache
    from .progress import Progress
    image = _open(path, args)
    bar = Progress(f"analysing {path}") if show_progress else None
    optimized = getattr(args, "optimized", False)
    if not facts and (args.no_cache or not cache.enabled()):
        from .analyze import analyze
        a = analyze(image, jobs=args.jobs or None, progress=bar, optimized=optimized, facts=False)
    else:
        a = cache.cached_analysis(image, jobs=args.jobs or None, progress=bar,
                                  pathkey=cache.path_key(path, args.config, args.set),
                                  optimized=optimized, use=False if args.no_cache else None)
    if bar:
        bar.close()
    return image, a


def run_summary(args: argparse.Namespace) -> int:
    """The default command: full analysis, terminal summary / JSON Lines / HTML."""
    if args.jobs < 0:
        raise UsageError("--jobs must be >= 0")
    analyses = []
    for path in args.vmlinux:
        _, a = _analyze(path, args, not args.no_progress and not args.json,
                        facts=bool(args.json or args.html))
        analyses.append(a)
    out = sys.stdout
    if args.json:
        from .json_lines import write_json_lines
        for a in analyses:
            write_json_lines(a, out, image_key=len(analyses) > 1, jobs=args.jobs or None)
    else:
        for a in analyses:
            _print_summary(a, out)
        if len(analyses) > 1:
            _print_comparison(analyses, out)
    if args.html:
        from .html import render
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(render(analyses))
        except OSError as e:
            raise InputError(f"{args.html}: cannot write the HTML report ({e.strerror})") from None
        if not args.json:
            out.write(f"HTML report written to {args.html}\n")
    return 0


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f}%" if b else "    -"


def _print_summary(a: "Analysis", out) -> None:
    m = a.meta
    t = a.totals()
    w = out.write
    w(f"image        {m['path']}\n")
    w(f"arch         {m['arch']}\n")
    w(f"kernel       {m['version']} (rules {m['rules']}) {m['banner'][:80]}\n")
    if m.get("rules_exact") is False:  # outside the verified kernel versions (features.py)
        from .features import FeatureSet
        major, minor = (int(x) for x in m["version"].split(".")[:2])
        w(f"{FeatureSet.decide((major, minor), m['arch']).note()}\n")
    w(f"build-id     {m['build_id']}\n")
    w("config facts:\n")
    for name, val, src in m["facts"]:
        w(f"  {name:26s} {'y' if val else 'n'}   {src}\n")
    w(f"functions    {t['functions']}   (text symbols {t['symbols']})\n")
    w(f"ftrace sites {m['ftrace_sites']}    blacklist entries {m['blacklist_entries']}\n")
    w(f"probeable function entries {t['probeable_entries']} "
      f"({_pct(t['probeable_entries'], t['functions']).strip()})\n")
    for k, c in t["entry_methods"].items():
        w(f"  {k:24s} {c:9d}\n")
    w("rejected entries by reason:\n")
    for r, e, c in t["rejected_entries"]:
        w(f"  {r:24s} {e:13s} {c:9d}\n")
    w(f"instructions {t['insns']}   probeable {t['probeable_insns']} "
      f"({_pct(t['probeable_insns'], t['insns']).strip()})"
      + (f"   jump-optimized [OPTIMIZED] {t['optimized_insns']}" if t["optimized_insns"] is not None
         else "") + "\n")
    w(f"  (padding not counted: {t.get('fill', 0)} fill instructions -- int3/nop/zero runs after "
      "a symbol's last real instruction)\n")
    w(f"  {'outcome':24s} {'count':>9s}  share\n")
    for k, c in t["by_outcome"].items():
        w(f"  {k:24s} {c:9d} {_pct(c, t['insns'])}\n")
    w(f"  {'text area':24s} {'insns':>9s}  probeable\n")
    for g in a.groups("area")[:12]:
        w(f"  {g['name'][:24]:24s} {g['insns']:9d} {_pct(g['probeable_insns'], g['insns'])}\n")
    src = "cache" if a.from_cache else "analysed"
    w(f"{src} in {a.seconds:.2f} s\n\n")


def _print_comparison(analyses: list["Analysis"], out) -> None:
    out.write(f"{'arch':10s} {'kernel':10s} {'functions':>9s} {'entries ok':>10s} {'insns':>9s} "
              f"{'insns ok':>9s}\n")
    for a in analyses:
        t = a.totals()
        out.write(f"{a.meta['arch']:10s} {a.meta['version']:10s} {t['functions']:9d} "
                  f"{_pct(t['probeable_entries'], t['functions']):>10s} {t['insns']:9d} "
                  f"{_pct(t['probeable_insns'], t['insns']):>9s}\n")


def query_function(path: str, name: str, config: str | None = None, sets: list[str] | tuple = (),
                   use_cache: bool = True) -> tuple["Analysis", "Image | None"]:
    """The analysis of the symbols called ``name``: from the cache when this file (with these
    options) was analysed before -- no ELF parsing at all -- else by analysing just them."""
    from . import cache
    from .analyze import analyze_function
    if use_cache and cache.enabled():
        key = cache.lookup_alias(cache.path_key(path, config, sets))
        if key:
            a = cache.load_function(key, name)
            if a is not None and len(a):
                return a, None
    ns = argparse.Namespace(config=config, set=list(sets))
    image = _open(path, ns)
    a, _ = analyze_function(image, name)
    return a, image


def _verdict_cells(o) -> tuple[str, str, str]:
    if o.ok:
        return "ok", "", (o.method.value if o.method else "") + (" [OPTIMIZED]" if o.optimized else "")
    from .verdict import reason_text
    return o.errno or "", f"{o.reason.value}: {reason_text(o.reason)}" if o.reason else "", ""


def _with_optimized(image: "Image", addr: int, o: "Outcome") -> "Outcome":
    """``o`` with ``optimized`` as ``check`` predicts it for ``0xADDR`` (the same pipeline)."""
    import attrs

    from .probe import check
    from .target import Target
    v = check(image, Target(hex(addr), "p", address=addr))
    return attrs.evolve(o, optimized="OPTIMIZED" in v.flags)


_HEX_OPERAND = re.compile(r"(?<![\w+-])#?(0x[0-9a-f]{4,16})\b")


def _name_targets(image: "Image", mnemonic: str) -> str:
    """``mnemonic`` with each address operand inside a kallsyms symbol named (``call
    0xffffffff81000010 <plain_func+0x0>``): call and jump targets, PC-relative references."""
    names = []
    for m in _HEX_OPERAND.finditer(mnemonic):
        addr = int(m.group(1), 16)
        s = image.kallsyms.containing(addr) if image.tables.is_core_text(addr) else None
        if s is not None:
            names.append(f"<{s.name}+{addr - s.addr:#x}>")
    return f"{mnemonic} {' '.join(names)}" if names else mnemonic


def run_func(args: argparse.Namespace) -> int:
    """``func VMLINUX NAME``: every instruction of the function with its verdict."""
    from .analyze import iter_insns
    if args.module or args.modules:
        from .module_cmd import run_func as run_module_func
        return run_module_func(args)
    a, image = query_function(args.vmlinux, args.name, args.config, args.set, not args.no_cache)
    if not len(a):
        raise InputError(f"{args.name}: no such symbol in core text")
    slot_mod: ModuleType | None = None
    if args.slots:
        from . import slot as slot_module
        slot_mod = slot_module
    if (args.slots or args.optimized) and image is None:
        image = _open(args.vmlinux, args)
    out = sys.stdout
    for i in range(len(a)):
        f = a.function_json(i)
        if not args.json:
            bl = f["blacklist"]
            out.write(f"{f['name']} {f['address']} size {f['size']} ({f['type']}, {f['area']}, "
                      f"{f['subsystem']})\n")
            out.write(f"  unique {f['unique']} (same name: {f['same_name']})  notrace {f['notrace']}"
                      f"  ftrace sites {f['ftrace_sites']}  blacklist "
                      f"{(bl['reason'] + ' via ' + str(bl['source'])) if bl else 'no'}\n")
            if f["clone"]:
                out.write(f"  clone {f['clone']['kind']} of {f['clone']['base']}\n")
            e, r = f["entry"], f["kretprobe"]
            out.write(f"  p {f['name']}: {'ok ' + str(e['method']) if e['ok'] else e['reason'] + ' ' + e['errno']}"
                      f"   r {f['name']}: {'ok' if r['ok'] else r['reason'] + ' ' + r['errno']}"
                      f"   entry shift {f['entry_shift']}"
                      + (f"   local entry +{f['lookup_shift']}" if f["lookup_shift"] else "")
                      + (f"   syscall {f['syscall']}" if f["syscall"] else "") + "\n")
            out.write(f"  {f['probeable']}/{f['insns']} instructions probeable"
                      + (f" ({f['fill']} of them padding after the last real instruction)"
                         if f.get("fill") else "") + "\n")
        for ins in iter_insns(a, i, image):
            o = ins["outcome"]
            if args.optimized and o.ok and image is not None:
                o = _with_optimized(image, ins["address"], o)
            slot = None
            if slot_mod is not None and image is not None and o.ok:
                try:
                    s = slot_mod.slot_for(image, ins["address"])
                    slot = s.code.hex() if hasattr(s, "code") else f"refused: {s.reason.value}"
                except Exception as ex:  # a defect in a backend's slot code: say what failed
                    slot = f"unavailable: {type(ex).__name__}: {ex}"
            if args.json:
                d = {"function": f["name"], "address": hex(ins["address"]), "offset": ins["offset"],
                     "bytes": ins["bytes"].hex(), "mnemonic": ins["mnemonic"], "ok": o.ok,
                     "method": o.method.value if o.method else None,
                     "reason": o.reason.value if o.reason else None, "errno": o.errno,
                     "optimized": o.optimized}
                if args.slots:
                    d["slot"] = slot
                out.write(json.dumps(d) + "\n")
            else:
                verdict, why, method = _verdict_cells(o)
                mn = ins["mnemonic"]
                if _HEX_OPERAND.search(mn):  # name branch targets (kallsyms: open the image once)
                    if image is None:
                        image = _open(args.vmlinux, args)
                    mn = _name_targets(image, mn)
                out.write(f"  {ins['address']:#x} +{ins['offset']:<5d} {ins['bytes'].hex():<22s} "
                          f"{mn[:60]:60s} {verdict:13s} {method or why}"
                          + (f"  slot {slot}" if slot else "") + "\n")
    return 0


def run_diff(args: argparse.Namespace) -> int:
    """``diff OLD NEW``."""
    from .diff import diff_analyses
    io, ao = _analyze(args.old, args, False)
    inew, an = _analyze(args.new, args, False)
    d = diff_analyses(ao, an, io, inew)
    out = sys.stdout
    if args.json:
        out.write(json.dumps(d.to_json()) + "\n")
        return 0
    c = d.counts()
    out.write(f"old {args.old}: {ao.meta['arch']} {ao.meta['version']}\n")
    out.write(f"new {args.new}: {an.meta['arch']} {an.meta['version']}\n")
    for k, v in c.items():
        out.write(f"  {k:22s} {'n/a' if v < 0 else v}\n")
    lim = args.limit or None

    def listing(title: str, items: list[str]) -> None:
        if items:
            shown = items[:lim]
            more = f" ... (+{len(items) - len(shown)})" if len(items) > len(shown) else ""
            out.write(f"{title}: {' '.join(shown)}{more}\n")

    listing("appeared", d.appeared)
    listing("vanished", d.vanished)
    listing("renamed into clones", [f"{n}->{','.join(cl)}" for n, cl in d.renamed])
    for ch in d.probeability[:lim]:
        out.write(f"  {ch.kind} {ch.name}: {ch.old} -> {ch.new}\n")
    if len(d.probeability) > (lim or len(d.probeability)):
        out.write(f"  ... (+{len(d.probeability) - (lim or 0)} probeability changes)\n")
    if d.signatures is None:
        out.write(f"{d.btf_note}\n")
    else:
        for n, so, sn in d.signatures[:lim]:
            out.write(f"  signature {n}: {so} -> {sn}\n")
    return 0
