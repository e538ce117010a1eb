"""The uprobe executor for ppc64le, on Debian's qemu-ppc64le-static in user mode (unicorn has no
little-endian PPC64): property (a) and (d) of :mod:`kpatch_core.uprobe.properties` for the
architecture whose :attr:`~kpatch_arch.base.UprobeSupport.ENGINE` is ``"qemu-user"``.

The uprobe life cycle as [arch/powerpc/kernel/uprobes.c] runs it on a hit, per example:
``is_trap_insn`` and ``arch_uprobe_analyze_insn`` (refusals counted), then
``arch_uprobe_skip_sstep``: ``emulate_step(regs, insn) > 0`` -- the model
(:func:`kpatch_arch.ppc64le.emulate.emulate_step`, run with a user MSR: ``MSR_PR`` set) applied
to the register file is compared with the original instruction run by qemu -- else the XOL slot
(``arch_uprobe_copy_ixol``: the copied instruction; qemu stops at the word after it, as the
single-step would) runs at :data:`~kpatch_core.testing.qemu_ppc64le.SLOT_SITE` and
``arch_uprobe_post_xol`` sets NIP to ``vaddr + ppc_inst_len`` -- unconditionally, a branch
stepped there loses its target -- or, when the step faulted in the slot
(``arch_uprobe_xol_was_trapped``), ``arch_uprobe_abort_xol`` puts NIP back at ``vaddr``.
Many examples run per qemu process (:func:`kpatch_core.testing.qemu_ppc64le.qemu_batch`).

>>> counts, divergences = same_end_state(backend, features, [(code, regs)], buffer)  # doctest: +SKIP
"""
from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..testing import qemu_ppc64le as qppc
from .probe import uprobe_support
from .verdict import Analysis, URefusal

if TYPE_CHECKING:
    from kpatch_arch.base import Backend, UprobeSupport

    from ..features import FeatureSet

MSR_EE = 1 << 15


def user_msr() -> int:
    """``MSR_USER64`` (SF EE PR ME IR DR RI LE): the MSR of the probed process's pt_regs."""
    from kpatch_arch.ppc64le.emulate import MSR_KERNEL, MSR_PR
    return MSR_KERNEL | MSR_PR | MSR_EE


# the labels of kpatch_core.testing.qemu_ppc64le.prove_emulation's counts, as property (a) classes
EMULATION_LABELS = {"ok": "ok:emulate", "invalid-form": "excluded:invalid-form",
                    "self-branch": "skipped:self-branch", "oracle-sigill": "skipped:oracle-sigill",
                    "oracle-crash": "skipped:oracle-crash"}


def same_end_state(backend: Backend, fs: FeatureSet, examples: list[tuple[bytes, Mapping[str, int]]],
                   buffer: bytes) -> tuple[collections.Counter[str], list[dict]] | None:
    """(a) for a batch of (instruction bytes, pt_regs register file) probed at
    :data:`~kpatch_core.testing.qemu_ppc64le.SITE`: the probed run (the kernel's emulation or
    the XOL step) ends like the plain run under qemu.  Returns (labels counted as in
    :func:`kpatch_core.uprobe.properties.prop_same_end_state`, divergences); None without qemu.
    Labels: ``ok:emulate``, ``ok:xol``, ``faulted:sig<N>`` (the plain run faulted on the
    instruction itself), ``refused:<reason>``, ``excluded:<why>``, ``kernel-divergent:<why>``,
    ``skipped:<oracle defect or not-modelled word>``."""
    from kpatch_arch.ppc64le.emulate import Effect, NotModelled, emulate_step
    mod = uprobe_support(backend)
    counts: collections.Counter[str] = collections.Counter()
    msr = user_msr()
    read = qppc._buffer_read(buffer)
    emulated: list[tuple[bytes, Mapping[str, int]]] = []
    stepped: list[tuple[bytes, Mapping[str, int], Analysis]] = []
    for code, regs in examples:
        insn = code[:mod.MAX_UINSN_BYTES].ljust(mod.MAX_UINSN_BYTES, b"\0")
        why = mod.oracle_defect(code)
        if why is not None:
            counts[f"skipped:{why}"] += 1
            continue
        why = mod.not_comparable(code) or _not_comparable_step(code)
        if why is not None:
            counts[f"excluded:{why}"] += 1
            continue
        why = mod.kernel_divergent(code) or mod.kernel_divergent_state(code, regs)
        if why is not None:
            counts[f"kernel-divergent:{why}"] += 1
            continue
        if mod.is_trap_insn(insn, fs):
            counts["refused:TRAP_INSN"] += 1
            continue
        a = mod.analyze_insn(backend, insn, qppc.SITE, fs)
        if isinstance(a, URefusal):
            counts[f"refused:{a.reason.value}"] += 1
            continue
        r = emulate_step(insn, qppc.SITE, regs, read, msr=msr)  # arch_uprobe_skip_sstep
        if isinstance(r, NotModelled):
            counts[f"skipped:not-modelled:{r.what}"] += 1
        elif isinstance(r, Effect):
            emulated.append((insn, regs))
        else:  # emulate_step <= 0 (declined or refused): the XOL slot is single-stepped
            if _oracle_cannot_step(code):
                counts["skipped:oracle-le-multiple"] += 1
                continue
            stepped.append((insn[:a.length], regs, a))
    got = qppc.prove_emulation(emulated, buffer, msr=msr)
    if got is None:
        return None
    ce, diverged = got
    for k, v in ce.items():
        if k != "DIVERGED":
            counts[EMULATION_LABELS.get(k, f"skipped:emulation-{k}")] += v
    counts["DIVERGENCE"] += ce.get("DIVERGED", 0)
    steps = _step_in_xol(mod, stepped, buffer, counts)
    if steps is None:
        return None
    counts["DIVERGENCE"] += len(steps)
    if not counts["DIVERGENCE"]:
        del counts["DIVERGENCE"]
    return counts, [*diverged, *steps]


def _not_comparable_step(code: bytes) -> str | None:
    """mftb/mftbu (time base) and darn (random): no two runs agree."""
    word = int.from_bytes(code[:4], "little")
    spr = ((word >> 16) & 0x1F) | ((word >> 6) & 0x3E0)
    if word >> 26 == 31 and ((word >> 1) & 0x3FF == 371 or
                             (word >> 1) & 0x3FF == 339 and spr in qppc.TIME_BASE_SPRS):
        return "time-base"
    if word >> 26 == 31 and (word >> 1) & 0x3FF == 755:
        return "darn"
    return None


def _oracle_cannot_step(code: bytes) -> bool:
    """lmw/stmw/lsw*/stsw* stepped: qemu-user aborts on their little-endian alignment trap."""
    word = int.from_bytes(code[:4], "little")
    return word >> 26 in (46, 47) or (word >> 26 == 31 and (word >> 1) & 0x3FF in qppc.LE_MULTIPLE_XO)


def _step_in_xol(mod: UprobeSupport, stepped: list[tuple[bytes, Mapping[str, int], Analysis]],
                 buffer: bytes,
                 counts: collections.Counter[str], batch: int = 250) -> list[dict] | None:
    """The plain run at SITE and the XOL slot at SLOT_SITE with ``arch_uprobe_post_xol`` (or
    ``arch_uprobe_abort_xol`` on a fault in the slot) applied; compare."""
    g = qppc
    diverged: list[dict] = []
    keep = [*range(32), g.G_NIP, g.G_CTR, g.G_LINK, g.G_XER, g.G_CCR]
    for i in range(0, len(stepped), batch):
        chunk = stepped[i:i + batch]
        todo = [x for c in chunk for x in ((c[0], c[1], g.SITE), (c[0], c[1], g.SLOT_SITE))]
        res = g.qemu_batch_robust(todo, buffer)
        if res is None:
            return None
        for j, (insn, regs, an) in enumerate(chunk):
            n = an.length
            a, b = res[2 * j], res[2 * j + 1]
            if a is None or b is None:
                counts["skipped:oracle-crash"] += 1
                continue
            ga, gb = list(a["gregs"]), list(b["gregs"])
            raw_nip = gb[g.G_NIP]
            trapped = raw_nip == g.SLOT_SITE and b["sig"] not in (0, None)
            if trapped:  # arch_uprobe_xol_was_trapped -> arch_uprobe_abort_xol: NIP = vaddr
                gb[g.G_NIP] = g.SITE
            else:
                gb[g.G_NIP] = mod.post_xol(an, g.SITE, g.SLOT_SITE, {}, {}).pc
            diff: dict[str, object] = {g.GREG_NAMES[k]: (hex(ga[k]), hex(gb[k])) for k in keep
                                       if ga[k] != gb[k]}
            if a["buf"] != b["buf"]:
                diff["memory"] = True
            if a["sig"] != b["sig"] and raw_nip in (g.SLOT_SITE, g.SLOT_SITE + n):
                diff["sig"] = (a["sig"], b["sig"])  # elsewhere: a branch, the NIP tells
            if diff:
                kd = _stepped_branch(diff, raw_nip, n, gb[g.G_LINK])
                if kd is not None:
                    counts[f"kernel-divergent:{kd}"] += 1
                    continue
                diverged.append({"insn": insn.hex(), "diff": diff, "sig": (a["sig"], b["sig"]),
                                 "regs": {k: hex(v) for k, v in regs.items()}})
            elif ga[g.G_NIP] == g.SITE and a["sig"] not in (0, None):
                counts[f"faulted:sig{a['sig']}"] += 1  # it never executed
            else:
                counts["ok:xol"] += 1
    return diverged


def _stepped_branch(diff: Mapping[str, object], raw_nip: int, n: int, link: int) -> str | None:
    """The kernel's own divergence for a branch emulate_step declines (bctar[l]) and the slot
    steps: ``arch_uprobe_post_xol`` sets NIP to ``vaddr + len`` whether or not it branched,
    and a branch-and-link leaves LR naming the slot."""
    if not set(diff) <= {"nip", "link"}:
        return None
    if "link" in diff and link != qppc.SLOT_SITE + n:
        return None
    if "nip" in diff and raw_nip == qppc.SLOT_SITE + n:
        return None
    return "branch-stepped-in-xol-loses-target" if "nip" in diff else "link-names-the-xol-slot"


def breakpoint_traps(backend: Backend, vaddr: int) -> bool | None:
    """(d) ``UPROBE_SWBP_INSN`` executed at ``vaddr`` (a user address past the harness's ELF
    headers) stops the process with SIGTRAP; None without qemu."""
    mod = uprobe_support(backend)
    nop = 0x60000000
    word = int.from_bytes(mod.SWBP_INSN, "little")
    status = qppc.qemu_run([nop, word, *qppc.EXIT_0], at=vaddr - 4)
    return None if status is None else status == -5

