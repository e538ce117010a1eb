"""Kernel behaviours as named features (kpatch_core/features.py): the table, the FeatureSet an
image gets, and what the outputs say for a kernel outside the verified versions (a copy of a
test image whose banner claims 5.15 or 7.3)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpatch_core.cli import main
from kpatch_core.features import BY_NAME, FEATURES, VERIFIED, FeatureSet, feature
from kpatch_core.image import Image, KernelVersion
from kpatch_core.registry import backend_named

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
X86_61 = TESTDATA / "x86_64" / "vmlinux"
X86_612 = TESTDATA / "x86_64" / "vmlinux-6.12"
ARCHES = ("x86_64", "arm64", "riscv64", "s390x", "ppc64le")


def test_table_rows_are_complete() -> None:
    assert len(BY_NAME) == len(FEATURES)  # names are unique
    for f in FEATURES:
        assert f.name.isupper() and f.doc and f.source, f
        assert f.since is not None or f.until is not None, f  # a row says where it changed
        if f.since and f.until:
            assert f.since < f.until, f
        assert set(f.arches) <= set(ARCHES), f


def test_unknown_feature_fails_loudly() -> None:
    fs = FeatureSet.decide((6, 12), "x86_64")
    with pytest.raises(KeyError, match="EVENTS_NONUNIQUE_EINVA"):
        fs.has("EVENTS_NONUNIQUE_EINVA")
    with pytest.raises(KeyError):
        feature("NO_SUCH_FEATURE")


@pytest.mark.parametrize("version,label,exact", [
    ((5, 4), "6.1", False), ((5, 10), "6.1", True), ((5, 15), "6.1", False), ((6, 1), "6.1", True),
    ((6, 5), "6.1", True), ((6, 6), "6.12", True), ((6, 12), "6.12", True), ((6, 13), "6.12", False),
    ((7, 1), "6.12", False), ((7, 2), "6.12", True), ((7, 3), "6.12", True), ((7, 4), "6.12", False)])
def test_label_and_exactness(version: tuple[int, int], label: str, exact: bool) -> None:
    fs = FeatureSet.decide(version, "arm64")
    assert (fs.rules, fs.exact) == (label, exact)
    assert KernelVersion(*version).rules == label  # the label outputs print stays the same
    assert (fs.note() == "") == exact
    if not exact:
        assert f"kernel {version[0]}.{version[1]} is " in fs.note()


def test_rows_hold_in_their_versions_and_arches_only() -> None:
    old, new = (FeatureSet.decide(v, "riscv64") for v in VERIFIED)
    assert new.has("RISCV_SYSCALL_WRAPPER") and not old.has("RISCV_SYSCALL_WRAPPER")
    assert old.has("RISCV_KPROBES_ON_FTRACE") and not new.has("RISCV_KPROBES_ON_FTRACE")
    assert not FeatureSet.decide((6, 12), "x86_64").has("RISCV_SYSCALL_WRAPPER")  # other arch
    for arch in ARCHES:
        for v in ((5, 10), (6, 1), (6, 5), (6, 6), (6, 12), (7, 2), (7, 3)):
            want = {f.name for f in FEATURES
                    if (not f.arches or arch in f.arches) and f.in_versions(v)}
            assert FeatureSet.decide(v, arch).names == want, (arch, v)


def test_config_rows_follow_the_evidence() -> None:
    """A configuration option is decided by what the image shows, not by the version."""
    assert not FeatureSet.decide((6, 1), "riscv64", {"KPROBES_ON_FTRACE": False}) \
        .has("RISCV_KPROBES_ON_FTRACE")
    assert FeatureSet.decide((6, 12), "riscv64", {"KPROBES_ON_FTRACE": True}) \
        .has("RISCV_KPROBES_ON_FTRACE")
    assert FeatureSet.decide((6, 12), "arm64", {"DYNAMIC_FTRACE_WITH_CALL_OPS": False}) \
        .names == FeatureSet.decide((6, 12), "arm64").names - {"ARM64_DYNAMIC_FTRACE_WITH_CALL_OPS"}


def test_image_features_from_version_and_config_facts() -> None:
    img = Image.open(str(TESTDATA / "riscv64" / "vmlinux-6.12"))
    fs = img.features
    assert fs is img.features  # decided once
    assert (fs.version, fs.arch, fs.rules, fs.exact) == ((6, 12), "riscv64", "6.12", True)
    fact = img.config.facts["KPROBES_ON_FTRACE"]
    assert fs.has("RISCV_KPROBES_ON_FTRACE") == fact.value
    assert fact.source.startswith("inferred: ")  # evidence, not "inferred: riscv64 6.12"
    assert "6.12" not in fact.source
    b = backend_named("riscv64")
    assert b.kprobes_on_ftrace(fs) == fact.value


def _claim(tmp_path: Path, src: Path, old: bytes, new: bytes) -> Path:
    """A copy of ``src`` whose banner says another version (same length, same code)."""
    assert len(old) == len(new)
    data = src.read_bytes()
    assert data.count(old) == 1, old
    out = tmp_path / f"{src.name}-claims-{new.decode()}"
    out.write_bytes(data.replace(old, new))
    return out


@pytest.fixture()
def x86_74(tmp_path: Path) -> Path:
    return _claim(tmp_path, X86_612, b"Linux version 6.12.0-", b"Linux version 7.4.0--")


@pytest.fixture()
def x86_515(tmp_path: Path) -> Path:
    return _claim(tmp_path, X86_61, b"Linux version 6.1.0-", b"Linux version 5.15.0")


TARGETS = ["plain_func", "r plain_func+1", "dup_static", "notrace_func", "no_such"]


def _check_json(path: Path, capsys) -> list[dict]:
    main(["check", "--json", str(path), *TARGETS])
    cap = capsys.readouterr()
    assert "note:" not in cap.err  # JSON mode: the field says it
    return [json.loads(line) for line in cap.out.splitlines()]


@pytest.mark.parametrize("claimed,verified", [("x86_74", X86_612), ("x86_515", X86_61)])
def test_check_outside_the_verified_versions(request, capsys, claimed: str, verified: Path) -> None:
    """Same code, another version: the same verdicts (the nearest rows apply), each marked
    rules_exact false; text mode prints a one-line note on stderr."""
    path = request.getfixturevalue(claimed)
    assert Image.open(str(path)).features.exact is False
    got, want = _check_json(path, capsys), _check_json(verified, capsys)
    assert [g.pop("rules_exact") for g in got] == [False] * len(TARGETS)
    assert [w.pop("rules_exact") for w in want] == [True] * len(TARGETS)
    assert got == want
    assert list(want[0])[-1] == "rules"  # rules_exact follows rules
    main(["check", str(path), "plain_func"])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "verified" in err[0] and "note:" in err[0], err
    main(["check", str(verified), "plain_func"])
    assert capsys.readouterr().err == ""


def test_event_outside_the_verified_versions(x86_74: Path, capsys) -> None:
    main(["event", "--json", str(x86_74), "p plain_func a=$arg1"])
    cap = capsys.readouterr()
    r = json.loads(cap.out)
    assert r["ok"] and r["rules"] == "6.12" and r["rules_exact"] is False
    assert r["event"]["probe"]["rules_exact"] is False
    assert "note:" not in cap.err
    main(["event", str(x86_74), "p plain_func a=$arg1"])
    err = capsys.readouterr().err.splitlines()
    assert err == ["kpatch-analyze: note: kernel 7.4 is newer than the kernels the rules were "
                   "verified on (5.10, 6.1..6.12, 7.2, 7.3); applying the features table's rows "
                   "for 7.4 (nearest verified: 7.3; 6.12 rules)"]
    main(["event", "--json", str(X86_612), "p plain_func a=$arg1"])
    assert json.loads(capsys.readouterr().out)["rules_exact"] is True


def test_summary_header_says_so(x86_515: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("KPATCH_CACHE", "off")
    assert main([str(x86_515), "--no-progress", "--jobs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    k = next(i for i, ln in enumerate(out) if ln.startswith("kernel "))
    assert "(rules 6.1)" in out[k]
    assert out[k + 1] == ("note: kernel 5.15 is not one of the kernels the rules were verified "
                          "on (5.10, 6.1..6.12, 7.2, 7.3); applying the features table's rows for 5.15 "
                          "(nearest verified: 5.10; 6.1 rules)")
    assert main([str(X86_61), "--no-progress", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "note: kernel" not in out
