"""fentry/fexit, fprobe-event and kprobe_multi verdicts against a real kernel.

    python benchmarks/attach_oracle_compare.py sample VMLINUX -n 2000 --seed 1 -o requests.txt
    python3 tools/bpf-attach-oracle/run.py --arch x86_64 --kernel-dir DIR \\
        --requests requests.txt --out answers.jsonl
    python benchmarks/attach_oracle_compare.py compare VMLINUX answers.jsonl [--min-agree 0.999]

``sample`` draws, deterministically: fentry and fexit targets from the BTF functions (plus
a tenth from kallsyms functions without BTF), fprobe targets from available_filter_functions
(plus a tenth from kallsyms functions without an ftrace record), and small kprobe_multi sets.
``compare`` prints agreement on (ok, errno), false accepts, and every disagreement; it fails
below ``--min-agree`` or on any false accept.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import sys

from kpatch_core.attach import check_request
from kpatch_core.image import Image
from kpatch_core.spec import available_filter_functions, image_btf, text_functions


def sample(image: Image, n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    btf = image_btf(image)
    btf_names = sorted(btf.func_names()) if btf else []
    texts = sorted(set(text_functions(image)))
    no_btf = [t for t in texts if btf is None or btf.func(t) is None]
    traced = sorted(set(available_filter_functions(image)))
    traced_set = set(traced)
    untraced = [t for t in texts if t not in traced_set]
    out = []
    for kind in ("fentry", "fexit"):
        k = n // 2
        names = rnd.sample(btf_names, min(len(btf_names), k - k // 10)) + \
            rnd.sample(no_btf, min(len(no_btf), k // 10))
        out += [f"{kind} {x}" for x in names]
    names = rnd.sample(traced, min(len(traced), n - n // 10)) + rnd.sample(untraced, min(len(untraced), n // 10))
    out += [f"{'fprobe_return' if i % 4 == 3 else 'fprobe'} {x}" for i, x in enumerate(names)]
    for i in range(max(n // 100, 1)):
        group = rnd.sample(traced, 3) + ([rnd.choice(untraced)] if i % 2 else [])
        out.append(f"{'kretmulti' if i % 3 == 2 else 'kmulti'} {','.join(group)}")
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
                           f"{v.reason.name if v.reason else ''}")
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
    c = sub.add_parser("compare")
    c.add_argument("vmlinux")
    c.add_argument("answers")
    c.add_argument("--min-agree", type=float, default=0.999)
    args = ap.parse_args(argv)
    image = Image.open(args.vmlinux)
    if args.cmd == "sample":
        with open(args.out, "w") as f:
            f.write("\n".join(sample(image, args.n, args.seed)) + "\n")
        return 0
    return compare(image, args.answers, args.min_agree)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
