"""The real Debian kernels' own answers (kernel-oracle under QEMU) against ``check`` on the
same cached vmlinux: verdict and errno for every probe, and for accepted ones the resolved
address and the [FTRACE]/[OPTIMIZED] flags the kernel printed after arming each job's probes
together (``check_many``, in the oracle's order).  All answers are committed in
tests/data/oracle/<NAME> (6.1 copied from ../shared/data/oracle, 6.12 taken by this project;
kernels: tests/data/oracle/fetch.sh).
Skipped when the vmlinux is not cached (never committed: ../shared/tools/fetch-kernels.sh).
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from conftest import ORACLE_DATA, real_vmlinux
from kpatch_core.image import Image
from kpatch_core.testing import oracle_verdicts

ORACLE = Path(os.environ.get("KPATCH_ORACLE_DIR", ORACLE_DATA))
OWN = ORACLE_DATA  # answers committed with the project (tests/data/oracle/<NAME>/)
KERNELS = ["x86_64", "arm64", "riscv64", "s390x", "ppc64le",
           "x86_64-6.12", "arm64-6.12", "s390x-6.12", "ppc64le-6.12"]


def _answers(name: str) -> tuple[list[dict], dict]:
    root = OWN if (OWN / name).is_dir() else ORACLE
    path = root / name / "results.jsonl.gz"
    if not path.is_file():
        raise AssertionError(f"no oracle results at {path}: answers belong in tests/data/oracle")
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    meta_path = root / name / "results.meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return [r for r in rows if not r.get("crash")], meta  # crash: the kernel died, no answer


@pytest.mark.realkernel
@pytest.mark.parametrize("name", KERNELS)
def test_real_kernel_agrees_with_oracle(name: str) -> None:
    image = Image.open(str(real_vmlinux(name)))
    rows, meta = _answers(name)
    kaslr = meta.get("kaslr", {})
    if kaslr.get("offsets"):  # where that kernel ran (nokaslr) against vmlinux: s390x 6.12
        assert int(kaslr["offsets"]["_stext"], 16) == image.load_offset
    ours = oracle_verdicts(image, rows, int(meta.get("options", {}).get("chunk", 200)))
    wrong = []
    for r in rows:
        v = ours[r["index"]]
        want = (bool(r["ok"]), None if r["ok"] else r["error"])
        if (v.ok, None if v.ok else v.errno) != want:
            wrong.append((r["target"], want, v.errno, v.reason))
        elif v.ok and r["address"] and int(r["address"], 16) != v.address:
            wrong.append((r["target"], r["address"], hex(v.address)))
        elif v.ok and r["flags"] is not None and sorted(r["flags"]) != sorted(v.flags):
            wrong.append((r["target"], r["flags"], v.flags))
    assert len(rows) >= 1990 and not wrong, wrong[:10]
