"""The real Debian kernels' own answers (kernel-oracle under QEMU) against ``check`` on the
same cached vmlinux: verdict and errno for every probe, and for accepted ones the resolved
address and the [FTRACE]/[OPTIMIZED] flags the kernel printed after arming each job's probes
together (``check_many``, in the oracle's order); the kernel's kprobe blacklist; and, where taken,
the kprobe_events lines (``syntax.jsonl.gz``: the 58 kprobe_syntax_errors.tc vectors) with errno,
error_log message and caret.  All answers are committed in tests/data/oracle/<NAME> (6.1 copied
from ../shared/data/oracle, the others taken by this project; every directory there is replayed;
figures and commands: tests/data/oracle/README.md).
Skipped per image when its vmlinux is not cached (never committed: tests/data/oracle/fetch.sh NAME).
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from conftest import ORACLE_DATA, real_vmlinux
from kpatch_core.image import Image
from kpatch_core.testing import image_on_guest_cpu, oracle_verdicts, replay_event_answers

ORACLE = Path(os.environ.get("KPATCH_ORACLE_DIR", ORACLE_DATA))
OWN = ORACLE_DATA  # answers committed with the project (tests/data/oracle/<NAME>/)
# the 6.1 kernels (answers in ../shared/data/oracle unless copied here), then every answer set
# committed in tests/data/oracle/<NAME> (NAME = the kernel's cache directory); sets taken with
# modules loaded (insmod.txt) are replayed by tests/test_module_oracle.py
_SETS = sorted(p.parent.name for p in OWN.glob("*/results.jsonl.gz")
               if not (p.parent / "insmod.txt").exists())
# answers the same kernel gave on another guest CPU: NAME/cpu-MODEL/ (replayed with its CPU facts)
_CPU_SETS = sorted(str(p.parent.relative_to(OWN)) for p in OWN.glob("*/cpu-*/results.jsonl.gz"))
KERNELS = ["x86_64", "arm64", "riscv64", "s390x", "ppc64le"] + [
    n for n in _SETS if n not in ("x86_64", "arm64", "riscv64", "s390x", "ppc64le")] + _CPU_SETS
SYNTAX = [n for n in _SETS if (OWN / n / "syntax.jsonl.gz").is_file()]
BLACKLISTS = [n for n in _SETS if (OWN / n / "blacklist.txt.gz").is_file()]


def _gz_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


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


def test_guest_cpu_facts_follow_the_boot_cpu() -> None:
    """5.10 answers taken on QEMU's TCG `-cpu max` (AuthenticAMD family 15: k8_nops; no
    retbleed) replay with X86_K8_NOPS on; EPYC (family 0x17: p6_nops; retbleed's untrained
    return thunk) with RUNTIME_RETHUNK on instead."""
    from kpatch_arch.x86_64 import X86_64Backend
    b = X86_64Backend()
    tcg = {"vendor_id": "AuthenticAMD", "cpu family": "15", "model": "107"}
    assert b.cpu_facts(tcg, {"retbleed": "Not affected"}) == \
        {"X86_K8_NOPS": True, "RUNTIME_RETHUNK": False}
    epyc = {"vendor_id": "AuthenticAMD", "cpu family": "23", "model": "1"}
    assert b.cpu_facts(epyc, {"retbleed": "Mitigation: untrained return thunk; SMT disabled"}) \
        == {"X86_K8_NOPS": False, "RUNTIME_RETHUNK": True}
    assert b.cpu_facts(epyc, {}) == {"X86_K8_NOPS": False, "RUNTIME_RETHUNK": False}
    assert b.cpu_facts({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "23"},
                       {})["X86_K8_NOPS"]  # Penryn: the k8_nops decoder quirk
    assert not b.cpu_facts({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "85"},
                           {})["X86_K8_NOPS"]


@pytest.mark.realkernel
@pytest.mark.parametrize("name", KERNELS)
def test_real_kernel_agrees_with_oracle(name: str) -> None:
    rows, meta = _answers(name)
    image = image_on_guest_cpu(str(real_vmlinux(name.split('/')[0])), meta)
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


@pytest.mark.realkernel
@pytest.mark.parametrize("name", BLACKLISTS)
def test_real_kernel_blacklist(name: str) -> None:
    """/sys/kernel/debug/kprobes/blacklist of the booted kernel == ``Tables.blacklist``
    (start-end ranges, duplicates counted; as benchmarks/blacklist_compare.py)."""
    import collections
    image = Image.open(str(real_vmlinux(name)))
    kernel: collections.Counter[tuple[int, int]] = collections.Counter()
    for line in _gz_lines(OWN / name / "blacklist.txt.gz"):
        a, b = line.partition("\t")[0].split("-")
        kernel[(int(a, 16), int(b, 16))] += 1
    ours = collections.Counter((e.start, e.end) for e in image.tables.blacklist)
    assert ours == kernel, (sorted((kernel - ours).items())[:5], sorted((ours - kernel).items())[:5])


@pytest.mark.realkernel
@pytest.mark.parametrize("name", SYNTAX)
def test_real_kernel_event_lines(name: str) -> None:
    """kprobe_events lines as the kernel answered them (oracle ``--events``), replayed through
    EventSet in the oracle's protocol: ok, errno, error_log message and caret per line."""
    from kpatch_core.events import EventSet, ImageEnv
    image = Image.open(str(real_vmlinux(name)))
    events = EventSet(ImageEnv(image))
    rows = [json.loads(line) for line in _gz_lines(OWN / name / "syntax.jsonl.gz")]
    _, wrong = replay_event_answers(events, rows)
    assert sum(r.get("op") == "event" for r in rows) >= 58 and not wrong, wrong[:10]


def test_verified_versions_have_answers() -> None:
    """features.VERIFIED_ALSO (versions outside 6.1..6.12 whose rules are called exact) lists only
    versions with committed answer sets, and each such answer set's kernel is exact."""
    import re

    from kpatch_core.features import VERIFIED_ALSO, FeatureSet
    versions: dict[tuple[int, int], list[str]] = {}
    for n in _SETS:
        meta = json.loads((OWN / n / "results.meta.json").read_text())
        m = re.search(r" (\d+)\.(\d+)\.\d+", meta.get("guest", {}).get("uname", ""))
        if m:
            versions.setdefault((int(m[1]), int(m[2])), []).append(n)
    for v in VERIFIED_ALSO:
        assert versions.get(v), (v, sorted(versions))
        assert FeatureSet.decide(v, "x86_64").exact
    assert not FeatureSet.decide((7, 1), "x86_64").exact  # between the answered versions
