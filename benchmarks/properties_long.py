#!/usr/bin/env python3
"""Run the kprobe execution properties with the hypothesis ``long`` profile.

    nice -n 19 python3 benchmarks/properties_long.py --arch x86_64 [--examples 100000]
        [--property a|b|c|d|bcd|all] [--batch 2000] [--out divergences.jsonl]

Property (a) compares a run with the probe installed against a plain run for random
instructions (those the execution oracle executes; the others are counted as not generated)
at random text and slot addresses; every example is counted in its class -- executed (``ok``),
faulted, refused by the kernel's rules, kernel-divergent, excluded (not comparable) or an
oracle defect -- and every divergence is written to --out.  Examples are drawn in seeded
batches (hypothesis slows down on one huge run).
Exit 1 on any divergence, when fewer than --min-executed of property (a)'s examples executed
the probed instruction, or (ppc64le) when the backend's emulate/step class and the model's run
disagree.
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


def _properties(text: str) -> str:
    """--property: ``all`` or letters of abcd."""
    if text == "all":
        return "abcd"
    if not text or set(text) - set("abcd"):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters of abcd (e.g. a, bcd) or all")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="x86_64", choices=S.ARCHES)
    ap.add_argument("--examples", type=int, default=None, help="default: the long profile's")
    ap.add_argument("--property", default="a", type=_properties,
                    help="a, b, c, d, a combination such as bcd, or all (default: a)")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--out", default=None, help="JSONL file for divergences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-executed", type=float, default=0.5,
                    help="least share of (a) examples that executed the probed instruction")
    a = ap.parse_args(argv)
    settings.load_profile("long")
    total = a.examples or settings().max_examples
    b = backend_named(a.arch)
    if b.slot_support() is None:
        print(f"{a.arch}: no slot support", file=sys.stderr)
        return 2
    img = RawImage(b)
    if a.arch == "ppc64le":  # no unicorn engine: qemu-ppc64le-static is the oracle
        if a.property == "a":
            return _ppc64le(b, img, total, a)
        if a.property != "b":
            print("ppc64le: run property a (under qemu) or b here; d runs under qemu in "
                  "tests/test_properties.py; c does not apply (PC-relative forms are emulated)",
                  file=sys.stderr)
            return 2
    names, ptrs = (register_names(b), data_pointers(b)) if "a" in a.property else ((), ())
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

    props = a.property
    t0 = time.time()
    done = 0
    batch_no = a.seed
    while done < total:
        n = min(a.batch, total - done)
        cfg = settings(settings.get_profile("long"), max_examples=n)

        if "a" in props:
            @seed(batch_no)
            @cfg
            @given(code=S.executable_instruction(a.arch), addr=S.text_address(a.arch),
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
        if "c" in props:
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
    failed = bool(diverged)
    if "a" in props:
        classes = collections.Counter()
        for k, v in counts.items():
            if k.startswith("a:"):
                classes[k.split(":")[1]] += v
        executed = classes["ok"]
        print(f"  (a) executed {executed}, faulted {classes['faulted']}, refused "
              f"{classes['refused']}, kernel-divergent {classes['kernel-divergent']}, excluded "
              f"{classes['excluded']}, oracle defects {classes['skipped']}; not generated (the "
              f"oracle does not execute them): {sum(S.NOT_EXECUTABLE.values())} "
              f"{dict(S.NOT_EXECUTABLE)}")
        if executed < a.min_executed * per["a"]:
            print(f"FAIL: only {executed} of {per['a']} examples executed the probed instruction "
                  f"(floor {a.min_executed:.0%})")
            failed = True
    return 1 if failed else 0


def _ppc64le(b, img, total: int, a) -> int:
    """Property (a) for ppc64le under qemu-ppc64le-static (unicorn has no little-endian
    PPC64): every accepted probe runs the kernel's way -- try_to_emulate's emulate_step
    (the model, kpatch_arch.ppc64le.emulate) or, when it declines, the slot copy
    single-stepped -- and is compared with the original instruction run by qemu.  Examples
    are drawn by hypothesis, then executed many per qemu process (slot.prove_emulation,
    slot.prove_single_step).  Counts: ok-emulated, ok-stepped, declined (emulate_step
    returned 0: stepped), refused by arch_prepare_kprobe, not-modelled, oracle categories,
    DIVERGED; ``class:`` counts where the backend's static method (analyse_class, itself
    derived from the model's analyse_word) and the model's run disagree (register-dependent
    words only)."""
    import random


    from kpatch_core.testing import qemu_ppc64le as qppc
    from kpatch_arch.ppc64le.emulate import Declined, emulate_step
    from kpatch_core.slot import Effect
    from kpatch_core.testing import prepare_raw
    from kpatch_core.verdict import Method, Refusal
    if qppc.qemu_run(qppc.EXIT_0) is None:
        print("qemu-ppc64le-static not installed", file=sys.stderr)
        return 2
    counts: collections.Counter = collections.Counter()
    mismatch: collections.Counter = collections.Counter()
    diverged: list[dict] = []
    out = open(a.out, "a") if a.out else None
    msr = qppc._proof_msr()
    t0 = time.time()
    done, batch_no = 0, a.seed
    emulated_word = st.integers(0, (1 << 64) - 1).map(
        lambda s: qppc.random_emulated_word(random.Random(s)).to_bytes(4, "little"))
    while done < total:
        n = min(a.batch, total - done)
        drawn: list[tuple[bytes, int, int]] = []

        @seed(batch_no)
        @settings(settings.get_profile("long"), max_examples=n, database=None)
        @given(code=st.one_of(S.instruction("ppc64le"), emulated_word),
               k=st.integers(0, 0x3FF), s=st.integers(0, 1 << 30))
        def draw(code, k, s):
            drawn.append((code, k, s))
        draw()
        drawn = drawn[:n]
        buffer = random.Random(batch_no).randbytes(qppc.BUF_SIZE)
        read = qppc._buffer_read(buffer)
        emulate, step = [], []
        for code, k, s in drawn:
            e = prepare_raw(img, code + b"\0" * 8, 0xC000000000A00000 + 4 * k)
            if isinstance(e, Refusal):
                counts["a:refused-by-prepare"] += 1
                continue
            word = int.from_bytes(code[:4], "little")
            regs = qppc.random_register_file(random.Random(s), word)
            r = emulate_step(e.insn, qppc.SITE, regs, read, msr=msr)
            key = f"op{word >> 26}" + (f"/{(word >> 1) & 0x3FF}" if word >> 26 in (19, 31) else "")
            if word >> 26 == 31 and (word >> 1) & 0x1F == 15:
                key = "op31 isel"
            if isinstance(r, Effect) and e.method == Method.SINGLESTEP:
                mismatch[f"class:SINGLESTEP-but-emulated {key}"] += 1
            if (isinstance(r, Declined) and e.method == Method.EMULATE
                    and "fault" not in r.reason and "misaligned" not in r.reason):
                mismatch[f"class:EMULATE-but-declined {key} ({r.reason[:40]})"] += 1
            (step if isinstance(r, Declined) else emulate).append((e.insn, regs))
        ce, de = qppc.prove_emulation(emulate, buffer)
        cs, ds = qppc.prove_single_step(step, buffer)
        for key, v in ce.items():
            if key != "declined":
                counts["a:" + ("ok-emulated" if key == "ok" else key if key != "DIVERGED"
                               else "DIVERGED-emulated")] += v
        counts["a:stepped(emulate_step declined)"] += len(step)
        for key, v in cs.items():
            counts["a:" + ("ok-stepped" if key == "ok" else "stepped-" + key)] += v
        for d in de + ds:
            # the kernel single-steps a branch-and-link it cannot emulate (bctarl): LR names
            # the slot, on a real kernel too
            if "note" in d:
                counts["a:kernel-divergent:link-stepped-in-slot"] += 1
                counts["a:stepped-DIVERGED"] -= 1
                continue
            diverged.append(d)
            print("DIVERGED", json.dumps(d), flush=True)
            if out:
                out.write(json.dumps(d) + "\n")
                out.flush()
        done += n
        batch_no += 1
        print(f"[{time.time() - t0:7.0f}s] {done}/{total}; " +
              ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)
    print(f"ppc64le: {done} examples in {time.time() - t0:.0f} s; divergences: {len(diverged)}")
    for k, v in sorted(counts.items()):
        print(f"  {k}: {v}")
    for k, v in mismatch.most_common(40):
        print(f"  {k}: {v}")
    executed = counts["a:ok-emulated"] + counts["a:ok-stepped"]
    print(f"  (a) executed {executed} of {done} (emulated {counts['a:ok-emulated']}, stepped "
          f"{counts['a:ok-stepped']}), faulted {counts['a:stepped-faulted']}, refused "
          f"{counts['a:refused-by-prepare']}, kernel-divergent "
          f"{counts['a:kernel-divergent:link-stepped-in-slot']}")
    failed = bool(diverged)
    if mismatch:
        print(f"FAIL: {sum(mismatch.values())} examples where the backend's emulate/step class "
              "and the emulate_step model disagree")
        failed = True
    if executed < a.min_executed * done:
        print(f"FAIL: only {executed} of {done} examples executed (floor {a.min_executed:.0%})")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
