#!/usr/bin/env python3
"""Digests of every CLI output on every cached real kernel, to prove a refactoring changed none.

    python benchmarks/output_digest.py [--baseline] [--only NAME ...] [--skip-full] [--out FILE]

For each ``~/.cache/kpatch-kernels/NAME/vmlinux`` (NAME: x86_64, arm64-6.12, ...) prints the
sha256 of:

- ``check --json`` on the kernel's oracle probes (``/work/shared/data/oracle/<arch>/probes.txt``
  for the 6.1 kernels and riscv64; the targets of ``tests/data/oracle/NAME/results.jsonl.gz``,
  in order, for the 6.12 ones), each line with a ``"rules_exact"`` key stripped;
- the full analysis ``--json`` (``KPATCH_CACHE=off``, ``--no-cache``);
- ``func VMLINUX vfs_read --slots --json``;
- ``event --json`` on a few lines (accepted and refused).

``--baseline`` runs the frozen copy of the code (``PYTHONPATH=/work/baseline_path``) instead of
this tree.  Compare the two tables: every digest must be equal.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))
SHARED_ORACLE = Path("/work/shared/data/oracle")
OWN_ORACLE = ROOT / "tests" / "data" / "oracle"
BASELINE = "/work/baseline_path"

EVENT_LINES = [
    "p:grp/ev vfs_read",
    "p:grp/ev2 vfs_read $arg1 $arg2 buf=+0($arg2):string",
    "r:grp/ret vfs_read $retval",
    "p:grp/bad no_such_symbol_xyz",
    "p:grp/off vfs_read+1",
    "p:grp/badarg vfs_read $arg99",
    "p:grp/cnt vfs_read count=$arg3:u64 pos=+0($arg4):s64",
    "r:grp/retoff vfs_read+4 $retval",
]


def _targets(name: str) -> list[str]:
    """The oracle sample of kernel NAME as CLI targets, in the oracle's order."""
    probes = SHARED_ORACLE / name / "probes.txt"
    own = OWN_ORACLE / name / "results.jsonl.gz"
    if not probes.is_file():
        if not own.is_file():
            return []
        with gzip.open(own, "rt") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [("r " if r["kind"] == "r" else "") + r["target"] for r in rows]
    out = []
    for line in probes.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _run(argv: list[str], baseline: bool) -> bytes:
    env = dict(os.environ, KPATCH_CACHE="off")
    if baseline:
        env["PYTHONPATH"] = BASELINE
    else:
        env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run([sys.executable, "-m", "kpatch_core.cli", *argv], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/tmp")
    # the exit code and stderr are part of the output
    return p.stdout + b"\n--stderr--\n" + p.stderr + f"\n--rc {p.returncode}--\n".encode()


def _without(obj: object, keys: frozenset[str]) -> object:
    if isinstance(obj, dict):
        return {k: _without(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_without(v, keys) for v in obj]
    return obj


def _strip_rules_exact(out: bytes, keys: frozenset[str] = frozenset({"rules_exact"})) -> bytes:
    """``out`` with the given keys removed from every JSON line, at any depth (``rules_exact``,
    which another change adds to check/event JSON, by default)."""
    lines = []
    for line in out.split(b"\n"):
        if line.startswith(b"{") and any(k.encode() in line for k in keys):
            line = json.dumps(_without(json.loads(line), keys)).encode()
        lines.append(line)
    return b"\n".join(lines)


def digests(name: str, vmlinux: Path, baseline: bool, skip_full: bool,
            keep: Path | None, ignore: frozenset[str] = frozenset()) -> dict[str, str]:
    """sha256 of each output on one kernel (first 12 hex digits), JSON keys in ``ignore``
    removed first."""
    res: dict[str, str] = {}

    def put(key: str, out: bytes) -> None:
        if ignore:
            out = _strip_rules_exact(out, ignore | {"rules_exact"})
        res[key] = hashlib.sha256(out).hexdigest()[:12]
        if keep is not None:
            (keep / f"{name}.{key}").write_bytes(out)

    targets = _targets(name)
    if targets:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(targets) + "\n")
        try:
            put("check", _strip_rules_exact(
                _run(["check", str(vmlinux), "--targets", f.name, "--json"], baseline)))
        finally:
            os.unlink(f.name)
    else:
        res["check"] = "-"
    if not skip_full:
        put("full", _run(["summary", str(vmlinux), "--json", "--no-cache", "--no-progress"],
                         baseline))
    put("func", _run(["func", str(vmlinux), "vfs_read", "--slots", "--json", "--no-cache"],
                     baseline))
    put("event", _strip_rules_exact(_run(["event", str(vmlinux), *EVENT_LINES, "--json"], baseline)))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", action="store_true", help="run the frozen baseline code")
    ap.add_argument("--only", nargs="*", help="kernel names (directories of the cache)")
    ap.add_argument("--skip-full", action="store_true", help="no full analysis (fast)")
    ap.add_argument("--keep", metavar="DIR", help="also write each raw output into DIR")
    ap.add_argument("--ignore", default="", metavar="KEY,...",
                    help="also drop these JSON keys before hashing (keys other changes added)")
    args = ap.parse_args()
    keep = Path(args.keep) if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    names = sorted(p.parent.name for p in KERNELS.glob("*/vmlinux"))
    if args.only:
        names = [n for n in names if n in args.only]
    side = "baseline" if args.baseline else "tree"
    print(f"{'kernel':14s} {'side':9s} {'check':12s} {'full':12s} {'func':12s} {'event':12s}")
    for name in names:
        ignore = frozenset(k for k in args.ignore.split(",") if k)
        d = digests(name, KERNELS / name / "vmlinux", args.baseline, args.skip_full, keep, ignore)
        print(f"{name:14s} {side:9s} {d.get('check', '-'):12s} {d.get('full', '-'):12s} "
              f"{d['func']:12s} {d['event']:12s}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
