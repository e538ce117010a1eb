"""Compare two analysed kernels: functions that appeared, vanished or became compiler clones,
probeability changes of function entries (``p NAME`` and ``r NAME``) with their reasons, and
argument-signature changes from ``.BTF`` when both images carry it.

Functions are matched by name (first symbol of that name); a name that vanished while a clone
of it (``NAME.isra.0``, ``NAME.constprop.0``...) appeared is reported as *renamed into clone*,
not as vanished.

>>> d = diff_analyses(analyze(old), analyze(new))      # doctest: +SKIP
>>> d.counts()["appeared"], d.probeability[:1]          # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .symbols import base_name

if TYPE_CHECKING:
    from .analyze import Analysis
    from .image import Image


@attrs.define
class Change:
    """One function whose entry verdict changed."""

    name: str
    kind: str  # "p" (kprobe on NAME) or "r" (kretprobe on NAME)
    old: str  # "ok (ftrace)" / "NOTRACE EINVAL"
    new: str
    became: str  # "probeable", "refused", "changed"


@attrs.define
class Diff:
    """What changed between two images."""

    old_label: str
    new_label: str
    appeared: list[str]
    vanished: list[str]
    renamed: list[tuple[str, list[str]]]  # (old name, its clones in the new image)
    probeability: list[Change]
    signatures: list[tuple[str, str, str]] | None  # (name, old, new); None: BTF not available
    btf_note: str = ""

    def counts(self) -> dict[str, int]:
        """Summary counts (the numbers the terminal and JSON outputs lead with)."""
        return {"appeared": len(self.appeared), "vanished": len(self.vanished),
                "renamed_into_clones": len(self.renamed),
                "became_probeable": sum(1 for c in self.probeability
                                        if c.kind == "p" and c.became == "probeable"),
                "became_refused": sum(1 for c in self.probeability
                                      if c.kind == "p" and c.became == "refused"),
                "reason_changed": sum(1 for c in self.probeability
                                      if c.kind == "p" and c.became == "changed"),
                "kretprobe_changes": sum(1 for c in self.probeability if c.kind == "r"),
                "signature_changes": -1 if self.signatures is None else len(self.signatures)}

    def to_json(self) -> dict:
        return {"old": self.old_label, "new": self.new_label, "counts": self.counts(),
                "appeared": self.appeared, "vanished": self.vanished,
                "renamed_into_clones": [{"name": n, "clones": c} for n, c in self.renamed],
                "probeability": [attrs.asdict(c) for c in self.probeability],
                "signatures": None if self.signatures is None else
                [{"name": n, "old": o, "new": w} for n, o, w in self.signatures],
                "btf": self.btf_note}


def _verdict_text(v: dict) -> str:
    if v["ok"]:
        return f"ok ({v['method']})" if v.get("method") else "ok"
    return f"{v['reason']} {v['errno']}"


def _funcs(a: "Analysis") -> dict[str, dict]:
    out: dict[str, dict] = {}
    for f in a.facts:
        if f["type"] == "func":
            out.setdefault(f["name"], f)
    return out


def diff_analyses(old: "Analysis", new: "Analysis", old_image: "Image | None" = None,
                  new_image: "Image | None" = None) -> Diff:
    """The differences between two analyses (images are needed only for the BTF comparison)."""
    fo, fn = _funcs(old), _funcs(new)
    appeared = sorted(set(fn) - set(fo))
    gone = sorted(set(fo) - set(fn))
    clones_new: dict[str, list[str]] = {}
    for n in appeared:
        if "." in n:
            clones_new.setdefault(base_name(n), []).append(n)
    renamed = [(n, sorted(clones_new[n])) for n in gone if n in clones_new]
    renamed_names = {n for n, _ in renamed}
    vanished = [n for n in gone if n not in renamed_names]
    clone_names = {c for _, cl in renamed for c in cl}
    appeared = [n for n in appeared if n not in clone_names]
    changes: list[Change] = []
    for n in sorted(set(fo) & set(fn)):
        for kind, key in (("p", "entry"), ("r", "kretprobe")):
            a, b = fo[n][key], fn[n][key]
            ta, tb = _verdict_text(a), _verdict_text(b)
            if (a["ok"], a["reason"], a["errno"]) == (b["ok"], b["reason"], b["errno"]) and \
                    (a["method"] == b["method"]):
                continue
            became = "probeable" if b["ok"] and not a["ok"] else \
                "refused" if a["ok"] and not b["ok"] else "changed"
            changes.append(Change(n, kind, ta, tb, became))
    sigs, note = _signatures(old_image, new_image, set(fo) & set(fn))
    return Diff(old.meta.get("path", "old"), new.meta.get("path", "new"), appeared, vanished,
                renamed, changes, sigs, note)


def _signatures(old_image: "Image | None", new_image: "Image | None", names: set[str]
                ) -> tuple[list[tuple[str, str, str]] | None, str]:
    if old_image is None or new_image is None:
        return None, "BTF diff not available (images not given)"
    try:
        from .btf import Btf
    except ImportError:
        return None, "BTF diff not available (kpatch_core.btf missing)"
    try:
        bo, bn = Btf.from_image(old_image), Btf.from_image(new_image)
    except Exception as e:  # a malformed .BTF must not stop the diff
        return None, f"BTF diff not available ({e})"
    if bo is None or bn is None:
        which = " and ".join(p for p, b in (("old", bo), ("new", bn)) if b is None)
        return None, f"BTF diff not available (no .BTF in the {which} image)"
    out = []
    for n in sorted(names):
        po, pn = bo.func(n), bn.func(n)
        if po is None or pn is None:
            continue
        so, sn = po.signature(), pn.signature()
        if so != sn:
            out.append((n, so, sn))
    return out, "BTF prototypes compared"
