"""Throughput of ``kpatch-analyze matrix`` on real kernels, every cell checked against a single
``check`` of the same probe.

    python benchmarks/bench_matrix.py --tools DIR [--kernel VMLINUX ...] [--debian KVER-FLAVOUR ...]
                                      [--scheduler tcp://HOST:8786] [--workers 2]
                                      [--json-out FILE] [--no-verify] [--fresh-apt]

DIR holds tool files (bpftrace scripts, BCC tools, libbpf objects; e.g. `apt-get download
bpftrace && dpkg-deb -x bpftrace_*.deb x` then DIR=x/usr/sbin, or bpftrace's own tools/ and
tools/old/); every kernel-function probe they name is a row (read by kpatch_core.readers).
Kernels default to every ~/.cache/kpatch-kernels/*/vmlinux (one per build-id).

Printed: kernels, probes, tools, cells; wall time of the matrix on the Dask cluster (embedded
LocalCluster, or --scheduler) and kernels per minute with the download excluded (images
cached) and, for --debian builds (downloaded into a fresh directory), included; then every cell
compared with `check_targets(image, [probe])` (what `kpatch-analyze check IMAGE PROBE` says),
globs per matched function.  --json-out writes the matrix JSON (compare two runs with cmp).
Exit 1 when a cell differs or a kernel failed.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

from kpatch_core.attach import check_targets
from kpatch_core.errors import KpatchError
from kpatch_core.image import Image
from kpatch_core.matrix import compute_matrix
from kpatch_core.matrix.plan import KernelRef, dedupe, kernel_ref, probes_from_file
from kpatch_core.matrix.render import json_text
from kpatch_core.matrix.table import Matrix
from kpatch_core.target import parse_target


def _kernels(paths: list[str]) -> list[KernelRef]:
    """One column per build-id (the same build cached under two names counts once)."""
    seen: dict[str, str] = {}
    out = []
    for p in paths:
        try:
            bid = Image.open(p).build_id or p
        except KpatchError as e:
            print(f"skipping {p}: {e}", file=sys.stderr)
            continue
        if bid in seen:
            print(f"skipping {p}: same build-id as {seen[bid]}", file=sys.stderr)
            continue
        seen[bid] = p
        out.append(KernelRef(p, path=p))
    return out


def _as_json(v: object) -> object:
    """A check result as the matrix keeps it (a target that matched nothing has no JSON)."""
    return v.to_json() if hasattr(v, "to_json") else repr(v)


def _verify(m: Matrix) -> tuple[int, int, list[str]]:
    """Cells (and glob matches) equal to a single check, of how many; the first differences."""
    same = total = 0
    bad: list[str] = []
    for col in m.columns:
        if col.failed or col.path is None:
            continue
        image = Image.open(col.path)
        for probe, cell in zip(m.probes, col.cells):
            t = probe.kprobe_target
            if cell.matches is not None:
                pairs = [(v, check_targets(image, [parse_target(f"{probe.attach}:{n}")
                                                   if probe.source == "bpftrace" else
                                                   parse_target(n)])) for n, v in cell.matches]
                got: list[tuple[object, object]] = [(v, _as_json(r[0][1])) for v, r in pairs]
                names = [n for n, _ in cell.matches]
                expected = [str(e.symbol) for e, v in check_targets(image, [t])
                            if hasattr(v, "to_json")]
                got.append((names, expected))  # the same functions matched
            else:
                [(_, v)] = check_targets(image, [t])
                got = [(cell.verdict, _as_json(v))]
            for a, b in got:
                total += 1
                if a == b:
                    same += 1
                elif len(bad) < 10:
                    bad.append(f"{col.label} {probe}: matrix {a} != check {b}")
        del image
    return same, total, bad


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tools", action="append", required=True, metavar="DIR")
    ap.add_argument("--kernel", action="append", default=[], metavar="VMLINUX")
    ap.add_argument("--debian", action="append", default=[], metavar="KVER-FLAVOUR")
    ap.add_argument("--scheduler")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json-out", metavar="FILE")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--fresh-apt", action="store_true",
                    help="--debian also with a fresh apt state and .deb cache (KPATCH_APT): "
                         "package lists and packages downloaded again, as on a new machine")
    args = ap.parse_args(argv)

    probes, tools, notes = [], 0, 0
    for d in args.tools:
        for f in sorted(glob.glob(os.path.join(d, "*"))):
            try:
                got, skipped = probes_from_file(f)
            except KpatchError:
                continue
            tools += bool(got)
            notes += len(skipped)
            probes += got
    probes = dedupe(probes)
    paths = args.kernel or sorted(glob.glob(os.path.expanduser("~/.cache/kpatch-kernels/*/vmlinux")))
    kernels = _kernels(paths)
    print(f"{len(kernels)} kernels x {len(probes)} probes from {tools} tools "
          f"({notes} run-time-only probes not in the matrix)")
    for k in kernels:
        im = Image.open(k.path or "")
        print(f"  {im.backend.name:8s} {str(im.version):12s} {k.path}")

    t0 = time.monotonic()
    m = compute_matrix(probes, kernels, scheduler=args.scheduler, workers=args.workers,
                       store=None)
    wall = time.monotonic() - t0
    cpu = sum(c.seconds for c in m.columns)
    cells = sum(len(c.cells) for c in m.columns)
    print(f"matrix: {cells} cells in {wall:.1f} s wall ({cpu:.1f} s in tasks, "
          f"{len(m.failed)} failed) on {args.scheduler or f'{args.workers} local workers'}: "
          f"{len(kernels) / wall * 60:.1f} kernels/minute (download excluded)")
    ok = not m.failed
    for c in m.failed:
        print(f"  failed {c.label}: {c.error}")

    if args.debian:
        tmp = tempfile.mkdtemp(prefix="kpatch-kernels-")
        os.environ["KPATCH_KERNELS"] = tmp  # a fresh cache: every build is downloaded
        if args.fresh_apt:  # and the .deb files too (the fetch script keeps them in KPATCH_APT)
            os.environ["KPATCH_APT"] = tempfile.mkdtemp(prefix="kpatch-apt-")
        refs = [kernel_ref("--debian", d) for d in args.debian]
        t0 = time.monotonic()
        dm = compute_matrix(probes, refs, scheduler=args.scheduler, workers=args.workers,
                            store=None)
        dwall = time.monotonic() - t0
        fetch = sum(c.fetch_seconds for c in dm.columns)
        print(f"--debian: {len(refs)} kernels downloaded and computed in {dwall:.1f} s wall "
              f"({fetch:.1f} s downloading in tasks, {len(dm.failed)} failed): "
              f"{len(refs) / dwall * 60:.2f} kernels/minute (download included); "
              f"images in {tmp}")
        for col in dm.columns:
            print(f"  {col.label}: {col.fetch_seconds:.1f} s download and unpack, "
                  f"{col.seconds:.1f} s matrix" + (f"; failed: {col.error}" if col.failed else ""))
        ok = ok and not dm.failed
        m = Matrix.build(probes, list(m.columns) + list(dm.columns))

    if args.json_out:
        with open(args.json_out, "w") as out:
            out.write(json_text(m))
    counts: dict[str, int] = {}
    for row in m.classes:
        for klass in row:
            counts[klass.category] = counts.get(klass.category, 0) + 1
    print("categories: " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    changed = [g for g in m.groups if not g.uniform]
    print(f"changes between kernels: {len(changed)} (probe, category) groups")
    if not args.no_verify:
        t0 = time.monotonic()
        same, total, bad = _verify(m)
        print(f"verify: {same}/{total} cells equal a single check ({time.monotonic() - t0:.1f} s)")
        for b in bad:
            print("  " + b)
        ok = ok and same == total
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
