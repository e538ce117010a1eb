"""What a matrix is made of: the probes (rows) and the kernels (columns).

A probe is an attach type and a target as a tracing tool spells it (``kprobe:vfs_read``,
``kretprobe:tcp_connect``, ``fentry:tcp_sendmsg``; tool files are read by
:mod:`kpatch_core.readers`); a kernel is an image path (a vmlinux, or a /boot directory that
:meth:`kpatch_core.Image.open` reads) or a Debian build fetched by name on demand.

>>> p = probe_from_target("r vfs_read")
>>> p.attach, p.target, str(p)
('kretprobe', 'vfs_read', 'kretprobe:vfs_read')
>>> kernel_ref("--debian", "6.12.117+deb13-amd64").debarch
'amd64'
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence

import attrs

from ..errors import InputError, UsageError
from ..target import ATTACH_TYPES, Target, parse_target, spelling_source


@attrs.frozen
class Probe:
    """One matrix row: an attach type and a target name (``SYM``, ``SYM+OFF``, a glob,
    ``0xADDR``).  ``spec`` is the target as the tool spelled it (it decides, e.g., the errno
    perf's kprobe PMU gives a BPF tool); rows are identified by attach type and name."""

    attach: str
    target: str
    tools: tuple[str, ...] = attrs.field(default=(), eq=False)  # where the probe came from
    spec: Target | None = attrs.field(default=None, eq=False)

    def __str__(self) -> str:
        return f"{self.attach}:{self.target}"

    @property
    def kprobe_target(self) -> Target:
        """The target as :func:`kpatch_core.attach.check_targets` takes it."""
        if self.spec is not None:
            return self.spec
        return parse_target(("r " if ATTACH_TYPES[self.attach] == "r" else "") + self.target)

    @property
    def symbol(self) -> str | None:
        """The function name the probe names, or None for a raw address."""
        return self.kprobe_target.symbol

    @property
    def source(self) -> str:
        """Whose spelling the probe is in (bpftrace, libbpf, bcc, kprobe_events, perf)."""
        return spelling_source(self.kprobe_target)


def probe_from_target(spec: str | Target, tool: str | None = None) -> Probe:
    """A probe from a parsed target, or from any spelling :func:`parse_target` reads
    (``SYM``, ``r SYM+OFF``, ``kprobe:SYM``, ``fentry:SYM``, ``kretprobe/SYM`` ...)."""
    t = parse_target(spec) if isinstance(spec, str) else spec
    return Probe(t.attach, t.text, (tool,) if tool else (), t)


def parse_probe(spec: str) -> Probe:
    """A probe from the command line (any spelling :func:`parse_target` reads)."""
    return probe_from_target(spec)


def probes_from_file(path: str) -> tuple[list[Probe], list[str]]:
    """The probes of a tool file (bpftrace script, BCC tool, libbpf object) or a plain target
    list, read by :mod:`kpatch_core.readers`; and notes on what could not be taken (probes
    only known at run time, BCC regexes and syscall names resolved per image)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file (give a target list or a tool script)")
    from ..readers import read_probe_file
    pf = read_probe_file(path)
    tool = os.path.basename(path)
    out, notes = [], [f"{tool}: {u} (known only at run time)" for u in pf.unresolved]
    for s in pf.specs:
        if s.regex is not None or s.bcc_syscall is not None:
            notes.append(f"{tool}: {s.regex or s.bcc_syscall} (BCC "
                         f"{'event_re' if s.regex else 'get_syscall_fnname'}: not in the matrix)")
            continue
        out.append(probe_from_target(s.target, tool))
    return out, notes


def dedupe(probes: Iterable[Probe]) -> list[Probe]:
    """Probes in first-seen order, one row per (attach, target), tool names merged."""
    rows: dict[tuple[str, str], Probe] = {}
    for p in probes:
        key = (p.attach, p.target)
        if key in rows:
            old = rows[key]
            tools = old.tools + tuple(t for t in p.tools if t not in old.tools)
            rows[key] = attrs.evolve(old, tools=tools)
        else:
            rows[key] = p
    return list(rows.values())


def expand_attach(probes: Sequence[Probe], attach: Sequence[str]) -> list[Probe]:
    """Each function-entry probe (``SYM`` or a glob, no offset) once per attach type in
    ``attach`` (kprobe, kretprobe, fentry, fexit, fprobe, fprobe_return, kprobe_multi ...)."""
    for a in attach:
        if a not in ATTACH_TYPES:
            raise UsageError(f"--attach {a!r}: expected one of {', '.join(ATTACH_TYPES)}")
    out = []
    for p in probes:
        t = p.kprobe_target
        if t.symbol is None or t.offset or t.module or t.syscall:
            out.append(p)
            continue
        for a in attach:
            spelling = f"{a}:{t.text}" if p.source == "bpftrace" and a in _BPFTRACE else ""
            spec = attrs.evolve(t, attach=a, kind=ATTACH_TYPES[a], spelling=spelling)
            out.append(attrs.evolve(p, attach=a, spec=spec))
    return dedupe(out)


_BPFTRACE = ("kprobe", "kretprobe", "fentry", "fexit")


def probes_digest(probes: Sequence[Probe]) -> str:
    """The identity of a probe list (the store key next to the build-id)."""
    h = hashlib.sha1("\n".join(f"{p} {p.source}" for p in probes).encode())
    return h.hexdigest()[:16]


# Debian flavours -> Debian architecture (the flavour is the last part of KVER-FLAVOUR)
_DEBARCH = (("powerpc64le", "ppc64el"), ("ppc64el", "ppc64el"), ("amd64", "amd64"),
            ("arm64", "arm64"), ("riscv64", "riscv64"), ("s390x", "s390x"))


@attrs.frozen
class KernelRef:
    """One matrix column as asked: an image path, or a Debian build to fetch."""

    label: str
    path: str | None = None
    debian: str | None = None  # KVER-FLAVOUR, e.g. 6.12.117+deb13-amd64
    debarch: str | None = None


_BOOT_IMAGES = ("vmlinuz-*", "vmlinux-*", "Image-*", "bzImage-*")


def kernel_refs(path: str) -> list[KernelRef]:
    """Columns for a path: the image itself, or for a directory (a /boot) every kernel image
    in it (``vmlinuz-*``, ``vmlinux-*``; :meth:`Image.open` finds the System.map and config
    beside each)."""
    if not os.path.isdir(path):
        return [kernel_ref("path", path)]
    import glob
    found = sorted({f for pat in _BOOT_IMAGES for f in glob.glob(os.path.join(path, pat))
                    if os.path.isfile(f) and not f.endswith((".old", ".sig"))})
    if not found:
        raise InputError(f"{path}: a directory without kernel images (vmlinuz-*, vmlinux-*); "
                         "give a vmlinux or a /boot directory")
    return [KernelRef(f, path=f) for f in found]


def kernel_ref(kind: str, value: str) -> KernelRef:
    """A column from a path (``kind`` "path") or a Debian build name (``kind`` "--debian",
    ``NAME`` or ``NAME:DEBARCH``)."""
    if kind == "path":
        if not os.path.exists(value):
            raise InputError(f"{value}: no such kernel image or /boot directory")
        return KernelRef(value, path=value)
    name, _, debarch = value.partition(":")
    if not re.match(r"^\d+\.\d+[\w.+~-]*-[a-z0-9-]+$", name):
        raise UsageError(f"--debian {value!r}: expected KVER-FLAVOUR, e.g. 6.12.117+deb13-amd64 "
                         "or 5.10.0-32-arm64")
    if not debarch:
        flavour = name.split("-")
        debarch = next((d for key, d in _DEBARCH for part in flavour if part == key), "")
        if not debarch:
            raise UsageError(f"--debian {value!r}: cannot tell the Debian architecture from the "
                             "flavour; write NAME:DEBARCH (amd64 arm64 riscv64 s390x ppc64el)")
    return KernelRef(name, debian=name, debarch=debarch)
