"""Why a probe's verdict differs between kernels: one category per cell, grouped per probe.

Categories (the heatmap's colours), decided from the verdict and the facts the worker collected:

- ``ok``: attaches.  Tags on top: ``moved`` (the probed address sits at another offset from the
  function start than on the other kernels of the same architecture, e.g. behind an ENDBR or
  CALL_OPS words) and ``signature-changed`` (the BTF prototype differs from the other kernels').
- ``renamed-into-clone``: no such symbol, but compiler clones of it exist (``NAME.isra.0``,
  ``NAME.constprop.0``, ``NAME.part.0`` ...).
- ``notrace``: the function has no ftrace record (``within_notrace_func``; fentry/fprobe: no
  ftrace location).
- ``blacklisted``: NOKPROBE list, blacklisted area, clone of a blacklisted function, kretprobe
  blacklist (``within_kprobe_blacklist``, ``register_kretprobe``); the verifier's deny lists.
- ``inlined``: no symbol and no clone, but DWARF still names the function (inlined everywhere).
- ``vanished``: no symbol, no clone, no DWARF name (removed or renamed in the source, or built
  as a module: module symbols are not in vmlinux); a glob that matches nothing.
- ``moved``: ``SYM+OFF`` lands off an instruction boundary here, where it is accepted on another
  kernel (the code at that offset moved).
- ``refused``: any other kernel rule (its reason is in the cell).
- ``failed``: the kernel's column could not be computed (corrupt image, worker died).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import attrs

from .plan import Probe
from .worker import Cell, Column

CATEGORIES = ("ok", "renamed-into-clone", "notrace", "blacklisted", "inlined", "vanished",
              "moved", "refused", "failed")
TAGS = ("moved", "signature-changed")
# reason names (kprobe Reason, fentry/fprobe AttachReason) -> category
_BLACKLIST = {"BLACKLIST_NOKPROBE", "BLACKLIST_AREA", "BLACKLIST_SUFFIX", "KRETPROBE_BLACKLIST",
              "DENY_LIST", "NORETURN_DENY"}
_NOTRACE = {"NOTRACE", "NO_FTRACE_LOCATION", "FPROBE_NO_MATCH", "MULTI_NOT_FOUND"}
# refusals that mean "no function of that name" when kallsyms has none either
_ABSENT = {"NO_SYMBOL", "NO_BTF_FUNC", "NO_ADDRESS", "FPROBE_NO_MATCH", "MULTI_NO_MATCH",
           "MULTI_NOT_FOUND", "NO_MATCH"}
_OFF_BOUNDARY = {"NOT_BOUNDARY", "EXCEPTION_INSN", "MISALIGNED", "PREFIX_SUFFIX"}


@attrs.frozen
class CellClass:
    """A cell's category, its tags and a one-line note saying what was found."""

    category: str
    tags: tuple[str, ...] = ()
    note: str = ""


@attrs.frozen
class Group:
    """One probe's kernels that share a category (or a tag): what changed, and where."""

    category: str
    probe: str
    kernels: tuple[str, ...]
    uniform: bool  # every computed kernel of the row is in this group (nothing changed)
    note: str = ""


def _modal(values: list) -> object | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return Counter(vals).most_common(1)[0][0]


def _base(cell: Cell, probe: Probe, row_ok_somewhere: bool) -> CellClass:
    v = cell.verdict
    if v["ok"]:
        return CellClass("ok")
    reason = v["reason"] or ""
    if reason == "NO_MATCH":
        return CellClass("vanished", note=f"{probe.target} matches no function here")
    if reason in _ABSENT and probe.symbol is not None and cell.has_symbol is False:
        if cell.clones:
            return CellClass("renamed-into-clone", note="clones: " + ", ".join(cell.clones))
        if cell.in_dwarf:
            return CellClass("inlined", note=f"{probe.symbol} is named in DWARF but has no symbol")
        return CellClass("vanished", note=f"{probe.symbol} is not in this vmlinux (removed, "
                                          "renamed, or in a module)")
    if reason in _NOTRACE:
        return CellClass("notrace", note=v.get("why") or "")
    if reason in _BLACKLIST:
        return CellClass("blacklisted", note=v.get("why") or "")
    if reason in _OFF_BOUNDARY and row_ok_somewhere and probe.kprobe_target.offset:
        return CellClass("moved", note=v.get("why") or "")
    return CellClass("refused", note=f"{reason}: {v.get('why') or ''}")


def classify(probes: Sequence[Probe], columns: Sequence[Column]) -> list[list[CellClass]]:
    """``out[row][col]``: the category of every cell (failed columns: ``failed``)."""
    out: list[list[CellClass]] = []
    for r, probe in enumerate(probes):
        cells = [None if c.failed else c.cells[r] for c in columns]
        ok_any = any(c is not None and c.verdict["ok"] for c in cells)
        sig = _modal([c.signature for c in cells if c is not None])
        offsets: dict[str, object | None] = {}
        for col, c in zip(columns, cells):
            if c is not None and c.verdict["ok"] and col.arch not in offsets:
                offsets[col.arch or ""] = _modal(
                    [x.func_offset for k, x in zip(columns, cells)
                     if x is not None and x.verdict["ok"] and k.arch == col.arch])
        row = []
        for col, c in zip(columns, cells):
            if c is None:
                row.append(CellClass("failed", note=col.error or ""))
                continue
            cls = _base(c, probe, ok_any)
            tags = []
            notes = [cls.note] if cls.note else []
            if c.verdict["ok"] and c.func_offset is not None and \
                    offsets.get(col.arch or "") not in (None, c.func_offset):
                tags.append("moved")
                notes.append(f"at +{c.func_offset:#x}, elsewhere +{offsets[col.arch or '']:#x}")
            if c.signature is not None and sig is not None and c.signature != sig:
                tags.append("signature-changed")
                notes.append(f"BTF: {c.signature} (elsewhere {sig})")
            row.append(CellClass(cls.category, tuple(tags), "; ".join(notes)))
        out.append(row)
    return out


def groups(probes: Sequence[Probe], columns: Sequence[Column],
           classes: list[list[CellClass]]) -> list[Group]:
    """Per probe, the kernels of each non-ok category and of each tag, in category order."""
    out: list[Group] = []
    for probe, row in zip(probes, classes):
        computed = [i for i, c in enumerate(row) if c.category != "failed"]
        by: dict[str, list[int]] = {}
        for i, c in enumerate(row):
            if c.category not in ("ok", "failed"):
                by.setdefault(c.category, []).append(i)
            for t in c.tags:
                by.setdefault(t, []).append(i)
        for cat in sorted(by, key=lambda k: (CATEGORIES + TAGS).index(k)):
            idx = by[cat]
            note = next((row[i].note for i in idx if row[i].note), "")
            out.append(Group(cat, str(probe), tuple(columns[i].label for i in idx),
                             sorted(idx) == computed, note))
    return out
