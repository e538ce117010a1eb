"""The real Debian kernels' own answers (../shared/data/oracle, from kernel-oracle under QEMU)
against ``check`` on the same cached vmlinux, every arch: verdict and errno for every probe, and
for accepted ones the resolved address and the [FTRACE]/[OPTIMIZED] flags the kernel printed.
Skipped when the vmlinux is not cached (never committed: ../shared/tools/fetch-kernels.sh;
the 6.12 kernels: tests/data/oracle/fetch.sh, Debian trixie 6.12.117).
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from conftest import real_vmlinux
from kpatch_core.image import Image
from kpatch_core.probe import check

ORACLE = Path(os.environ.get("KPATCH_ORACLE_DIR",
                             Path(__file__).resolve().parents[2] / "shared" / "data" / "oracle"))


# answers this project took itself (tests/data/oracle/<name>/, with the script that fetches
# the kernel): name -> cached kernel directory under ~/.cache/kpatch-kernels
OWN = Path(__file__).resolve().parent / "data" / "oracle"


def _rows(arch: str) -> list[dict]:
    path = (OWN if (OWN / arch).is_dir() else ORACLE) / arch / "results.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"no oracle results at {path} (set KPATCH_ORACLE_DIR)")
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if not r.get("crash")]  # the kernel died: no answer to compare


@pytest.mark.realkernel
@pytest.mark.parametrize("arch", ["x86_64", "arm64", "riscv64", "s390x", "ppc64le",
                                  "arm64-6.12", "x86_64-6.12"])
def test_real_kernel_agrees_with_oracle(arch: str) -> None:
    image = Image.open(str(real_vmlinux(arch)))
    rows = _rows(arch)
    wrong = []
    for r in rows:
        v = check(image, ("r " if r["kind"] == "r" else "") + r["target"])
        want = (bool(r["ok"]), None if r["ok"] else r["error"])
        if (v.ok, None if v.ok else v.errno) != want:
            wrong.append((r["target"], want, v.errno, v.reason))
        elif v.ok and int(r["address"], 16) != v.address:
            wrong.append((r["target"], r["address"], hex(v.address)))
        elif v.ok and sorted(r["flags"] or []) != sorted(v.flags):
            wrong.append((r["target"], r["flags"], v.flags))
    assert len(rows) >= 1990 and not wrong, wrong[:10]
