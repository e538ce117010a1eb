"""The kernel's generic address checks, written once: ``check_kprobe_address_safe``
(kernel/kprobes.c) with ``check_ftrace_location``, in the kernel's order.

Each row of :data:`GENERIC_CHECKS` answers for one address (``check``: the per-address pipeline
of kpatch_core.probe) and for every address of a range at once (``vector``: the full analysis,
kpatch_core.rules).  Both pipelines walk the same table, so a new rule, or a rule the kernel
reorders, is one edit here.

>>> [c.kernel_function for c in GENERIC_CHECKS][:2]       # doctest: +SKIP
['check_ftrace_location', 'core_kernel_text']
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import attrs
import numpy as np

from .bulk import member_hits, range_hits, spans_hits
from .outcome import refused_code
from .verdict import Reason

if TYPE_CHECKING:
    from .image import Image


@attrs.frozen
class AddressArrays:
    """What a vectorised check looks at: the (adjusted) addresses ``aa`` of a range, sorted, the
    index of each one's function (``fidx``, ascending) and the per-function rule outcomes
    (kpatch_core.rules.function_checks); ``ftrace``: the indexes of the addresses that are
    ftrace sites; ``in_order``: ``aa`` is sorted (an arch adjustment may break the order)."""

    image: "Image"
    aa: np.ndarray
    fidx: np.ndarray
    func_facts: dict[str, np.ndarray]
    ftrace: np.ndarray
    in_order: bool | None = None


Scalar = Callable[["Image", int], "tuple[Reason, str] | None"]
# (addresses, outcome codes so far, the code of "no answer yet") -> (indexes refused, ascending;
# their codes: one per index or one for all)
Hits = tuple[np.ndarray, "np.ndarray | int"]
Vector = Callable[[AddressArrays, np.ndarray, int], Hits]


@attrs.frozen
class GenericCheck:
    """One generic rule: the kernel function it mirrors, its per-address form (a refusal as
    (reason, detail), or None) and its vectorised form (the indexes it refuses and their
    codes; only addresses whose code is still unset need an answer)."""

    kernel_function: str
    check: Scalar
    vector: Vector


NO_HITS: Hits = (np.zeros(0, np.int64), 0)


# --- check_ftrace_location: an ftrace site needs KPROBES_ON_FTRACE ---------------------------------
def _ftrace(image: "Image", addr: int) -> tuple[Reason, str] | None:
    if image.tables.is_ftrace_site(addr) and not image.config.enabled("KPROBES_ON_FTRACE"):
        return Reason.FTRACE_SITE, hex(addr)
    return None


def _ftrace_v(v: AddressArrays, codes: np.ndarray, unset: int) -> Hits:
    if not v.image.config.enabled("KPROBES_ON_FTRACE"):
        return v.ftrace, refused_code(Reason.FTRACE_SITE)
    return NO_HITS


# --- core_kernel_text (after boot: init text is gone) ----------------------------------------------
def _text(image: "Image", addr: int) -> tuple[Reason, str] | None:
    return None if image.tables.is_core_text(addr) else (Reason.NOT_TEXT, hex(addr))


def _text_v(v: AddressArrays, codes: np.ndarray, unset: int) -> Hits:
    t = v.image.tables
    lo, hi = np.uint64(t.stext), np.uint64(t.etext)
    if not len(v.aa) or (v.aa.min() >= lo and v.aa.max() < hi):
        return NO_HITS
    return np.flatnonzero((v.aa < lo) | (v.aa >= hi)), refused_code(Reason.NOT_TEXT)


# --- within_kprobe_blacklist -------------------------------------------------------------------------
def _blacklist(image: "Image", addr: int) -> tuple[Reason, str] | None:
    hit = image.tables.blacklist_hit(addr)
    return (hit[0], hit[1]) if hit else None


def _blacklist_v(v: AddressArrays, codes: np.ndarray, unset: int) -> Hits:
    """Per function where the answer is uniform over it (function_checks), else per address."""
    bl_code, uniform = v.func_facts["bl_code"], v.func_facts["bl_uniform"]
    f0 = int(v.fidx[0]) if len(v.fidx) else 0
    f1 = int(v.fidx[-1]) + 1 if len(v.fidx) else 0
    whole = f0 + np.flatnonzero(uniform[f0:f1] & (bl_code[f0:f1] != 0))
    each = f0 + np.flatnonzero(~uniform[f0:f1])
    idx = spans_hits(v.fidx, whole)
    out = bl_code[v.fidx[idx]]
    if len(each):
        tables = v.image.tables
        cand = spans_hits(v.fidx, each)
        cand = cand[codes[cand] == unset]
        more, got = [], []
        for j in cand.tolist():
            h = tables.blacklist_hit(int(v.aa[j]))
            if h is not None:
                more.append(j)
                got.append(refused_code(h[0]))
        if more:
            idx = np.concatenate((idx, np.array(more, np.int64)))
            out = np.concatenate((out, np.array(got, np.uint16)))
            order = np.argsort(idx, kind="stable")
            idx, out = idx[order], out[order]
    return idx, out


# --- jump_label_text_reserved -----------------------------------------------------------------------
def _jump_label(image: "Image", addr: int) -> tuple[Reason, str] | None:
    site = image.tables.jump_label_hit(addr)
    return None if site is None else (Reason.JUMP_LABEL, f"site {site:#x}")


def jump_label_text_reserved(starts: np.ndarray, ends: np.ndarray, aa: np.ndarray,
                             in_order: bool | None = None) -> np.ndarray:
    """Vectorised ``jump_label_text_reserved`` (KernelTables.jump_label_hit) for sorted ``aa``:
    the indexes of the reserved addresses.  The kernel scans back while ``start + 8 > addr``;
    a site is at most 8 bytes long, so that is "some site contains addr"."""
    if len(starts) and int((ends - starts).max()) > 8:
        raise RuntimeError("jump label site longer than 8 bytes: the range form does not apply")
    return range_hits(aa, starts, ends, in_order)


def _jump_label_v(v: AddressArrays, codes: np.ndarray, unset: int) -> Hits:
    js, je = v.image.tables.jump_labels
    return jump_label_text_reserved(js, je, v.aa, v.in_order), refused_code(Reason.JUMP_LABEL)


# --- static_call_text_reserved: site <= addr < site + 5 ---------------------------------------------
def _static_call(image: "Image", addr: int) -> tuple[Reason, str] | None:
    site = image.tables.static_call_hit(addr)
    return None if site is None else (Reason.STATIC_CALL, f"site {site:#x}")


def _static_call_v(v: AddressArrays, codes: np.ndarray, unset: int) -> Hits:
    sc = v.image.tables.static_call_sites
    return range_hits(v.aa, sc, sc + np.uint64(5), v.in_order), refused_code(Reason.STATIC_CALL)


# --- find_bug ----------------------------------------------------------------------------------------
def _bug(image: "Image", addr: int) -> tuple[Reason, str] | None:
    return (Reason.BUG_SITE, hex(addr)) if image.tables.is_bug_site(addr) else None


def _bug_v(v: AddressArrays, codes: np.ndarray, unset: int) -> Hits:
    return member_hits(v.image.tables.bug_sites, v.aa, v.in_order), refused_code(Reason.BUG_SITE)


# --- is_cfi_preamble_symbol: __cfi_/__pfx_ symbols ----------------------------------------------------
CFI_PREFIXES = ("__cfi_", "__pfx_")


def _cfi(image: "Image", addr: int) -> tuple[Reason, str] | None:
    sym = image.kallsyms.containing(addr)
    return (Reason.CFI_PREAMBLE, sym.name) if sym and sym.name.startswith(CFI_PREFIXES) else None


def _cfi_v(v: AddressArrays, codes: np.ndarray, unset: int) -> Hits:
    if not len(v.fidx):
        return NO_HITS
    f0, f1 = int(v.fidx[0]), int(v.fidx[-1]) + 1
    cfi = f0 + np.flatnonzero(v.func_facts["cfi"][f0:f1])
    return spans_hits(v.fidx, cfi), refused_code(Reason.CFI_PREAMBLE)


GENERIC_CHECKS: tuple[GenericCheck, ...] = (
    GenericCheck("check_ftrace_location", _ftrace, _ftrace_v),
    GenericCheck("core_kernel_text", _text, _text_v),
    GenericCheck("within_kprobe_blacklist", _blacklist, _blacklist_v),
    GenericCheck("jump_label_text_reserved", _jump_label, _jump_label_v),
    GenericCheck("static_call_text_reserved", _static_call, _static_call_v),
    GenericCheck("find_bug", _bug, _bug_v),
    GenericCheck("is_cfi_preamble_symbol", _cfi, _cfi_v),
)


def check_kprobe_address_safe(image: "Image", addr: int) -> tuple[Reason, str] | None:
    """The first generic check that refuses ``addr`` as (reason, detail), or None."""
    for c in GENERIC_CHECKS:
        hit = c.check(image, addr)
        if hit is not None:
            return hit
    return None


def check_kprobe_address_safe_vec(v: AddressArrays, codes: np.ndarray, unset: int = 0) -> None:
    """Every generic check over ``v.aa`` in order, writing the first refusal of each address
    still ``unset`` in ``codes`` (in place)."""
    for c in GENERIC_CHECKS:
        idx, got = c.vector(v, codes, unset)
        if not len(idx):
            continue
        free = codes[idx] == unset
        codes[idx[free]] = got[free] if isinstance(got, np.ndarray) else got
