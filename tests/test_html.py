"""The HTML report: one self-contained page whose charts carry the analysis' numbers."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from kpatch_core import analyze as A
from kpatch_core.cli import main
from kpatch_core.html import render
from kpatch_core.image import Image

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
X86 = TESTDATA / "x86_64" / "vmlinux"
ARM64 = TESTDATA / "arm64" / "vmlinux-6.1"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KPATCH_CACHE", str(tmp_path / "cache"))


def _bars(page: str, chart: str) -> dict[str, tuple[int, int | None]]:
    out = {}
    for m in re.finditer(r'<rect [^>]*data-chart="([^"]+)" data-label="([^"]+)" data-value="(\d+)"'
                         r'(?: data-total="(\d+)")?', page):
        if m.group(1) == chart:
            out[m.group(2)] = (int(m.group(3)), int(m.group(4)) if m.group(4) else None)
    return out


def test_charts_carry_the_numbers():
    a = A.analyze(Image.open(str(X86)), jobs=1)
    page = render([a])
    t = a.totals()
    outcomes = _bars(page, "outcomes-0")
    assert {k: v for k, (v, _) in outcomes.items()} == t["by_outcome"]
    entries = _bars(page, "entries-0")
    assert sum(v for v, _ in entries.values()) == t["functions"]
    for k, c in t["entry_methods"].items():
        assert entries[k][0] == c
    areas = _bars(page, "areas-0")
    for g in a.groups("area"):
        assert areas[g["name"]] == (g["probeable_insns"], g["insns"])
    subs = _bars(page, "subsystems-0")
    assert sum(n for _, n in subs.values()) <= t["insns"] and subs
    # the visible labels show the same counts
    assert f'{t["by_outcome"]["singlestep"]:,} (' in page


def test_self_contained():
    a = A.analyze(Image.open(str(X86)), jobs=1)
    page = render([a])
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    # the only URL is the SVG namespace identifier, which is never fetched
    assert set(re.findall(r"https?://[^\"' ]+", page)) <= {"http://www.w3.org/2000/svg"}


def test_several_images_get_a_comparison(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main([str(X86), str(ARM64), "--html", str(out), "--no-progress"]) == 0
    page = out.read_text()
    cmp = _bars(page, "compare-insns")
    assert len(cmp) == 2 and any(k.startswith("x86_64") for k in cmp) and \
        any(k.startswith("arm64") for k in cmp)
    a = A.analyze(Image.open(str(ARM64)))
    t = a.totals()
    assert cmp[f'arm64 {a.meta["version"]}'] == (t["probeable_insns"], t["insns"])
    assert 'id="image-0"' in page and 'id="image-1"' in page


def test_html_unwritable_is_one_line(tmp_path, capsys):
    assert main([str(X86), "--html", str(tmp_path / "no" / "such" / "dir.html"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err
