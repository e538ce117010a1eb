#!/usr/bin/env python3
"""Compare uprobe-oracle answers with kpatch-core's verdicts for the same file offsets.

    python3 tools/uprobe-oracle/compare.py RESULTS.jsonl [--target FILE] [--min-agree 0.999]

Agreement is on (accepted, errno).  A false accept is an offset we accept and the kernel
refused.  For every offset the kernel accepted, our boundary check must say NOT_BOUNDARY
exactly when the offset is not an instruction start of its function (by an independent
objdump-style decode: capstone's linear sweep of the function).  Exit 1 below --min-agree or
on any false accept.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--target")
    ap.add_argument("--min-agree", type=float, default=0.999)
    ap.add_argument("--show", type=int, default=10)
    ap.add_argument("--objdump", metavar="OBJDUMP",
                    help="check every kernel-accepted offset's boundary warning against this "
                         "objdump's disassembly of its function (e.g. x86_64-linux-gnu-objdump)")
    a = ap.parse_args(argv)
    from kpatch_core.uprobe.elf import UserElf
    from kpatch_core.uprobe.probe import check_offset, features_for
    from kpatch_core.uprobe.verdict import WarningKind

    rows = [json.loads(x) for x in open(a.results)]
    meta = rows[0]["meta"]
    rows = rows[1:]
    m = re.search(r"Linux \S+ (\d+)\.(\d+)", meta.get("UNAME", ""))
    if not m:
        print("no kernel version in the results' UNAME", file=sys.stderr)
        return 2
    kernel = (int(m[1]), int(m[2]))
    elf = UserElf.open(a.target or meta["target"], debug_roots=[])
    fs = features_for(elf.backend, kernel)
    agree = false_accept = false_refuse = 0
    warned = unwarned = 0
    kinds: collections.Counter[str] = collections.Counter()
    bad = []
    for r in rows:
        off = int(r["offset"], 16)
        v = check_offset(elf, off, fs)
        k_ok, k_errno = r["ok"], r["errno"]
        kinds[f"kernel {'ok' if k_ok else k_errno} / ours {'ok' if v.ok else v.errno}"] += 1
        if (v.ok, None if v.ok else v.errno) == (k_ok, None if k_ok else k_errno):
            agree += 1
        else:
            bad.append((r["offset"], r, v.to_json()))
            if v.ok and not k_ok:
                false_accept += 1
            elif k_ok and not v.ok:
                false_refuse += 1
        if k_ok and v.ok:
            if any(w.kind == WarningKind.NOT_BOUNDARY for w in v.warnings):
                warned += 1
            else:
                unwarned += 1
    objdump_check = None
    if a.objdump:
        objdump_check = _objdump_boundaries(a.objdump, elf, rows, fs)
    n = len(rows)
    print(json.dumps({"objdump_boundary_check": objdump_check, "arch": meta["arch"], "kernel": meta.get("UNAME", ""), "rules": fs.rules,
                      "target": meta["target"], "offsets": n, "agree": agree,
                      "agreement": round(agree / max(n, 1), 5), "false_accepts": false_accept,
                      "false_refusals": false_refuse,
                      "accepted_with_boundary_warning": warned,
                      "accepted_at_boundary": unwarned, "outcomes": dict(kinds.most_common())}))
    for off, r, v in bad[:a.show]:
        print(f"  {off}: kernel {r['ok']} {r['errno']} {r['stage']} {r['text']!r}; ours {v['ok']} "
              f"{v['errno']} {v['reason']} {v['insn']} {v['mnemonic'] or v['why']}")
    return 0 if agree / max(n, 1) >= a.min_agree and not false_accept else 1


def _objdump_boundaries(objdump: str, elf: object, rows: list[dict], fs: object) -> dict:
    """For each kernel-accepted offset inside a function: is it an instruction start in
    objdump's disassembly of that function, and did we warn NOT_BOUNDARY exactly when not?"""
    import subprocess

    from kpatch_core.uprobe.probe import check_offset
    from kpatch_core.uprobe.verdict import WarningKind
    by_func: dict[object, list[int]] = {}
    for r in rows:
        off = int(r["offset"], 16)
        va = elf.offset_to_vaddr(off)  # type: ignore[attr-defined]
        f = elf.function_at(va) if va is not None and r["ok"] else None  # type: ignore[attr-defined]
        if f is not None:
            by_func.setdefault(f, []).append(off)
    agree = disagree = 0
    examples = []
    for f, offs in by_func.items():
        out = subprocess.run([objdump, "-d", "-z", "--no-show-raw-insn", f"--start-address={f.vaddr:#x}",
                              f"--stop-address={f.vaddr + f.size:#x}", elf.path],  # type: ignore[attr-defined]
                             capture_output=True, text=True, check=False).stdout
        starts = {int(m[1], 16) for m in re.finditer(r"^\s*([0-9a-f]+):", out, re.M)}
        for off in offs:
            va = elf.offset_to_vaddr(off)  # type: ignore[attr-defined]
            v = check_offset(elf, off, fs)  # type: ignore[arg-type]
            warned = any(w.kind == WarningKind.NOT_BOUNDARY for w in v.warnings)
            if warned == (va not in starts):
                agree += 1
            else:
                disagree += 1
                examples.append(hex(off))
    return {"offsets_in_functions": agree + disagree, "agree": agree, "disagree": disagree,
            "examples": examples[:5]}


if __name__ == "__main__":
    sys.exit(main())
