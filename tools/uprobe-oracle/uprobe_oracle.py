#!/usr/bin/env python3
"""uprobe-oracle: boot a real Debian kernel under QEMU and ask it for uprobe verdicts.

    python3 tools/uprobe-oracle/uprobe_oracle.py --arch x86_64 \
        --kernel-dir ~/.cache/kpatch-kernels/x86_64 --sample 2000 --seed 1 --out results.jsonl

The guest (guest_uprobe.sh as /init) runs a copy of the guest's static busybox as the target
(``--target`` names another static busybox-like file whose first argument is an applet), so a
process maps it; for each sampled file offset it writes ``p:uo/pN /tmp/t:OFF`` to
uprobe_events (``__uprobe_register`` checks) and enables the event (``prepare_uprobe``:
``is_trap_insn``, ``arch_uprobe_analyze_insn``), and reports the errno of each write.
Offsets: ``--offsets FILE`` (one hex offset per line) or ``--sample N``: half instruction
boundaries of the target's functions (symbols or .eh_frame), half arbitrary bytes of its
executable segments.  The QEMU/initramfs machinery is the project's kernel-oracle
(tools/kernel-oracle/oracle.py), imported, not copied.  Output: one JSON object per offset:
``{"index", "offset", "ok", "stage": "REG"|"EN"|null, "errno", "text"}``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "kernel-oracle"))
import oracle as ko  # noqa: E402  (tools/kernel-oracle/oracle.py)

ENOTSUPP_TEXT = "Unknown error 524"


def sample_offsets(target: str, n: int, seed: int) -> list[int]:
    """Deterministic sample: n/2 instruction boundaries, n/2 arbitrary executable bytes."""
    from kpatch_core.uprobe.elf import UserElf
    from kpatch_core.uprobe.probe import instruction_starts
    elf = UserElf.open(target, debug_roots=[])
    rng = random.Random(seed)
    starts: list[int] = []
    funcs = list(elf.functions)
    rng.shuffle(funcs)
    for f in funcs[: max(1, n)]:
        for va in instruction_starts(elf, f)[0]:
            off = elf.vaddr_to_offset(va)
            if off is not None:
                starts.append(off)
        if len(starts) > 20 * n:
            break
    picked = set(rng.sample(starts, min(n // 2, len(starts))))
    ranges = [(s.offset, s.offset + s.filesz) for s in elf.segments if s.executable]
    while len(picked) < n:
        lo, hi = rng.choice(ranges)
        picked.add(rng.randrange(lo, hi))
    return sorted(picked)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True)
    ap.add_argument("--kernel-dir", required=True)
    ap.add_argument("--target", help="file to probe (default: the guest's static busybox)")
    ap.add_argument("--libc-root", help="an extracted libc6:<debarch> package: probe its "
                    "libc.so.6, mapped by its loader running a tiny program built with "
                    "<triple>-gcc")
    ap.add_argument("--offsets")
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--mem", default="1024")
    ap.add_argument("--smp", default="1")
    ap.add_argument("--cpu", default=None)
    a = ap.parse_args(argv)
    a.qemu_extra = []
    arch = ko.ALIASES.get(a.arch, a.arch)
    cfg = ko.ARCHES[arch]
    cache = os.path.join(ko.DEFAULT_CACHE, "uprobe", arch)
    os.makedirs(cache, exist_ok=True)
    busybox = ko.find_busybox(arch, cfg, os.path.join(ko.DEFAULT_CACHE, "bb"), None)
    libs: dict[str, bytes] = {}
    conf_extra = ""
    if a.libc_root:
        import glob
        import subprocess
        libc = glob.glob(os.path.join(a.libc_root, "lib", cfg["triple"], "libc.so.6")) + \
            glob.glob(os.path.join(a.libc_root, "usr", "lib", cfg["triple"], "libc.so.6"))
        loader = [p for p in glob.glob(os.path.join(a.libc_root, "**", "ld*.so*"), recursive=True)
                  if os.path.isfile(p) and not os.path.islink(p) and cfg["triple"] in p]
        if not libc or not loader:
            sys.exit(f"{a.libc_root}: no lib/{cfg['triple']}/libc.so.6 or loader")
        src = os.path.join(cache, "sleeper.c")
        with open(src, "w") as f:
            f.write("#include <unistd.h>\nint main(void) { for (;;) pause(); }\n")
        prog = os.path.join(cache, "sleeper")
        subprocess.run([f"{cfg['triple']}-gcc", "-O2", "-o", prog, src], check=True)
        libs = {"libc.so.6": open(libc[0], "rb").read(), os.path.basename(loader[0]):
                open(loader[0], "rb").read(), "sleeper": open(prog, "rb").read()}
        conf_extra = f"LIBNAME=libc.so.6\nLOADER={os.path.basename(loader[0])}\n"
        a.target = libc[0]
    target = a.target or busybox
    image = ko.find_kernel_image(arch, cfg, a.kernel_dir, cache, None)
    if a.offsets:
        offsets = [int(x.split("#")[0], 16) for x in open(a.offsets) if x.split("#")[0].strip()]
    else:
        offsets = sample_offsets(target, a.sample, a.seed)
    nonce = secrets.token_hex(4)
    c = ko.Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "oracle", "usr", "usr/bin"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", open(busybox, "rb").read(), 0o755)
    for link in ko.BUSYBOX_LINKS + ["cp", "chmod", "kill"]:
        c.symlink("bin/" + link, "busybox")
    c.file("init", open(os.path.join(HERE, "guest_uprobe.sh"), "rb").read(), 0o755)
    c.file("oracle/conf", f"NONCE={nonce}\n{conf_extra}".encode())
    if libs:
        c.dir("oracle/lib")
        for name, data in libs.items():
            c.file(f"oracle/lib/{name}", data, 0o755)
    c.file("oracle/target", open(target, "rb").read(), 0o755)
    c.file("oracle/offsets", "".join(f"{i} {o:#x}\n" for i, o in enumerate(offsets)).encode())
    initrd = os.path.join(cache, f"run-{nonce}.cpio")
    with open(initrd, "wb") as f:
        f.write(c.finish())
    cmdline = f"console={cfg['console']} nokaslr panic=-1 quiet"
    cmd, kvm = ko.qemu_cmd(arch, cfg, a, image, initrd, cmdline)
    log_path = os.path.join(cache, f"console-{nonce}.log")
    ko.log(f"booting {arch} ({'kvm' if kvm else 'tcg'}), {len(offsets)} offsets, log {log_path}")
    t0 = time.time()
    res = ko.run_boot(cmd, f"@@UO{nonce}", log_path, a.timeout, 6 * 3600)
    got: dict[int, dict] = {}
    meta: dict[str, object] = {}
    for line in res.lines:
        kw, _, rest = line.partition(" ")
        if kw == "U":
            parts = rest.split(" ", 3)
            idx, ok = int(parts[0]), parts[1] == "1"
            stage = parts[2] if not ok else None
            text = parts[3] if len(parts) > 3 else ""
            name = "ENOTSUPP" if text.endswith(ENOTSUPP_TEXT) else ko.errno_from_text(text)[0]
            got[idx] = {"index": idx, "offset": hex(offsets[idx]), "ok": ok, "stage": stage,
                        "errno": name, "text": text}
        elif kw in ("UNAME", "SIZE", "FATAL"):
            meta[kw] = rest
        elif kw == "MAP":
            meta.setdefault("maps", []).append(rest)  # type: ignore[attr-defined]
    with open(a.out, "w") as f:
        f.write(json.dumps({"meta": {**meta, "arch": arch, "target": target,
                                     "kernel_dir": a.kernel_dir, "ended": res.ended,
                                     "seconds": round(time.time() - t0, 1)}}) + "\n")
        for i in sorted(got):
            f.write(json.dumps(got[i]) + "\n")
    ko.log(f"{len(got)}/{len(offsets)} answers, ended={res.ended} ({res.reason or 'ok'})")
    if "FATAL" in meta:
        ko.log(f"guest: {meta['FATAL']}")
        return 1
    return 0 if res.ended and len(got) == len(offsets) else 1


if __name__ == "__main__":
    sys.exit(main())
