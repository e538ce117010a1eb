"""Help for a name the kernel does not take: what the user probably meant.

For a name with no kallsyms symbol: the compiler clones of it (``NAME.isra.0``,
``NAME.constprop.0``, ``NAME.part.0``, ``NAME.cold``, ``NAME.llvm.123``), its syscall entry on
this architecture (the backend's wrapper prefix: ``openat`` -> ``__x64_sys_openat``), and close
names (difflib).  For a name with several symbols: the address of each copy, since the kernel
wants ``0xADDR`` (or a unique clone name) then.

>>> h = name_help(image, "finish_task_switch")                # doctest: +SKIP
>>> h.candidates                                              # doctest: +SKIP
('finish_task_switch.isra.0',)
"""
from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING

import attrs

from .spec import text_functions

if TYPE_CHECKING:
    from .image import Image

# GCC/LLVM clone suffixes (scripts/kallsyms keeps them; the kernel looks names up verbatim)
CLONE_SUFFIX = re.compile(r"(?:\.(?:isra|constprop|part|cold|llvm|lto_priv|localalias|\d+))+$")
_SYSCALL_STEMS = ("sys_", "__se_sys_", "__do_sys_", "do_sys_")


@attrs.frozen
class NameHelp:
    """Suggestions for one name: ``candidates`` to use instead, and a one-line ``hint``."""

    name: str
    hint: str
    candidates: tuple[str, ...] = ()


def clones_of(image: Image, name: str) -> list[str]:
    """Kallsyms names that are compiler clones of ``name`` (``name.isra.0``, ``name.cold``...)."""
    prefix = name + "."
    return sorted({n for n in image.kallsyms.names if n.startswith(prefix)
                   and CLONE_SUFFIX.fullmatch(n[len(name):])})


def syscall_entries(image: Image, name: str) -> list[str]:
    """The arch's syscall entry for ``name`` (``openat``, ``sys_openat``, ``__x64_sys_openat``
    on another arch), when the image has it."""
    stem = name
    m = re.match(r"^__[a-z0-9]+_sys_(\w+)$", name)
    if m:
        stem = m.group(1)
    else:
        for p in _SYSCALL_STEMS:
            if name.startswith(p):
                stem = name[len(p):]
                break
    prefix = image.backend.syscall_prefix_for(image.features)
    out = [n for n in (prefix + stem, "sys_" + stem, "__se_sys_" + stem)
           if n != name and image.kallsyms.count(n)]
    return list(dict.fromkeys(out))


def close_names(image: Image, name: str, n: int = 5) -> list[str]:
    """Function names close to ``name`` (difflib ratio >= 0.8), best first."""
    funcs = set(text_functions(image))
    # difflib over ~100k names is slow; names sharing the first 3 characters or the length
    # within a few characters are enough for a typo
    head = name[:3]
    pool = [f for f in funcs if f.startswith(head) or abs(len(f) - len(name)) <= 2 and f[:1] == name[:1]]
    return difflib.get_close_matches(name, pool, n=n, cutoff=0.8)


def name_help(image: Image, name: str) -> NameHelp:
    """What to suggest for ``name`` (missing or non-unique in kallsyms)."""
    count = image.kallsyms.count(name)
    if count > 1:
        addrs = image.kallsyms.addresses_of(name)
        shown = ", ".join(hex(a) for a in addrs[:8])
        return NameHelp(name, f"{count} symbols are called {name}: probe one by address "
                        f"({shown}) or by a unique name", tuple(hex(a) for a in addrs))
    base = CLONE_SUFFIX.sub("", name)
    cands = [c for c in clones_of(image, base) if c != name]
    if base != name and image.kallsyms.count(base):
        cands.insert(0, base)
    cands += syscall_entries(image, name)
    if cands:
        what = "compiler clone" if any("." in c for c in cands) else "kernel name"
        return NameHelp(name, f"not in kallsyms; the {what}: {', '.join(cands[:6])}", tuple(cands))
    close = close_names(image, name)
    if close:
        return NameHelp(name, f"not in kallsyms; close names: {', '.join(close)}", tuple(close))
    return NameHelp(name, "not in kallsyms, and no clone, syscall entry or close name; "
                    "'kpatch-analyze list VMLINUX PATTERN' lists functions")
