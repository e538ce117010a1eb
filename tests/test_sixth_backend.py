"""A sixth backend, defined in this file, registers through the ``kpatch_core.backends``
entry-point group -- a ``*.dist-info`` with ``entry_points.txt`` on ``sys.path``, which is what
installing a plug-in package leaves -- and passes the backend-table tests and the classifier
test (full analysis == per-address ``check``), with no edit to kpatch_core/.

The backend is Intel's K1OM (Xeon Phi: an x86-64 instruction set under ELF machine
``EM_K10M``), so it can reuse the x86_64 rules; it uses the core's generic bulk path (the weak
defaults of :class:`kpatch_arch.base.BulkClassifier`), not x86's classifier.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

import test_backend_tables as tables_tests
from kpatch_arch.base import BulkClassifier
from kpatch_arch.x86_64 import X86_64Backend
from kpatch_core import analyze as A
from kpatch_core import registry
from kpatch_core.image import Image
from kpatch_core.probe import check
from kpatch_core.target import Target

ROOT = Path(__file__).resolve().parent.parent
X86 = ROOT / "testdata" / "x86_64" / "vmlinux"
EM_K10M = 181  # e_machine of a K1OM ELF


class K1omBackend(X86_64Backend):
    """x86_64's rules under ELF machine EM_K10M, with the generic (default) bulk classifier."""

    name = "k1om"
    elf_machine = "EM_K10M"

    def bulk_classifier(self, image: Image) -> BulkClassifier:
        return BulkClassifier(self, image)


@pytest.fixture()
def registered(tmp_path, monkeypatch):
    """K1omBackend registered as an installed plug-in would be; the registry forgets it after."""
    dist = tmp_path / "site" / "kpatch_k1om-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kpatch-k1om\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{registry.GROUP}]\nk1om = {K1omBackend.__module__}:K1omBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    registry.backends.cache_clear()
    yield next(b for b in registry.backends() if b.name == "k1om")
    monkeypatch.undo()
    registry.backends.cache_clear()


@pytest.fixture()
def k1om_image(tmp_path, registered) -> Image:
    """The x86_64 test image with its ELF machine rewritten to EM_K10M."""
    raw = bytearray(X86.read_bytes())
    raw[18:20] = EM_K10M.to_bytes(2, "little")  # e_machine
    path = tmp_path / "vmlinux-k1om"
    path.write_bytes(bytes(raw))
    return Image.open(str(path))


def test_registered_through_the_entry_point_group(registered) -> None:
    assert type(registered).__name__ == "K1omBackend" and registered.name == "k1om"
    names = [b.name for b in registry.backends()]
    assert len(names) >= 6 and "x86_64" in names and "k1om" in names
    assert registry.backend_for("EM_K10M", True) is registered
    assert registry.backend_named("k1om") is registered
    assert "K1omBackend" not in sys.modules["kpatch_core.registry"].__dict__  # nothing in the core


def test_backend_table_tests_pass(registered) -> None:
    """The checks of tests/test_backend_tables.py, run on the sixth backend."""
    tables_tests.test_breakpoint_decodes_as_the_trap(registered)
    tables_tests.test_pt_regs_layout(registered)
    tables_tests.test_register_names_resolve(registered)
    tables_tests.test_calling_convention_registers_exist(registered)
    keys = [(b.elf_machine, b.little_endian) for b in registry.backends()]
    assert len(keys) == len(set(keys))


def test_image_opens_with_the_sixth_backend(k1om_image: Image, registered) -> None:
    assert k1om_image.backend is registered
    v = check(k1om_image, "insn_boost")
    assert v.ok, v


def test_classifier_equals_check_on_every_instruction(k1om_image: Image) -> None:
    """The classifier test: every instruction of the full analysis (generic bulk path) says what
    the per-address pipeline says, and the same as the x86_64 backend says on the same bytes."""
    a = A.analyze(k1om_image, jobs=1)
    assert len(a.codes) > 100 and int(a.counts.sum()) == len(a.codes)
    func_of = np.repeat(np.arange(len(a.syms)), a.counts)
    addrs = a.syms.addrs[func_of] + a.offs.astype(np.uint64)
    for addr, code in zip(addrs.tolist(), a.codes.tolist()):
        v = check(k1om_image, Target(hex(addr), "p", address=addr))
        o = A.decode_code(code)
        assert (o.ok, o.method if o.ok else None, o.reason, o.errno) == \
            (v.ok, v.method if v.ok else None, v.reason, v.errno if not v.ok else None), hex(addr)
    # x86's own classifier on the same bytes: where both paths reach an address they agree
    # (the generic walk steps on where capstone stops; x86's stops where the kernel's decoder does)
    x86 = A.analyze(Image.open(str(X86)), jobs=1)
    x_addrs = x86.syms.addrs[np.repeat(np.arange(len(x86.syms)), x86.counts)] + \
        x86.offs.astype(np.uint64)
    ours = dict(zip(addrs.tolist(), a.codes.tolist()))
    theirs = dict(zip(x_addrs.tolist(), x86.codes.tolist()))
    common = ours.keys() & theirs.keys()
    assert len(common) >= 0.9 * len(theirs)
    assert all(ours[k] == theirs[k] for k in common)
