"""Per-kernel work on Dask: one task per kernel, results through the shared store.

Embedded by default: a ``LocalCluster`` sized to the machine (one single-threaded worker
process per core, fewer when memory is short: each real vmlinux is mmap'd whole), nothing to
start.  ``scheduler="tcp://HOST:8786"`` uses a running cluster instead (its workers must be able
to import kpatch_core and read the image paths and the store URL).

A worker that dies while computing a kernel has its task retried elsewhere by the scheduler;
a kernel that keeps killing workers (more deaths than ``distributed.scheduler.allowed-failures``,
1 for the embedded cluster; the kernels given up on are run once more alone, so a kernel
blamed only for sharing a worker with the culprit completes) or whose image is unusable gets
a failed column with the reason, and the rest of the matrix completes.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from ..cache import code_fingerprint
from ..errors import KpatchError, UsageError
from ..image import Image
from .fetch import fetch_debian, link_build_id
from .plan import KernelRef, Probe, probes_digest
from .store import ResultStore, image_identity
from .worker import Column, evaluate_image, failed_column

if TYPE_CHECKING:
    from distributed import Client

# Memory one worker needs for a real kernel (mmap'd image, kallsyms and tables): sizes the pool.
WORKER_MEMORY = 3 << 30
WAIT_FOR_WORKERS = 60  # seconds a --scheduler run waits for its first worker

# the code this process imported (source files' sizes and mtimes at import time)
_LOADED_CODE = code_fingerprint()


def loaded_code() -> str:
    """The fingerprint of the kpatch-core code this process imported."""
    return _LOADED_CODE


Task = Callable[[KernelRef, tuple[Probe, ...], str, "str | None"], Column]


def kernel_task(ref: KernelRef, probes: tuple[Probe, ...], digest: str,
                store_url: str | None) -> Column:
    """One kernel's column (what each Dask task runs): fetch a Debian build if asked, read the
    stored column for the image's build-id, or compute and store it."""
    store = ResultStore(store_url) if store_url else None
    fetch_s = 0.0
    path = ref.path
    if ref.debian is not None:
        assert ref.debarch is not None
        if store is not None:  # a build computed before needs no download
            bid = store.name_build_id(ref.debian)
            col = store.get(bid, digest) if bid else None
            if col is not None:
                return attrs.evolve(col, label=ref.label, seconds=0.0, fetch_seconds=0.0)
        t0 = time.monotonic()
        try:
            path = fetch_debian(ref.debian, ref.debarch)
        except KpatchError as e:
            return failed_column(ref.label, None, str(e))
        fetch_s = time.monotonic() - t0
    assert path is not None
    try:
        image = Image.open(path)
        bid = image.build_id
    except KpatchError as e:  # the download's time still counts (throughput, download included)
        return attrs.evolve(failed_column(ref.label, path, str(e)), fetch_seconds=fetch_s)
    if ref.debian is not None and bid:
        link_build_id(path, bid)
        if store is not None:
            store.record_name(ref.debian, bid)
    ident = image_identity(image.path, bid)
    if store is not None:
        col = store.get(ident, digest)
        if col is not None:
            return attrs.evolve(col, label=ref.label, path=os.path.abspath(path), seconds=0.0,
                                fetch_seconds=fetch_s)
    col = attrs.evolve(evaluate_image(image, probes, ref.label), fetch_seconds=fetch_s)
    if store is not None:
        try:
            store.put(col, digest, ident)
        except OSError as e:  # an unwritable store costs the cache, not the column
            logging.getLogger(__name__).warning("matrix store %s: %s", store.url, e)
    return col


def default_workers() -> int:
    """Worker processes for the embedded cluster: one per core, at most one per
    :data:`WORKER_MEMORY` of physical memory."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    by_mem = max(1, mem // WORKER_MEMORY) if mem else cores
    return max(1, min(cores, by_mem))


def _failure_text(e: BaseException) -> str:
    from distributed import KilledWorker
    if isinstance(e, KilledWorker):
        return ("a worker died while computing this kernel (killed, out of memory or crashed; "
                "the scheduler gave up after retrying)")
    return f"{type(e).__name__}: {e}"


def run(kernels: Sequence[KernelRef], probes: Sequence[Probe], *, scheduler: str | None = None,
        workers: int | None = None, store_url: str | None = None,
        progress: Callable[[int, int], None] | None = None, task: Task = kernel_task,
        allowed_failures: int = 1, client: Client | None = None) -> list[Column]:
    """Every kernel's column, in the order given.

    ``scheduler``: a Dask scheduler address (``tcp://HOST:8786``), or None for the embedded
    cluster of ``workers`` processes (default :func:`default_workers`); or an existing
    ``client`` (a notebook's).  ``store_url``: where columns are kept (None: not stored).
    ``progress(done, total)`` is called as kernels finish.
    """
    import dask
    from distributed import Client, LocalCluster

    if not kernels:
        return []
    probes_t = tuple(probes)
    digest = probes_digest(probes_t)
    if client is not None:
        return _run_on(client, kernels, probes_t, digest, store_url, progress, task)
    if scheduler is None:
        n = workers or default_workers()
        # one task in processing per single-threaded worker: a worker's death is blamed on the
        # kernel it was computing only, not on tasks queued behind it
        conf = {"distributed.scheduler.allowed-failures": allowed_failures,
                "distributed.scheduler.worker-saturation": 1.0}
        with dask.config.set(conf), \
                LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster, \
                Client(cluster) as client:
            return _run_on(client, kernels, probes_t, digest, store_url, progress, task)
    if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://", "ucx://")):
        raise UsageError(f"--scheduler {scheduler!r}: expected an address like tcp://HOST:8786")
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as e:
        raise KpatchError(f"--scheduler {scheduler}: cannot connect ({e}); start one with "
                          "`dask scheduler` and `dask worker ADDRESS`") from None
    with client:
        try:  # a scheduler without workers would leave every task waiting
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS)
        except TimeoutError:
            raise KpatchError(f"--scheduler {scheduler}: no worker joined in "
                              f"{WAIT_FOR_WORKERS} s; start some with `dask worker "
                              f"{scheduler}`") from None
        return _run_on(client, kernels, probes_t, digest, store_url, progress, task)


def _warn_code_skew(client: Client) -> None:
    """One stderr line when a worker runs other kpatch-core code than this process (a worker
    started before an upgrade): its verdicts could differ from a local ``check``."""
    try:
        theirs = client.run(loaded_code)
    except (OSError, TimeoutError):
        return
    mine = loaded_code()
    stale = sorted(w for w, fp in theirs.items() if fp != mine)
    if stale:
        logging.getLogger(__name__).warning(
            "%d worker(s) run other kpatch-core code than this client (%s); restart them for "
            "verdicts equal to a local check", len(stale), ", ".join(stale))


def _run_on(client: Client, kernels: Sequence[KernelRef], probes: tuple[Probe, ...],
            digest: str, store_url: str | None, progress: Callable[[int, int], None] | None,
            task: Task) -> list[Column]:
    from distributed import KilledWorker, as_completed

    run_id = uuid.uuid4().hex[:8]
    _warn_code_skew(client)

    def submit(i: int, tag: str = "") -> object:
        return client.submit(task, kernels[i], probes, digest, store_url, pure=False,
                             key=f"kpatch-matrix-{run_id}-{i}{tag}")

    futures = {submit(i): i for i in range(len(kernels))}
    out: list[Column | None] = [None] * len(kernels)
    killed: list[int] = []
    if progress:
        progress(0, len(kernels))
    done = 0
    for fut in as_completed(futures):
        i = futures[fut]
        try:
            out[i] = fut.result()
        except KilledWorker:
            killed.append(i)  # maybe only queued on a worker another kernel killed
            continue
        except Exception as e:  # noqa: BLE001 -- any task error: this column only
            out[i] = failed_column(kernels[i].label, kernels[i].path, _failure_text(e))
        done += 1
        if progress:
            progress(done, len(kernels))
    # A dead worker is blamed on every task it held: run each such kernel again alone, so
    # only a kernel that kills its worker by itself is marked failed.
    for i in killed:
        try:
            out[i] = submit(i, "-alone").result()  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 -- any task error or a dead worker
            out[i] = failed_column(kernels[i].label, kernels[i].path, _failure_text(e))
        done += 1
        if progress:
            progress(done, len(kernels))
    return [c for c in out if c is not None]
