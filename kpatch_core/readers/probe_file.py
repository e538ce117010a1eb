"""The values a reader returns: :class:`ProbeSpec` (one probe) and :class:`ProbeFile`."""
from __future__ import annotations

import attrs

from ..target import Target


@attrs.frozen
class ProbeSpec:
    """One kernel-function probe a tool file asks for: the target, or a BCC regex."""

    target: Target
    line: int = 0  # 1-based line (0: not line-based, e.g. an ELF section)
    where: str = ""  # section name, function, or other locator
    regex: str | None = None  # BCC attach_kprobe(event_re=...): matched at resolve time
    bcc_syscall: str | None = None  # BCC get_syscall_fnname(NAME): prefixed at resolve time
    note: str = ""  # e.g. "BPF.support_kfunc() branch"


@attrs.frozen
class ProbeFile:
    """What one tool file asks for."""

    path: str
    reader: str  # "bpftrace", "bcc", "libbpf", "targets"
    specs: tuple[ProbeSpec, ...]
    skipped: tuple[str, ...] = ()  # probes of other kinds (uprobe, tracepoint, ...)
    unresolved: tuple[str, ...] = ()  # probes whose function is only known at run time
