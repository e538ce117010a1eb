"""fentry/fexit, fprobe-event and kprobe_multi verdicts against a real kernel.

    python benchmarks/attach_oracle_compare.py sample VMLINUX -n 2000 --seed 1 -o requests.txt
    python3 tools/bpf-attach-oracle/run.py --arch x86_64 --kernel-dir DIR \\
        --requests requests.txt --out answers.jsonl
    python benchmarks/attach_oracle_compare.py compare VMLINUX answers.jsonl [--min-agree 0.999]

``sample`` draws, deterministically: fentry and fexit targets from the BTF functions (plus
a tenth from kallsyms functions without BTF), fprobe targets from available_filter_functions
(plus a tenth from kallsyms functions without an ftrace record), and small kprobe_multi sets;
``--take KIND=N`` keeps N of a kind (``lsm`` and ``sleepable``: BPF LSM hooks and ``.s``
programs, drawn only when asked).  ``compare`` prints agreement on (ok, errno), false accepts, and every disagreement; it fails
below ``--min-agree`` or on any false accept.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import sys

from kpatch_core.attach import check_request
from kpatch_core.bpf_trampoline import allows_sleepable
from kpatch_core.image import Image
from kpatch_core.spec import available_filter_functions, image_btf, text_functions


KINDS = ("fentry", "fexit", "fprobe", "multi", "lsm", "sleepable")


def _lsm_sleepable(image: Image, btf_names: list[str],
                   rnd: random.Random) -> dict[str, tuple[list[str], list[str]]]:
    """BPF LSM hooks (``lsm``/``lsm.s`` HOOK over every ``bpf_lsm_*`` BTF function) and
    sleepable fentry/fexit/fmod_ret (``.s``): half on functions our rules let sleep
    (ALLOW_ERROR_INJECTION, or syscall entries), half on any BTF function."""
    hooks = [n[len("bpf_lsm_"):] for n in btf_names if n.startswith("bpf_lsm_")]
    rnd.shuffle(hooks)
    lsm = [f"{'lsm.s' if i % 2 else 'lsm'} {h}" for i, h in enumerate(hooks)]
    injectable = [n for n in btf_names if (a := image.kallsyms.lookup(n)) is not None
                  and allows_sleepable(image, n, a)]
    pool = rnd.sample(injectable, min(len(injectable), 500)) + rnd.sample(btf_names, 500)
    kinds = ("fentry.s", "fexit.s", "fmod_ret.s")
    sleepable = [f"{kinds[i % 3]} {n}" for i, n in enumerate(pool)]
    rnd.shuffle(sleepable)
    return {"lsm": (lsm, []), "sleepable": (sleepable, [])}


def sample(image: Image, n: int, seed: int, take: dict[str, int] | None = None) -> list[str]:
    """The requests for ``n`` (n/2 fentry, n/2 fexit, n fprobe, n/100 kprobe_multi); ``take``
    keeps of a kind (fentry, fexit, fprobe, multi) only N of them, the same share from the
    targets with and without a BTF FUNC / ftrace record, so a smaller run is a prefix of each
    part of the full sample (the draws do not change)."""
    rnd = random.Random(seed)
    btf = image_btf(image)
    btf_names = sorted(btf.func_names()) if btf else []
    texts = sorted(set(text_functions(image)))
    no_btf = [t for t in texts if btf is None or btf.func(t) is None]
    traced = sorted(set(available_filter_functions(image)))
    traced_set = set(traced)
    untraced = [t for t in texts if t not in traced_set]
    parts: dict[str, tuple[list[str], list[str]]] = {}
    for kind in ("fentry", "fexit"):
        k = n // 2
        names = rnd.sample(btf_names, min(len(btf_names), k - k // 10))
        extra = rnd.sample(no_btf, min(len(no_btf), k // 10))
        parts[kind] = ([f"{kind} {x}" for x in names], [f"{kind} {x}" for x in extra])
    names = rnd.sample(traced, min(len(traced), n - n // 10)) + rnd.sample(untraced, min(len(untraced), n // 10))
    fp = [f"{'fprobe_return' if i % 4 == 3 else 'fprobe'} {x}" for i, x in enumerate(names)]
    split = min(len(traced), n - n // 10)
    parts["fprobe"] = (fp[:split], fp[split:])
    multi = []
    for i in range(max(n // 100, 1)):
        group = rnd.sample(traced, 3) + ([rnd.choice(untraced)] if i % 2 else [])
        multi.append(f"{'kretmulti' if i % 3 == 2 else 'kmulti'} {','.join(group)}")
    parts["multi"] = (multi, [])
    if take is not None and ("lsm" in take or "sleepable" in take):  # only when asked: their
        # own generator, so the draws above stay those of the plain sample
        parts.update(_lsm_sleepable(image, btf_names, random.Random(seed + 1000)))
    out = []
    for kind, (main, extra) in parts.items():
        if take is not None and kind in take:
            total = len(main) + len(extra)
            m = round(take[kind] * len(main) / total) if total else 0
            main, extra = main[:m], extra[:take[kind] - m]
        out += main + extra
    return out


def compare(image: Image, answers: str, min_agree: float) -> int:
    total = agree = false_accepts = 0
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    bad = []
    with open(answers) as f:
        for line in f:
            a = json.loads(line)
            if a["stage"] == "delete":
                continue
            v = check_request(image, a["request"])
            kind = a["request"].split(" ", 1)[0]
            total += 1
            same = v.ok == a["ok"] and (v.ok or v.errno == a["errno"])
            agree += same
            by_kind[kind]["agree" if same else "disagree"] += 1
            if v.ok and not a["ok"]:
                false_accepts += 1
            if not same:
                bad.append(f"{a['request'][:80]}: kernel {a['errno'] or 'ok'} ({a['stage']} "
                           f"{a['message']}), we {v.errno or 'ok'} "
                           f"{v.reason.name if v.reason else ''}"
                           + (" [classified: CPU-dependent, kernel under QEMU -cpu max]"
                              if "CPU_DEPENDENT" in v.flags else ""))
    print(f"{image.path} ({image.version}): {agree}/{total} = {100 * agree / max(total, 1):.2f}% "
          f"agree, {false_accepts} false accepts")
    for kind, c in sorted(by_kind.items()):
        print(f"  {kind:14s} {c['agree']}/{c['agree'] + c['disagree']}")
    for b in bad:
        print("  " + b)
    return 0 if total and agree / total >= min_agree and not false_accepts else 1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("vmlinux")
    s.add_argument("-n", type=int, default=2000)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("-o", "--out", required=True)
    s.add_argument("--take", action="append", default=[], metavar="KIND=N",
                   help="keep only N requests of KIND (fentry, fexit, fprobe, multi; lsm and "
                   "sleepable are left out unless asked)")
    c = sub.add_parser("compare")
    c.add_argument("vmlinux")
    c.add_argument("answers")
    c.add_argument("--min-agree", type=float, default=0.999)
    args = ap.parse_args(argv)
    image = Image.open(args.vmlinux)
    if args.cmd == "sample":
        with open(args.out, "w") as f:
            take = {}
            for t in args.take:
                kind, _, count = t.partition("=")
                if kind not in KINDS or not count.isdigit():
                    ap.error(f"--take {t!r}: expected KIND=N with KIND one of {', '.join(KINDS)}")
                take[kind] = int(count)
            f.write("\n".join(sample(image, args.n, args.seed, take or None)) + "\n")
        return 0
    return compare(image, args.answers, args.min_agree)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
