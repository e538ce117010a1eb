"""Probes x kernels: on which kernels a tool's probes attach, and why not on the others.

Each column is one kernel (computed by a Dask task, :mod:`.engine`), each cell one probe's
verdict there -- exactly a single :func:`kpatch_core.check` -- and its category (renamed into a
clone, notrace, blacklisted, inlined, vanished, moved, signature changed: :mod:`.classify`).

>>> df = compute(["vfs_read", "r tcp_connect"], ["vmlinux-6.1", "vmlinux-6.12"])  # doctest: +SKIP
>>> df.pivot(index="probe", columns="kernel", values="category")                   # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .plan import KernelRef, Probe, dedupe, kernel_ref, kernel_refs, parse_probe
from .table import Matrix

if TYPE_CHECKING:
    import pandas
    from distributed import Client

__all__ = ["KernelRef", "Matrix", "Probe", "compute", "compute_matrix"]


def compute_matrix(probes: Sequence[Probe], kernels: Sequence[KernelRef], *,
                   scheduler: str | None = None, workers: int | None = None,
                   store: str | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   client: Client | None = None) -> Matrix:
    """The :class:`Matrix` of ``probes`` x ``kernels`` (see :func:`engine.run` for the
    arguments)."""
    from . import engine
    cols = engine.run(kernels, probes, scheduler=scheduler, workers=workers, store_url=store,
                      progress=progress, client=client)
    return Matrix.build(probes, cols)


def compute(probes: Iterable[str | Probe], images: Iterable[str] = (), *,
            debian: Iterable[str] = (), scheduler: str | None = None,
            workers: int | None = None, store: str | None = None,
            client: Client | None = None) -> pandas.DataFrame:
    """The matrix as a pandas DataFrame, one row per (probe, kernel).

    ``probes``: ``kprobe:SYM``, ``kretprobe:SYM``, target lines (``SYM``, ``r SYM+OFF``) or
    :class:`Probe` values.  ``images``: vmlinux paths or /boot directories; ``debian``: Debian
    build names fetched on demand.  ``store``: an fsspec URL where columns are kept by
    build-id (None: not kept).  ``client``: an existing Dask client to run on (else
    ``scheduler`` or an embedded cluster).  Failed kernels are in ``df.attrs["failed"]``.
    """
    ps = [p if isinstance(p, Probe) else parse_probe(p) for p in probes]
    ks = [k for p in images for k in kernel_refs(p)] + [kernel_ref("--debian", d) for d in debian]
    return compute_matrix(dedupe(ps), ks, scheduler=scheduler, workers=workers, store=store,
                          client=client).to_frame()
