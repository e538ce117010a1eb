"""Hazard notes (kpatch_core/hazard.py, arch/<arch>/hazards.py): every probe a real kernel
accepted and then died of when it was armed (``crash`` in tests/data/oracle/<NAME>) gets a note
from ``check``, text and JSON; ordinary probes get none.  Real-kernel tests skip per image when
it is not cached (tests/data/oracle/fetch.sh NAME)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from conftest import ORACLE_DATA, real_vmlinux
from kpatch_core.cli import main
from kpatch_core.hazard import hazard
from kpatch_core.image import Image

ROOT = Path(__file__).resolve().parents[1]
# answer sets with at least one crash (probe accepted, kernel died when it was armed)
# (module answer sets, with insmod.txt, are tests/test_module_oracle.py's)
CRASHED = sorted(p.parent.name for p in ORACLE_DATA.glob("*/results.jsonl.gz")
                 if not (p.parent / "insmod.txt").exists()
                 and any(json.loads(line).get("crash") for line in gzip.open(p, "rt")))


def _rows(name: str) -> list[dict]:
    with gzip.open(ORACLE_DATA / name / "results.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_the_crashes_are_known() -> None:
    """The answer sets with crashes: 6.1 s390x (2), 6.1 ppc64le (1), 7.2 s390x (3), 7.2
    powerpc64le-64k (1)."""
    assert {"s390x", "ppc64le", "7.2.13+deb14-s390x", "7.2.13+deb14-powerpc64le-64k"} <= set(CRASHED)


@pytest.mark.realkernel
@pytest.mark.parametrize("name", CRASHED)
def test_every_crash_gets_a_site_note(name: str) -> None:
    """Each probe the kernel died of is a site of its arch table: 'killed the kernel'."""
    image = Image.open(str(real_vmlinux(name)))
    crashes = [r for r in _rows(name) if r.get("crash")]
    notes = {r["target"]: hazard(image, int(r["address"], 16)) for r in crashes}
    assert crashes and all(n and "killed the kernel" in n for n in notes.values()), notes


@pytest.mark.realkernel
@pytest.mark.parametrize("name", CRASHED)
def test_armed_without_a_pattern_never_crashed(name: str) -> None:
    """The pattern is the crash's class: every crash matches it, and a probe outside the
    pattern never crashed (a pattern probe the kernel armed may simply not have been hit)."""
    image = Image.open(str(real_vmlinux(name)))
    for r in _rows(name):
        if not r.get("ok") or not r.get("address"):
            continue
        note = hazard(image, int(r["address"], 16))
        assert bool(r.get("crash")) <= (note is not None), r["target"]


def test_ppc64le_larx_without_stcx_is_no_hazard() -> None:
    """testdata ppc64le: a lone lwarx (no stcx. after it) opens no reservation loop; the
    function's other instructions are ordinary."""
    image = Image.open(str(ROOT / "testdata" / "ppc64le" / "vmlinux"))
    start = image.kallsyms.lookup("ppc_toc_func")
    assert start is not None
    assert all(hazard(image, start + off) is None for off in range(0, 40, 4))


@pytest.mark.realkernel
def test_ppc64le_reservation_window(capsys) -> None:
    """Debian 6.1 ppc64le mutex_unlock: ldarx at +28 ... stdcx. at +40; +36 killed the kernel
    (soft lockup), +28..+40 lie in the loop, +24 and +44 do not."""
    path = real_vmlinux("ppc64le")
    image = Image.open(str(path))
    base = image.kallsyms.lookup("mutex_unlock")
    assert base is not None
    notes = {off: hazard(image, base + off) for off in range(16, 52, 4)}
    assert {off for off, n in notes.items() if n} == {28, 32, 36, 40}
    assert "killed the kernel" in (notes[36] or "") and "larx/stcx." in (notes[32] or "")
    main(["check", "--json", str(path), "mutex_unlock+36", "mutex_unlock+44", "vfs_read"])
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [g["ok"] for g in got] == [True, True, True]
    assert "killed the kernel" in got[0]["hazard"] and "hazard" not in got[1]
    assert "hazard" not in got[2]
    main(["check", str(path), "mutex_unlock+36", "vfs_read"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("    hazard: armed and hit, this probe killed")


@pytest.mark.realkernel
def test_s390x_branch_to_register() -> None:
    """Debian 6.1 s390x: release_thread+6 (`br %r14`) is a site; the `brcl` at +0 is not."""
    image = Image.open(str(real_vmlinux("s390x")))
    base = image.kallsyms.lookup("release_thread")
    assert base is not None
    assert "killed the kernel" in (hazard(image, base + 6) or "")
    assert hazard(image, base) is None


def test_arch_without_table_has_no_hazard() -> None:
    """x86_64 has no hazards table: no note, no error."""
    image = Image.open(str(ROOT / "testdata" / "x86_64" / "vmlinux"))
    start = image.kallsyms.lookup("plain_func")
    assert start is not None and hazard(image, start) is None
