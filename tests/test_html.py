"""The HTML report: one self-contained page whose charts carry the analysis' numbers."""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import subprocess
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
    for g in a.groups("area"):  # an area of padding only has no real instruction: no bar
        assert areas.get(g["name"]) == ((g["probeable_insns"], g["insns"]) if g["insns"] else None)
    subs = _bars(page, "subsystems-0")
    assert sum(n for _, n in subs.values()) <= t["insns"] and subs
    # the visible labels show the same counts
    assert f'{t["by_outcome"]["singlestep"]:,} (' in page


def test_self_contained():
    a = A.analyze(Image.open(str(X86)), jobs=1)
    page = render([a])
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page)
    assert "@import" not in page and "url(" not in page
    # scripts are inline only; nothing is fetched (the data is embedded, not loaded)
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "fetch(" not in page and "XMLHttpRequest" not in page and "import(" not in page
    # the only URL is the SVG namespace identifier, which is never fetched
    assert set(re.findall(r"https?://[^\"' ]+", page)) <= {"http://www.w3.org/2000/svg"}


def _embedded(page: str, k: int = 0) -> dict:
    m = re.search(rf'<script type="application/gzip" id="data-{k}">([^<]*)</script>', page)
    assert m, "no embedded data"
    return json.loads(gzip.decompress(base64.b64decode(m.group(1))))


def test_headline_and_table_leave_fill_out():
    a = A.analyze(Image.open(str(X86)), jobs=1)
    t = a.totals()
    assert t["fill"] > 0  # the x86 test image has padding (int3 runs, marker symbols)
    page = render([a])
    assert f'<td>instructions (padding left out)</td><td>{t["insns"]:,}</td>' in page
    assert f'<td>{t["fill"]:,}</td>' in page
    d = _embedded(page)
    rows = d["f"]
    assert len(rows) == len(a)
    assert sum(r[12] for r in rows) == t["insns"]  # instructions: real only
    assert sum(r[13] for r in rows) == t["probeable_insns"]
    assert sum(r[14] for r in rows) == t["fill"]
    for i, r in enumerate(rows):  # each listing: one length per real instruction, runs cover it
        assert len(r[17]) == r[12]
        assert sum(int(x.split("*")[1]) if "*" in x else 1 for x in r[18].split(",") if x) == r[12]
        f = a.facts[i]
        assert r[0] == f["name"] and r[11] == f["same_name"] and r[9] == f["ftrace_sites"]
        assert r[8] == (f["clone"] or {}).get("base")


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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--virtual-time-budget=8000"]


def _chromium(tmp_path: Path, url: str, *extra: str) -> str:
    assert CHROMIUM
    mode = list(extra) or ["--dump-dom"]
    out = subprocess.run([CHROMIUM, *_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *mode, url],
                         capture_output=True, text=True, timeout=120, check=False)
    return out.stdout


def _rows(dom: str, k: int = 0) -> list[str]:
    body = dom.split(f'id="funcs-{k}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr data-i="\d+" data-name="([^"]*)"', body)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_search_and_drill_down_in_chromium(tmp_path):
    """Headless Chromium opens the file from disk: the search filters the function table, a
    chart bar lists its functions, a function opens its instruction listing; and a screenshot."""
    a = A.analyze(Image.open(str(X86)), jobs=1)
    page = tmp_path / "report.html"
    page.write_text(render([a]), encoding="utf-8")
    url = page.as_uri()
    # no filter: every symbol, first page of 100
    dom = _chromium(tmp_path, url + "#")
    assert 'data-ready="1"' in dom, dom[-2000:]
    assert f'data-count="{len(a)}"' in dom and len(_rows(dom)) == min(len(a), 100)
    # the search filters by name
    want = [n for n in a.syms.names if "plain" in n]
    dom = _chromium(tmp_path, url + "#q=plain")
    assert sorted(_rows(dom)) == sorted(want) and f'data-count="{len(want)}"' in dom
    # a chart bar drills down to its functions: the entries refused as NOTRACE
    t = a.totals()
    notrace = next(c for r, e, c in t["rejected_entries"] if r == "NOTRACE")
    dom = _chromium(tmp_path, url + "#chart=entries&bar=NOTRACE%20EINVAL")
    assert len(_rows(dom)) == notrace and f'data-count="{notrace}"' in dom
    # a function opens its listing: one row per real instruction, fill as a count
    i = a.index("padded_func")[0]
    f = a.function_json(i)
    dom = _chromium(tmp_path, url + "#q=padded&f=padded_func")
    listing = dom.split('id="listing-0"', 1)[1].split("</table>", 1)[0]
    assert 'data-name="padded_func"' in dom.split('id="listing-0"', 1)[0][-200:] + \
        dom.split('id="listing-0"', 1)[1][:200]
    assert listing.count('class="insn"') == f["insns"] - f["fill"]
    assert f'then {f["fill"]} fill instructions' in dom
    # a screenshot of the page (looked at by the developer; here: it renders, not blank)
    shot = tmp_path / "report.png"
    _chromium(tmp_path, url + "#q=func", "--window-size=1300,2400", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 20_000
    if os.environ.get("KPATCH_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["KPATCH_KEEP_SCREENSHOT"])
