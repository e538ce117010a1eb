"""Runs of equal instructions (alignment padding: x86 ``int3``/``nop`` runs, up to a megabyte
in one linker marker symbol) classified once per run, where the rule pipeline provably gives
every instruction of the run the same outcome.

The pipeline (kpatch_core.rules.register_kprobes) reads of an address:

- per-function facts (notrace, the blacklist when ``function_checks`` found it uniform over
  the function, the ``__cfi_``/``__pfx_`` preamble rule);
- ``arch_adjust_kprobe_addr`` (``BulkClassifier.adjust``): computed for every address, and an
  address that moves, or that another one moves to, is classified on its own;
- the generic checks (safety.GENERIC_CHECKS): membership in the ftrace sites, ``[_stext,
  _etext)``, the jump-label and static-call ranges and the BUG sites (:func:`change_points`);
- the misalignment test (``aa % insn_align``), the same for every instruction of a run when its
  length is a multiple of ``insn_align``;
- the backend's ``classify``: what ``BulkClassifier.uniform_inputs`` declares (bytes read
  around the address, address tables), None when the backend does not say (no shortcut).

Two instructions of one run of equal instructions (same length, same bytes, back to back in
one function) whose byte windows lie inside the run and with no change point between them
therefore get the same outcome; the first of each such stretch is classified, the rest copy it.
An instruction whose outcome came from the per-address ``prepare`` (SLOW) is not shared: the
caller classifies the whole range again without the shortcut.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .safety import GENERIC_CHECKS

if TYPE_CHECKING:
    from kpatch_arch.base import BulkClassifier

    from .image import Image

__all__ = ["COVERED_CHECKS", "MIN_SHARED", "change_points", "shared_stretches"]

# the generic checks whose per-address inputs change_points lists, in GENERIC_CHECKS' order;
# another check in that table turns the shortcut off until it is listed here
COVERED_CHECKS = ("check_ftrace_location", "core_kernel_text", "within_kprobe_blacklist",
                  "jump_label_text_reserved", "static_call_text_reserved", "find_bug",
                  "is_cfi_preamble_symbol")

MIN_SHARED = 1024  # fewer shared instructions in a range than this: no shortcut


def change_points(image: "Image", clf: "BulkClassifier") -> tuple[int, int, np.ndarray] | None:
    """(bytes read before an address, bytes read from it, sorted addresses where a per-address
    input of the rule pipeline changes, repeats allowed), or None when one is not known."""
    if tuple(c.kernel_function for c in GENERIC_CHECKS) != COVERED_CHECKS:
        return None
    got = clf.uniform_inputs()
    if got is None:
        return None
    before, after, points = got
    t = image.tables
    one = np.uint64(1)
    fs = t.ftrace_sites  # check_ftrace_location: ftrace_location(addr) == addr
    js, je = t.jump_labels  # jump_label_text_reserved: start <= addr < end
    sc = t.static_call_sites  # static_call_text_reserved: site <= addr < site + 5
    bug = t.bug_sites  # find_bug: bug_addr == addr
    # core_kernel_text: _stext <= addr < _etext; within_kprobe_blacklist and the cfi preamble
    # rule: per function (only functions whose blacklist answer is uniform take part)
    parts = [fs, fs + one, np.array([t.stext, t.etext], np.uint64), js, je, sc,
             sc + np.uint64(5), bug, bug + one, points]
    return int(before), int(after), np.sort(np.concatenate(
        [np.asarray(p, np.uint64) for p in parts]))


def shared_stretches(runs: tuple[np.ndarray, np.ndarray, np.ndarray], base: int,
                     lens: np.ndarray, func: np.ndarray, addrs: np.ndarray, aa: np.ndarray,
                     bl_uniform: np.ndarray, step: int,
                     inputs: tuple[int, int, np.ndarray] | None) -> list[tuple[int, int]]:
    """Stretches ``[j0, j1)`` of instructions that share the outcome of instruction ``j0``.

    ``runs``: (starts, ends, instruction size) of the byte runs of one value in the range's
    bytes (kpatch_core.decode.Runs; offsets from ``base``); the instructions (sorted ``addrs``,
    lengths ``lens``, function index ``func``, adjusted addresses ``aa``)
    of a run that are back to back, of the run's size, in one function whose blacklist answer
    is uniform (``bl_uniform``) and whose byte windows lie inside the run, between two change
    points (``inputs``: :func:`change_points`; also every address that moves or is moved to),
    are one stretch.  Empty when fewer than :data:`MIN_SHARED` would share."""
    if inputs is None or not len(runs[0]) or not len(addrs):
        return []
    before, after, points = inputs
    moved: np.ndarray | None = None
    out: list[tuple[int, int]] = []
    total = 0
    for rs, re_, k in zip(*(r.tolist() for r in runs)):
        if k <= 0 or k % max(step, 1):
            continue
        # the instructions whose byte windows lie inside the run
        i0, i1 = np.searchsorted(addrs, [np.uint64(base + rs + before),
                                         np.uint64(base + re_ - after + 1)]).tolist()
        if i1 - i0 < 2 or func[i0] != func[i1 - 1] or not bl_uniform[func[i0]]:
            continue
        a = addrs[i0:i1]
        if not (bool((lens[i0:i1] == k).all()) and bool((np.diff(a) == k).all())):
            continue
        # change points split the stretch: membership is constant between two of them; an
        # address that moves (arch_adjust_kprobe_addr) or is moved to is classified alone
        if moved is None:
            moved = np.flatnonzero(aa != addrs)
        cut = points[(points > a[0]) & (points <= a[-1])]
        m = moved[(moved >= i0) & (moved < i1)]
        tg = aa[moved]
        tg = tg[(tg >= a[0]) & (tg <= a[-1])]
        one = np.uint64(1)
        cut = np.concatenate((cut, addrs[m], addrs[m] + one, tg, tg + one))
        cuts = sorted({i0, i1, *(i0 + np.searchsorted(a, cut, side="left")).tolist()})
        for j0, j1 in zip(cuts[:-1], cuts[1:]):
            if j1 - j0 >= 2:
                out.append((j0, j1))
                total += j1 - j0 - 1
    return out if total >= MIN_SHARED else []
