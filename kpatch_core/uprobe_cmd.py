"""``kpatch-analyze uprobe``: where the kernel accepts a uprobe in a user-space ELF file.

    kpatch-analyze uprobe BINARY                      summary: every function, USDT probes
    kpatch-analyze uprobe BINARY FUNCTION             one function, instruction by instruction
    kpatch-analyze uprobe BINARY TARGET [TARGET ...]  verdicts: SYM+OFF, 0xOFFSET, PATH:SYM,
                                                      'p:grp/ev PATH:0xOFF(REF)', uprobe:PATH:SYM,
                                                      usdt:PATH:PROVIDER:NAME
    options: --json, --kernel 6.1|6.12 (rule set), --debug-dir DIR (build-id debug files)

Exit codes: 0 every target judged (accepted or refused), 1 bad input (unreadable or non-ELF
file, unsupported architecture, unknown symbol), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING

from .errors import UsageError
from .uprobe.elf import DEBUG_ROOTS, Symbol, UserElf
from .uprobe.probe import (
    check_offset,
    check_uprobes,
    features_for,
    instruction_starts,
    uprobe_support,
)
from .uprobe.target import UprobeTarget, parse_uprobe_target
from .uprobe.usdt import usdt_probes
from .uprobe.verdict import UprobeVerdict, UReason

if TYPE_CHECKING:
    from .features import FeatureSet


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``uprobe`` subcommand."""
    p = subparsers.add_parser(
        "uprobe", help="uprobe verdicts for a user-space executable or shared library",
        description="What the kernel does with a uprobe at each place of a user ELF file "
                    "(arch_uprobe_analyze_insn: accepted and emulated/simulated/stepped out of "
                    "line, or refused with its errno), plus our own instruction-boundary "
                    "warning: the kernel accepts a mid-instruction offset and corrupts the "
                    "process.")
    p.add_argument("binary", help="ELF executable or shared library (x86_64, arm64, riscv64, "
                                  "s390x, ppc64le; 64-bit)")
    p.add_argument("targets", nargs="*", metavar="FUNCTION|TARGET",
                   help="a function name (per-instruction listing) or uprobe targets")
    p.add_argument("--json", action="store_true", help="JSON Lines output")
    p.add_argument("--kernel", default="6.12", metavar="VERSION",
                   help="kernel rule set (MAJOR.MINOR, e.g. 6.1 or 6.12; default 6.12)")
    p.add_argument("--debug-dir", action="append", default=[], metavar="DIR",
                   help="debug-file directory holding .build-id/xx/yyyy.debug "
                        "(default /usr/lib/debug)")
    return p


def _kernel(text: str) -> tuple[int, int]:
    try:
        major, minor = text.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        raise UsageError(f"--kernel {text!r}: expected MAJOR.MINOR, e.g. 6.12") from None


def _line(v: UprobeVerdict) -> str:
    where = f"off={v.offset:#x}" if v.offset is not None else ""
    if v.vaddr is not None:
        where += f" vaddr={v.vaddr:#x}"
    sym = f" {v.symbol}" if v.symbol else ""
    if v.ok:
        what = f"ok   {v.method.value if v.method else '-'}"
        if v.ops:
            what += f" ({v.ops})"
        if v.mnemonic:
            what += f" {v.mnemonic}"
    else:
        j = v.to_json()
        what = f"{v.errno:8s} {j['why']} [{j['kernel_function']}]"
    warn = "".join(f"\n    warning {w.kind.value}: {w.detail}" for w in v.warnings)
    return f"{v.target:40s} {where}{sym}  {what}{warn}"


def run(args: argparse.Namespace) -> int:
    """Run ``uprobe``; returns the exit code."""
    kernel = _kernel(args.kernel)
    elf = UserElf.open(args.binary, tuple(args.debug_dir) or DEBUG_ROOTS)
    uprobe_support(elf.backend)  # a one-line InputError for an arch without uprobes
    fs = features_for(elf.backend, kernel)
    out = sys.stdout
    if not args.targets:
        return _summary(elf, fs, args.json)
    unknown = []
    for t in args.targets:
        funcs = [s for s in elf.lookup(t) if s.kind in ("func", "ifunc") and s.size] \
            if ":" not in t and "+" not in t and not t[:1].isdigit() and " " not in t else []
        if funcs:
            _function(elf, funcs[0], fs, args.json)
            continue
        target = parse_uprobe_target(t, elf.path)
        if target.path != elf.path:
            target = _same_file(elf, target)
        for v in check_uprobes(elf, target, kernel):
            if v.reason in (UReason.NO_SYMBOL, UReason.NO_USDT):
                unknown.append(t)
            out.write((json.dumps(v.to_json()) if args.json else _line(v)) + "\n")
    if unknown:
        print(f"kpatch-analyze: error: {elf.path}: not found: {', '.join(unknown[:5])}; "
              "'kpatch-analyze uprobe BINARY' lists functions and USDT probes", file=sys.stderr)
        return 1
    return 0


def _same_file(elf: UserElf, target: UprobeTarget) -> UprobeTarget:
    """A target naming another path is judged on BINARY only if it is the same file."""
    import os
    path = target.path
    try:
        same = os.path.samefile(path, elf.path)
    except OSError:
        same = False
    if not same:
        raise UsageError(f"target names {path!r}, not the BINARY {elf.path!r}")
    import attrs
    return attrs.evolve(target, path=elf.path)


def _function(elf: UserElf, f: Symbol, fs: FeatureSet, as_json: bool) -> None:
    """One function, instruction by instruction (every boundary of the decode from its start)."""
    starts, stop = instruction_starts(elf, f)
    out = sys.stdout
    if not as_json:
        out.write(f"{f.name}  vaddr={f.vaddr:#x} size={f.size} ({f.table})  rules {fs.rules}\n")
    for va in starts:
        off = elf.vaddr_to_offset(va)
        if off is None:
            continue
        v = check_offset(elf, off, fs)
        if as_json:
            j = v.to_json()
            j.update(function=f.name, function_offset=va - f.vaddr)
            out.write(json.dumps(j) + "\n")
            continue
        verdict = (f"ok   {v.method.value if v.method else ''}" + (f" ({v.ops})" if v.ops else "")
                   if v.ok else f"{v.errno} {v.reason.value if v.reason else ''}")
        text = v.mnemonic if v.ok else v.detail
        out.write(f"  +{va - f.vaddr:<5x} {off:#8x} {v.insn.hex():<22s} {text[:38]:<38s} "
                  f"{verdict}\n")
    if stop is not None and not as_json:
        out.write(f"  (decode stops at +{stop - f.vaddr:#x}: undecodable bytes)\n")


def function_summary(elf: UserElf, f: Symbol, fs: FeatureSet) -> dict:
    """Counts for one function: instructions, accepted by method, refused by rule."""
    starts, stop = instruction_starts(elf, f)
    methods: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for va in starts:
        off = elf.vaddr_to_offset(va)
        if off is None:
            continue
        v = check_offset(elf, off, fs)
        if v.ok:
            methods[v.method.value if v.method else "none"] += 1
        elif v.reason is not None:
            refused[v.reason.value] += 1
    return {"name": f.name, "vaddr": hex(f.vaddr), "offset": hex(elf.vaddr_to_offset(f.vaddr) or 0),
            "size": f.size, "table": f.table, "insns": len(starts),
            "probeable": sum(methods.values()), "methods": dict(methods), "refused": dict(refused),
            "undecodable_at": None if stop is None else hex(stop)}


def _summary(elf: UserElf, fs: FeatureSet, as_json: bool) -> int:
    out = sys.stdout
    totals: Counter[str] = Counter()
    rows = []
    for f in elf.functions:
        s = function_summary(elf, f, fs)
        rows.append(s)
        totals["functions"] += 1
        totals["insns"] += s["insns"]
        totals["probeable"] += s["probeable"]
        for k, n in s["methods"].items():
            totals[f"method:{k}"] += n
        for k, n in s["refused"].items():
            totals[f"refused:{k}"] += n
    probes = usdt_probes(elf)
    if as_json:
        for s in rows:
            out.write(json.dumps(s) + "\n")
        for p in probes:
            v = check_offset(elf, p.offset, fs) if p.offset is not None else None
            out.write(json.dumps({"usdt": p.label, "vaddr": hex(p.vaddr),
                                  "offset": None if p.offset is None else hex(p.offset),
                                  "semaphore_offset": None if p.semaphore_offset is None
                                  else hex(p.semaphore_offset), "args": p.args,
                                  "ok": v.ok if v else False,
                                  "errno": v.errno if v else None}) + "\n")
        return 0
    kind = "PIE/shared object" if elf.pie else "executable"
    out.write(f"{elf.path}: {elf.backend.name} {kind}, build-id {elf.build_id or 'none'}, "
              f"symbols from {', '.join(sorted({f.table for f in elf.functions})) or 'none'}"
              f"{', debug file ' + elf.debug_path if elf.debug_path else ''}; rules {fs.rules}\n")
    out.write(f"{totals['functions']} functions, {totals['insns']} instructions, "
              f"{totals['probeable']} accepted "
              f"({100 * totals['probeable'] / max(totals['insns'], 1):.1f}%)\n")
    for k in sorted(totals):
        if ":" in k:
            out.write(f"  {k:32s} {totals[k]}\n")
    refusing = sorted((r for r in rows if r["refused"]), key=lambda r: -sum(r["refused"].values()))
    if refusing:
        out.write("functions with refused instructions (most first):\n")
        for r in refusing[:20]:
            out.write(f"  {r['name']:40s} {r['insns']:6d} insns  refused "
                      + ", ".join(f"{k} {n}" for k, n in sorted(r["refused"].items())) + "\n")
    if probes:
        out.write(f"USDT probes ({len(probes)}):\n")
        for p in probes:
            v = check_offset(elf, p.offset, fs) if p.offset is not None else None
            sem = f" semaphore off={p.semaphore_offset:#x}" if p.semaphore_offset is not None else ""
            verdict = "not mapped" if v is None else ("ok" if v.ok else f"{v.errno}")
            out.write(f"  {p.label:30s} off={p.offset or 0:#x}{sem}  {verdict}\n")
    return 0
