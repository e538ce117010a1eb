"""What a matrix is made of: the probes (rows) and the kernels (columns).

A probe is an attach type and a target as a tracing tool spells it (``kprobe:vfs_read``,
``kretprobe:tcp_connect``); a kernel is an image path (a vmlinux, or a /boot directory that
:meth:`kpatch_core.Image.open` reads) or a Debian build fetched by name on demand.

>>> p = probe_from_target("r vfs_read")
>>> p.attach, p.target, str(p)
('kretprobe', 'vfs_read', 'kretprobe:vfs_read')
>>> kernel_ref("--debian", "6.12.117+deb13-amd64").debarch
'amd64'
"""
from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Iterable, Sequence

import attrs

from ..errors import InputError, KpatchError, UsageError
from ..target import Target, parse_target, read_targets

# Attach types a cell can hold, and the kprobe_events kind the kernel registers for each.
# fentry/fprobe join when a verdict for them exists (kpatch_core.readers / attach types).
ATTACH_KINDS = {"kprobe": "p", "kretprobe": "r"}


@attrs.frozen
class Probe:
    """One matrix row: an attach type and a kprobe target (``SYM``, ``SYM+OFF``, ``0xADDR``)."""

    attach: str
    target: str
    tools: tuple[str, ...] = ()  # where the probe came from (tool names); not part of identity

    def __str__(self) -> str:
        return f"{self.attach}:{self.target}"

    @property
    def kprobe_target(self) -> Target:
        """The target as ``check`` takes it (``r SYM`` for a kretprobe)."""
        return parse_target(("r " if ATTACH_KINDS[self.attach] == "r" else "") + self.target)

    @property
    def symbol(self) -> str | None:
        """The function name the probe names, or None for a raw address."""
        return self.kprobe_target.symbol


def probe_from_target(spec: str | Target, tool: str | None = None) -> Probe:
    """A probe from a target line (``SYM``, ``r SYM+OFF``...; the oracle's targets format)."""
    t = parse_target(spec) if isinstance(spec, str) else spec
    attach = "kretprobe" if t.kind == "r" else "kprobe"
    return Probe(attach, t.text, (tool,) if tool else ())


def parse_probe(spec: str) -> Probe:
    """A probe from the command line: ``kprobe:SYM``, ``kretprobe:SYM``, or a target line."""
    m = re.match(r"^(kprobe|kretprobe|k|kr):(.+)$", spec.strip())
    if m:
        attach = {"k": "kprobe", "kr": "kretprobe"}.get(m.group(1), m.group(1))
        t = parse_target(m.group(2))  # validates the target syntax
        return Probe(attach, t.text)
    return probe_from_target(spec)


def _reader_probes(path: str) -> list[Probe] | None:
    """Probes from a tool file through ``kpatch_core.readers`` when that package is present
    and knows the format (bpftrace scripts, BCC tools, libbpf objects); None otherwise."""
    try:
        readers = importlib.import_module("kpatch_core.readers")
    except ImportError:
        return None
    read = getattr(readers, "read_probes", None) or getattr(readers, "read", None)
    if read is None:
        return None
    try:
        found = read(path)
    except KpatchError as e:  # the reader's own one-line input error
        raise InputError(f"{path}: {e}") from None
    out = []
    tool = os.path.basename(path)
    for item in found:
        attach = str(getattr(item, "attach", None) or getattr(item, "kind", "kprobe"))
        attach = {"p": "kprobe", "r": "kretprobe"}.get(attach, attach)
        target = getattr(item, "target", None) or getattr(item, "symbol", None)
        if attach in ATTACH_KINDS and isinstance(target, str):
            out.append(Probe(attach, str(target), (tool,)))
    return out


def probes_from_file(path: str) -> list[Probe]:
    """The probes of a tool (via :mod:`kpatch_core.readers` when it reads the format) or of a
    plain target list (one target a line, ``r `` return probes, ``#`` comments)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file (give a target list or a tool script)")
    if not path.endswith((".txt", ".list")):
        got = _reader_probes(path)
        if got is not None:
            return got
    tool = os.path.basename(path)
    return [probe_from_target(t, tool) for t in read_targets(path)]


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
    """Each function-entry probe (``SYM``, no offset) once per attach type in ``attach``."""
    for a in attach:
        if a not in ATTACH_KINDS:
            raise UsageError(f"--attach {a!r}: expected one of {', '.join(ATTACH_KINDS)}")
    out = []
    for p in probes:
        t = p.kprobe_target
        if t.symbol is not None and t.offset == 0:
            out += [attrs.evolve(p, attach=a) for a in attach]
        else:
            out.append(p)
    return dedupe(out)


def probes_digest(probes: Sequence[Probe]) -> str:
    """The identity of a probe list (the store key next to the build-id)."""
    h = hashlib.sha1("\n".join(str(p) for p in probes).encode())
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
