#!/usr/bin/env python3
"""Compare our kprobe blacklist with a booted kernel's /sys/kernel/debug/kprobes/blacklist.

    python3 benchmarks/blacklist_compare.py VMLINUX BLACKLIST.txt[.gz]

The kernel file has one `0xSTART-0xEND<TAB>symbol` line per entry (kernel-oracle --blacklist-out).
Prints entries only the kernel has, only we have, and the counts; exit 0 when they are equal.
"""
from __future__ import annotations

import collections
import gzip
import sys

from kpatch_core.image import Image


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    vmlinux, path = sys.argv[1:]
    op = gzip.open if path.endswith(".gz") else open
    kernel: dict[tuple[int, int], str] = {}
    kcount: collections.Counter[tuple[int, int]] = collections.Counter()
    with op(path, "rt") as f:
        for line in f:
            rng, _, name = line.rstrip("\n").partition("\t")
            a, b = rng.split("-")
            kernel[(int(a, 16), int(b, 16))] = name
            kcount[(int(a, 16), int(b, 16))] += 1
    image = Image.open(vmlinux)
    ours = {(b.start, b.end): f"{b.symbol} ({b.source})" for b in image.tables.blacklist}
    ocount = collections.Counter((b.start, b.end) for b in image.tables.blacklist)
    only_k = sorted((kcount - ocount).elements())
    only_o = sorted((ocount - kcount).elements())
    print(f"{image.backend.name}: kernel {sum(kcount.values())} entries, ours {sum(ocount.values())} "
          f"(duplicates counted); only kernel {len(only_k)}, only ours {len(only_o)}")
    for k in only_k[:20]:
        print(f"  only kernel: {k[0]:#x}-{k[1]:#x} {kernel[k]}")
    for k in only_o[:20]:
        print(f"  only ours:   {k[0]:#x}-{k[1]:#x} {ours[k]}")
    return 0 if not only_k and not only_o else 1


if __name__ == "__main__":
    sys.exit(main())
