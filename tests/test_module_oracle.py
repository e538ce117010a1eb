"""Module probes asked of a real kernel (tools/kernel-oracle/modules.py: Debian 6.12.117 amd64
and arm64, sid 7.2.13 riscv64, booted under QEMU with 21-22 modules and their dependencies
insmod'ed) replayed against ``check --modules``: (ok, errno) and the flags after arming must
all agree."""
from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from kpatch_core.image import Image
from kpatch_core.module import ModuleSet
from kpatch_core.module.layout import MemType
from kpatch_core.probe import check

ORACLE = Path(__file__).resolve().parent / "data" / "oracle"
KERNELS = Path(os.path.expanduser("~/.cache/kpatch-kernels"))
# answers -> (the build they were asked of, modules whose insmod failed in the guest)
RUNS = {"modules-x86_64-6.12": ("6.12.117+deb13-amd64", {"kvm_intel"}),  # no VMX under TCG
        "modules-arm64-6.12": ("6.12.117+deb13-arm64", set()),
        "modules-riscv64-7.2": ("7.2.13+deb14-riscv64", set())}


class _Loaded:
    """The tree's modules minus those whose insmod failed in the guest (kvm_intel: no VMX)."""

    def __init__(self, ms: ModuleSet, failed: set[str]) -> None:
        self.ms, self.failed = ms, failed

    def view(self, name: str) -> Image | None:
        return None if name in self.failed else self.ms.view(name)

    def view_at(self, addr: int) -> Image | None:
        return None  # the oracle's probes name their module

    def missing(self, name: str) -> str:
        return f"module {name} not loaded in the guest"


@pytest.mark.parametrize("run", sorted(RUNS))
def test_module_oracle_replay(run: str) -> None:
    build, want_failed = RUNS[run]
    DATA, KERNEL = ORACLE / run, KERNELS / build
    if not (KERNEL / "vmlinux").is_file() or not (KERNEL / "modules").is_dir():
        pytest.skip(f"Debian {build} vmlinux + modules not cached in {KERNEL}")
    failed = {m.group(1) for m in re.finditer(r"^KOMOD (\S+) (\d+)$",
                                               (DATA / "insmod.txt").read_text(), re.M)
              if m.group(2) != "0"}
    assert failed == want_failed
    k = Image.open(str(KERNEL / "vmlinux"))
    k.module_source = _Loaded(ModuleSet(k, tree=str(KERNEL / "modules"), warn=False), failed)
    rows = [json.loads(x) for x in gzip.open(DATA / "results.jsonl.gz", "rt")]
    asked = [r for r in rows if r["ok"] is not None]
    assert len(asked) >= 2000 and len({r["target"].split(":")[0] for r in asked}) >= 20
    bad, flags_bad = [], []
    for r in asked:
        if re.search(r"-0x[0-9a-f]+\+", r["target"]):  # objdump's <sym-0x8> label, sampled by
            assert r["ok"] is False and r["error"] == "EINVAL"  # mistake: the kernel's parse error
            continue
        v = check(k, ("r " if r["kind"] == "r" else "") + r["target"])
        if v.ok != r["ok"] or (not v.ok and v.errno != r["error"]):
            bad.append((r["target"], v.ok, v.errno, r["ok"], r["error"]))
        elif v.ok and r["flags"] is not None and sorted(v.flags) != sorted(set(r["flags"]) - {"DISABLED"}):
            flags_bad.append((r["target"], v.flags, r["flags"]))
    assert bad == [] and flags_bad == []


@pytest.mark.parametrize("run", sorted(RUNS))
def test_module_blacklist(run: str) -> None:
    """/sys/kernel/debug/kprobes/blacklist with the modules live: their entries (module,
    symbol, size; addresses differ with placement) are the ones we derive."""
    build, failed = RUNS[run]
    DATA, KERNEL = ORACLE / run, KERNELS / build
    if not (KERNEL / "vmlinux").is_file() or not (KERNEL / "modules").is_dir():
        pytest.skip(f"Debian {build} vmlinux + modules not cached in {KERNEL}")
    theirs = set()
    for line in gzip.open(DATA / "blacklist.txt.gz", "rt"):
        m = re.match(r"0x([0-9a-f]+)-0x([0-9a-f]+)\s+(\S+) \[(\S+)\]", line)
        if m:
            theirs.add((m.group(4), m.group(3), int(m.group(2), 16) - int(m.group(1), 16)))
    ms = ModuleSet(Image.open(str(KERNEL / "vmlinux")), tree=str(KERNEL / "modules"), warn=False)
    ours = set()
    for line in (DATA / "insmod.txt").read_text().splitlines():
        _, name, rc = line.split()
        view = ms.view(name) if rc == "0" else None
        if view is None or not view.loaded.layout.range_of(MemType.TEXT)[1]:
            continue  # not loaded, or data only
        ours |= {(name, b.symbol, b.end - b.start) for b in view.tables.blacklist}
    assert ours == theirs
