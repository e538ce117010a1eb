"""bpftrace scripts: the probe list of every probe header.

A header is the text at brace depth 0 before a ``{``: comma- or newline-separated probes,
then an optional ``/predicate/``.  Comments, ``#include``/``#define`` lines and top-level
``struct``/``union`` definitions are skipped.  Kernel-function probes (``kprobe:``,
``kretprobe:``, ``kfunc:``/``fentry:``, ``kretfunc:``/``fexit:`` and their short aliases) become
targets, globs included (expanded against an image later); every other probe is listed as
skipped.

>>> [str(s.target) for s in read_bpftrace("x.bt", "kprobe:vfs_read { @=count(); }").specs]
['kprobe:vfs_read']
"""
from __future__ import annotations

import re

from ..errors import UsageError
from ..target import parse_target
from .probe_file import ProbeFile, ProbeSpec

_KERNEL = re.compile(r"^(kprobe|kretprobe|k|kr|kfunc|kretfunc|fentry|fexit|f|fr|lsm):")


def _strip(text: str) -> str:
    """Comments and string literals blanked (newlines kept, so line numbers survive)."""
    def blank(m: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))
    return re.sub(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', blank, text, flags=re.DOTALL)


def headers(text: str) -> list[tuple[str, int]]:
    """Every probe header with the line it starts on."""
    src = _strip(text)
    out = []
    depth, start = 0, 0
    i = 0
    while i < len(src):
        c = src[i]
        if c == "{":
            if depth == 0:
                head = src[start:i]
                out.append((head, src.count("\n", 0, start)))
            depth += 1
        elif c == "}":
            depth = max(depth - 1, 0)
            if depth == 0:
                start = i + 1
        elif c == ";" and depth == 0:  # end of a top-level struct definition
            start = i + 1
        i += 1
    res = []
    for head, base_line in out:
        lines = head.split("\n")
        kept = []
        for n, ln in enumerate(lines):
            if ln.lstrip().startswith("#"):
                continue
            kept.append((ln, base_line + n + 1))
        body = "\n".join(ln for ln, _ in kept)
        if re.match(r"^\s*(struct|union|enum)\b", body):
            continue
        body = re.sub(r"/[^/]*/\s*$", "", body.strip())  # the predicate
        first_line = next((n for ln, n in kept if ln.strip()), base_line + 1)
        res.append((body, first_line))
    return res


def read_bpftrace(path: str, text: str) -> ProbeFile:
    """The kernel-function probes of a bpftrace script."""
    specs, skipped, unresolved = [], [], []
    for head, line in headers(text):
        for probe in re.split(r"[,\s]+", head):
            probe = probe.strip()
            if not probe:
                continue
            if not _KERNEL.match(probe):
                skipped.append(probe)
                continue
            if "$" in probe:  # positional parameter: filled in on the command line
                unresolved.append(f"line {line}: {probe}")
                continue
            try:
                specs.append(ProbeSpec(parse_target(probe), line, probe))
            except UsageError as e:
                unresolved.append(f"line {line}: {probe}: {e}")
    return ProbeFile(path, "bpftrace", tuple(specs), tuple(skipped), tuple(unresolved))
