#!/usr/bin/env python3
"""One row of README.md's agreement table per committed answer set whose kernel is cached.

    python3 tests/data/oracle/agreement.py [NAME ...]     (default: every directory here)

Per kernel: agreement on (ok, errno), false accepts, resolved addresses and flags after arming
(probes both sides accept; the oracle's jobs checked together, as tests/test_real_oracle.py),
the kprobe blacklist (start-end ranges) and, where taken, the kprobe_events lines of
syntax.jsonl.gz (ok, errno, error_log message and caret).  A kernel that is not cached prints
the fetch command instead.  Exit 1 when any figure is short of 100%.
"""
from __future__ import annotations

import collections
import gzip
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parents[2]))  # PYTHONPATH (e.g. a frozen baseline) first

from kpatch_core.testing import image_on_guest_cpu, oracle_verdicts  # noqa: E402

CACHE = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def _pct(a: int, b: int) -> str:
    return f"{a}/{b}" if b else "-"


def row(name: str) -> tuple[str, bool]:
    """The table row of kernel ``name`` and whether every figure is 100%."""
    vmlinux = CACHE / name.split("/")[0] / "vmlinux"  # NAME/cpu-MODEL: the same kernel
    if not vmlinux.is_file():
        return f"| {name} | not cached: tests/data/oracle/fetch.sh {name} |", True
    rows = [r for r in _rows(HERE / name / "results.jsonl.gz") if not r.get("crash")]
    meta = json.loads((HERE / name / "results.meta.json").read_text())
    image = image_on_guest_cpu(str(vmlinux), meta)  # the CPU facts of the guest it ran on
    ours = oracle_verdicts(image, rows, int(meta.get("options", {}).get("chunk", 200)))
    agree = fa = addr = addr_n = flags = flags_n = 0
    for r in rows:
        v = ours[r["index"]]
        want = (bool(r["ok"]), None if r["ok"] else r["error"])
        same = (v.ok, None if v.ok else v.errno) == want
        agree += same
        fa += v.ok and not r["ok"]
        if v.ok and r["ok"] and r.get("address"):
            addr_n += 1
            addr += int(r["address"], 16) == v.address
        if v.ok and r["ok"] and r.get("flags") is not None:
            flags_n += 1
            flags += sorted(r["flags"]) == sorted(v.flags)
    crashes = sum(1 for r in _rows(HERE / name / "results.jsonl.gz") if r.get("crash"))
    bl = "-"
    bl_ok = True
    if (HERE / name / "blacklist.txt.gz").is_file():
        with gzip.open(HERE / name / "blacklist.txt.gz", "rt") as f:
            kernel = collections.Counter(tuple(int(x, 16) for x in line.split("\t")[0].split("-"))
                                         for line in f if line.strip())
        mine = collections.Counter((e.start, e.end) for e in image.tables.blacklist)
        common = sum((kernel & mine).values())
        bl = f"{common}/{sum(kernel.values())}" + ("" if mine == kernel else f" (ours {sum(mine.values())})")
        bl_ok = mine == kernel
    syn = "-"
    syn_ok = True
    if (HERE / name / "syntax.jsonl.gz").is_file():
        from kpatch_core.events import EventSet, ImageEnv
        events = EventSet(ImageEnv(image))
        good = total = 0
        for rec in _rows(HERE / name / "syntax.jsonl.gz"):
            if rec.get("op") == "clear":
                events.clear()
                continue
            r = events.write(rec["line"].removeprefix("!keep "), keep=rec.get("op") == "keep")
            if rec.get("op") != "event" or rec.get("crash"):
                continue
            e = r.error
            total += 1
            good += (r.ok, e.errno if e else None, e.message if e else None,
                     e.caret if e else None) == (bool(rec.get("ok")), rec.get("error"),
                                                 rec.get("error_message"), rec.get("caret"))
        syn = _pct(good, total)
        syn_ok = good == total
    ok = agree == len(rows) and not fa and addr == addr_n and flags == flags_n and bl_ok and syn_ok
    uname = meta.get("guest", {}).get("uname", "").split()
    release = uname[2] if len(uname) > 2 else name
    return (f"| {name} | {release} | {image.backend.name} | {agree}/{len(rows)} "
            f"({100.0 * agree / max(len(rows), 1):.2f}%) | {fa} | {_pct(addr, addr_n)} | "
            f"{_pct(flags, flags_n)} | {bl} | {syn} | {crashes} |"), ok


def main(argv: list[str]) -> int:
    names = argv or sorted(p.parent.name for p in HERE.glob("*/results.jsonl.gz")
                           if not (p.parent / "insmod.txt").exists())  # module sets: own test
    print("| answers | kernel | arch | (ok, errno) | false accepts | addresses | flags | "
          "blacklist | syntax | crash |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bad = 0
    for n in names:
        line, ok = row(n)
        print(line, flush=True)
        bad += not ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
