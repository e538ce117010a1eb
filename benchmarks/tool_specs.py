"""How many kernel-function probes the tools Debian ships ask for, and their verdicts.

    python benchmarks/tool_specs.py VMLINUX DIR [DIR ...] [--requests OUT]

DIR holds unpacked tool files (e.g. `apt-get download bpftrace bpfcc-tools libbpf-tools`,
`dpkg-deb -x` each, then DIR=root/usr/sbin).  Per reader: files, specs read, run-time-only specs
(unresolved), targets after expansion, and verdict counts by attach type and errno.
``--requests OUT`` also writes the distinct targets as tools/bpf-attach-oracle requests, so a
real kernel can answer the same targets (benchmarks/attach_oracle_compare.py compare).
"""
from __future__ import annotations

import collections
import glob
import os
import sys

from kpatch_core.attach import Unmatched, check_targets
from kpatch_core.errors import KpatchError
from kpatch_core.image import Image
from kpatch_core.readers import read_probe_file, resolve
from kpatch_core.spec import available_filter_functions, glob_regex


def main(argv: list[str]) -> int:
    requests_out = None
    if "--requests" in argv:
        i = argv.index("--requests")
        requests_out = argv[i + 1] if i + 1 < len(argv) else None
        argv = argv[:i] + argv[i + 2:]
    if len(argv) < 2 or ("--requests" in sys.argv and requests_out is None):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    requests: dict[str, None] = {}
    image = Image.open(argv[0])
    files = sorted(p for d in argv[1:] for p in glob.glob(os.path.join(d, "*")) if os.path.isfile(p))
    stats: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    verdicts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    refused: list[str] = []
    for p in files:
        try:
            pf = read_probe_file(p)
        except KpatchError as e:
            stats["not read"][str(e).split(":", 2)[-1].split(";")[0].strip()[:40]] += 1
            continue
        s = stats[pf.reader]
        s["files"] += 1
        s["files with kernel probes"] += bool(pf.specs)
        s["specs"] += len(pf.specs)
        s["unresolved (run time)"] += len(pf.unresolved)
        targets = resolve(image, pf)
        s["targets"] += len(targets)
        for t, v in check_targets(image, targets):
            key = f"{pf.reader} {t.attach}"
            if isinstance(v, Unmatched):
                verdicts[key]["no match"] += 1
                refused.append(f"{os.path.basename(p)}: {t} no match")
                continue
            verdicts[key]["ok" if v.ok else str(v.errno)] += 1
            if t.symbol and not t.module:
                off = f"+{t.offset:#x}" if t.offset else ""
                kind = {"kprobe_multi": "kmulti", "kretprobe_multi": "kretmulti"}.get(t.attach, t.attach)
                if kind in ("kmulti", "kretmulti"):
                    rx = glob_regex(t.symbol)
                    names = dict.fromkeys(n for n in available_filter_functions(image) if rx.match(n))
                    requests[f"{kind} {','.join(names) or t.symbol}"] = None
                else:  # a sleepable program's request is fentry.s, lsm.s ...
                    requests[f"{kind}{'.s' if t.sleepable else ''} {t.symbol}{off}"] = None
            if not v.ok:
                refused.append(f"{os.path.basename(p)}: {t} {v.errno} {v.reason.name if v.reason else ''}")
    if requests_out:
        with open(requests_out, "w") as f:
            f.write("".join(r + "\n" for r in requests))
    print(f"image {image.path} ({image.version})")
    for reader, c in sorted(stats.items()):
        print(f"{reader:10s} " + ", ".join(f"{k} {n}" for k, n in c.items()))
    for key, c in sorted(verdicts.items()):
        print(f"  {key:22s} " + ", ".join(f"{k} {n}" for k, n in sorted(c.items())))
    print(f"refused ({len(refused)}):")
    for r in refused:
        print("  " + r)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
