"""Debian kernel builds by name, downloaded on demand (``--debian 6.12.117+deb13-amd64``).

The download is ``tools/fetch-debian-kernel.sh`` (``$KPATCH_FETCH_SCRIPT`` overrides where it
is): ``$KPATCH_KERNELS/KVER-FLAVOUR/vmlinux`` (default ``~/.cache/kpatch-kernels``), reused when
present.  Each fetched image is also linked as ``$KPATCH_KERNELS/by-build-id/<build-id>``.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ..errors import InputError


def kernels_dir() -> str:
    """``$KPATCH_KERNELS`` or ``~/.cache/kpatch-kernels``."""
    return os.environ.get("KPATCH_KERNELS") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "kpatch-kernels")


def fetch_script() -> str:
    """The fetch script: ``$KPATCH_FETCH_SCRIPT`` or the project's tools/fetch-debian-kernel.sh."""
    env = os.environ.get("KPATCH_FETCH_SCRIPT")
    if env:
        return env
    return str(Path(__file__).resolve().parents[2] / "tools" / "fetch-debian-kernel.sh")


def fetch_timeout() -> float:
    """Seconds a download may take before its column fails: ``$KPATCH_FETCH_TIMEOUT`` or 7200
    (a 1 GB -dbg package unpacked on a loaded machine takes 10-20 minutes)."""
    try:
        return float(os.environ.get("KPATCH_FETCH_TIMEOUT") or 7200)
    except ValueError:
        raise InputError(f"KPATCH_FETCH_TIMEOUT={os.environ['KPATCH_FETCH_TIMEOUT']!r}: "
                         "expected seconds, e.g. 3600") from None


def cached_vmlinux(name: str) -> str | None:
    """The vmlinux of a Debian build already in the kernels directory, or None."""
    p = os.path.join(kernels_dir(), name, "vmlinux")
    return p if os.path.isfile(p) and os.path.getsize(p) > 0 else None


def fetch_debian(name: str, debarch: str) -> str:
    """The vmlinux of Debian build ``name`` (KVER-FLAVOUR) for ``debarch``, downloaded when not
    cached; raises InputError with the script's last message when the download fails."""
    got = cached_vmlinux(name)
    if got:
        return got
    script = fetch_script()
    if not os.path.isfile(script):
        raise InputError(f"--debian {name}: fetch script {script} not found; set "
                         "KPATCH_FETCH_SCRIPT to tools/fetch-debian-kernel.sh of kpatch-core")
    dest = os.path.join(kernels_dir(), name)
    limit = fetch_timeout()
    # its own process group: a timeout ends apt-get and dpkg-deb too, not only the script
    p = subprocess.Popen(["bash", script, name, debarch, dest], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise InputError(f"--debian {name}: download did not finish in {limit:g} s; try again "
                         "or raise KPATCH_FETCH_TIMEOUT") from None
    got = cached_vmlinux(name)
    if p.returncode != 0 or not got:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"--debian {name}: download failed ({last}); check the name "
                         "(apt-cache policy linux-image-NAME-dbg)")
    return got


def link_build_id(path: str, build_id: str) -> None:
    """``$KPATCH_KERNELS/by-build-id/<build-id>`` -> the image's directory (best effort)."""
    d = os.path.join(kernels_dir(), "by-build-id")
    link = os.path.join(d, build_id)
    try:
        os.makedirs(d, exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(os.path.dirname(os.path.abspath(path)), link)
    except OSError:
        pass  # a read-only cache loses the link, not the result
