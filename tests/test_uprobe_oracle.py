"""Our uprobe verdicts against a real kernel's (tools/uprobe-oracle answers, committed in
testdata/uprobe/oracle/).  The probed files are Debian's (busybox-static, libc6 of the arch):
not committed; each test skips, saying how to get the file, when it is not there."""
from __future__ import annotations

import glob
import gzip
import json
import os
import re

import pytest

from kpatch_core.features import FeatureSet
from kpatch_core.uprobe.elf import UserElf
from kpatch_core.uprobe.probe import check_offset, features_for

HERE = os.path.join(os.path.dirname(__file__), "..", "testdata", "uprobe", "oracle")
FILES = sorted(glob.glob(os.path.join(HERE, "*.jsonl.gz")))


def _rows(path: str) -> tuple[dict, list[dict]]:
    with gzip.open(path, "rt") as f:
        rows = [json.loads(x) for x in f]
    return rows[0]["meta"], rows[1:]


def oracle_target(meta: dict) -> "tuple[str, UserElf, FeatureSet]":
    """An answer set's binary (skip when it is not extracted here), opened, and the features of
    the kernel that answered (its uname)."""
    target = meta["target"]
    if not os.path.exists(target):
        pkg = "libc6" if "libc" in target else "busybox-static"
        pytest.skip(f"{target} missing: apt-get download {pkg}:<debarch> and extract it there "
                    "(tools/uprobe-oracle/README.md)")
    m = re.search(r"Linux \S+ (\d+)\.(\d+)", meta["UNAME"])
    assert m
    elf = UserElf.open(target, debug_roots=[])
    return target, elf, features_for(elf.backend, (int(m[1]), int(m[2])))


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(p)[:-9] for p in FILES])
def test_agreement_with_real_kernel(path: str) -> None:
    meta, rows = _rows(path)
    target, elf, fs = oracle_target(meta)
    agree = false_accepts = 0
    for r in rows:
        v = check_offset(elf, int(r["offset"], 16), fs)
        if (v.ok, None if v.ok else v.errno) == (r["ok"], None if r["ok"] else r["errno"]):
            agree += 1
        elif v.ok:
            false_accepts += 1
    assert len(rows) >= 2000 and false_accepts == 0 and agree / len(rows) >= 0.999, \
        (agree, len(rows), false_accepts)
