#!/usr/bin/env python3
"""Compare predicted probe flags ([OPTIMIZED]/[FTRACE]) with a kernel oracle's flags after arming.

    python3 benchmarks/flags_check.py VMLINUX RESULTS.jsonl.gz [--show N] [--config FILE]

Only probes the kernel accepted and armed (``flags`` not null, no crash) are compared; the
oracle armed each job's probes (~200) together, in index order, so they are checked together
(``check_many``: e.g. ppc64le's detour buffers run out).
Debian's config has PREEMPTION, so nothing is boosted.
Exit 0 only when every compared probe agrees (any flag mismatch, or a probe the kernel armed
that we refuse, fails with 1); 2 for unreadable input.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
import time

from kpatch_core.errors import InputError
from kpatch_core.image import Image
from kpatch_core.testing import oracle_verdicts


def _oracle_chunk(results: str) -> int:
    """The oracle's probes per job, from the meta file written next to its results."""
    meta = results.removesuffix(".gz").removesuffix(".jsonl") + ".meta.json"
    try:
        with open(meta) as f:
            return int(json.load(f)["options"]["chunk"])
    except (OSError, KeyError, ValueError, TypeError):
        return 200


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vmlinux")
    ap.add_argument("results")
    ap.add_argument("--show", type=int, default=20, help="disagreements to print")
    ap.add_argument("--config", help="/boot/config-* of the kernel")
    ap.add_argument("--chunk", type=int, default=0,
                    help="probes per oracle job (default: from RESULTS' .meta.json, else 200)")
    a = ap.parse_args(argv)
    try:
        image = Image.open(a.vmlinux, a.config)
        opener = gzip.open if a.results.endswith(".gz") else open
        with opener(a.results, "rt") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (InputError, OSError, json.JSONDecodeError) as e:
        print(f"flags_check: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    agree = total = 0
    confusion: collections.Counter = collections.Counter()
    bad = []
    # phase 2 of each oracle job re-registers that job's accepted probes together, in order:
    # they compete for the arch's detour buffers
    ours = oracle_verdicts(image, [r for r in rows if r.get("ok") and not r.get("crash")],
                           a.chunk or _oracle_chunk(a.results))
    for r in rows:
        if not r.get("ok") or r.get("flags") is None or r.get("crash"):
            continue
        target = r["target"] if r.get("kind", "p") == "p" else "r " + r["target"]
        v = ours[r["index"]]
        if not v.ok:
            confusion[("refused-by-us", "")] += 1
            total += 1
            bad.append((target, "we refuse", r["flags"]))
            continue
        want = sorted(f for f in r["flags"] if f in ("OPTIMIZED", "FTRACE"))
        got = sorted(v.flags)
        total += 1
        confusion[(",".join(want) or "plain", ",".join(got) or "plain")] += 1
        if want == got:
            agree += 1
        else:
            bad.append((target, got, want))
    dt = time.time() - t0
    print(f"{image.path}: {agree}/{total} accepted+armed probes agree on flags "
          f"({100.0 * agree / max(total, 1):.2f}%), {dt:.1f} s")
    print("kernel -> ours:")
    for (k, o), n in sorted(confusion.items()):
        print(f"  {k:>10} -> {o:<10} {n}")
    for t, got, want in bad[:a.show]:
        print(f"  {t}: ours {got} kernel {want}")
    print("PASS" if agree == total else "FAIL")
    return 0 if agree == total else 1


if __name__ == "__main__":
    sys.exit(main())
