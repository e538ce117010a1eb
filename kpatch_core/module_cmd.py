"""``kpatch-analyze`` and kernel modules: ``--module PATH.ko`` / ``--modules DIR`` for ``check``
(``MOD:SYM[+OFF]`` checked against the live module; a module not given is deferred), and the
``modules`` command (``kpatch-analyze VMLINUX --modules DIR`` routes here): the full analysis of
every module of the tree (or of the ``--module`` files), per module, as text or JSON Lines,
cached by the module's and the kernel's build-ids.

>>> main(["check", "vmlinux", "--modules", "/lib/modules/6.12.117+deb13-amd64", "ext4:ext4_file_open"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Callable

from .cmdline import add_image_args, open_image
from .errors import InputError, KpatchError, UsageError

if TYPE_CHECKING:
    from .image import Image
    from .module import ModuleSet


def add_module_args(p: argparse.ArgumentParser) -> None:
    """``--module PATH.ko`` (repeatable) and ``--modules DIR`` on parser ``p``."""
    p.add_argument("--module", action="append", default=[], metavar="PATH.ko",
                   help="a kernel module of the same build (.ko, .ko.xz, .ko.zst); MOD:SYM "
                        "targets are checked against it as the live module")
    p.add_argument("--modules", metavar="DIR",
                   help="a module tree (/lib/modules/RELEASE): modules found by name "
                        "(modules.dep, else the files), with their depends= loaded first")


def attach_modules(image: "Image", args: argparse.Namespace) -> "ModuleSet | None":
    """Give ``image`` the modules of ``args`` (MOD:SYM targets are then checked)."""
    paths, tree = getattr(args, "module", None) or [], getattr(args, "modules", None)
    if not paths and not tree:
        return None
    from .module import ModuleSet
    ms = ModuleSet(image, paths, tree)
    image.module_source = ms
    return ms


def opener(open_fn: Callable[[argparse.Namespace], "Image"] = open_image
           ) -> Callable[[argparse.Namespace], "Image"]:
    """``open_fn`` followed by :func:`attach_modules`."""
    def open_with_modules(args: argparse.Namespace) -> "Image":
        image = open_fn(args)
        attach_modules(image, args)
        return image
    return open_with_modules


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """The ``modules`` subcommand."""
    p = sub.add_parser("modules", help="full analysis of kernel modules, per module",
                       description="Every module of --modules DIR (or each --module file) laid "
                                   "out, relocated against VMLINUX and analysed as the live "
                                   "module; one line (or JSON object) per module.")
    add_image_args(p)
    add_module_args(p)
    p.add_argument("--only", metavar="NAMES", help="comma-separated module names to analyse")
    p.add_argument("--json", action="store_true", help="JSON Lines: one object per module")
    p.add_argument("--functions", action="store_true",
                   help="with --json: also one object per function (with its module)")
    p.add_argument("--no-cache", action="store_true", help="do not read or store results")
    p.add_argument("--jobs", type=int, default=1, help="worker processes per module (default 1)")
    p.add_argument("--html-dir", metavar="DIR",
                   help="also write DIR/MODULE.html, the HTML report of each module")
    p.add_argument("--func", metavar="MOD:SYM",
                   help="one module function, instruction by instruction (as 'func' does)")


def analyse_module(ms: "ModuleSet", name: str, use_cache: bool | None, jobs: int) -> dict:
    """The full analysis of module ``name`` as one JSON-ready dict (``analysis`` under
    ``"_analysis"``)."""
    from . import cache
    t0 = time.perf_counter()
    view = ms.view(name)
    if view is None:
        raise InputError(ms.missing(name))
    t1 = time.perf_counter()
    lm = view.loaded
    if lm.layout.range_of(_text_type())[1] == 0:  # data only (e.g. tuner tables): nothing to probe
        return {"module": name, "path": lm.ko.path, "vermagic": lm.ko.vermagic,
                "build_id": lm.ko.build_id, "functions": 0, "probeable_entries": 0, "insns": 0,
                "probeable_insns": 0, "fill": 0, "entry_methods": {}, "rejected_entries": [],
                "init_functions": len(lm.core.init), "ftrace_sites": 0, "blacklist": 0,
                "relocations": lm.relocated.count, "unresolved": list(lm.relocated.unresolved),
                "unsupported_relocations": lm.relocated.unsupported,
                "relocation_overflow": lm.relocated.overflow, "text": [],
                "note": "no core text (nothing to probe)", "load_seconds": round(t1 - t0, 3),
                "analysis_seconds": 0.0, "from_cache": False, "_analysis": None}
    a = cache.cached_analysis(view, jobs=jobs, use=use_cache)
    rel = lm.relocated
    tot = a.totals()
    return {"module": name, "path": lm.ko.path, "vermagic": lm.ko.vermagic,
            "build_id": lm.ko.build_id, "functions": tot["functions"],
            "probeable_entries": tot["probeable_entries"], "insns": tot["insns"],
            "probeable_insns": tot["probeable_insns"], "fill": tot.get("fill"),
            "entry_methods": tot["entry_methods"], "rejected_entries": tot["rejected_entries"],
            "init_functions": len(lm.core.init), "ftrace_sites": len(view.tables.ftrace_sites),
            "blacklist": len(view.tables.blacklist), "relocations": rel.count,
            "unresolved": list(rel.unresolved), "unsupported_relocations": rel.unsupported,
            "relocation_overflow": rel.overflow,
            "text": [hex(x) for x in lm.layout.range_of(_text_type())],
            "load_seconds": round(t1 - t0, 3), "analysis_seconds": round(time.perf_counter() - t1, 3),
            "from_cache": bool(getattr(a, "from_cache", False)), "_analysis": a}


def _text_type():  # type: ignore[no-untyped-def]
    from .module.layout import MemType
    return MemType.TEXT


def run(args: argparse.Namespace) -> int:
    """``kpatch-analyze modules VMLINUX --modules DIR | --module PATH...``."""
    if not args.module and not args.modules:
        raise UsageError("give --modules DIR (a module tree) or --module PATH.ko")
    image = open_image(args)
    ms = attach_modules(image, args)
    assert ms is not None
    if args.func:
        return _run_func(ms, args.func, args)
    names = [n.strip().replace("-", "_") for n in args.only.split(",")] if args.only else ms.names()
    unknown = [n for n in names if not ms.has(n)]
    if unknown:
        raise InputError(f"{', '.join(unknown[:5])}: no such module in "
                         f"{args.modules or 'the --module files'}")
    out = sys.stdout
    failed = 0
    totals = {"modules": 0, "functions": 0, "probeable_entries": 0, "insns": 0, "probeable_insns": 0}
    t0 = time.perf_counter()
    for n in names:
        try:
            r = analyse_module(ms, n, False if args.no_cache else None, args.jobs)
        except KpatchError as e:  # one bad module does not stop the others
            failed += 1
            if args.json:
                out.write(json.dumps({"module": n, "error": str(e)}) + "\n")
            else:
                out.write(f"{n:28s} error: {e}\n")
            ms.unload_all()
            continue
        a = r.pop("_analysis")
        ms.unload_all()
        if args.html_dir and a is not None:
            _write_html(args.html_dir, n, a)
        for k in totals:
            totals[k] += 1 if k == "modules" else int(r[k] or 0)
        if args.json:
            out.write(json.dumps(r, separators=(",", ":")) + "\n")
            if args.functions and a is not None:
                for i in range(len(a)):
                    out.write(json.dumps({"module": n, **a.function_json(i)},
                                         separators=(",", ":")) + "\n")
        else:
            pe = 100.0 * r["probeable_entries"] / r["functions"] if r["functions"] else 0.0
            pi = 100.0 * r["probeable_insns"] / r["insns"] if r["insns"] else 0.0
            un = f" unresolved {len(r['unresolved'])}" if r["unresolved"] else ""
            out.write(f"{n:28s} functions {r['functions']:6d} entries ok {pe:5.1f}%  insns "
                      f"{r['insns']:8d} ok {pi:5.1f}%  ftrace {r['ftrace_sites']:5d} blacklist "
                      f"{r['blacklist']:3d} init(freed) {r['init_functions']:4d}{un}\n")
    secs = time.perf_counter() - t0
    if not args.json:
        nf, ne = totals["functions"], totals["probeable_entries"]
        out.write(f"total: {totals['modules']} modules ({failed} failed), {nf} functions, "
                  f"{ne} probeable entries ({100.0 * ne / nf if nf else 0:.1f}%), "
                  f"{totals['insns']} instructions, {secs:.1f} s\n")
    return 1 if failed and not totals["modules"] else 0


def run_func(args: argparse.Namespace) -> int:
    """``func VMLINUX [MOD:]NAME --module X.ko | --modules DIR``: the module function, each
    instruction with its verdict (``--json``, ``--slots``, ``--optimized`` as for a vmlinux
    function)."""
    image = open_image(args)
    ms = attach_modules(image, args)
    assert ms is not None
    return _run_func(ms, args.name, args)


def _module_of(ms: "ModuleSet", spec: str) -> tuple[str, str]:
    """(module, symbol) of ``MOD:SYM``, or of a bare ``SYM`` found in the ``--module`` files
    (a tree is not searched: name the module)."""
    mod, sep, sym = spec.partition(":")
    if sep:
        if not mod or not sym:
            raise UsageError(f"{spec!r}: expected MOD:SYM")
        return mod.replace("-", "_"), sym
    found = []
    for name in sorted(ms.given):
        view = ms.view(name)
        if view is not None and view.kallsyms.lookup(spec) is not None:
            found.append(name)
    if len(found) == 1:
        return found[0], spec
    if not found:
        raise InputError(f"{spec}: no such function in the modules given "
                         f"({', '.join(sorted(ms.given)) or 'none'}); name it as MOD:{spec}")
    raise InputError(f"{spec}: in several modules ({', '.join(found)}); name it as MOD:{spec}")


def _run_func(ms: "ModuleSet", spec: str, args: argparse.Namespace) -> int:
    """A module function: each instruction with its verdict."""
    from .analyze import analyze_function, iter_insns
    mod, sym = _module_of(ms, spec)
    view = ms.view(mod)
    if view is None:
        raise InputError(ms.missing(mod))
    a, idx = analyze_function(view, sym)
    if not idx:
        raise InputError(f"{mod}:{sym}: no such function in the module's core text")
    slots, optimized = getattr(args, "slots", False), getattr(args, "optimized", False)
    out = sys.stdout
    for i in idx:
        f = a.function_json(i)
        e = f["entry"]
        if not args.json:
            out.write(f"{mod}:{f['name']} {f['address']} size {f['size']}  p: "
                      f"{'ok ' + str(e['method']) if e['ok'] else e['reason'] + ' ' + e['errno']}"
                      f"  {f['probeable']}/{f['insns']} instructions probeable\n")
        for ins in iter_insns(a, i, view):
            o = ins["outcome"]
            flags: tuple[str, ...] = ()
            if optimized and o.ok:
                from .probe import check
                from .target import Target
                flags = check(view, Target(hex(ins["address"]), "p", address=ins["address"])).flags
            slot = _slot_text(view, ins["address"]) if slots and o.ok else None
            if args.json:
                d = {"module": mod, "function": f["name"], "address": hex(ins["address"]),
                     "offset": ins["offset"], "bytes": ins["bytes"].hex(),
                     "mnemonic": ins["mnemonic"], "ok": o.ok,
                     "method": o.method.value if o.method else None,
                     "reason": o.reason.value if o.reason else None, "errno": o.errno}
                if optimized:
                    d["optimized"] = "OPTIMIZED" in flags
                if slots:
                    d["slot"] = slot
                out.write(json.dumps(d) + "\n")
            else:
                what = (o.method.value if o.method else "ok") if o.ok else \
                    f"{o.errno} {o.reason.value if o.reason else ''}"
                if "OPTIMIZED" in flags:
                    what += " [OPTIMIZED]"
                out.write(f"  {ins['address']:#x} +{ins['offset']:<5d} {ins['bytes'].hex():<22s} "
                          f"{ins['mnemonic'][:50]:50s} {what}"
                          + (f"  slot {slot}" if slot else "") + "\n")
    return 0


def _slot_text(view: "Image", addr: int) -> str:
    """The slot bytes ``slot_for`` builds at ``addr`` (hex), or why there is none."""
    from .slot import Slot, slot_for
    s = slot_for(view, addr)
    return s.code.hex() if isinstance(s, Slot) else f"refused: {s.reason.value}"


def _write_html(d: str, name: str, a: "object") -> None:
    """The module's HTML report (kpatch_core/html.py) as DIR/NAME.html."""
    import os

    from .html import render
    try:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{name}.html"), "w", encoding="utf-8") as f:
            f.write(render([a]))  # type: ignore[list-item]
    except OSError as e:
        raise InputError(f"{d}: cannot write the HTML report ({e.strerror})") from None
