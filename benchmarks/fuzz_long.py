#!/usr/bin/env python3
"""The long fuzz run of issue 13: hostile inputs through the whole CLI, counted.

    nice -n 10 python3 benchmarks/fuzz_long.py --inputs 100000 [--batch 1000] [--timeout 20]
                                               [--kind any|elf|special|target|event|config|set]
                                               [--log fuzz_long.jsonl]

Inputs come from the hypothesis strategies of :mod:`kpatch_core.testing.fuzz` (ELF mutations of
every testdata image, special files, target strings, kprobe_events lines, config files,
``--set`` facts), in batches of ``--batch`` with seeds 0, 1, 2... (reproducible; a fresh
hypothesis engine per batch, so its bookkeeping does not grow with the run).  Each input runs
``kpatch_core.cli.main`` in this process under a timer.  Printed at the end (and per batch):
inputs, tracebacks, hangs, wrong acceptances, other problems (exit code, stderr shape), peak
RSS (VmHWM).  Done-when: >= 100,000 inputs, 0 tracebacks, 0 hangs, 0 wrong acceptances, peak
RSS < 1 GB.  The first few inputs of each failure kind go to ``--log`` (JSON Lines).
"""
from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import sys
import time

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kpatch_core.testing import fuzz

KINDS = {"any": fuzz.any_case, "elf": fuzz.elf_cases, "special": fuzz.special_file_cases,
         "target": fuzz.target_cases, "event": fuzz.event_cases, "config": fuzz.config_cases,
         "set": fuzz.set_cases}


def peak_rss_mb() -> float:
    """VmHWM of this process in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per input (a hang)")
    ap.add_argument("--kind", choices=sorted(KINDS), default="any")
    ap.add_argument("--log", default="fuzz_long.jsonl", help="examples of each failure kind")
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args()
    counts: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    logged: collections.Counter[str] = collections.Counter()
    t0 = time.time()
    log = open(args.log, "w", encoding="utf-8")  # noqa: SIM115 - written through the run
    strategy = KINDS[args.kind]()
    batch = 0
    while counts["inputs"] < args.inputs:
        want = min(args.batch, args.inputs - counts["inputs"])

        @seed(args.first_seed + batch)
        @settings(max_examples=want, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(case: fuzz.Case) -> None:
            if counts["inputs"] >= args.inputs:
                return
            r = fuzz.run_case(case, args.timeout)
            counts["inputs"] += 1
            kinds[case.kind] += 1
            for p in fuzz.problems(case, r):
                counts[p] += 1
                if logged[p] < 20:
                    logged[p] += 1
                    log.write(json.dumps({"problem": p, "kind": case.kind, "argv": list(case.argv),
                                          "note": case.note, "code": r.code,
                                          "traceback": r.traceback, "stdout": r.stdout[-2000:],
                                          "stderr": r.stderr[-2000:]}) + "\n")
                    log.flush()

        before = counts["inputs"]
        run()
        batch += 1
        gc.collect()
        if counts["inputs"] == before:  # the strategy produced nothing new
            break
        print(f"[{time.time() - t0:7.0f} s] inputs {counts['inputs']:7d}  tracebacks "
              f"{counts['traceback']}  hangs {counts['hang']}  wrong acceptances "
              f"{counts['accepted']}  other {counts['exit'] + counts['stderr']}  peak RSS "
              f"{peak_rss_mb():.0f} MiB", flush=True)
    log.close()
    summary = {"inputs": counts["inputs"], "tracebacks": counts["traceback"],
               "hangs": counts["hang"], "wrong_acceptances": counts["accepted"],
               "bad_exit_codes": counts["exit"], "bad_stderr": counts["stderr"],
               "peak_rss_mib": round(peak_rss_mb(), 1), "seconds": round(time.time() - t0, 1),
               "by_kind": dict(kinds)}
    print(json.dumps(summary))
    ok = (summary["inputs"] >= args.inputs and not summary["tracebacks"] and not summary["hangs"]
          and not summary["wrong_acceptances"] and summary["peak_rss_mib"] < 1024)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
