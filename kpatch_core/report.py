"""Image summaries: what ``kpatch-analyze VMLINUX`` prints (deciding here, printing in cli)."""
from __future__ import annotations

import collections
from typing import Iterator

import attrs

from .image import Image
from .probe import check
from .symbols import STT_FUNC, KSym
from .target import Target
from .verdict import Verdict


def functions(image: Image) -> Iterator[KSym]:
    """Every function kallsyms knows in core text (first alias per address, STT_FUNC)."""
    ks = image.kallsyms
    t = image.tables
    for j in range(len(ks.uaddrs)):
        addr = int(ks.uaddrs[j])
        if not t.is_core_text(addr):
            continue
        lo = int(ks.ufirst[j])
        hi = int(ks.ufirst[j + 1]) if j + 1 < len(ks.ufirst) else len(ks.names)
        if any(ks.symtab_type(i) == STT_FUNC for i in range(lo, hi)):
            yield KSym(ks.names[lo], addr, int(ks.usizes[j]))


def entry_verdict(image: Image, func: KSym) -> Verdict:
    """The verdict for a probe at ``func``'s entry, addressed by address (no uniqueness rule)."""
    return check(image, Target(hex(func.addr), "p", address=func.addr))


@attrs.frozen
class Summary:
    """Counts for the image summary."""

    arch: str
    version: str
    rules: str
    banner: str
    build_id: str | None
    facts: tuple[tuple[str, bool, str], ...]
    functions: int
    probeable_entries: int
    methods: tuple[tuple[str, int], ...]
    rejected: tuple[tuple[str, str, int], ...]  # (reason, errno, count)
    blacklist_entries: int
    ftrace_sites: int


def summarize(image: Image) -> Summary:
    """Check every function entry of ``image`` and count the outcomes."""
    ok = 0
    methods: collections.Counter[str] = collections.Counter()
    rejected: collections.Counter[tuple[str, str]] = collections.Counter()
    n = 0
    for f in functions(image):
        n += 1
        v = entry_verdict(image, f)
        if v.ok:
            ok += 1
            methods[v.method.value if v.method else "none"] += 1
        else:
            rejected[(v.reason.value if v.reason else "?", v.errno or "?")] += 1
    facts = tuple((f.name, f.value, f.source) for f in sorted(image.config.facts.values(),
                                                                key=lambda f: f.name))
    return Summary(image.backend.name, str(image.version), image.version.rules, image.banner,
                   image.build_id, facts, n, ok, tuple(methods.most_common()),
                   tuple((r, e, c) for (r, e), c in rejected.most_common()),
                   len(image.tables.blacklist), len(image.tables.ftrace_sites))
