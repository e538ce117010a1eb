"""x86_64 uprobes on the optimizable 10-byte NOP (feature X86_UPROBE_OPTIMIZE_NOP10), as real
kernels answered: tools/uprobe-oracle ``--offsets`` on 60 random ``66 2e 0f 1f 84 SIB disp32``
offsets of Debian's busybox-static and libc6 (amd64) and 10 offsets one byte further (a 9-byte
``2e``-prefixed NOP): answers in testdata/uprobe/oracle/nop10/ (offsets-*.txt are the inputs).
6.12.117 refuses all 70 (is_prefix_bad: CS prefix), 7.2.13 and 7.3.4 accept the 60 nop10
(arch_uprobe_analyze_insn: can_optimize skips uprobe_init_insn).  Each test skips, saying how to
get the file, when the probed file is not there."""
from __future__ import annotations

import glob
import gzip
import json
import os

import pytest

from test_uprobe_oracle import oracle_target

from kpatch_core.features import FeatureSet
from kpatch_core.uprobe.probe import check_offset

HERE = os.path.join(os.path.dirname(__file__), "..", "testdata", "uprobe", "oracle", "nop10")
FILES = sorted(glob.glob(os.path.join(HERE, "*.jsonl.gz")))


def test_answer_sets_cover_both_sides() -> None:
    names = {os.path.basename(p) for p in FILES}
    assert {"x86_64-6.12-busybox-nop10.jsonl.gz", "x86_64-7.2-busybox-nop10.jsonl.gz",
            "x86_64-7.3-busybox-nop10.jsonl.gz", "x86_64-7.3-libc-nop10.jsonl.gz"} <= names
    assert not FeatureSet.decide((6, 12), "x86_64").has("X86_UPROBE_OPTIMIZE_NOP10")
    assert FeatureSet.decide((7, 2), "x86_64").has("X86_UPROBE_OPTIMIZE_NOP10")
    assert not FeatureSet.decide((7, 3), "arm64").has("X86_UPROBE_OPTIMIZE_NOP10")


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(p)[:-9] for p in FILES])
def test_nop10_agreement(path: str) -> None:
    with gzip.open(path, "rt") as f:
        rows = [json.loads(x) for x in f]
    meta, rows = rows[0]["meta"], rows[1:]
    target, elf, fs = oracle_target(meta)
    data = open(target, "rb").read()
    wrong = []
    for r in rows:
        off = int(r["offset"], 16)
        v = check_offset(elf, off, fs)
        if (v.ok, None if v.ok else v.errno) != (r["ok"], None if r["ok"] else r["errno"]):
            wrong.append((r["offset"], r["ok"], v.ok, v.errno))
    nop10 = sum(data[int(r["offset"], 16):int(r["offset"], 16) + 5] == b"\x66\x2e\x0f\x1f\x84"
                for r in rows)
    assert len(rows) == 70 and nop10 == 60 and not wrong, wrong[:5]
    # the kernel's side: nop10 accepted exactly where the feature holds
    assert sum(r["ok"] for r in rows) == (60 if fs.has("X86_UPROBE_OPTIMIZE_NOP10") else 0)
