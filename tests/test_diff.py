"""``kpatch-analyze diff``: counts on two small images built by tests/data/diff/build.sh."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpatch_core import analyze as A
from kpatch_core.cli import main
from kpatch_core.diff import diff_analyses
from kpatch_core.image import Image

DIFF = Path(__file__).resolve().parent / "data" / "diff"
OLD, NEW = DIFF / "vmlinux-old", DIFF / "vmlinux-new"
X86 = Path(__file__).resolve().parent.parent / "testdata" / "x86_64"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KPATCH_CACHE", str(tmp_path / "cache"))


def _diff(old: Path, new: Path):
    io, inew = Image.open(str(old)), Image.open(str(new))
    return diff_analyses(A.analyze(io), A.analyze(inew), io, inew)


def test_diff_counts():
    d = _diff(OLD, NEW)
    assert d.appeared == ["diff_appear", "diff_appear_too"]
    assert d.vanished == ["diff_vanish"]
    assert d.renamed == [("diff_becomes_clone", ["diff_becomes_clone.constprop.0"])]
    c = d.counts()
    assert c["became_refused"] == 2 and c["became_probeable"] == 0 and c["reason_changed"] == 0
    p = {(ch.name, ch.kind): ch for ch in d.probeability}
    assert p[("diff_goes_notrace", "p")].new == "NOTRACE EINVAL"
    assert p[("diff_nokprobe_later", "p")].new == "BLACKLIST_NOKPROBE EINVAL"
    assert p[("diff_goes_notrace", "p")].old == "ok (ftrace)"
    assert d.signatures == [("diff_sig", "int diff_sig(int x)", "long int diff_sig(long int x, int y)")]
    assert c["signature_changes"] == 1 and d.btf_note == "BTF prototypes compared"


def test_diff_reverse_is_symmetric():
    d = _diff(NEW, OLD)
    assert d.vanished == ["diff_appear", "diff_appear_too", "diff_becomes_clone.constprop.0"]
    assert d.appeared == ["diff_becomes_clone", "diff_vanish"]
    assert d.counts()["became_probeable"] == 2


def test_same_code_new_rules():
    """6.1 -> 6.12 rules on the same code: nothing appears, the duplicate-name errno changes."""
    d = _diff(X86 / "vmlinux", X86 / "vmlinux-6.12")
    assert d.appeared == [] and d.vanished == [] and d.renamed == []
    changed = {(c.name, c.kind): c for c in d.probeability}
    assert changed[("dup_static", "p")].old == "NON_UNIQUE_SYMBOL EADDRNOTAVAIL"
    assert changed[("dup_static", "p")].new == "NON_UNIQUE_SYMBOL EINVAL"
    assert d.signatures is None and "no .BTF in the old and new image" in d.btf_note


def test_cli_diff(capsys):
    assert main(["diff", str(OLD), str(NEW), "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["counts"]["appeared"] == 2 and j["counts"]["vanished"] == 1
    assert j["counts"]["renamed_into_clones"] == 1 and j["counts"]["signature_changes"] == 1
    assert j["signatures"] == [{"name": "diff_sig", "old": "int diff_sig(int x)",
                                "new": "long int diff_sig(long int x, int y)"}]
    assert main(["diff", str(OLD), str(NEW)]) == 0
    out = capsys.readouterr().out
    assert "renamed into clones: diff_becomes_clone->diff_becomes_clone.constprop.0" in out
    assert "signature diff_sig: int diff_sig(int x) -> long int diff_sig(long int x, int y)" in out
    assert main(["diff", str(OLD)]) == 2
