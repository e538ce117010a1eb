"""Shared fixtures: the committed x86_64 test images and helpers to look inside them.

The images are built by testdata/x86_64/build.sh from the sources next to them; tests run from
those committed files only.  Tests that need a real Debian vmlinux carry ``@pytest.mark.realkernel``
and skip when ``~/.cache/kpatch-kernels/<arch>/vmlinux`` is absent.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pytest

from kpatch_core.config import KernelConfig
from kpatch_core.image import Image

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
X86_VMLINUX = TESTDATA / "x86_64" / "vmlinux"
X86_VMLINUX_612 = TESTDATA / "x86_64" / "vmlinux-6.12"
KERNEL_CACHE = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))
# real kernels' answers (kernel-oracle), committed: tests/data/oracle/<NAME>/, NAME as in KERNEL_CACHE
ORACLE_DATA = Path(__file__).resolve().parent / "data" / "oracle"


def pytest_configure(config: pytest.Config) -> None:
    # hermetic: results cached by build-id in the user's cache would answer for the doctored
    # images some tests build from the committed ones (same build-id)
    os.environ["KPATCH_CACHE"] = tempfile.mkdtemp(prefix="kpatch-test-cache-")
    config.addinivalue_line(
        "markers", "realkernel: needs a cached real vmlinux (~/.cache/kpatch-kernels); skipped when absent")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("KPATCH_CACHE", ""), ignore_errors=True)


def open_image(path: Path, **facts: bool) -> Image:
    """A fresh Image of ``path`` with configuration facts overridden (like ``--set FACT=y``)."""
    image = Image.open(str(path))
    if facts:
        image.__dict__["config"] = KernelConfig.for_image(image, None, facts)
    return image


@pytest.fixture(scope="session")
def x86() -> Image:
    """The 6.1 test image (shared; never mutate it: use ``x86_with`` for other facts)."""
    return Image.open(str(X86_VMLINUX))


@pytest.fixture(scope="session")
def x86_612() -> Image:
    """The same code with a 6.12 banner: 6.12 rules."""
    return Image.open(str(X86_VMLINUX_612))


@pytest.fixture
def x86_with() -> Callable[..., Image]:
    """``x86_with(PREEMPTION=False, path=X86_VMLINUX_612)``: a fresh image with facts set."""
    def make(path: Path = X86_VMLINUX, **facts: bool) -> Image:
        return open_image(path, **facts)
    return make


@pytest.fixture(scope="session")
def label() -> Callable[[Image, str], int]:
    """Address of a symbol kallsyms does not show (the ``.L`` labels of insns.S) or any symbol."""
    def find(image: Image, name: str) -> int:
        addr = image.symtab.value(name)
        assert addr is not None, f"{name} missing from the test image: rebuild with build.sh"
        return addr
    return find


def real_vmlinux(arch: str) -> Path:
    """The cached real vmlinux of ``arch``, or skip the test."""
    p = KERNEL_CACHE / arch / "vmlinux"
    if not p.is_file():
        # CI fetches these and must compare against them: missing is a failure there, not a skip
        assert arch not in os.environ.get("KPATCH_REQUIRE_KERNELS", "").split(","), \
            f"required real kernel {arch} missing at {p}"
        pytest.skip(f"no cached real kernel at {p} (fetch it: tests/data/oracle/fetch.sh {arch})")
    return p


def oracle_results(name: str) -> Path:
    """The committed oracle answers of kernel ``name`` (results.jsonl.gz); a missing file fails."""
    p = ORACLE_DATA / name / "results.jsonl.gz"
    assert p.is_file(), f"oracle answers for {name} missing from the checkout: {p}"
    return p


def versioned_image_fixtures(arch: str):
    """Module-scoped fixtures (img: both rule sets, img61, img612) over testdata/<arch>/vmlinux-6.1/-6.12."""
    data = Path(__file__).resolve().parent.parent / "testdata" / arch

    @pytest.fixture(scope="module", params=["6.1", "6.12"])
    def img(request: pytest.FixtureRequest) -> Image:
        return Image.open(str(data / f"vmlinux-{request.param}"))

    @pytest.fixture(scope="module")
    def img61() -> Image:
        return Image.open(str(data / "vmlinux-6.1"))

    @pytest.fixture(scope="module")
    def img612() -> Image:
        return Image.open(str(data / "vmlinux-6.12"))

    return img, img61, img612
