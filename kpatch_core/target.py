"""Probe targets as tracing tools write them: ``SYM``, ``SYM+OFF``, ``0xADDR``, ``MOD:SYM``.

>>> parse_target("vfs_read+0x10")
Target(text='vfs_read+0x10', kind='p', symbol='vfs_read', offset=16, address=None, module=None)
>>> parse_target("r 0xffffffff81000000").kind
'r'
"""
from __future__ import annotations

import re

import attrs

from .errors import InputError, UsageError

_SYM = re.compile(r"^(?:(?P<mod>[A-Za-z0-9_\-]+):)?(?P<sym>[A-Za-z_.$][\w.$]*)(?:(?P<sign>[+-])(?P<off>\w+))?$")


@attrs.frozen
class Target:
    """One probe target: a symbol with an offset, or an absolute address."""

    text: str
    kind: str = "p"  # "p" kprobe, "r" kretprobe
    symbol: str | None = None
    offset: int = 0
    address: int | None = None
    module: str | None = None

    def __str__(self) -> str:
        return ("r " if self.kind == "r" else "") + self.text


def _kstrtol(s: str) -> int:
    """The kernel's kstrtol(s, 0): 0x hex, leading-0 octal, else decimal."""
    t = s.lower()
    if t.startswith("0x"):
        return int(t[2:], 16)
    if len(t) > 1 and t.startswith("0"):
        return int(t[1:], 8)
    return int(t, 10)


def parse_target(spec: str) -> Target:
    """Parse one target line (optionally prefixed ``p ``/``r ``/``r:``); raises UsageError."""
    line = spec.split("#", 1)[0].strip()
    kind = "p"
    m = re.match(r"^([pr])(?:\s+|:)(.*)$", line)
    if m:
        kind, line = m.group(1), m.group(2).strip()
    if not line or " " in line:
        raise UsageError(f"malformed target {spec.strip()!r}: expected SYM, SYM+OFF, 0xADDR or "
                         "MOD:SYM (prefix 'r ' for a return probe)")
    if re.match(r"^(0[xX][0-9a-fA-F]+|\d+)$", line):
        try:
            return Target(line, kind, address=_kstrtol(line))
        except ValueError:
            pass
        raise UsageError(f"malformed target {line!r}: bad address")
    m = _SYM.match(line)
    if not m:
        raise UsageError(f"malformed target {line!r}: expected SYM, SYM+OFF (decimal or 0x), "
                         "0xADDR or MOD:SYM")
    off = 0
    if m.group("off") is not None:
        try:
            off = _kstrtol(m.group("off"))
        except ValueError:
            raise UsageError(f"malformed target {line!r}: offset {m.group('off')!r} is not a number "
                             "(decimal, 0x hex or 0 octal)") from None
        if m.group("sign") == "-":
            off = -off
    return Target(line, kind, symbol=m.group("sym"), offset=off, module=m.group("mod"))


def read_targets(path: str) -> list[Target]:
    """Read a targets file (one target a line, ``#`` comments, ``r `` for return probes)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read targets file ({e.strerror})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.split("#", 1)[0].strip():
            continue
        try:
            out.append(parse_target(line))
        except UsageError as e:
            raise UsageError(f"{path}:{n}: {e}") from None
    return out
