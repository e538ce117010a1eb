"""``kpatch-analyze matrix``: probes x kernels, computed per kernel on Dask.

    kpatch-analyze matrix --from TOOL_OR_LIST [-p PROBE ...] IMAGE... [--debian KVER-FLAVOUR ...]
                          [--attach kprobe,kretprobe] [--json] [--html FILE]
                          [--scheduler tcp://HOST:8786] [--workers N] [--store URL | --no-store]
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from .errors import UsageError
from .progress import Progress


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``matrix`` subcommand."""
    m = sub.add_parser(
        "matrix", help="probes x kernels: where a tool's probes attach, and why not",
        description="Probes x kernels: each cell the verdict of a single `check` of that probe "
                    "on that kernel, grouped by what changed between kernels (renamed into a "
                    "clone, notrace, blacklisted, inlined, vanished, moved, BTF signature). One "
                    "Dask task per kernel: an embedded local cluster by default, or --scheduler.")
    m.add_argument("images", nargs="*", metavar="IMAGE",
                   help="vmlinux or /boot directory; kprobe:SYM / kretprobe:SYM here are probes")
    m.add_argument("--from", dest="from_files", action="append", default=[], metavar="FILE",
                   help="probes of a tool (bpftrace script, BCC tool, libbpf object when "
                        "kpatch_core.readers reads it) or a target list (one a line, 'r ' return "
                        "probes, '#' comments); repeatable")
    m.add_argument("-p", "--probe", dest="probes", action="append", default=[], metavar="PROBE",
                   help="a probe in any spelling `check` reads: SYM, SYM+OFF, 'r SYM', kprobe:SYM, "
                        "kretprobe:SYM, fentry:SYM, globs (vfs_*); repeatable")
    m.add_argument("--debian", action="append", default=[], metavar="KVER-FLAVOUR[:DEBARCH]",
                   help="a Debian build fetched on demand, e.g. 6.12.117+deb13-amd64; repeatable")
    m.add_argument("--attach", metavar="LIST",
                   help="attach types for every function probe, e.g. kprobe,kretprobe,fentry "
                        "(kprobe kretprobe fentry fexit fprobe fprobe_return kprobe_multi "
                        "kretprobe_multi; default: as the probe list says)")
    m.add_argument("--json", action="store_true", help="the matrix as one JSON document")
    m.add_argument("--html", metavar="FILE", help="also write an HTML heatmap (one offline file)")
    m.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler to use (tcp://HOST:8786); default: an embedded local "
                        "cluster sized to the machine")
    m.add_argument("--workers", type=int, metavar="N",
                   help="worker processes of the embedded cluster (default: one per core, "
                        "fewer when memory is short)")
    m.add_argument("--store", metavar="URL",
                   help="where columns are kept by build-id: a directory or fsspec URL "
                        "(s3://, gs://, file://); default $KPATCH_MATRIX_STORE or "
                        "~/.cache/kpatch-core/matrix")
    m.add_argument("--no-store", action="store_true", help="compute every column, keep nothing")


def run(args: argparse.Namespace) -> int:
    """Compute and print the matrix; exit 1 when a kernel's column failed."""
    from .matrix import compute_matrix
    from .matrix.plan import (
        dedupe,
        expand_attach,
        kernel_refs,
        kernel_ref,
        parse_probe,
        probes_from_file,
    )
    from .matrix.render import html_page, json_text, text
    from .matrix.store import default_url

    probes = []
    for f in args.from_files:
        got, notes = probes_from_file(f)
        probes += got
        for n in notes:
            print(f"kpatch-analyze: note: not in the matrix: {n}", file=sys.stderr)
    probes += [parse_probe(p) for p in args.probes]
    paths = []
    for item in args.images:
        if re.match(r"^(kprobe|kretprobe|k|kr|fentry|fexit|kfunc|kretfunc):", item) and \
                not os.path.exists(item):
            probes.append(parse_probe(item))
        else:
            paths.append(item)
    if not probes:
        raise UsageError("matrix: no probes; give --from FILE or -p PROBE")
    probes = dedupe(probes)
    if args.attach:
        probes = expand_attach(probes, [a.strip() for a in args.attach.split(",") if a.strip()])
    kernels = [k for p in paths for k in kernel_refs(p)]
    kernels += [kernel_ref("--debian", d) for d in args.debian]
    if not kernels:
        raise UsageError("matrix: no kernels; give IMAGE paths or --debian KVER-FLAVOUR")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers: expected a positive number")
    if args.no_store and args.store:
        raise UsageError("--store and --no-store exclude each other")
    store = None if args.no_store else (args.store or default_url())
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    bar = Progress("kernels")
    m = compute_matrix(probes, kernels, scheduler=args.scheduler, workers=args.workers,
                       store=store, progress=bar)
    bar.close()
    sys.stdout.write(json_text(m) if args.json else text(m))
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write(html_page(m))
        except OSError as e:
            from .errors import InputError
            raise InputError(f"--html {args.html}: cannot write ({e.strerror})") from None
    if m.failed:
        names = ", ".join(f"{c.label} ({c.error})" for c in m.failed)
        print(f"kpatch-analyze: error: {len(m.failed)} of {len(m.columns)} kernel(s) failed: "
              f"{names}", file=sys.stderr)
        return 1
    return 0
