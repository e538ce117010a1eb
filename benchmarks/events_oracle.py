#!/usr/bin/env python3
"""Differential test of the kprobe_events parser against a real kernel (kernel-oracle, --events).

    # 1. generate a few hundred valid and invalid lines for an image (deterministic per seed)
    python3 benchmarks/events_oracle.py generate VMLINUX -n 300 --seed 1 -o events.txt
    # 2. ask the real kernel (boots it under QEMU; minutes)
    python3 ../shared/tools/kernel-oracle/oracle.py --arch x86_64 \\
        --kernel-dir ~/.cache/kpatch-kernels/x86_64 --events events.txt --out events.jsonl
    # 3. compare with our predictions
    python3 benchmarks/events_oracle.py compare VMLINUX events.jsonl [--show 20]

The comparison replays the oracle's protocol: ``!keep LINE`` keeps what the line created,
``!clear`` empties kprobe_events, any other line's event is deleted after it was judged.  A line
agrees when ok, errno, error_log message and caret all match.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpatch_core.events import FETCH_TYPES, EventSet, ImageEnv, errno_name  # noqa: E402
from kpatch_core.image import Image  # noqa: E402
from kpatch_core.probe import check  # noqa: E402

TYPES = ["u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "x8", "x16", "x32", "x64",
         "symbol", "char", "symstr"]
BAD_TYPES = ["u128", "int", "x", "uint", "ptr", "strin", "u8[", "u8[0]", "u8[65]", "u8[4]x",
             "b0@0/8", "b9@0/8", "b4@4/12", "b3@x/32", "string[2]", "ustring", ""]
DATA_SYMS = ["linux_proc_banner", "jiffies", "init_task", "nr_cpu_ids", "system_state"]


def _functions(image: Image, rng: random.Random, n: int) -> list[tuple[str, object]]:
    """Unique functions with a BTF prototype, those whose entry probe.check accepts first (on
    riscv64 6.12 few are: function entries are ftrace sites there)."""
    env = ImageEnv(image)
    btf = env.btf
    if btf is not None:
        names = sorted(btf.func_names())
    else:  # no .BTF (s390x, ppc64le 6.1): text symbols without clone suffixes
        names = sorted({s.name for s in image.kallsyms.in_range(image.symtab.value("_stext") or 0,
                                                               image.symtab.value("_etext") or 0)
                        if "." not in s.name and not s.name.startswith("__")})
    rng.shuffle(names)
    good, other = [], []
    for name in names[:3000]:
        if len(good) >= n:
            break
        if image.kallsyms.count(name) != 1:
            continue
        (good if check(image, name).ok else other).append((name, btf.func(name) if btf else None))
    return (good + other)[:n]


def _btf_field(image: Image, proto, rng: random.Random) -> str | None:
    """``param->member`` for a struct-pointer parameter of ``proto`` (6.12 BTF arguments)."""
    btf = ImageEnv(image).btf
    for p in rng.sample(list(proto.params), len(proto.params)):
        if p.kind != "ptr" or not p.name:
            continue
        _, t = btf.skip_modifiers(p.type_id)
        _, st = btf.skip_modifiers(t.size_or_type)
        names = btf.member_names(st) if st is not None else []
        if names:
            return f"{p.name}->{rng.choice(names)}"
    return None


def generate(image: Image, n: int, seed: int) -> list[str]:
    """About ``n`` lines mixing every argument form, valid and not, plus a few multi-probe
    and delete sequences."""
    rng = random.Random(seed)
    be = image.backend
    regs = [f.name for f in be.pt_regs]
    funcs = _functions(image, rng, 40)
    lines: list[str] = []
    k = 0

    def fn():
        return rng.choice(funcs)

    places: dict[str, str] = {}

    def entry_place(name: str) -> str:
        """``name``, or ``name+OFF`` for the first accepted offset when the entry is refused
        (riscv64 6.12: function entries are ftrace sites without KPROBES_ON_FTRACE)."""
        if name not in places:
            places[name] = name
            if not check(image, name).ok:
                for off in range(be.insn_align, 40, be.insn_align):
                    if check(image, f"{name}+{off}").ok:
                        places[name] = f"{name}+{off}"
                        break
        return places[name]

    def good_arg(proto, is_ret: bool, i: int) -> str:
        nparams = len(proto.params) if proto else rng.randrange(0, 4)
        choice = rng.randrange(16)
        name = f"a{i}="
        if choice == 0 and nparams:
            j = rng.randrange(nparams)
            p = proto.params[j] if proto else None
            if p is None:
                return f"{name}$arg{j + 1}:{rng.choice(TYPES[:12])}"
            if p.kind == "ptr" and "char" in p.ctype:
                return f"{name}+0($arg{j + 1}):string"
            return f"{name}$arg{j + 1}:{rng.choice(TYPES[:12])}"
        if choice == 1:
            return f"{name}%{rng.choice(regs)}:{rng.choice(TYPES[:12])}"
        if choice == 2:
            return f"{name}+{rng.choice([0, 8, 16, 0x18])}(%{rng.choice(regs)}):{rng.choice(TYPES)}"
        if choice == 3:
            return f"{name}$stack{rng.randrange(0, 20)}"
        if choice == 4:
            return f"{name}$stack"
        if choice == 5:
            return f"{name}$comm"
        if choice == 6:
            off = rng.choice(["", "+8", "-8", "+0x10"])
            return f"{name}@{rng.choice(DATA_SYMS)}{off}:{rng.choice(TYPES[:12])}"
        if choice == 7:
            return f"{name}\\{rng.choice(['1', '0x10', '-5', '+7', '077'])}:{rng.choice(TYPES[:12])}"
        if choice == 8:
            return f"{name}\\\"{rng.choice(['abc', 'x y', ''])}\""
        if choice == 9:
            w = rng.choice([8, 16, 32, 64])
            bw = rng.randrange(1, w)
            return f"{name}+0(%{rng.choice(regs)}):b{bw}@{rng.randrange(0, w - bw + 1)}/{w}"
        if choice == 10:
            t = rng.choice(["u8", "x16", "u32", "string"])
            return f"{name}+0(%{rng.choice(regs)}):{t}[{rng.randrange(1, 65)}]"
        if choice == 11:
            return f"{name}$retval:{rng.choice(TYPES[:12])}"
        if choice == 12:
            return f"{name}+u0(%{rng.choice(regs)}):string"
        if choice == 13 and nparams and proto:  # 6.12 BTF names (6.1 refuses them)
            c = rng.randrange(4)
            if c == 0:
                f = _btf_field(image, proto, rng)
                if f:
                    return f
            if c == 1:
                return rng.choice(["$retval", "$retval:x32", "nosuchparam", "$arg1:string"])
            p = rng.choice(proto.params)
            return (p.name + rng.choice(["", ":x64", ":string", ":%pd"])) if p.name else "$arg1"
        if choice == 14 and nparams:
            return f"$arg{rng.randrange(1, nparams + 2)}"
        return f"{name}-8(+0(%{rng.choice(regs)}))"

    bad_args = [
        "%none", "%", "@", "@12345678abcde", "@+10", "$none", "$stack0x", "$stackp", "$arg0",
        "$argx", "$arg*", "$retvalx", "$COMM", "+0(%di", "+0%di)", "+0x(%di)", "(%di)", "+(%di)",
        "+0($comm)", "+0(\\1)", "&1", "\\x", "\\\"abc", "=%di", "1abc=%di", "x.y=%di",
        "common_pid=%di", "a" * 33 + "=%di", "x=", "+0(" * 14 + "@0" + ")" * 14,
        "+1234567(" * 6 + "@1" + ")" * 6, "$comm:x64", "\\\"s\":u8", "$stack0:string",
        "%ax:symstr[2]", "\\1:string", "@0:symstr", "+0(%ax):u8[10]a", "+0(%ax):u8[10a]",
        "+0(%ax):u8[256]", "+0(%ax):u8[10", "@11:b10@a/16",
    ]
    while len(lines) < n:
        k += 1
        name, proto = fn()
        r = rng.random()
        kind = "r" if r < 0.25 else "p"
        head = kind
        if kind == "r" and rng.random() < 0.3:
            head += rng.choice(["10", "0", "5000", "0x10", "1a"])
        if rng.random() < 0.5:
            head += f":ev{seed}_{k}" if rng.random() < 0.7 else f":grp{seed}/ev{k}"
        place = entry_place(name)
        pr = rng.random()
        if pr < 0.12 and "+" not in place:
            place += f"+{rng.choice([1, 2, 3, 4, 5, 8, 12, 16])}"
        elif pr < 0.16 and kind == "p":
            place += "%return"
        elif pr < 0.18:
            place = rng.choice(["no_such_func_xyz", "name_show", f"{name}%ret", f"{name}+-4"])
        nargs = rng.choice([0, 1, 1, 2, 3, 4])
        args = []
        for i in range(nargs):
            if rng.random() < 0.25:
                args.append(rng.choice(bad_args))
            else:
                args.append(good_arg(proto, kind == "r", i))
        if rng.random() < 0.06:
            args.append("$arg*")
        lines.append(" ".join([head, place, *args]))
        if k % 40 == 0:  # a multi-probe sequence
            ev = f"kprobes/mp{seed}_{k}"
            lines.append(f"!keep p:{ev} {name} x=%{regs[0]}")
            other = fn()[0]
            lines.append(f"p:{ev} {other} x=%{regs[0]}")
            lines.append(f"p:{ev} {other} y=%{regs[0]}")
            lines.append(f"p:{ev} {other} x=%{regs[0]}:u8")
            lines.append(f"r:{ev} {other}")
            lines.append(f"p:{ev} {name} x=%{regs[0]}")
            lines.append(f"-:{ev} {name}")
            lines.append(f"-:{ev}")
            lines.append("!clear")
    lines.append("-:kprobes/never_created")
    return lines


def _layout(ev, types: dict) -> list[tuple[str, int, int, int]]:
    """The event's argument fields as the format file lists them: (name, offset, size, signed);
    fields follow the 8-byte common header and __probe_ip (p) or __probe_func/__probe_ret_ip (r),
    packed without padding (parg->offset)."""
    off = 8 + (16 if ev.is_return else 8)
    out = []
    for a in ev.args:
        size, _, signed = types[a.type_id]
        n = size * (a.count or 1)
        out.append((a.name, off, n, int(signed)))
        off += n
    return out


def compare(image: Image, results: list[dict], show: int) -> int:
    """Replay the oracle's lines through EventSet and count agreements."""
    events = EventSet(ImageEnv(image))
    total = agree = 0
    layouts = layout_agree = readbacks = readback_agree = 0
    kinds: Counter = Counter()
    shown = 0
    for rec in results:
        op, line = rec.get("op"), rec["line"]
        if op == "clear":
            events.clear()
            continue
        if line.startswith("!keep "):
            line = line[len("!keep "):]
        r = events.write(line, keep=(op == "keep"))
        e = r.error
        ours = (r.ok, e.errno if e else None, e.message if e else None, e.caret if e else None)
        theirs = (bool(rec.get("ok")), errno_name(rec.get("error")), rec.get("error_message"),
                  rec.get("caret"))
        if rec.get("crash"):
            continue
        total += 1
        if ours == theirs and r.ok and r.event is not None and rec.get("readback"):
            readbacks += 1
            rb = rec["readback"][-1] if isinstance(rec["readback"], list) else rec["readback"]
            norm = re.compile(r"^r\d*:")  # the kernel prints its default maxactive
            readback_agree += norm.sub("r:", rb) == norm.sub("r:", r.event.readback())
            if rec.get("events"):
                layouts += 1
                got = _layout(r.event, FETCH_TYPES[events.rules])
                want = [(f["field"].split()[-1].split("[")[0], f["offset"], f["size"], f["signed"])
                        for f in rec["events"][0]["fields"] if "__probe_" not in f["field"]]
                if got == want:
                    layout_agree += 1
                elif shown < show:
                    shown += 1
                    print(f"line {rec.get('lineno')}: {line}\n   layout ours {got}\n   kernel     {want}")
        if ours == theirs:
            agree += 1
            kinds["agree " + ("ok" if r.ok else (e.log_id or e.errno))] += 1
            continue
        kinds["DISAGREE kernel " + str(rec.get("error_message") or rec.get("error") or "ok")] += 1
        if shown < show:
            shown += 1
            print(f"line {rec.get('lineno')}: {line}\n   ours   {ours}\n   kernel {theirs}")
            if rec.get("kernel_msgs"):
                print(f"   dmesg  {rec['kernel_msgs'][:2]}")
    print(f"\n{agree}/{total} lines agree ({100.0 * agree / max(total, 1):.1f}%)")
    print(f"readback of accepted lines: {readback_agree}/{readbacks}; "
          f"event field layout (name, offset, size, signed): {layout_agree}/{layouts}")
    for k, c in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {c:5d}  {k}")
    return 0 if agree == total else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("vmlinux")
    g.add_argument("-n", type=int, default=300)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("-o", "--out", default="-")
    c = sub.add_parser("compare")
    c.add_argument("vmlinux")
    c.add_argument("results")
    c.add_argument("--show", type=int, default=20)
    a = ap.parse_args()
    image = Image.open(a.vmlinux)
    if a.cmd == "generate":
        text = "\n".join(generate(image, a.n, a.seed)) + "\n"
        if a.out == "-":
            sys.stdout.write(text)
        else:
            Path(a.out).write_text(text)
        return 0
    with open(a.results, encoding="utf-8") as f:
        results = [json.loads(line) for line in f if line.strip()]
    return compare(image, results, a.show)


if __name__ == "__main__":
    sys.exit(main())
