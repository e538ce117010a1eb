"""Padding is not code: fill instructions are counted apart and kept out of the headline shares."""
from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from kpatch_core import analyze as A
from kpatch_core.cli import main
from kpatch_core.fill import fill_instructions, fill_mask
from kpatch_core.image import Image

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
IMAGES = ["x86_64/vmlinux", "x86_64/vmlinux-6.12", "arm64/vmlinux-6.1", "arm64/vmlinux-6.12",
          "riscv64/vmlinux-6.1", "riscv64/vmlinux-6.12", "s390x/vmlinux", "ppc64le/vmlinux"]
ACCEPTED = {"ftrace", "boost", "singlestep", "emulate", "simulate", "accepted"}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KPATCH_CACHE", str(tmp_path / "cache"))


def test_fill_instructions_matches_whole_encodings_only():
    code = np.frombuffer(bytes.fromhex("cc 90 0f1f4000 c3 cc0f 66662e0f1f840000000000 0000"), np.uint8)
    starts = np.array([0, 1, 2, 6, 7, 8, 9, 20])
    lens = np.array([1, 1, 4, 1, 1, 1, 11, 2])
    enc = (b"\xcc", b"\x90", b"\x0f\x1f\x40\x00", b"\x66\x66\x2e\x0f\x1f\x84\x00\x00\x00\x00\x00",
           b"\x00\x00")
    got = fill_instructions(code, starts, lens, enc)
    # ret (c3) and a 1-byte 0x0f are code; the 2-byte zero at the very end is fill
    assert got.tolist() == [True, True, True, False, True, False, True, True]


@pytest.mark.parametrize("rel", IMAGES)
def test_fill_is_a_trailing_run_of_fill_encodings(rel):
    image = Image.open(str(TESTDATA / rel))
    a = A.analyze(image, jobs=1)
    enc = set(image.backend.fill_encodings)
    assert enc, f"{image.backend.name} has no fill encodings"
    mask = a.fill_mask()
    assert len(mask) == len(a.codes)
    for i, f in enumerate(a.facts):
        n = int(a.counts[i])
        assert 0 <= f["fill"] <= n
        o, ln, _ = a.insns(i)
        base = int(a.syms.addrs[i])
        code = image.backend.runtime_bytes(image, base, base + int(a.syms.sizes[i]) + 16)
        for k in range(n - f["fill"], n):  # every fill instruction is a fill encoding
            size = int(ln[k]) or image.backend.insn_align
            assert bytes(code[int(o[k]):int(o[k]) + size]) in enc, (f["name"], k)
        if f["fill"] < n:  # and the run is maximal: the instruction before it is code
            k = n - f["fill"] - 1
            size = int(ln[k]) or image.backend.insn_align
            assert bytes(code[int(o[k]):int(o[k]) + size]) not in enc, (f["name"], k)


@pytest.mark.parametrize("rel", IMAGES)
def test_totals_leave_fill_out(rel):
    a = A.analyze(Image.open(str(TESTDATA / rel)), jobs=1)
    t = a.totals()
    mask = a.fill_mask()
    assert t["fill"] == int(mask.sum())
    assert t["insns"] + t["fill"] == len(a.codes)
    assert sum(t["by_outcome"].values()) == t["insns"]
    assert sum(t["fill_by_outcome"].values()) == t["fill"]
    real_ok = int((a.ok_mask() & ~mask).sum())
    assert t["probeable_insns"] == real_ok
    assert sum(g["insns"] for g in a.groups("area")) == t["insns"]
    assert sum(g["probeable_insns"] for g in a.groups("subsystem")) == t["probeable_insns"]


def test_x86_markers_and_padding_are_fill():
    a = A.analyze(Image.open(str(TESTDATA / "x86_64/vmlinux")), jobs=1)
    f = {d["name"]: (d, int(a.counts[i])) for i, d in enumerate(a.facts)}
    # a linker marker symbol spanning int3 padding, and a __pfx_ symbol of nops: all fill
    for name in ("__kprobes_text_end", "__pfx_prefixed_func"):
        d, n = f[name]
        assert n > 0 and d["fill"] == n
    # a function: its code is not fill, the padding after its last instruction is
    d, n = f["padded_func"]
    assert 0 < d["fill"] < n
    assert a.totals()["fill"] > 0


def test_json_per_function_unchanged_but_for_fill(tmp_path):
    """--json per-function objects keep counting every instruction (verdicts unchanged) and
    carry the fill count; the summary headline leaves fill out and says how much."""
    img = str(TESTDATA / "x86_64/vmlinux")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([img, "--json", "--no-progress", "--no-cache"]) == 0
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    a = A.analyze(Image.open(img), jobs=1)
    t = a.totals()
    assert sum(r["insns"] for r in rows) == len(a.codes) == t["insns"] + t["fill"]
    assert sum(r["fill"] for r in rows) == t["fill"]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main([img, "--no-progress", "--no-cache"]) == 0
    text = out.getvalue()
    assert f"instructions {t['insns']}   probeable {t['probeable_insns']} " in text
    assert f"{t['fill']} fill instructions" in text


def test_fill_mask_without_fill_facts():
    counts = np.array([3, 0, 2])
    assert fill_mask(counts, [{}, {}, {}]).tolist() == [False] * 5
    assert fill_mask(counts, [{"fill": 1}, {"fill": 0}, {"fill": 2}]).tolist() == \
        [False, False, True, True, True]


REAL = Path(os.path.expanduser("~/.cache/kpatch-kernels/x86_64/vmlinux"))


@pytest.mark.skipif(not REAL.exists(), reason=f"Debian x86_64 6.1 kernel not cached at {REAL}")
def test_debian_x86_64_padding_out_of_the_shares():
    """Debian 6.1 x86_64: millions of int3 boundaries in three symbols; without them the
    probeable share is the real code's (issue 13: 81.5%, NOTRACE 11.3%)."""
    a = A.analyze(Image.open(str(REAL)))
    t = a.totals()
    f = {d["name"]: d for d in a.facts}
    assert t["fill"] > 3_800_000
    for name in ("__kprobes_text_end", "__entry_text_end", "srso_alias_safe_ret"):
        assert f[name]["fill"] > 100_000, name
    assert t["probeable_insns"] / t["insns"] > 0.80
    assert t["by_outcome"]["NOTRACE"] / t["insns"] < 0.12
