#!/usr/bin/env python3
"""Wall time of one `kpatch-analyze check VMLINUX SYMBOL` in a fresh process, cold and warm.

    python3 benchmarks/bench_check.py [--kernels DIR] [--symbol vfs_read] [--runs 3]

"cold" drops the page cache first (needs root; otherwise it says so and measures warm only);
"warm" runs with the image already in the page cache. Target (issue 2): < 2 s cold on x86_64.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ARCHES = ("x86_64", "arm64", "riscv64", "s390x", "ppc64le")


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run_once(vmlinux: str, symbol: str) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(["kpatch-analyze", "check", vmlinux, symbol], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"check failed: {p.stderr.strip()[:200]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default=os.environ.get("KPATCH_KERNELS",
                                                        os.path.expanduser("~/.cache/kpatch-kernels")))
    ap.add_argument("--symbol", default="vfs_read")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    print(f"{'arch':8s} {'cold (s)':>9s} {'warm median (s)':>16s}")
    for arch in ARCHES:
        v = os.path.join(a.kernels, arch, "vmlinux")
        if not os.path.exists(v):
            continue
        try:
            cold = run_once(v, a.symbol) if drop_caches() else float("nan")
            warm = statistics.median(run_once(v, a.symbol) for _ in range(a.runs))
        except RuntimeError as e:
            print(f"{arch:8s} {e}")
            continue
        print(f"{arch:8s} {cold:9.2f} {warm:16.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
