#!/usr/bin/env python3
"""Run the kprobe execution properties with the hypothesis ``long`` profile.

    nice -n 19 python3 benchmarks/properties_long.py --arch x86_64 [--examples 100000]
        [--property a|b|c|d|all] [--batch 2000] [--out divergences.jsonl]

Property (a) compares a run with the probe installed against a plain run for random
instructions at random text and slot addresses; every example is counted (accepted and
compared, or refused by the kernel's rules) and every divergence is written to --out.
Examples are drawn in seeded batches (hypothesis slows down on one huge run).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from kpatch_core.registry import backend_named
from kpatch_core.testing import (RawImage, data_pointers, initial_flags, prop_breakpoint_traps,
                                 prop_displacement_reach, prop_install_remove,
                                 prop_same_end_state, register_names)
from kpatch_core.testing import strategies as S


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="x86_64", choices=(*S.ARCHES, "ppc64le"))
    ap.add_argument("--examples", type=int, default=None, help="default: the long profile's")
    ap.add_argument("--property", default="a", choices=["a", "b", "c", "d", "all"])
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--out", default=None, help="JSONL file for divergences")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    settings.load_profile("long")
    total = a.examples or settings().max_examples
    b = backend_named(a.arch)
    if b.slot_support() is None:
        print(f"{a.arch}: no slot support", file=sys.stderr)
        return 2
    img = RawImage(b)
    if a.arch == "ppc64le":  # no unicorn engine: qemu-ppc64le-static is the oracle
        return _ppc64le(b, img, total, a)
    names, ptrs = register_names(b), data_pointers(b)
    counts: collections.Counter = collections.Counter()
    diverged: list[dict] = []
    out = open(a.out, "a") if a.out else None

    def record(kind: str, fn, *args) -> None:
        try:
            counts[f"{kind}:{fn(*args)}"] += 1
        except AssertionError as e:
            counts[f"{kind}:DIVERGED"] += 1
            d = {"property": kind, "error": str(e)[:500],
                 "args": [x.hex() if isinstance(x, bytes) else x for x in args[2:]
                          if isinstance(x, (bytes, int))]}
            diverged.append(d)
            if out:
                out.write(json.dumps(d) + "\n")
                out.flush()

    props = "abcd" if a.property == "all" else a.property
    t0 = time.time()
    done = 0
    batch_no = a.seed
    while done < total:
        n = min(a.batch, total - done)
        cfg = settings(settings.get_profile("long"), max_examples=n)

        if "a" in props:
            @seed(batch_no)
            @cfg
            @given(code=S.instruction(a.arch), addr=S.text_address(a.arch),
                   slot=S.slot_address(a.arch), regs=S.register_file(names, ptrs),
                   bits=st.integers(0, (1 << 64) - 1))
            def pa(code, addr, slot, regs, bits):
                record("a", prop_same_end_state, b, img, code, addr, slot,
                       {**regs, **initial_flags(b, bits)})
            pa()
        if "b" in props:
            @seed(batch_no)
            @cfg
            @given(codes=st.lists(S.instruction(a.arch), min_size=1, max_size=6),
                   addr=S.text_address(a.arch), data=st.data())
            def pb(codes, addr, data):
                order = data.draw(st.lists(st.integers(0, len(codes) - 1), min_size=1, max_size=8))
                counts[f"b:armed{min(prop_install_remove(b, img, codes, addr, order), 1)}"] += 1
            pb()
        if "c" in props and hasattr(b.slot_support(), "pc_relative_target"):
            far = st.integers(0, (1 << 64) - 16).map(lambda x: x & ~15)

            @seed(batch_no)
            @cfg
            @given(code=S.pc_relative_instruction(a.arch),
                   addr=S.text_address(a.arch), slot=st.one_of(S.slot_address(a.arch), far))
            def pc(code, addr, slot):
                record("c", prop_displacement_reach, b, img, code, addr, slot)
            pc()
        if "d" in props:
            @seed(batch_no)
            @cfg
            @given(addr=S.text_address(a.arch))
            def pd(addr):
                prop_breakpoint_traps(b, addr)
                counts["d:trapped"] += 1
            pd()
        done += n
        batch_no += 1
        el = time.time() - t0
        print(f"[{el:7.0f}s] {done}/{total} per property; " +
              ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)
    el = time.time() - t0
    per = collections.Counter()
    for k, v in counts.items():
        per[k.split(":")[0]] += v
    print(f"{a.arch}: {dict(per)} examples per property in {el:.0f} s; "
          f"divergences: {len(diverged)}")
    for k, v in sorted(counts.items()):
        print(f"  {k}: {v}")
    return 1 if diverged else 0


def _ppc64le(b, img, total: int, a) -> int:
    """Property (a) for ppc64le under qemu: single-stepped slot copies end like the original."""
    import random

    from hypothesis import assume

    from kpatch_arch.ppc64le import slot as ppc
    from kpatch_core.testing import prepare_raw
    from kpatch_core.verdict import Method, Refusal
    if ppc.qemu_run(ppc.EXIT_0) is None:
        print("qemu-ppc64le-static not installed", file=sys.stderr)
        return 2
    counts: collections.Counter = collections.Counter()
    t0 = time.time()
    done, batch_no = 0, a.seed
    while done < total:
        n = min(a.batch, total - done)

        @seed(batch_no)
        @settings(settings.get_profile("long"), max_examples=n)
        @given(code=S.instruction("ppc64le"), k=st.integers(0, 0x3FF), s=st.integers(0, 1 << 30))
        def pa(code, k, s):
            e = prepare_raw(img, code + b"\0" * 8, 0xC000000000A00000 + 4 * k)
            if isinstance(e, Refusal) or e.method != Method.SINGLESTEP:
                counts["a:not-single-stepped"] += 1
                return
            r = random.Random(s)
            regs = [r.choice([r.getrandbits(64), r.randint(0, 64), ppc.USER_BASE + 0x8000])
                    for _ in range(31)]
            x, y = ppc.slot_equivalence(code, regs, ppc.USER_BASE + 0x1000 + 4 * k,
                                        ppc.USER_BASE + 0x6000)
            counts["a:ok" if x == y else "a:DIVERGED"] += 1
            if x != y:
                print("DIVERGED", code.hex(), x, y, flush=True)
        pa()
        done += n
        batch_no += 1
        print(f"[{time.time() - t0:7.0f}s] {done}/{total}; " +
              ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)
    return 1 if counts["a:DIVERGED"] else 0


if __name__ == "__main__":
    sys.exit(main())
