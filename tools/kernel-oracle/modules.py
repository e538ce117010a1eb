#!/usr/bin/env python3
"""The kernel oracle with modules loaded: insmod modules (dependencies first, along their
``depends=``) in the guest before the probes, then ask ``MOD:SYM+OFF`` probes as usual.

    # 1. sample MOD:SYM+OFF targets from the modules (objdump boundaries, stdlib + binutils)
    python3 modules.py sample --modules-dir ~/.cache/kpatch-kernels/6.12.117+deb13-amd64/modules \\
        --load ext4,xfs,btrfs,kvm_intel,nf_conntrack,nfsd,e1000e -n 2000 --seed 1 -o probes.txt
    # 2. boot with them loaded and ask (every oracle.py option after --)
    python3 modules.py run --modules-dir DIR --load ext4,xfs,... -- --arch x86_64 \\
        --kernel-dir ~/.cache/kpatch-kernels/6.12.117+deb13-amd64 --probes probes.txt --out results.jsonl \\
        --blacklist-out blacklist.txt
    # 3. compare with kpatch-analyze check --modules DIR (in the project)
    python3 modules.py compare --vmlinux VMLINUX --modules-dir DIR --results results.jsonl

``run`` adds to the initramfs oracle.py builds: ``/oracle/mods/NN-name.ko`` (decompressed, in
load order) and an ``/init`` that insmods them with busybox and then runs the usual agent
(kept as ``/init.agent``); each insmod's result is printed as ``@@KOMOD name rc``.
The blacklist oracle.py dumps is then read with the modules live (their NOKPROBE entries and
``.kprobes.text``/``.noinstr.text`` areas included).
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _read_ko(path: str) -> bytes:
    raw = open(path, "rb").read()
    if path.endswith(".xz"):
        return lzma.decompress(raw)
    if path.endswith(".zst"):
        import zstandard  # not stdlib: only for .ko.zst trees
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


def _modinfo(data: bytes) -> dict[str, str]:
    """name=, depends= and softdep= from the .modinfo strings (a plain scan: NUL-separated)."""
    out: dict[str, str] = {}
    for key in (b"name=", b"depends=", b"softdep="):
        m = re.search(rb"\x00" + key + rb"([^\x00]*)\x00", data)
        if m:
            out[key.decode()[:-1]] = m.group(1).decode()
    return out


def index_tree(tree: str) -> dict[str, str]:
    """module name -> file (name from the file name, '-' as '_')."""
    out = {}
    for root, _, files in os.walk(tree):
        for fn in files:
            for sfx in (".ko", ".ko.xz", ".ko.zst"):
                if fn.endswith(sfx):
                    out.setdefault(fn[: -len(sfx)].replace("-", "_"), os.path.join(root, fn))
    return out


def load_order(tree: str, names: list[str]) -> list[tuple[str, bytes]]:
    """(name, .ko bytes) of ``names`` and their dependencies, dependencies first."""
    idx = index_tree(tree)
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        n = n.replace("-", "_")
        if n in seen:
            return
        seen.add(n)
        if n not in idx:
            raise SystemExit(f"modules.py: no module {n} in {tree}")
        data = _read_ko(idx[n])
        info = _modinfo(data)
        # softdep=pre: NAME... (modprobe loads these first); a crypto algorithm name such as
        # crc32c is provided by NAME_generic
        soft = info.get("softdep", "").split("pre:", 1)[-1].split("post:")[0].split() \
            if "pre:" in info.get("softdep", "") else []
        for d in soft:
            d = d.replace("-", "_").removeprefix("crypto_")
            if d in idx or d + "_generic" in idx:
                visit(d if d in idx else d + "_generic")
        for d in filter(None, info.get("depends", "").split(",")):
            visit(d)
        order.append((n, data))

    for n in names:
        visit(n)
    return order


# -- sample -------------------------------------------------------------------------------
def _functions(ko: str, objdump: str) -> dict[str, list[int]]:
    """function -> instruction offsets in it, from ``objdump -d`` of core text sections."""
    out: dict[str, list[int]] = {}
    cur = None
    section_ok = False
    res = subprocess.run([objdump, "-d", "--no-show-raw-insn", ko], capture_output=True,
                         text=True, check=True)
    for line in res.stdout.splitlines():
        if line.startswith("Disassembly of section "):
            sec = line.split()[-1].rstrip(":")
            section_ok = not sec.startswith(".init")
            cur = None
            continue
        m = re.match(r"^([0-9a-f]+) <([^>+]+)>:$", line)
        if m and re.search(r"-0x[0-9a-f]+$", m.group(2)):  # objdump's <sym-0x8>: not a symbol
            m = None
        if m:
            cur = m.group(2) if section_ok else None
            base = int(m.group(1), 16)
            if cur is not None:
                out.setdefault(cur, [])
                out[cur + "@base"] = [base]
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s", line)
        if m and cur is not None:
            out[cur].append(int(m.group(1), 16) - out[cur + "@base"][0])
    return {k: v for k, v in out.items() if not k.endswith("@base") and v}


def sample(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    names = args.load.split(",")
    per = max(1, args.n // len(names))
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, data in load_order(args.modules_dir, names):
            if n not in [x.replace("-", "_") for x in names]:
                continue
            p = os.path.join(tmp, n + ".ko")
            open(p, "wb").write(data)
            funcs = _functions(p, args.objdump)
            fn = sorted(f for f in funcs if not f.startswith(("__pfx_", "__cfi_", ".", "$")))  # $x: mapping symbols
            for _ in range(per):
                f = rng.choice(fn)
                offs = funcs[f]
                r = rng.random()
                if r < 0.2:
                    lines.append(f"{n}:{f}")
                elif r < 0.3:
                    lines.append(f"r {n}:{f}")
                elif r < 0.85:
                    lines.append(f"{n}:{f}+{rng.choice(offs)}")
                else:
                    end = max(offs) + 1
                    lines.append(f"{n}:{f}+{rng.randrange(0, end)}")
    with open(args.o, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines)} targets over {len(names)} modules -> {args.o}")
    return 0


# -- run ----------------------------------------------------------------------------------
def run(args: argparse.Namespace, rest: list[str]) -> int:
    import oracle
    order = load_order(args.modules_dir, args.load.split(","))
    agent = open(os.path.join(HERE, "guest_init.sh"), "rb").read()
    init = ["#!/bin/sh", "export PATH=/bin:/sbin"]
    for i, (n, _) in enumerate(order):
        init.append(f"/bin/busybox insmod /oracle/mods/{i:03d}-{n}.ko >/dev/null 2>&1; "
                    f"echo \"@@KOMOD {n} $?\"")
    init.append("exec /init.agent")
    original = oracle.build_run_initramfs

    def with_modules(base, conf, probes_text, out_path, events_text=None):  # type: ignore[no-untyped-def]
        original(base, conf, probes_text, out_path, events_text)
        c = oracle.Cpio()
        c.dir("oracle/mods")
        for i, (n, data) in enumerate(order):
            c.file(f"oracle/mods/{i:03d}-{n}.ko", data)
        c.file("init.agent", agent, 0o755)
        c.file("init", ("\n".join(init) + "\n").encode(), 0o755)
        with open(out_path, "ab") as f:
            f.write(c.finish())
        return out_path

    oracle.build_run_initramfs = with_modules
    print(f"modules.py: loading {', '.join(n for n, _ in order)}", file=sys.stderr)
    return oracle.main(rest)


# -- compare ------------------------------------------------------------------------------
def compare(args: argparse.Namespace) -> int:
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    from kpatch_core.image import Image
    from kpatch_core.module import ModuleSet
    from kpatch_core.errors import UsageError
    from kpatch_core.probe import check
    k = Image.open(args.vmlinux)
    ms = ModuleSet(k, tree=args.modules_dir, warn=False)
    failed = set()  # modules whose insmod failed in the guest: not loaded there
    for log in args.console or []:
        for line in open(log, errors="replace"):
            m = re.match(r"^@@KOMOD (\S+) (\d+)", line)
            if m and m.group(2) != "0":
                failed.add(m.group(1))

    class Loaded:
        """The tree's modules, minus those the guest could not load."""

        def view(self, name: str):  # type: ignore[no-untyped-def]
            return None if name.replace("-", "_") in failed else ms.view(name)

        def view_at(self, addr: int):  # type: ignore[no-untyped-def]
            return None  # the probes name their module (MOD:SYM+OFF)

        def missing(self, name: str) -> str:
            return f"module {name} not loaded in the guest"

    k.module_source = Loaded()
    if failed:
        print(f"not loaded in the guest: {', '.join(sorted(failed))}")
    rows = [json.loads(x) for x in open(args.results) if x.strip()]
    n = agree = false_accept = false_refuse = flags_n = flags_ok = 0
    diffs = []
    crashes: list[str] = []
    for r in rows:
        if r.get("crash") or r.get("ok") is None:
            crashes.append(r["target"])
            continue
        t = ("r " if r["kind"] == "r" else "") + r["target"]
        n += 1
        try:
            v = check(k, t)
        except UsageError:  # malformed for us (e.g. 'sym-0x8+0'): the kernel's parse error
            same = r["ok"] is False and r.get("error") == "EINVAL"
            agree += same
            if not same:
                diffs.append(f"{t}: ours malformed, kernel {'ok' if r['ok'] else r.get('error')}")
            continue
        same = v.ok == r["ok"] and (v.ok or v.errno == r.get("error"))
        agree += same
        if v.ok and not r["ok"]:
            false_accept += 1
        if not v.ok and r["ok"]:
            false_refuse += 1
        if v.ok and r["ok"] and r.get("flags") is not None:
            flags_n += 1
            theirs = sorted(set(r["flags"]) - {"DISABLED", "GONE"})  # kprobes/list after arming
            ok_flags = sorted(v.flags) == theirs
            flags_ok += ok_flags
            if not ok_flags:
                diffs.append(f"flags {t}: ours {list(v.flags)} kernel {theirs}")
        if not same:
            diffs.append(f"{t}: ours {'ok' if v.ok else v.errno} ({v.reason.value if v.reason else ''}) "
                         f"kernel {'ok' if r['ok'] else r.get('error')} {r.get('kernel_msgs') or ''}")
    print(f"{n} probes: agreement {agree}/{n} ({100.0 * agree / max(n, 1):.2f}%), "
          f"false accepts {false_accept}, false refusals {false_refuse}, "
          f"flags {flags_ok}/{flags_n}; {len(crashes)} probes crashed the guest: "
          f"{', '.join(crashes[:5])}")
    for d in diffs[: args.show]:
        print("  " + d)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--modules-dir", required=True)
    s.add_argument("--load", required=True, help="comma-separated module names")
    s.add_argument("-n", type=int, default=2000)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--objdump", default="objdump")
    s.add_argument("-o", required=True)
    r = sub.add_parser("run")
    r.add_argument("--modules-dir", required=True)
    r.add_argument("--load", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--vmlinux", required=True)
    c.add_argument("--modules-dir", required=True)
    c.add_argument("--results", required=True)
    c.add_argument("--show", type=int, default=30)
    c.add_argument("--console", nargs="*", help="the oracle's console logs (@@KOMOD lines)")
    a = ap.parse_args(argv)
    if a.cmd == "sample":
        return sample(a)
    if a.cmd == "run":
        return run(a, rest)
    return compare(a)


if __name__ == "__main__":
    sys.exit(main())
