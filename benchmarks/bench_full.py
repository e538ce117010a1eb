#!/usr/bin/env python3
"""Full-analysis benchmark: kpatch-analyze's full analysis against ``objdump -d`` of the same text.

For every architecture whose Debian vmlinux is cached (~/.cache/kpatch-kernels/<arch>/vmlinux),
in one run on this machine:

* ``objdump -d --no-show-raw-insn --start-address=_stext --stop-address=_etext`` (output to
  /dev/null; the cross objdump for other arches) -- wall time;
* our full analysis (every text symbol, every instruction boundary, verdict + per-function facts),
  cache off, all cores, in a fresh process: wall time including interpreter start and ELF
  parsing, and peak RSS (the process and its workers); once more with ``optimized=True``
  (``[OPTIMIZED]`` predicted too);
* the ratio ours / objdump (runs are interleaved, best of ``--repeat``);
* one-function queries: warm (cache filled by a previous run, measured inside the process:
  the library call ``query_function``) and cold (no cache: open the image, analyse just it);
* correctness: ``--samples`` random instruction boundaries plus up to 25 of each rarer outcome,
  verdicts (and the ``[OPTIMIZED]`` flag) compared with ``kpatch_core.probe.check``.

    python3 benchmarks/bench_full.py                  # every cached arch
    python3 benchmarks/bench_full.py --arch x86_64 --samples 3000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

KERNELS = os.path.expanduser("~/.cache/kpatch-kernels")
ARCHES = ("x86_64", "arm64", "riscv64", "s390x", "ppc64le")
OBJDUMP = {"x86_64": "objdump", "arm64": "aarch64-linux-gnu-objdump",
           "riscv64": "riscv64-linux-gnu-objdump", "s390x": "s390x-linux-gnu-objdump",
           "ppc64le": "powerpc64le-linux-gnu-objdump"}
QUERY = ("vfs_read", "do_sys_open", "schedule")


def _child(mode: str, path: str, name: str) -> None:
    """Runs in a fresh process; prints one JSON line."""
    t0 = time.perf_counter()
    if mode in ("full", "full_opt"):
        from kpatch_core.analyze import analyze
        from kpatch_core.image import Image
        a = analyze(Image.open(path), cache=False, optimized=mode == "full_opt")
        t = a.totals()
        out = {"seconds": time.perf_counter() - t0, "insns": t["insns"],
               "probeable_insns": t["probeable_insns"], "symbols": t["symbols"],
               "timing": a.meta.get("timing"), "workers": a.meta.get("worker_seconds")}
    elif mode == "fill":
        from kpatch_core import cache
        from kpatch_core.analyze import analyze
        from kpatch_core.image import Image
        a = analyze(Image.open(path), cache=True, pathkey=cache.path_key(path))
        t = a.totals()
        out = {"seconds": time.perf_counter() - t0, "store": a.meta.get("timing", {}).get("cache_store"),
               "insns": t["insns"], "probeable_insns": t["probeable_insns"], "symbols": t["symbols"],
               "timing": a.meta.get("timing"), "workers": a.meta.get("worker_seconds")}
    elif mode == "cached_full":
        from kpatch_core.analyze import analyze
        from kpatch_core.image import Image
        t1 = time.perf_counter()
        a = analyze(Image.open(path), cache=True)
        out = {"seconds": time.perf_counter() - t1, "from_cache": a.from_cache}
    else:  # warm / cold one-function query; modules are imported first (a library caller
        # has them loaded; the whole process wall time is reported separately)
        import kpatch_core.analyze  # noqa: F401
        import kpatch_core.cache  # noqa: F401
        from kpatch_core.analyze_cmd import query_function
        t1 = time.perf_counter()
        a, image = query_function(path, name, use_cache=(mode == "warm"))
        n = int(a.counts.sum())
        out = {"seconds": time.perf_counter() - t1, "insns": n, "from_cache": image is None}
    # this process's own high-water mark (VmHWM: getrusage's ru_maxrss would also count the
    # benchmark parent's memory, which Linux carries across fork+exec), and its workers'
    ru_kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_mb"] = max(_vm_hwm_kb(), ru_kids) / 1024.0
    print(json.dumps(out))


def _vm_hwm_kb() -> int:
    """Peak resident set of this process (kB), from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_child(mode: str, path: str, name: str = "", env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, path, name],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{mode} {path}: {p.stderr.strip().splitlines()[-1:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def _objdump(arch: str, path: str, start: int, stop: int) -> float | None:
    exe = shutil.which(OBJDUMP[arch.split("-")[0]])  # "arm64-6.12": the arm64 objdump
    if exe is None:
        return None
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run([exe, "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
                        f"--stop-address={stop:#x}", path], stdout=null, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _verify(path: str, samples: int, env_cache: str) -> dict:
    """Compare bulk verdicts with probe.check on sampled addresses (analysis from the cache)."""
    import random

    import numpy as np

    os.environ["KPATCH_CACHE"] = env_cache
    from kpatch_core import analyze as A
    from kpatch_core.image import Image
    from kpatch_core.probe import check
    from kpatch_core.target import Target
    image = Image.open(path)
    a = A.analyze(image, cache=True, optimized=True)
    rng = random.Random(12345)
    n = len(a.codes)
    idx = set(rng.sample(range(n), min(samples, n)))
    vals, first = np.unique(a.codes, return_index=True)
    for v in vals.tolist():  # up to 25 of every outcome, rare ones included
        where = np.nonzero(a.codes == v)[0]
        idx.update(rng.sample(where.tolist(), min(25, len(where))))
    func_of = np.repeat(np.arange(len(a.syms)), a.counts)
    bad = []
    t0 = time.perf_counter()
    for j in sorted(idx):
        i = int(func_of[j])
        addr = int(a.syms.addrs[i]) + int(a.offs[j])
        o = A.decode_code(int(a.codes[j]))
        v = check(image, Target(hex(addr), "p", address=addr))
        got = (o.ok, o.method if o.ok else None, o.reason, o.errno, o.optimized)
        exp = (v.ok, v.method if v.ok else None, v.reason, v.errno if not v.ok else None,
               "OPTIMIZED" in v.flags)
        if got != exp:
            bad.append({"address": hex(addr), "symbol": a.syms.names[i], "bulk": str(got),
                        "check": str(exp)})
    return {"compared": len(idx), "mismatches": len(bad), "examples": bad[:5],
            "check_seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", action="append", help="only these arches (repeatable)")
    ap.add_argument("--samples", type=int, default=2000, help="random addresses compared with check")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each side (best kept)")
    ap.add_argument("--no-objdump", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "NAME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    results = []
    for arch in args.arch or ARCHES:
        path = os.path.join(KERNELS, arch, "vmlinux")
        if not os.path.exists(path):
            print(f"{arch}: no cached vmlinux, skipped")
            continue
        from kpatch_core.image import Image
        image = Image.open(path)
        # objdump reads file (link-time) addresses
        start, stop = (image.tables.stext - image.load_offset, image.tables.etext - image.load_offset)
        name = next((q for q in QUERY if image.kallsyms.count(q) == 1), None)
        del image
        r: dict = {"arch": arch, "text_bytes": stop - start, "query": name,
                   "cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}
        env = dict(os.environ, KPATCH_CACHE="off")
        tmp = tempfile.mkdtemp(prefix="kpatch-bench-cache-")
        cenv = dict(os.environ, KPATCH_CACHE=tmp)
        ours, objd = [], []
        fill = None
        for _ in range(max(1, args.repeat)):
            if not args.no_objdump:
                t = _objdump(arch, path, start, stop)
                if t is not None:
                    objd.append(t)
            if args.repeat == 1:  # one run: time the cache-filling run, minus its store
                fill = _run_child("fill", path, "", cenv)
                fill["wall_with_store"] = fill["wall"]
                fill["wall"] -= fill["store"] or 0.0
                ours.append(fill)
            else:
                ours.append(_run_child("full", path, "", env))
        best = min(ours, key=lambda x: x["wall"])
        r.update(full_seconds=round(best["wall"], 2), full_runs=[round(x["wall"], 2) for x in ours],
                 insns=best["insns"], probeable_insns=best["probeable_insns"],
                 symbols=best["symbols"], peak_rss_mb=round(max(x["peak_rss_mb"] for x in ours)),
                 phases=best["timing"])
        r["load_after"] = round(os.getloadavg()[0], 2)
        opt = _run_child("full_opt", path, "", env)  # the same with [OPTIMIZED] predicted
        r.update(full_optimized_seconds=round(opt["wall"], 2))
        if objd:
            r.update(objdump_seconds=round(min(objd), 2), objdump_runs=[round(x, 2) for x in objd],
                     ratio=round(best["wall"] / min(objd), 3))
        try:
            if fill is None:
                fill = _run_child("fill", path, "", cenv)
                fill["wall_with_store"] = fill["wall"]
            r["cache_fill_seconds"] = round(fill["wall_with_store"], 2)
            r["cache_store_seconds"] = fill["store"]
            r["cached_full_report_seconds"] = round(_run_child("cached_full", path, "", cenv)["seconds"], 3)
            if name:
                warm = [_run_child("warm", path, name, cenv) for _ in range(3)]
                cold = _run_child("cold", path, name, env)
                w = min(warm, key=lambda x: x["seconds"])
                r.update(warm_query_ms=round(1000 * w["seconds"], 1), warm_from_cache=w["from_cache"],
                         warm_query_process_wall_s=round(w["wall"], 2),
                         cold_query_s=round(cold["seconds"], 2), query_insns=w["insns"],
                         query_peak_rss_mb=round(max(w["peak_rss_mb"], cold["peak_rss_mb"])))
            if args.samples:
                r["verify"] = _verify(path, args.samples, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        results.append(r)
        _print(r)
    print(json.dumps(results, indent=1))
    return 0


def _print(r: dict) -> None:
    print(f"== {r['arch']}: {r['text_bytes'] / 1e6:.1f} MB text, {r['insns']:,} instructions, "
          f"{r['symbols']:,} symbols")
    load = max(r["load_before"], r["load_after"])
    busy = (f"   (machine busy: load {load} on {r['cpus']} cores; the ratio assumes the cores are "
            "free, objdump uses one)") if load > 0.5 * r["cpus"] else ""
    if "ratio" in r:
        print(f"   full analysis {r['full_seconds']} s   objdump {r['objdump_seconds']} s   "
              f"ratio {r['ratio']}{busy}")
    else:
        print(f"   full analysis {r['full_seconds']} s   (no objdump for this arch)")
    print(f"   with --optimized ([OPTIMIZED] predicted too): {r['full_optimized_seconds']} s")
    print(f"   peak RSS {r['peak_rss_mb']} MB   phases {r['phases']}")
    if "warm_query_ms" in r:
        print(f"   one function ({r['query']}, {r['query_insns']} insns): warm {r['warm_query_ms']} ms"
              f" (in-process; whole CLI-like process {r['warm_query_process_wall_s']} s), "
              f"cold {r['cold_query_s']} s")
    print(f"   cache fill {r.get('cache_fill_seconds')} s (store {r.get('cache_store_seconds')} s), "
          f"full report from cache "
          f"{r.get('cached_full_report_seconds')} s")
    if "verify" in r:
        v = r["verify"]
        print(f"   verdicts vs probe.check: {v['compared']} compared, {v['mismatches']} mismatches")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
