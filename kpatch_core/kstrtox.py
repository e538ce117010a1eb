"""The kernel's number parsers (``lib/kstrtox.c``): ASCII digits only, 64-bit ranges.

Python's ``int()`` and ``str.isdigit`` take any Unicode digit (``int("\u0664") == 4``); the
kernel's ``_parse_integer`` takes ``0-9a-fA-F`` and nothing else, and refuses values past the
type with ``-ERANGE``.  Every number a user writes (targets, kprobe_events lines, offsets) is
parsed here.

>>> kstrtoull("0x10"), kstrtoull("\u0664"), kstrtoull("18446744073709551616")
((16, ''), (None, 'EINVAL'), (None, 'ERANGE'))
"""
from __future__ import annotations

EINVAL = "EINVAL"
ERANGE = "ERANGE"
UINT_MAX = 0xFFFFFFFF
ULONG_MAX = (1 << 64) - 1
LONG_MAX = (1 << 63) - 1
_HEX = "0123456789abcdefABCDEF"


def is_digit(ch: str) -> bool:
    """``isdigit()`` of the kernel's ctype: ``0``-``9`` only."""
    return len(ch) == 1 and "0" <= ch <= "9"


def _radix(s: str, base: int) -> tuple[str, int]:
    """``_parse_integer_fixup_radix``."""
    if base == 0:
        if s[:1] == "0":
            base = 16 if s[1:2].lower() == "x" and s[2:3] and s[2] in _HEX else 8
        else:
            base = 10
    if base == 16 and s[:2].lower() == "0x":
        s = s[2:]
    return s, base


def _digits(s: str, base: int) -> int:
    """``_parse_integer``: how many leading characters of ``s`` are ASCII digits in ``base``."""
    n = 0
    for ch in s:
        v = int(ch, 36) if ch.isascii() and ch.isalnum() else 99
        if v >= base:
            break
        n += 1
    return n


def kstrtoull(s: str, base: int = 0) -> tuple[int | None, str]:
    """``kstrtoull``: (value, "") or (None, errno); a leading '+' and a trailing newline are
    allowed."""
    s = s.removeprefix("+")
    s, base = _radix(s, base)
    n = _digits(s, base)
    if n == 0 or s[n:] not in ("", "\n"):
        return None, EINVAL
    v = int(s[:n], base)
    if v > ULONG_MAX:
        return None, ERANGE
    return v, ""


def kstrtoul(s: str, base: int = 0) -> tuple[int | None, str]:
    """``kstrtoul`` (64-bit)."""
    return kstrtoull(s, base)


def kstrtouint(s: str, base: int = 0) -> tuple[int | None, str]:
    """``kstrtouint``."""
    v, err = kstrtoull(s, base)
    if v is not None and v > UINT_MAX:
        return None, ERANGE
    return v, err


def kstrtol(s: str, base: int = 0) -> tuple[int | None, str]:
    """``kstrtol`` (64-bit long)."""
    if s.startswith("-"):
        v, err = kstrtoull(s[1:], base)
        if v is None:
            return None, err
        if v > LONG_MAX + 1:
            return None, ERANGE
        return -v, ""
    v, err = kstrtoull(s, base)
    if v is not None and v > LONG_MAX:
        return None, ERANGE
    return v, err


def simple_strtoul(s: str, base: int = 0) -> tuple[int, int]:
    """``simple_strtoul``: (value, index of the first unparsed character)."""
    rest, base = _radix(s, base)
    skipped = len(s) - len(rest)
    n = _digits(rest, base)
    return (int(rest[:n], base) & ULONG_MAX if n else 0), skipped + n


def parse_ulong(s: str) -> int:
    """``kstrtoul(s, 0)`` for callers that want an exception: ValueError naming the problem."""
    v, err = kstrtoull(s, 0)
    if v is None:
        raise ValueError("out of range (2^64 or more)" if err == ERANGE else
                         "is not a number (decimal, 0x hex or 0 octal; ASCII digits)")
    return v


def parse_long(s: str) -> int:
    """``kstrtol(s, 0)`` with a ValueError, as :func:`parse_ulong`."""
    v, err = kstrtol(s, 0)
    if v is None:
        raise ValueError("out of range (a signed 64-bit long)" if err == ERANGE else
                         "is not a number (decimal, 0x hex or 0 octal; ASCII digits)")
    return v
