"""The computed matrix as one value: probes (rows), kernel columns, each cell's category; and
its pandas form for notebooks.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .classify import CellClass, Group, classify, groups
from .plan import Probe
from .worker import Column

if TYPE_CHECKING:
    import pandas


@attrs.frozen
class Matrix:
    """Probes x kernels: the verdicts (``columns[k].cells[r]``) and their categories."""

    probes: tuple[Probe, ...]
    columns: tuple[Column, ...]
    classes: tuple[tuple[CellClass, ...], ...]

    @classmethod
    def build(cls, probes: Sequence[Probe], columns: Sequence[Column]) -> Matrix:
        """Classify ``columns`` (computed for ``probes``, in that order)."""
        rows = classify(probes, columns)
        return cls(tuple(probes), tuple(columns), tuple(tuple(r) for r in rows))

    @property
    def failed(self) -> list[Column]:
        """The columns that could not be computed."""
        return [c for c in self.columns if c.failed]

    @property
    def groups(self) -> list[Group]:
        """What changed between kernels, per probe (see :func:`classify.groups`)."""
        return groups(self.probes, self.columns, [list(r) for r in self.classes])

    def records(self) -> list[dict[str, Any]]:
        """One flat record per cell (failed columns included, with their error)."""
        out = []
        for r, probe in enumerate(self.probes):
            for k, col in enumerate(self.columns):
                cls = self.classes[r][k]
                v = {} if col.failed else col.cells[r].verdict
                cell = None if col.failed else col.cells[r]
                out.append({
                    "probe": str(probe), "attach": probe.attach, "target": probe.target,
                    "kernel": col.label, "build_id": col.build_id, "arch": col.arch,
                    "version": col.version, "ok": v.get("ok"), "errno": v.get("errno"),
                    "reason": v.get("reason"), "kernel_function": v.get("kernel_function"),
                    "why": v.get("why"), "method": v.get("method"),
                    "flags": ",".join(v.get("flags") or ()), "address": v.get("address"),
                    "symbol": v.get("symbol"),
                    "signature": cell.signature if cell else None,
                    "category": cls.category, "tags": ",".join(cls.tags), "note": cls.note,
                    "error": col.error})
        return out

    def to_frame(self) -> pandas.DataFrame:
        """A long table, one row per (probe, kernel); ``df.attrs["failed"]`` maps failed
        kernels to their reason.  ``df.pivot(index="probe", columns="kernel",
        values="category")`` gives the matrix."""
        import pandas as pd
        df = pd.DataFrame.from_records(self.records())
        df.attrs["failed"] = {c.label: c.error for c in self.failed}
        return df
