#!/usr/bin/env python3
"""Boot a Debian kernel under QEMU with bpf_attach as /init and record its answers.

    python3 tools/bpf-attach-oracle/run.py --arch x86_64 \\
        --kernel-dir ~/.cache/kpatch-kernels/x86_64-6.12 --requests req.txt --out answers.jsonl

REQUESTS: one line per request in bpf_attach's syntax (``fentry NAME``, ``fexit NAME``,
``kmulti A,B``, ``kretmulti A``, ``fprobe NAME``, ``fprobe_return NAME``).  OUT: one JSON
object per request: ``index``, ``request``, ``ok``, ``errno``, ``stage``, ``message``.
Requests the guest did not answer (it died or hung) are left out and counted on stderr.
Stdlib only; needs gcc (aarch64-linux-gnu-gcc for arm64), cpio and qemu-system-<arch>.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ARCHES = {
    "x86_64": ("gcc", ["qemu-system-x86_64", "-machine", "q35", "-cpu", "max"], "ttyS0"),
    "arm64": ("aarch64-linux-gnu-gcc", ["qemu-system-aarch64", "-machine", "virt", "-cpu", "max"],
              "ttyAMA0"),
}


def build_initramfs(arch: str, requests: str, work: str) -> str:
    cc = ARCHES[arch][0]
    root = os.path.join(work, "root")
    for d in ("proc", "sys", "dev"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    subprocess.run([cc, "-O2", "-static", "-o", os.path.join(root, "init"),
                    os.path.join(HERE, "bpf_attach.c")], check=True)
    shutil.copy(requests, os.path.join(root, "probes.txt"))
    out = os.path.join(work, "initramfs.cpio")
    files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    with open(out, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files, stdout=f,
                       check=True)
    return out


def boot(arch: str, kernel_dir: str, initrd: str, timeout: int, accel: str, log: str) -> str:
    kernels = sorted(glob.glob(os.path.join(kernel_dir, "boot", "vmlinuz-*")))
    if not kernels:
        raise SystemExit(f"{kernel_dir}/boot: no vmlinuz-*; give a Debian kernel directory")
    qemu = ARCHES[arch][1] + ["-m", "2048", "-smp", "1", "-nographic", "-no-reboot",
                              "-kernel", kernels[-1], "-initrd", initrd, "-append",
                              f"console={ARCHES[arch][2]} panic=-1 oops=panic nokaslr loglevel=1"]
    if accel == "kvm":
        qemu += ["-accel", "kvm"]
    with open(log, "wb") as f:  # streamed, so a long run can be watched (grep -c @@BA LOG)
        p = subprocess.Popen(qemu, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    with open(log, "rb") as f:
        return f.read().decode("utf-8", "replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHES), required=True)
    ap.add_argument("--kernel-dir", required=True)
    ap.add_argument("--requests", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")
    args = ap.parse_args()
    with open(args.requests) as f:
        reqs = [line.strip() for line in f if line.strip()]
    with tempfile.TemporaryDirectory() as work:
        initrd = build_initramfs(args.arch, args.requests, work)
        for attempt in range(3):  # a starved TCG guest can fail its boot ("IO-APIC + timer
            # doesn't work"): boot again when /init never started
            console = boot(args.arch, args.kernel_dir, initrd, args.timeout, args.accel,
                           args.out + ".console.log")
            if "@@BA-BEGIN" in console:
                break
            print(f"run.py: boot {attempt + 1} never reached /init; booting again", file=sys.stderr)
    got = 0
    with open(args.out, "w") as out:
        for line in console.splitlines():
            if not line.startswith("@@BA "):
                continue
            parts = line.split(" ", 4)
            idx = int(parts[1])
            out.write(json.dumps({"index": idx, "request": reqs[idx] if idx < len(reqs) else None,
                                  "ok": parts[2] == "ok", "errno": None if parts[2] == "ok" else parts[2],
                                  "stage": parts[3], "message": parts[4] if len(parts) > 4 else ""})
                      + "\n")
            got += 1
    if got < len(reqs):
        print(f"run.py: {len(reqs) - got} of {len(reqs)} requests unanswered "
              f"(console log: {args.out}.console.log)", file=sys.stderr)
    return 0 if got else 1


if __name__ == "__main__":
    sys.exit(main())
