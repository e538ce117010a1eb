"""Probe lists from the files tracing tools ship: bpftrace scripts, BCC Python tools, libbpf
BPF objects (and binaries embedding them), plain target lists.

:func:`read_probe_file` picks the reader by content and returns a :class:`ProbeFile`: the
kernel-function probes found (each a :class:`ProbeSpec` with where it was found), the probes
of other kinds it skipped (uprobes, tracepoints...), and what it could not resolve statically.
:func:`resolve` turns the specs into targets for an image (BCC's ``event_re`` regexes are
matched against ``available_filter_functions`` there).

>>> pf = read_probe_file("/usr/sbin/vfsstat.bt")                 # doctest: +SKIP
>>> [str(s.target) for s in pf.specs][:2]                         # doctest: +SKIP
['kprobe:vfs_read*', 'kprobe:vfs_write*']
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

from ..errors import InputError
from ..target import Target
from .bcc import kprobe_functions, read_bcc, syscall_fnname
from .bpftrace import read_bpftrace
from .libbpf_obj import read_libbpf
from .plain import read_plain
from .probe_file import ProbeFile, ProbeSpec

__all__ = ["ProbeFile", "ProbeSpec", "detect", "read_probe_file", "resolve"]

if TYPE_CHECKING:
    from ..image import Image


def detect(data: bytes) -> str:
    """The reader for a file's content: ``libbpf`` (ELF), ``bcc`` (Python), ``bpftrace``,
    ``shell`` (a wrapper script: refused), or ``targets`` (one target a line)."""
    if data[:4] == b"\x7fELF":
        return "libbpf"
    head = data[:4096].decode("utf-8", "replace")
    first = head.splitlines()[0] if head else ""
    if first.startswith("#!") and re.search(r"/(ba|da|z)?sh\b", first):
        return "shell"
    if first.startswith("#!") and "python" in first or re.search(r"^\s*(from bcc import|import bcc)", head, re.MULTILINE):
        return "bcc"
    if first.startswith("#!") and "bpftrace" in first or \
            re.search(r"^\s*(BEGIN|END|k(?:ret)?probe:|kfunc:|kretfunc:|fentry:|fexit:|tracepoint:)[^\n]*$",
                      head, re.MULTILINE) and re.search(r"\{", head):
        return "bpftrace"
    return "targets"


def read_probe_file(path: str) -> ProbeFile:
    """Read ``path`` with the reader its content calls for; raises InputError when unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read probe file ({e.strerror})") from None
    kind = detect(data)
    if kind == "libbpf":
        return read_libbpf(path, data)
    text = data.decode("utf-8", "replace")
    if kind == "shell":
        raise InputError(f"{path}: a shell script, not a probe file; give the bpftrace script, "
                         "BCC tool, BPF object or targets list it runs")
    if kind == "bcc":
        return read_bcc(path, text)
    if kind == "bpftrace":
        return read_bpftrace(path, text)
    return read_plain(path, text)


def resolve(image: Image, pf: ProbeFile) -> list[Target]:
    """The targets of ``pf`` on ``image``: BCC's ``get_syscall_fnname`` prefixed and its
    ``event_re`` regexes expanded as BCC does (:mod:`kpatch_core.readers.bcc`)."""
    out: list[Target] = []
    for s in pf.specs:
        if s.bcc_syscall is not None:
            name = syscall_fnname(image, s.bcc_syscall)
            out.append(attrs.evolve(s.target, text=name, symbol=name,
                                    spelling=s.target.spelling.replace("{}", name)))
        elif s.regex is not None:
            for name in kprobe_functions(image, s.regex):
                out.append(attrs.evolve(s.target, text=name, symbol=name,
                                        spelling=s.target.spelling.replace("{}", name)))
        else:
            out.append(s.target)
    return out
