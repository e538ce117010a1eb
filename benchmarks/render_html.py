#!/usr/bin/env python3
"""Render the HTML report to a PNG with headless Chromium (to look at the charts).

    python3 benchmarks/render_html.py [VMLINUX ...] [--out report.png] [--html report.html]

Without VMLINUX arguments it uses the cached Debian kernels (~/.cache/kpatch-kernels/*/vmlinux)
that are already analysed in the results cache, else the committed test images.  Chromium runs
with networking features off and a throw-away profile; the page itself fetches nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _default_images() -> list[str]:
    from kpatch_core import cache
    found = []
    for arch in ("x86_64", "arm64", "riscv64", "s390x", "ppc64le"):
        p = Path.home() / ".cache" / "kpatch-kernels" / arch / "vmlinux"
        if p.exists() and cache.lookup_alias(cache.path_key(str(p))):
            found.append(str(p))
    if not found:
        found = [str(ROOT / "testdata" / "x86_64" / "vmlinux"), str(ROOT / "testdata" / "arm64" / "vmlinux-6.1")]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("vmlinux", nargs="*")
    ap.add_argument("--out", default="report.png")
    ap.add_argument("--html", default=None, help="keep the HTML here (default: a temp file)")
    ap.add_argument("--window-size", default="1400,2400")
    args = ap.parse_args()
    from kpatch_core.html import render
    from kpatch_core.image import Image
    from kpatch_core import cache
    images = args.vmlinux or _default_images()
    analyses = [cache.cached_analysis(Image.open(p), pathkey=cache.path_key(p)) for p in images]
    html_path = args.html or tempfile.mktemp(suffix=".html", prefix="kpatch-report-")
    Path(html_path).write_text(render(analyses), encoding="utf-8")
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        print("chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 1
    profile = tempfile.mkdtemp(prefix="kpatch-chromium-")
    try:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={os.path.abspath(args.out)}",
               f"--window-size={args.window_size}", "file://" + os.path.abspath(html_path)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if p.returncode != 0 or not os.path.exists(args.out):
        print(f"chromium failed: {p.stderr.strip()[-300:]}", file=sys.stderr)
        return 1
    print(f"{html_path} -> {args.out} ({os.path.getsize(html_path)} bytes of HTML, "
          f"{len(analyses)} image(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
