#!/usr/bin/env python3
"""Run the uprobe execution properties (kpatch_core.uprobe.properties) for a long time.

    nice -n 19 python3 benchmarks/uprobe_properties_long.py --arch x86_64 [--examples 100000]
        [--property a|b|c|d|bcd|all] [--kernel 6.12] [--batch 2000] [--seed 0] [--out div.jsonl]
        [--pc-relative] [--max-seconds S]

Every example is counted by its outcome label ("ok:xol", "ok:emulate", "refused:BAD_PREFIX",
"kernel-divergent:...", "skipped:..."); every divergence (AssertionError) is written to --out
and counted.  Examples are drawn in seeded hypothesis batches.  Prints one JSON summary line
per property at the end; exit 1 when any divergence was found.

Each batch runs in a forked child process (the oracle is C code: unicorn can abort the whole
process).  The child announces every example before running it; when it dies, the example it
was running is recorded (``aborted:<signal>`` in --out, with the example to re-run it), counted
as an oracle defect ``skipped:<engine>-aborted`` and the batch is redrawn from the same seed in
a new child that skips the examples already counted -- never silently dropped.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sys
import time
from collections.abc import Callable

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from kpatch_core.registry import backend_named
from kpatch_core.testing import initial_flags, register_names
from kpatch_core.testing import strategies as S
from kpatch_core.uprobe import properties as P
from kpatch_core.uprobe import qemu_ppc64le as Q
from kpatch_core.uprobe.probe import features_for, uprobe_support

ALIGN = {"x86_64": 1, "arm64": 4, "riscv64": 2, "s390x": 2, "ppc64le": 4}


CLASSES = (("ok", "executed"), ("faulted", "faulted"), ("refused", "refused"),
           ("kernel-divergent", "kernel-divergent"), ("excluded", "excluded"),
           ("skipped", "oracle defects"), ("DIVERGENCE", "divergences"),
           # (b)-(d): the property checked ("executed" column of the README table)
           ("restored", "executed"), ("retargeted", "executed"), ("not-copied", "executed"),
           ("traps", "executed"), ("no-pc-relative", "excluded"))


def classes(counts: collections.Counter[str]) -> dict[str, int]:
    """The labels summed by class (property (a): the issue-14 counting; (b)-(d): checked,
    refused, kernel-divergent...)."""
    out = {name: 0 for _, name in CLASSES}
    for label, n in counts.items():
        prefix = label.split(":")[0]
        out[dict(CLASSES)[prefix]] += n
    return out


class Guard:
    """The child's side of a batch: numbers the examples hypothesis draws, announces each
    before it runs (so a parent sees which one killed the child) and skips those the parent
    already counted."""

    def __init__(self, skip: dict[int, str], fd: int | None) -> None:
        self.skip, self.i = skip, -1
        self.pipe = os.fdopen(fd, "w") if fd is not None else None

    def begin(self, example: object) -> bool:
        """Next example: False when an earlier child already counted it."""
        self.i += 1
        if self.i in self.skip:  # hypothesis redraws a seeded batch identically: checked
            if self.skip[self.i] != repr(example):
                raise RuntimeError(f"example {self.i} redrawn differently: {example!r}")
            return False
        self.send({"begin": self.i, "example": repr(example)})
        return True

    def send(self, msg: dict) -> None:
        if self.pipe is not None:
            self.pipe.write(json.dumps(msg) + "\n")
            self.pipe.flush()


def run_isolated(batch: Callable[[Guard], None],
                 on_result: Callable[[dict], None], max_aborts: int = 100) -> list[dict]:
    """Run ``batch`` in forked children until it completes; ``on_result`` gets each example's
    ``{"label"|"error", "example"}`` message.  Returns the aborted examples
    (``{"index", "example", "signal"}``), each counted once and skipped on the re-run."""
    aborted: list[dict] = []
    skip: dict[int, str] = {}  # index -> repr of the examples counted (or aborted) so far
    outside = 0  # deaths outside any example
    while True:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run the batch, report, never return into the parent's loop
            os.close(rfd)
            code = 0
            try:
                g = Guard(skip, wfd)
                batch(g)
                g.send({"end": True})
            except BaseException as e:  # noqa: BLE001  # reported to the parent, which stops
                try:
                    g.send({"crash": f"{type(e).__name__}: {e}"})
                finally:
                    code = 3
            os._exit(code)
        os.close(wfd)
        current: dict | None = None
        ended, crash = False, None
        with os.fdopen(rfd) as r:
            for line in r:
                msg = json.loads(line)
                if "begin" in msg:
                    current = msg
                elif "end" in msg:
                    ended = True
                elif "crash" in msg:
                    crash = msg["crash"]
                elif "index" in msg:
                    i = msg.pop("index")
                    if i not in skip:  # (a qemu batch reports many results under one index)
                        skip[i] = current["example"] if current and current["begin"] == i else ""
                    current = None
                    on_result(msg)
                else:
                    on_result(msg)
        _, status = os.waitpid(pid, 0)
        if ended and status == 0:
            return aborted
        if crash is not None:
            raise SystemExit(f"batch failed in the child: {crash}")
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        name = signal.Signals(sig).name if sig else f"exit {os.WEXITSTATUS(status)}"
        if current is None:  # while hypothesis drew (the strategy's filter runs the engine):
            outside += 1  # not reproducible with the batch's seed alone (seed 25, SIGSEGV): retried
            print(json.dumps({"child-died-outside-an-example": name, "retry": outside}), flush=True)
            if outside > 2:
                raise SystemExit(f"the batch's child died ({name}) outside any example, 3 times")
            continue
        if len(aborted) >= max_aborts:
            raise SystemExit(f"the batch's child died ({name}): {max_aborts} aborted examples")
        skip[current["begin"]] = current["example"]
        aborted.append({"index": current["begin"], "example": current["example"], "signal": name})


def _qemu_batch(b: object, fs: object, n: int, batch_seed: int,
                counts: collections.Counter[str], record: object) -> None:
    """Property (a) on qemu-user (ppc64le): ``n`` examples drawn by hypothesis (instructions,
    and words of the classes emulate_step handles), register files aimed at the data buffer,
    run together by :func:`kpatch_core.uprobe.qemu_ppc64le.same_end_state`."""
    import random
    drawn: list[tuple[bytes, int]] = []
    emulated_word = st.integers(0, (1 << 64) - 1).map(
        lambda s: Q.qppc.random_emulated_word(random.Random(s)).to_bytes(4, "little"))

    @seed(batch_seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(code=st.one_of(S.instruction("ppc64le"), emulated_word), s=st.integers(0, 1 << 30))
    def draw(code: bytes, s: int) -> None:
        drawn.append((code, s))
    draw()
    examples = [(code, Q.qppc.random_register_file(random.Random(s), int.from_bytes(code[:4], "little")))
                for code, s in drawn[:n]]
    buffer = random.Random(batch_seed).randbytes(Q.qppc.BUF_SIZE)
    got = Q.same_end_state(b, fs, examples, buffer)  # type: ignore[arg-type]
    if got is None:
        raise SystemExit("qemu-ppc64le-static is not installed: apt-get install qemu-user-static")
    labels, diverged = got
    for label, k in labels.items():
        if label != "DIVERGENCE":
            for _ in range(k):
                record(label, None, None)  # type: ignore[operator]
    for d in diverged:
        record(None, AssertionError(json.dumps(d)), d.get("insn"))  # type: ignore[operator]


def _pc_relative(arch: str) -> st.SearchStrategy[bytes]:
    """Property (c)'s instructions (and (a)'s with --pc-relative): the shared strategy's;
    s390x: every relative-long form handle_insn_ril emulates (its uprobe table), ppc64le: the
    forms of its uprobe table."""
    if arch == "s390x":
        from kpatch_arch.s390x.uprobe import RIL_FORMS
        return st.tuples(st.sampled_from(RIL_FORMS), st.integers(0, 15),
                         st.one_of(st.integers(-(1 << 31), (1 << 31) - 1),
                                   st.integers(-0x800, 0x800))).map(
            lambda t: bytes([t[0][0], t[1] << 4 | t[0][1]]) + (t[2] & 0xFFFFFFFF).to_bytes(4, "big"))
    if arch != "ppc64le":
        return S.pc_relative_instruction(arch)
    from kpatch_arch.ppc64le.uprobe import PC_RELATIVE_FORMS
    return st.tuples(st.sampled_from(PC_RELATIVE_FORMS), st.integers(0, 0xFFFFFFFF)).map(
        lambda t: (t[1] & ~t[0][1] | t[0][0]).to_bytes(4, "little"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="x86_64", choices=tuple(ALIGN))
    ap.add_argument("--examples", type=int, default=100_000)
    ap.add_argument("--property", default="a")
    ap.add_argument("--kernel", default="6.12")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--pc-relative", action="store_true",
                    help="(a) draws only the PC-relative forms (property (c)'s instructions)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop after the batch that passes this many seconds (the summary says "
                         "how many examples were reached)")
    ap.add_argument("--min-executed", type=float, default=0.5,
                    help="least share of (a) examples that executed the probed instruction")
    a = ap.parse_args(argv)
    props = "abcd" if a.property == "all" else a.property
    if not props or set(props) - set("abcd"):
        print(f"--property {a.property!r}: use letters of abcd or all", file=sys.stderr)
        return 2
    b = backend_named(a.arch)
    major, minor = (int(x) for x in a.kernel.split(".")[:2])
    fs = features_for(b, (major, minor))
    align = ALIGN[a.arch]
    out = open(a.out, "a") if a.out else None  # noqa: SIM115
    bad = 0
    for prop in props:
        counts: collections.Counter[str] = collections.Counter()
        divergences = 0
        t0 = time.time()
        done = 0
        batch_no = 0
        while done < a.examples:
            n = min(a.batch, a.examples - done)

            guard = Guard({}, None)  # replaced in each child by run_isolated

            def record(label: str | None, err: AssertionError | None, ex: object) -> None:
                if err is not None:
                    guard.send({"index": guard.i, "error": str(err)[:2000], "example": repr(ex)})
                else:
                    guard.send({"index": guard.i, "label": label or "ok"})

            def result(msg: dict) -> None:  # the parent's side
                nonlocal divergences
                if "error" in msg:
                    divergences += 1
                    counts["DIVERGENCE"] += 1
                    if out:
                        out.write(json.dumps({"arch": a.arch, "property": prop, **msg}) + "\n")
                        out.flush()
                elif "not_generated" in msg:  # the strategy's filter counted in the child
                    S.NOT_EXECUTABLE.clear()
                    S.NOT_EXECUTABLE.update(msg["not_generated"])
                else:
                    counts[msg["label"]] += 1

            cfg = settings(max_examples=n, deadline=None, database=None, derandomize=False,
                           suppress_health_check=list(HealthCheck))
            if prop == "a" and uprobe_support(b).ENGINE == "qemu-user":
                def run() -> None:  # drawn by hypothesis, executed many per qemu process
                    if not guard.begin(f"qemu batch seed {a.seed + batch_no}"):
                        return
                    _qemu_batch(b, fs, n, a.seed + batch_no, counts, record)
            elif prop == "a":
                @cfg
                @seed(a.seed + batch_no)
                @given(code=_pc_relative(a.arch) if a.pc_relative else S.executable_instruction(a.arch),
                       off=st.integers(0, 0xFFF),
                       regs=S.register_file(register_names(b), P.data_pointers()),
                       bits=st.integers(0, 2**32 - 1))
                def run(code: bytes, off: int, regs: dict[str, int], bits: int) -> None:
                    va = P.USER_TEXT + off - off % align
                    if not guard.begin((code.hex(), hex(va), regs, bits)):
                        return
                    try:
                        record(P.prop_same_end_state(b, fs, code, va,
                                                     {**regs, **initial_flags(b, bits)}), None, None)
                    except AssertionError as e:  # everything needed to re-run the example
                        record(None, e, (code.hex(), hex(va), regs, bits))
            elif prop == "b":
                @cfg
                @seed(a.seed + batch_no)
                @given(codes=st.lists(S.instruction(a.arch), min_size=1, max_size=8), data=st.data())
                def run(codes: list[bytes], data: st.DataObject) -> None:
                    order = data.draw(st.lists(st.integers(0, len(codes) - 1), min_size=1, max_size=12))
                    if not guard.begin(([c.hex() for c in codes], order)):
                        return
                    try:
                        armed = P.prop_install_remove(b, fs, codes, P.USER_TEXT + 0x100, order)
                        record("restored" if armed else "refused:none-armable", None, None)
                    except AssertionError as e:
                        record(None, e, ([c.hex() for c in codes], order))
            elif prop == "c":
                @cfg
                @seed(a.seed + batch_no)
                @given(code=_pc_relative(a.arch), off=st.integers(0, 1 << 40),
                       xol=st.integers(0x7F0000000000, 0x7FFFFFFFF000))
                def run(code: bytes, off: int, xol: int) -> None:
                    va = 0x400000 + off - off % align
                    if not guard.begin((code.hex(), hex(va), hex(xol))):
                        return
                    try:
                        record(P.prop_pc_relative(b, fs, code, va, xol & ~0x7F), None, None)
                    except AssertionError as e:
                        record(None, e, (code.hex(), hex(va), hex(xol)))
            else:
                @cfg
                @seed(a.seed + batch_no)
                @given(off=st.integers(0, 1 << 30))
                def run(off: int) -> None:
                    va = 0x400000 + off - off % uprobe_support(b).SWBP_INSN_SIZE
                    if uprobe_support(b).ENGINE == "qemu-user":
                        va = Q.qppc.USER_BASE + 0x1000 + off % 0x4000 * 4
                    if not guard.begin(hex(va)):
                        return
                    try:
                        P.prop_breakpoint_traps(b, va)
                        record("traps", None, None)
                    except AssertionError as e:
                        record(None, e, hex(va))
            def child(g: Guard) -> None:
                nonlocal guard
                guard = g
                run()
                g.send({"not_generated": dict(S.NOT_EXECUTABLE)})

            before = sum(counts.values())
            for ab in run_isolated(child, result):
                label = f"skipped:{uprobe_support(b).ENGINE}-aborted-{ab['signal']}"
                counts[label] += 1
                print(json.dumps({"aborted": ab, "batch": batch_no, "label": label}), flush=True)
                if out:
                    out.write(json.dumps({"arch": a.arch, "property": prop, "batch": batch_no,
                                          "aborted": ab["signal"], "example": ab["example"]}) + "\n")
                    out.flush()
            done += sum(counts.values()) - before
            batch_no += 1
            progress = {"progress": True, "arch": a.arch, "property": prop,
                        "examples": sum(counts.values()), "divergences": divergences,
                        "seconds": round(time.time() - t0, 1)}
            if prop == "a":  # a run stopped early still says what each class holds
                progress.update(classes=classes(counts), outcomes=dict(counts.most_common()),
                                not_generated=dict(S.NOT_EXECUTABLE))
            print(json.dumps(progress), flush=True)
            if sum(counts.values()) == before:  # hypothesis produced nothing new
                break
            if a.max_seconds is not None and time.time() - t0 > a.max_seconds:
                print(json.dumps({"stopped": f"--max-seconds {a.max_seconds:g}",
                                  "examples": sum(counts.values())}), flush=True)
                break
        bad += divergences
        summary = {"arch": a.arch, "kernel": fs.rules, "property": prop,
                   "examples": sum(counts.values()), "divergences": divergences,
                   "seconds": round(time.time() - t0, 1), "outcomes": dict(counts.most_common())}
        summary["classes"] = classes(counts)
        if prop == "a":
            summary["not_generated"] = dict(S.NOT_EXECUTABLE)
            executed = summary["classes"]["executed"]
            if executed < a.min_executed * summary["examples"]:
                print(f"FAIL: only {executed} of {summary['examples']} examples executed the "
                      f"probed instruction (floor {a.min_executed:.0%})", flush=True)
                bad += 1
        print(json.dumps(summary), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
