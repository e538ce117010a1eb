#!/usr/bin/env python3
"""/boot files versus the debug vmlinux, per cached kernel: same verdicts, and how long it takes.

    python benchmarks/bench_boot.py [--only NAME ...] [--full] [--no-time] [--kallsyms-only]
                                    [--repeat N] [--stages] [--system-maps DIR]

For every ``~/.cache/kpatch-kernels/NAME/`` with a ``boot/`` directory (vmlinuz-*/vmlinux-*,
System.map-*, config-*) prints side by side:

- the sha256 of ``check --json`` on the kernel's oracle sample, from ``boot/vmlinuz-RELEASE``
  (System.map and config found beside it) and from ``vmlinux --config boot/config-RELEASE``;
- with ``--full``: the same for the full analysis ``--json`` (``KPATCH_CACHE=off``), and the
  number of differing lines with the fields that differ;
- the wall time of a cold ``check IMAGE vfs_read`` from each. "Cold" is the same for both
  inputs: the page cache is dropped before every run (``/proc/sys/vm/drop_caches``; where that
  is not allowed every run is warm instead and the line says ``warm``), the result cache is
  off (``KPATCH_CACHE=off``) and, for the first run from the vmlinuz, the synthetic-ELF cache
  is empty (decompress, recover kallsyms, write the synthetic ELF); the later run from the
  vmlinuz finds its synthetic ELF cached. Each figure is the median of ``--repeat`` runs
  (default 3), then the median CPU time (user + system) of the same runs, and the line ends
  with the 1-minute load average, which on a shared machine moves
  the absolute figures (the ratio less);
- with ``--stages``: where the first run's time goes (in-process: unpack/decompress (a bzImage:
  decoding in a thread while the payload is written out and kallsyms read from the decoded
  part), kallsyms or System.map, the synthetic ELF's symbols, the rest of ``boot_elf``).

``--system-maps DIR`` passes ``DIR/System.map-RELEASE`` (e.g. made with ``nm -n`` from the debug
vmlinux, as the -dbg package ships it) with ``--system-map``: the kernels built without
CONFIG_KALLSYMS_ALL need it. ``--kallsyms-only`` hides System.map (a copy of the boot image in a directory of its own), so
the symbols come from the image's kallsyms tables.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))
SHARED_ORACLE = Path("/work/shared/data/oracle")
OWN_ORACLE = ROOT / "tests" / "data" / "oracle"


def targets(name: str) -> list[str]:
    """The oracle sample of kernel NAME, in the oracle's order."""
    own = OWN_ORACLE / name / "results.jsonl.gz"
    if own.is_file():
        with gzip.open(own, "rt") as f:
            return [("r " if r["kind"] == "r" else "") + r["target"]
                    for r in (json.loads(line) for line in f if line.strip())]
    probes = SHARED_ORACLE / name / "probes.txt"
    if not probes.is_file():
        return []
    return [ln.split("#", 1)[0].strip() for ln in probes.read_text().splitlines()
            if ln.split("#", 1)[0].strip()]


def boot_files(name: str) -> tuple[Path, Path | None] | None:
    """(boot image, config) of cached kernel NAME, or None."""
    d = KERNELS / name / "boot"
    if not d.is_dir():
        return None
    img = next((p for p in sorted(d.iterdir()) if p.name.startswith(("vmlinuz-", "vmlinux-"))), None)
    if img is None:
        return None
    rel = img.name.split("-", 1)[1]
    cfg = d / f"config-{rel}"
    return img, cfg if cfg.is_file() else None


def run(argv: list[str], env: dict[str, str]) -> tuple[bytes, float]:
    out, dt, _ = run_cpu(argv, env)
    return out, dt


def run_cpu(argv: list[str], env: dict[str, str]) -> tuple[bytes, float, float]:
    """(stdout, wall seconds, CPU seconds: user + system of the child) of one CLI run."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "kpatch_core.cli", *argv], capture_output=True,
                       env=env, cwd=ROOT, check=False)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode not in (0, 1) or not p.stdout:
        raise RuntimeError(f"{' '.join(argv[:2])}: exit {p.returncode}: {p.stderr.decode()[-300:]}")
    return p.stdout, dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def diff_fields(a: bytes, b: bytes) -> str:
    la, lb = a.decode().splitlines(), b.decode().splitlines()
    if len(la) != len(lb):
        return f"{len(la)} vs {len(lb)} lines"
    c: collections.Counter[str] = collections.Counter()
    n = 0
    first: list[str] = []
    for x, y in zip(la, lb):
        if x == y:
            continue
        n += 1
        try:
            X, Y = json.loads(x), json.loads(y)
        except ValueError:
            c["(text)"] += 1
            continue
        if isinstance(X, dict) and isinstance(Y, dict):
            for k in set(X) | set(Y):
                if X.get(k) != Y.get(k):
                    c[k] += 1
            if len(first) < 3:
                first.append(str(X.get("name") or X.get("target")))
    return (f"{n}/{len(la)} lines differ: " + ", ".join(f"{k} {v}" for k, v in c.most_common(6))
            + (f" (first: {', '.join(first)})" if first else ""))


def stages(img: str, smap: Path | None) -> str:
    """Seconds per stage of a first (uncached) boot_elf of ``img``, in this process."""
    sys.path.insert(0, str(ROOT))
    import kpatch_core.bootimage as bi
    from kpatch_core.bootimage import stream, synth_elf
    t: dict[str, float] = collections.defaultdict(float)

    def timed(mod: object, name: str, key: str) -> None:
        f = getattr(mod, name)

        def w(*args: object, **kw: object) -> object:
            t0 = time.perf_counter()
            try:
                return f(*args, **kw)
            finally:
                t[key] += time.perf_counter() - t0
        setattr(mod, name, w)
    for mod, name, key in ((bi, "_unpack", "unpack"), (bi, "unpack_bzimage", "decode+write payload"),
                           (stream, "find_kallsyms", "kallsyms beside the decoding"),
                           (bi, "_kallsyms", "kallsyms after"),
                           (bi, "read_system_map", "System.map"),
                           (synth_elf.ElfFile, "finish", "write symbols"),
                           (synth_elf, "symbol_infos", "symbol types")):
        timed(mod, name, key)
    with tempfile.TemporaryDirectory() as d:
        os.environ["KPATCH_BOOT_CACHE"] = d
        drop_caches()
        t0 = time.perf_counter()
        bi.boot_elf(img, None, str(smap) if smap else None)
        total = time.perf_counter() - t0
    return (f"boot_elf {total:.2f} s: " + ", ".join(f"{k} {v:.2f}" for k, v in t.items())
            + " (kallsyms beside the decoding is part of decode+write payload, symbol types of "
            "write symbols)")


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:12]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="kernel names (default: every cached one with boot/)")
    ap.add_argument("--full", action="store_true", help="also compare the full analysis")
    ap.add_argument("--no-time", action="store_true", help="skip the cold-check timings")
    ap.add_argument("--no-check", action="store_true", help="skip the check --json comparison")
    ap.add_argument("--kallsyms-only", action="store_true", help="hide System.map from the boot run")
    ap.add_argument("--system-maps", metavar="DIR", help="pass DIR/System.map-RELEASE with --system-map")
    ap.add_argument("--repeat", type=int, default=3, help="cold-check runs per figure (median)")
    ap.add_argument("--stages", action="store_true", help="time the first run's stages in-process")
    a = ap.parse_args()
    names = a.only or sorted(p.name for p in KERNELS.iterdir() if (p / "boot").is_dir())
    tmp = Path(tempfile.mkdtemp(prefix="bench-boot-"))
    env = dict(os.environ, KPATCH_CACHE="off", KPATCH_BOOT_CACHE=str(tmp / "boot-cache"),
               PYTHONPATH=str(ROOT))
    # an installed package has its bytecode (pip compiles it): the same here, for both sides
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "kpatch_core", "arch"], cwd=ROOT,
                   env=env, check=False, capture_output=True)
    print(f"{'kernel':13s} {'what':6s} {'from vmlinux':14s} {'from /boot':14s} {'equal':6s} detail")
    try:
        for name in names:
            try:
                bf = boot_files(name)
                vml = KERNELS / name / "vmlinux"
                if bf is None or not vml.is_file():
                    print(f"{name:13s} (no boot/ or vmlinux cached)")
                    continue
                img, cfg = bf
                if a.kallsyms_only:
                    d = tmp / name
                    d.mkdir(exist_ok=True)
                    (d / img.name).unlink(missing_ok=True)
                    os.symlink(img, d / img.name)
                    if cfg:
                        shutil.copy(cfg, d / cfg.name)
                    img = d / img.name
                cfg_args = ["--config", str(cfg)] if cfg else []
                smap = Path(a.system_maps) / f"System.map-{img.name.split('-', 1)[1]}" if a.system_maps else None
                boot_args = cfg_args + (["--system-map", str(smap)] if smap and smap.is_file() else [])
                tg = [] if a.no_check else targets(name)
                if tg:
                    tf = tmp / f"{name}.targets"
                    tf.write_text("\n".join(tg) + "\n")
                    v, _ = run(["check", str(vml), *cfg_args, "--targets", str(tf), "--json"], env)
                    b, _ = run(["check", str(img), *boot_args, "--targets", str(tf), "--json"], env)
                    print(f"{name:13s} {'check':6s} {sha(v):14s} {sha(b):14s} {v == b!s:6s} "
                          f"{len(tg)} targets" + ("" if v == b else "; " + diff_fields(v, b)))
                if a.full:
                    v, _ = run(["summary", str(vml), *cfg_args, "--json", "--no-cache", "--no-progress"], env)
                    b, _ = run(["summary", str(img), *cfg_args, "--json", "--no-cache", "--no-progress"]
                               + boot_args[len(cfg_args):], env)
                    print(f"{name:13s} {'full':6s} {sha(v):14s} {sha(b):14s} {v == b!s:6s} "
                          + ("" if v == b else diff_fields(v, b)))
                if not a.no_time:
                    cold = drop_caches()
                    if not cold:  # warm for both: one untimed run of each reads the files in
                        run(["check", str(vml), *cfg_args, "vfs_read"], env)
                    runs: list[list[tuple[float, float]]] = [[], [], []]
                    for _ in range(max(1, a.repeat)):
                        drop_caches()
                        runs[0].append(run_cpu(["check", str(vml), *cfg_args, "vfs_read"], env)[1:])
                        shutil.rmtree(tmp / "boot-cache", ignore_errors=True)
                        drop_caches()
                        runs[1].append(run_cpu(["check", str(img), *boot_args, "vfs_read"], env)[1:])
                        drop_caches()
                        runs[2].append(run_cpu(["check", str(img), *boot_args, "vfs_read"], env)[1:])
                    tv, tb1, tb2 = (statistics.median(w for w, _ in r) for r in runs)
                    cv, cb1, cb2 = (statistics.median(c for _, c in r) for r in runs)
                    label = "cold" if cold else "warm"
                    print(f"{name:13s} {label:6s} {tv:12.2f} s {tb1:7.2f}/{tb2:4.2f} s  ratio "
                          f"{tb1 / tv:.2f} (first) {tb2 / tv:.2f} (cached synthetic ELF)  "
                          f"CPU {cv:.2f} s {cb1:.2f}/{cb2:.2f} s  load {os.getloadavg()[0]:.1f}")
                if a.stages:
                    print(f"{name:13s} stages " + stages(str(img), smap if smap and smap.is_file() else None))
            except RuntimeError as e:  # the command refused the input: say so, go on
                print(f"{name:13s} error  {str(e).strip().splitlines()[-1][:160]}")
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
