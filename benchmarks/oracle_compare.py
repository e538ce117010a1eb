#!/usr/bin/env python3
"""Compare our verdicts with a real kernel's (kernel-oracle results.jsonl[.gz]).

    python3 benchmarks/oracle_compare.py VMLINUX RESULTS.jsonl.gz [--show 20] [--by-category PROBES.txt]

Prints: agreement on (ok, errno), false accepts (we say ok, the kernel refused), false rejects,
address agreement on accepted probes, a table of disagreements by (kernel answer, our reason),
and the first disagreeing targets with both sides.  Works for every architecture unchanged.
Exit 0 only when agreement >= --min-agree (default 99.9%), there is no false accept and every
resolved address and [FTRACE] flag of a probe both sides accept agrees; else 1.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
import time

from kpatch_core.image import Image
from kpatch_core.probe import check
from kpatch_core.target import parse_target


def load(path: str) -> list[dict]:
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def kernel_class(r: dict) -> str:
    if r["ok"]:
        return "ok"
    msgs = " ".join(r.get("kernel_msgs") or [])
    tag = " [notrace]" if "notrace" in msgs else ""
    log = (r.get("error_log") or "").replace("trace_kprobe: error: ", "")
    return f"{r.get('error')} {log}{tag}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vmlinux")
    ap.add_argument("results")
    ap.add_argument("--show", type=int, default=20)
    ap.add_argument("--config", help="kernel config file for facts")
    ap.add_argument("--min-agree", type=float, default=0.999,
                    help="least share of (ok, errno) agreement that passes (default 0.999)")
    a = ap.parse_args()
    truth = [r for r in load(a.results) if not r.get("crash") and r.get("ok") is not None]
    t0 = time.perf_counter()
    image = Image.open(a.vmlinux, a.config)
    ours = [check(image, parse_target(("r " if r["kind"] == "r" else "") + r["target"])) for r in truth]
    dt = time.perf_counter() - t0
    agree = fa = fr = addr_ok = addr_n = flag_ok = 0
    classes: collections.Counter[tuple[str, str]] = collections.Counter()
    examples: list[str] = []
    for t, o in zip(truth, ours):
        tk = (bool(t["ok"]), None if t["ok"] else t.get("error"))
        ok_key = (o.ok, None if o.ok else o.errno)
        if t["ok"] and o.ok and t.get("address"):
            addr_n += 1
            addr_ok += o.address == int(t["address"], 16)
            flag_ok += set(t.get("flags") or []) & {"FTRACE"} == set(o.flags) & {"FTRACE"}
        if tk == ok_key:
            agree += 1
            continue
        if o.ok and not t["ok"]:
            fa += 1
        elif t["ok"] and not o.ok:
            fr += 1
        ours_s = "ok" if o.ok else f"{o.errno} {o.reason.value if o.reason else ''}"
        classes[(kernel_class(t), ours_s)] += 1
        if len(examples) < a.show:
            examples.append(f"  {t['kind']} {t['target']:45s} kernel: {kernel_class(t)[:50]:50s} "
                            f"ours: {ours_s} {o.detail[:60]}")
    n = len(truth)
    print(f"arch {image.backend.name}, kernel {image.version} (rules {image.version.rules}), "
          f"{n} probes, {dt:.1f} s")
    print(f"agreement (ok, errno): {agree}/{n} = {agree / max(n, 1):.2%}")
    print(f"false accepts: {fa}    false rejects: {fr}")
    print(f"resolved address agreement on probes both accept: {addr_ok}/{addr_n}")
    print(f"[FTRACE] flag agreement on probes both accept: {flag_ok}/{addr_n}")
    if classes:
        print("disagreements by (kernel answer, our answer):")
        for (k, v), c in classes.most_common():
            print(f"  {c:5d}  kernel: {k[:70]:70s} ours: {v}")
        print("first disagreeing targets:")
        print("\n".join(examples))
    passed = agree / max(n, 1) >= a.min_agree and fa == 0 and addr_ok == addr_n == flag_ok
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
