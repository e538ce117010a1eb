#!/usr/bin/env python3
"""Full analysis of every module of a Debian build versus ``objdump -d`` over the same .ko files.

    python benchmarks/bench_modules.py [--kernel 6.12.117+deb13-amd64] [--limit N] [--every K]

The module tree (``~/.cache/kpatch-kernels/KERNEL/modules``, fetched with
``fetch-debian-kernel.sh --modules``) is decompressed once into a temporary tree (not timed), so
both sides read the same plain .ko files.  Then, one after the other on this machine:

- ``objdump -d`` over every .ko (one process per file, as a loop over the tree would run it);
- ``kpatch-analyze modules VMLINUX --modules TREE --json --no-cache --jobs 1``: open, lay out,
  relocate and fully analyse every module (every instruction's verdict), one process.

Printed side by side: wall and CPU seconds (and our peak RSS), modules, functions, instructions, the ratio
(target: kpatch <= 2x objdump), and the modules that failed to load.  ``--limit``/``--every``
take a sample (the first N, or every K-th module in name order) for a quick run.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def decompress_tree(src: Path, dst: Path, limit: int | None, every: int) -> list[Path]:
    """Plain .ko copies of the modules under ``src`` (sorted by name, sampled)."""
    import zstandard
    files = sorted((p for p in src.rglob("*.ko*") if p.name.endswith((".ko", ".ko.xz", ".ko.zst"))),
                   key=lambda p: p.name)
    files = files[::every][:limit] if limit else files[::every]
    out = []
    for p in files:
        rel = p.relative_to(src)
        name = str(rel).removesuffix(".xz").removesuffix(".zst")
        q = dst / name
        q.parent.mkdir(parents=True, exist_ok=True)
        raw = p.read_bytes()
        if p.name.endswith(".xz"):
            raw = lzma.decompress(raw)
        elif p.name.endswith(".zst"):
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        q.write_bytes(raw)
        out.append(q)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", default="6.12.117+deb13-amd64")
    ap.add_argument("--limit", type=int, help="only the first N modules (name order)")
    ap.add_argument("--every", type=int, default=1, help="every K-th module")
    ap.add_argument("--objdump", default="objdump")
    args = ap.parse_args()
    kdir = KERNELS / args.kernel
    vmlinux, tree = kdir / "vmlinux", kdir / "modules"
    if not vmlinux.is_file() or not tree.is_dir():
        print(f"bench_modules: {kdir} has no vmlinux + modules/; fetch them with "
              f"fetch-debian-kernel.sh --modules {args.kernel} ARCH", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-modules-"))
    try:
        kos = decompress_tree(tree, tmp, args.limit, args.every)
        size = sum(p.stat().st_size for p in kos)
        print(f"{len(kos)} modules, {size / 1e6:.1f} MB of .ko ({args.kernel})", flush=True)

        c0, t0 = _children_cpu(), time.perf_counter()
        for p in kos:
            subprocess.run([args.objdump, "-d", str(p)], stdout=subprocess.DEVNULL, check=False)
        obj_wall, obj_cpu = time.perf_counter() - t0, _children_cpu() - c0
        print(f"objdump -d      {obj_wall:8.1f} s wall {obj_cpu:8.1f} s CPU", flush=True)

        env = dict(os.environ, KPATCH_CACHE="off")
        c0, t0 = _children_cpu(), time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "kpatch_core.cli", "modules", str(vmlinux),
                              "--modules", str(tmp), "--json", "--no-cache", "--jobs", "1"],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        kp_wall, kp_cpu = time.perf_counter() - t0, _children_cpu() - c0
        rows = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
        ok = [r for r in rows if "error" not in r]
        bad = [r for r in rows if "error" in r]
        funcs = sum(r["functions"] for r in ok)
        insns = sum(r["insns"] for r in ok)
        entries = sum(r["probeable_entries"] for r in ok)
        unresolved = sum(1 for r in ok if r["unresolved"])
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest child: ours
        print(f"kpatch modules  {kp_wall:8.1f} s wall {kp_cpu:8.1f} s CPU  (exit {res.returncode}), "
              f"peak RSS {rss:.0f} MiB")
        print(f"ratio           {kp_wall / obj_wall:8.2f}x wall {kp_cpu / max(obj_cpu, 1e-9):8.2f}x CPU "
              "(target <= 2x)")
        print(f"analysed        {len(ok)} modules, {funcs} functions ({entries} probeable entries, "
              f"{100.0 * entries / max(funcs, 1):.1f}%), {insns} instructions; {len(bad)} failed; "
              f"{unresolved} with unresolved symbols")
        for r in bad[:10]:
            print(f"  failed: {r['module']}: {r['error']}")
        if res.returncode and not rows:
            print(res.stderr[-2000:], file=sys.stderr)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
