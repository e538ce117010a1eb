#!/usr/bin/env python3
"""Full-analysis benchmark: ``kpatch-analyze`` against ``objdump -d`` of the same text, per kernel.

For every kernel cached under ``$KPATCH_KERNELS`` (default ~/.cache/kpatch-kernels/<NAME>/vmlinux:
the 6.1 and 6.12 kernels, 5.10 and 7.x builds, flavours), measured side by side in one run:

* ``objdump -d --no-show-raw-insn --start-address=_stext --stop-address=_etext`` to /dev/null
  (the cross objdump of the image's arch): wall and CPU time (objdump runs on one core);
* ``kpatch-analyze VMLINUX --no-cache --no-progress`` (the summary) and the same with ``--json``
  written to a file, each a whole fresh process (interpreter start, ELF parsing, worker pool):
  wall time, CPU time (the process and its workers: user + system) and peak RSS (the largest
  process's VmHWM);
* the ratios ours / objdump, wall and CPU, best of ``--repeat`` interleaved runs;
* the decode share: the analysis's own phase timings (``Analysis.meta["timing"]``), in-process;
* one-function queries (``kpatch-analyze func VMLINUX NAME``), each a whole process: cold (no
  result cache, page cache dropped when we may: ``/proc/sys/vm/drop_caches``) and warm (result
  cache filled by a previous run); the in-process library call ``query_function`` beside it;
* self-consistency (not agreement with a real kernel, see benchmarks/oracle_compare.py):
  ``--samples`` instruction boundaries of the full analysis compared with ``probe.check``.

    python3 benchmarks/bench_full.py                        # every cached kernel
    python3 benchmarks/bench_full.py --kernel x86_64 --kernel x86_64-6.12 --samples 1500
Exit 1 when a self-consistency mismatch is found or a command fails.
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

KERNELS = os.environ.get("KPATCH_KERNELS", os.path.expanduser("~/.cache/kpatch-kernels"))
OBJDUMP = {"x86_64": "objdump", "arm64": "aarch64-linux-gnu-objdump",
           "riscv64": "riscv64-linux-gnu-objdump", "s390x": "s390x-linux-gnu-objdump",
           "ppc64le": "powerpc64le-linux-gnu-objdump"}
QUERY = ("vfs_read", "do_sys_open", "schedule")


def _vm_hwm_kb() -> int:
    """Peak resident set of this process (kB), from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(argv: list[str]) -> None:
    """Runs the CLI in this fresh process; prints one JSON line with its own figures.

    Peak RSS is this process's VmHWM and its workers' largest ru_maxrss (a forked worker starts
    from this process's figure, never from the benchmark parent's)."""
    from kpatch_core.cli import main
    out_path = os.environ.get("BENCH_STDOUT", os.devnull)
    saved = os.dup(1)
    with open(out_path, "wb") as f:
        os.dup2(f.fileno(), 1)
        try:
            rc = main(argv)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"rc": rc, "peak_rss_mb": max(_vm_hwm_kb(), kids.ru_maxrss) / 1024.0,
                      "cpu_self": me.ru_utime + me.ru_stime,
                      "cpu_workers": kids.ru_utime + kids.ru_stime}))
    from kpatch_core.cli import end_process
    end_process(0)  # as the console script ends (kpatch_core.cli.entry)


def _run_cli(argv: list[str], env: dict, stdout_to: str = os.devnull) -> dict:
    """A whole ``kpatch-analyze ARGV`` process: wall, CPU (with workers), peak RSS."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *argv],
                       capture_output=True, text=True, env=dict(env, BENCH_STDOUT=stdout_to))
    wall = time.perf_counter() - t0
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"kpatch-analyze {' '.join(argv)}: {p.stderr.strip().splitlines()[-1:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if out["rc"] not in (0,):
        raise RuntimeError(f"kpatch-analyze {' '.join(argv)} exited {out['rc']}")
    out["wall"] = wall
    out["cpu"] = out["cpu_self"] + out["cpu_workers"]
    return out


def _objdump(arch: str, path: str, start: int, stop: int) -> dict | None:
    exe = shutil.which(OBJDUMP.get(arch, ""))
    if exe is None:
        return None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run([exe, "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
                        f"--stop-address={stop:#x}", path], stdout=null, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu}


def _drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _phases(path: str) -> dict:
    """The analysis's phase timings, in-process (decode share)."""
    code = ("import json,sys; from kpatch_core.analyze import analyze; from kpatch_core.image import Image;"
            "a = analyze(Image.open(sys.argv[1])); print(json.dumps(a.meta.get('timing') or {}))")
    p = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                       env=dict(os.environ, KPATCH_CACHE="off"))
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}


def _in_process_query(path: str, name: str, cache_dir: str) -> float:
    code = ("import sys,time; import kpatch_core.analyze, kpatch_core.cache;"
            "from kpatch_core.analyze_cmd import query_function;"
            "t=time.perf_counter(); query_function(sys.argv[1], sys.argv[2], use_cache=True);"
            "print(time.perf_counter()-t)")
    p = subprocess.run([sys.executable, "-c", code, path, name], capture_output=True, text=True,
                       env=dict(os.environ, KPATCH_CACHE=cache_dir))
    try:
        return float(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return float("nan")


def _self_consistency(path: str, samples: int) -> dict:
    """Bulk verdicts of the full analysis against ``probe.check`` on sampled boundaries."""
    code = r'''
import json, random, sys
import numpy as np
from kpatch_core import analyze as A
from kpatch_core.image import Image
from kpatch_core.probe import check
from kpatch_core.target import Target
image = Image.open(sys.argv[1]); samples = int(sys.argv[2])
a = A.analyze(image)
rng = random.Random(12345)
n = len(a.codes)
idx = set(rng.sample(range(n), min(samples, n)))
for v in np.unique(a.codes).tolist():   # up to 25 of every outcome, rare ones included
    where = np.nonzero(a.codes == v)[0]
    idx.update(rng.sample(where.tolist(), min(25, len(where))))
func_of = np.repeat(np.arange(len(a.syms)), a.counts)
bad = []
for j in sorted(idx):
    i = int(func_of[j]); addr = int(a.syms.addrs[i]) + int(a.offs[j])
    o = A.decode_code(int(a.codes[j]))
    v = check(image, Target(hex(addr), "p", address=addr))
    got = (o.ok, o.method if o.ok else None, o.reason, o.errno)
    exp = (v.ok, v.method if v.ok else None, v.reason, v.errno if not v.ok else None)
    if got != exp:
        bad.append({"address": hex(addr), "symbol": a.syms.names[i], "bulk": str(got), "check": str(exp)})
print(json.dumps({"compared": len(idx), "mismatches": len(bad), "examples": bad[:5]}))
'''
    p = subprocess.run([sys.executable, "-c", code, path, str(samples)], capture_output=True,
                       text=True, env=dict(os.environ, KPATCH_CACHE="off"))
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"compared": 0, "mismatches": -1, "error": p.stderr.strip().splitlines()[-1:]}


def _kernels(names: list[str] | None) -> list[tuple[str, str]]:
    if names:
        return [(n, os.path.join(KERNELS, n, "vmlinux")) for n in names]
    found = []
    for n in sorted(os.listdir(KERNELS)) if os.path.isdir(KERNELS) else []:
        p = os.path.join(KERNELS, n, "vmlinux")
        if os.path.isfile(p):
            found.append((n, p))
    return found


def bench_kernel(name: str, path: str, args: argparse.Namespace) -> dict:
    from kpatch_core.image import Image
    image = Image.open(path)
    arch = image.backend.name
    # objdump reads file (link-time) addresses
    start, stop = image.tables.stext - image.load_offset, image.tables.etext - image.load_offset
    query = next((q for q in QUERY if image.kallsyms.count(q) == 1), None)
    version = str(image.version)
    del image
    r: dict = {"kernel": name, "arch": arch, "version": version, "text_bytes": stop - start,
               "cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}
    env = dict(os.environ, KPATCH_CACHE="off")
    runs: dict[str, list[dict]] = {"objdump": [], "summary": [], "json": []}
    out_json = tempfile.mktemp(prefix="kpatch-bench-", suffix=".jsonl")
    try:
        for _ in range(max(1, args.repeat)):
            if not args.no_objdump:
                o = _objdump(arch, path, start, stop)
                if o is not None:
                    runs["objdump"].append(o)
            runs["summary"].append(_run_cli([path, "--no-cache", "--no-progress"], env))
            runs["json"].append(_run_cli([path, "--no-cache", "--no-progress", "--json"], env, out_json))
        r["json_bytes"] = os.path.getsize(out_json)
    finally:
        if os.path.exists(out_json):
            os.unlink(out_json)
    for k, v in runs.items():
        if v:
            best = min(v, key=lambda x: x["wall"])
            r[k] = {"wall": round(best["wall"], 2), "cpu": round(best["cpu"], 2),
                    "walls": [round(x["wall"], 2) for x in v]}
            if "peak_rss_mb" in best:
                r[k]["peak_rss_mb"] = round(max(x["peak_rss_mb"] for x in v))
    if "objdump" in r:
        for k in ("summary", "json"):
            r[k]["ratio_wall"] = round(r[k]["wall"] / r["objdump"]["wall"], 3)
            r[k]["ratio_cpu"] = round(r[k]["cpu"] / max(r["objdump"]["cpu"], 1e-9), 3)
    # meta["timing"] holds each phase's end, in seconds since the analysis started
    ends = sorted((v, k) for k, v in ({} if args.no_phases else _phases(path)).items()
                  if isinstance(v, (int, float)))
    prev, phases = 0.0, {}
    for end, k in ends:
        phases[k] = round(end - prev, 3)
        prev = end
    r["phases"] = phases
    r["decode_share"] = round(phases["decode"] / prev, 3) if prev and "decode" in phases else None
    if query and not args.no_query:
        cache_dir = tempfile.mkdtemp(prefix="kpatch-bench-cache-")
        try:
            cenv = dict(os.environ, KPATCH_CACHE=cache_dir)
            r["page_cache_dropped"] = _drop_page_cache()
            cold = _run_cli(["func", path, query], env)
            _run_cli([path, "--no-progress"], cenv)  # fill the result cache
            warm = min((_run_cli(["func", path, query], cenv) for _ in range(3)), key=lambda x: x["wall"])
            r["query"] = {"name": query, "cold_process_s": round(cold["wall"], 2),
                          "warm_process_s": round(warm["wall"], 3),
                          "cold_process_cpu": round(cold["cpu"], 2),
                          "warm_process_cpu": round(warm["cpu"], 3),
                          "warm_in_process_ms": round(1000 * _in_process_query(path, query, cache_dir), 1)}
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
    if args.samples:
        r["self_consistency"] = _self_consistency(path, args.samples)
    r["load_after"] = round(os.getloadavg()[0], 2)
    return r


def _print(r: dict) -> None:
    print(f"== {r['kernel']} ({r['arch']} {r['version']}): {r['text_bytes'] / 1e6:.1f} MB text")
    load = max(r["load_before"], r["load_after"])
    if load > 0.5 * r["cpus"]:
        print(f"   (machine busy: load {load} on {r['cpus']} cores)")
    o = r.get("objdump")
    if o:
        print(f"   objdump          wall {o['wall']:6.2f} s  cpu {o['cpu']:6.2f} s")
    for k in ("summary", "json"):
        x = r[k]
        ratio = (f"  ratio wall {x['ratio_wall']:.2f}  cpu {x['ratio_cpu']:.2f}" if "ratio_wall" in x else "")
        print(f"   {('--json' if k == 'json' else 'summary'):16s} wall {x['wall']:6.2f} s  cpu {x['cpu']:6.2f} s  "
              f"peak RSS {x['peak_rss_mb']} MB{ratio}")
    print(f"   decode share {r['decode_share']}  phases {r['phases']}")
    if "query" in r:
        q = r["query"]
        print(f"   func {q['name']}: cold process {q['cold_process_s']} s, cpu {q['cold_process_cpu']} s "
              f"(page cache dropped: {r['page_cache_dropped']}), warm process {q['warm_process_s']} s, "
              f"cpu {q['warm_process_cpu']} s, "
              f"warm in-process {q['warm_in_process_ms']} ms")
    if "self_consistency" in r:
        s = r["self_consistency"]
        print(f"   self-consistency (full analysis vs check): {s['compared']} compared, "
              f"{s['mismatches']} mismatches")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", help="only these cached kernels (repeatable), "
                    "names as under $KPATCH_KERNELS (x86_64, x86_64-6.12, 7.2.13+deb14-amd64 ...)")
    ap.add_argument("--samples", type=int, default=1500, help="boundaries compared with check")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each side (best kept)")
    ap.add_argument("--no-objdump", action="store_true")
    ap.add_argument("--no-query", action="store_true", help="skip the one-function query timings")
    ap.add_argument("--no-phases", action="store_true",
                    help="skip the in-process phase timings (decode share): one analysis less")
    ap.add_argument("--out", help="write the results as JSON to this file")
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return 0
    args = ap.parse_args()
    # an installed package has its bytecode (pip compiles it): every run below starts as it would
    # (an inherited PYTHONDONTWRITEBYTECODE compiled every module on every start-up)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "kpatch_core", "arch"],
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   check=False, capture_output=True)
    results, failed = [], False
    for name, path in _kernels(args.kernel):
        if not os.path.isfile(path):
            print(f"{name}: no cached vmlinux at {path}, skipped")
            continue
        try:
            r = bench_kernel(name, path, args)
        except RuntimeError as e:
            print(f"{name}: FAILED: {e}")
            failed = True
            continue
        failed |= bool(r.get("self_consistency", {}).get("mismatches"))
        results.append(r)
        _print(r)
    print("\n| kernel | arch | objdump wall / cpu | summary wall (ratio) / cpu (ratio) | --json wall (ratio) / "
          "cpu (ratio) | peak RSS | decode share | func cold / warm process | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        o, s, j = r.get("objdump", {}), r["summary"], r["json"]
        q = r.get("query")
        qs = (f"{q['cold_process_s']} / {q['warm_process_s']} s (cpu {q.get('cold_process_cpu', '-')}"
              f" / {q.get('warm_process_cpu', '-')} s)") if q else "-"
        print(f"| {r['kernel']} | {r['arch']} | {o.get('wall', '-')} / {o.get('cpu', '-')} s | "
              f"{s['wall']} ({s.get('ratio_wall', '-')}) / {s['cpu']} ({s.get('ratio_cpu', '-')}) | "
              f"{j['wall']} ({j.get('ratio_wall', '-')}) / {j['cpu']} ({j.get('ratio_cpu', '-')}) | "
              f"{max(s['peak_rss_mb'], j['peak_rss_mb'])} MB | {r['decode_share']} | {qs} | "
              f"{r['load_before']}-{r['load_after']} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
