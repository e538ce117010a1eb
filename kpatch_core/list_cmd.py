"""``kpatch-analyze list VMLINUX [PATTERN] [--kind K] [--probeable]``: function names, like
``perf probe -F`` and ``bpftrace -l``.

The list each kind starts from is the one its tools read: kprobe/kretprobe the kallsyms
function symbols (perf probe -F), fentry/fexit the BTF functions that ftrace can hook
(bpftrace -l 'fentry:*'), fprobe and kprobe_multi ``available_filter_functions``, lsm the
BPF LSM hooks (``bpf_lsm_hooks`` of the image, without the ``bpf_lsm_`` prefix, as
``lsm/HOOK`` and bpftrace's ``lsm:HOOK`` name them).
``--probeable`` keeps the names whose verdict at the function entry is "accepted".

>>> main(["list", "vmlinux", "tcp_v4_*", "--probeable"])       # doctest: +SKIP
tcp_v4_connect
...
"""
from __future__ import annotations

import argparse
import sys

from .attach import check_one
from .errors import UsageError
from .image import Image
from .spec import available_filter_functions, btf_function_names, glob_regex, text_functions
from .target import LSM_PREFIX, Target

KINDS = ("kprobe", "kretprobe", "fentry", "fexit", "fprobe", "kprobe_multi", "lsm")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``list`` subcommand."""
    p = sub.add_parser("list", help="list function names matching a glob",
                       description="Function names matching a glob, from the list the tools of "
                                   "--kind read (like perf probe -F, bpftrace -l).")
    p.add_argument("vmlinux", help="vmlinux ELF image (unstripped)")
    p.add_argument("pattern", nargs="?", default="*", help="shell glob, e.g. 'tcp_*' (default: all)")
    p.add_argument("--kind", choices=KINDS, default="kprobe",
                   help="attach type whose list is read (default kprobe)")
    p.add_argument("--probeable", action="store_true",
                   help="only names whose verdict at the function entry is accepted")


def names_for(image: Image, pattern: str, kind: str) -> list[str]:
    """Distinct names matching ``pattern`` in the list ``kind``'s tools read, in address order
    (lsm hooks: by name)."""
    rx = glob_regex(pattern)
    if kind == "lsm":  # bpf_lsm_verify_prog's bpf_lsm_hooks (else every bpf_lsm_ BTF function)
        from .bpf_trampoline import btf_id_set
        hooks = btf_id_set(image, "bpf_lsm_hooks")
        found = hooks if hooks is not None else btf_function_names(image)
        return sorted(n[len(LSM_PREFIX):] for n in found
                      if n.startswith(LSM_PREFIX) and rx.match(n[len(LSM_PREFIX):]))
    if kind in ("kprobe", "kretprobe"):
        pool: tuple[str, ...] = text_functions(image)
    else:
        pool = available_filter_functions(image)
    names = list(dict.fromkeys(n for n in pool if rx.match(n)))
    if kind in ("fentry", "fexit"):
        btf_names = btf_function_names(image)
        names = [n for n in names if n in btf_names]
    return names


def _entry_target(name: str, kind: str) -> Target:
    ret = kind in ("kretprobe", "fexit")
    attach = {"fprobe": "fprobe"}.get(kind, kind)
    return Target(name, "r" if ret else "p", symbol=name, attach=attach)


def run(args: argparse.Namespace) -> int:
    """Print the names, one a line; exit 1 when nothing matches."""
    if not args.pattern.strip():
        raise UsageError("list: empty pattern; give a glob such as 'tcp_*'")
    image = Image.open(args.vmlinux)
    names = names_for(image, args.pattern, args.kind)
    if args.probeable:
        names = [n for n in names if check_one(image, _entry_target(n, args.kind)).ok]
    out = sys.stdout
    for n in names:
        out.write(n + "\n")
    if not names:
        print(f"kpatch-analyze: no {args.kind} function matches {args.pattern!r} in {image.path}"
              + (" (--probeable)" if args.probeable else ""), file=sys.stderr)
        return 1
    return 0
