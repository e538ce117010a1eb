"""Kernel configuration facts that verdicts depend on, inferred from the image or read from a file.

Each fact records where it came from ("inferred: <evidence>", "config file", "default", "--set"),
so a report can say which facts were guessed.

>>> image.config.enabled("KPROBES_ON_FTRACE")          # doctest: +SKIP
True
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs
import numpy as np

from .errors import InputError
from .inputs import read_text

if TYPE_CHECKING:
    from .image import Image

# fact -> symbols whose presence shows it is enabled (first found wins); absence means disabled
SYMBOL_EVIDENCE: dict[str, tuple[str, ...]] = {
    "KPROBES_ON_FTRACE": ("arch_prepare_kprobe_ftrace", "kprobe_ftrace_handler"),
    "OPTPROBES": ("arch_prepare_optimized_kprobe", "optimize_kprobe"),
    "PREEMPTION": ("preempt_schedule", "preempt_schedule_notrace"),
    "DYNAMIC_FTRACE": ("ftrace_make_nop", "__start_mcount_loc"),
    "X86_KERNEL_IBT": ("__ibt_endbr_seal", "ibt_selftest"),
    "CFI_CLANG": ("__start___kcfi_traps", "__cfi_check_fail", "report_cfi_failure"),
    "KPROBE_EVENTS": ("kprobe_dispatcher", "trace_kprobe_create"),
    "PPC_FTRACE_OUT_OF_LINE": ("ftrace_ool_stub_text",),  # arch/powerpc/kernel/trace/ftrace_entry.S
}
# fact -> bytes (NUL-terminated C string) whose presence in .rodata shows it: the kernel's own
# text, where a behaviour was backported across versions (stable trees) and no symbol shows it
STRING_EVIDENCE: dict[str, bytes] = {
    # trace_probe.h ERRORS: BAD_VAR after the typo fix (5.10.262 has it, 6.1.176 not)
    "TRACE_PROBE_BAD_VAR_SPELLING_FIXED": b"Invalid $-variable specified\0",
}
# fact -> (needle, anchor): decided by the needle only where .rodata has the anchor (the kernel's
# own trace_probe error texts); an image without them (a test image) keeps the version rows
ANCHORED_STRING_EVIDENCE: dict[str, tuple[bytes, bytes]] = {
    # trace_probe.h ERRORS NON_UNIQ_SYMBOL (number_of_same_symbols): 5.10.262 has it, 5.10.223 not
    "TRACE_KPROBE_UNIQUE_SYMBOL": (b"The symbol is not unique\0", b"Failed to register probe event\0"),
}
# facts that the image cannot show; the kernel default (or the oracle's CPU) is assumed
DEFAULTS: dict[str, bool] = {
    "KPROBE_EVENTS_ON_NOTRACE": False,  # Debian: not set
    "KALLSYMS_ALL": True,  # Debian: y
    # Boot-time patching depends on the CPU, not the config: does the CPU need return thunks
    # (X86_FEATURE_RETHUNK)?  When it does not, apply_returns() rewrites each
    # `jmp __x86_return_thunk` to `ret; int3 x4`, which moves instruction boundaries.
    "RUNTIME_RETHUNK": False,
}


@attrs.frozen
class Fact:
    """One configuration fact and where it came from."""

    name: str
    value: bool
    source: str


@attrs.frozen
class KernelConfig:
    """The set of facts for one image."""

    facts: dict[str, Fact]
    bug_entry_size: int = 12

    def enabled(self, name: str) -> bool:
        """True when ``CONFIG_<name>`` (or runtime fact ``name``) is on."""
        f = self.facts.get(name)
        return bool(f and f.value)

    @classmethod
    def for_image(cls, image: "Image", config_path: str | None = None,
                  overrides: dict[str, bool] | None = None) -> "KernelConfig":
        """Infer facts from ``image``'s symbols, then apply a /boot/config file and overrides."""
        facts: dict[str, Fact] = {}
        value = image.symtab.value
        for name, evidence in SYMBOL_EVIDENCE.items():
            hit = next((s for s in evidence if value(s) is not None), None)
            facts[name] = Fact(name, hit is not None,
                               f"inferred: symbol {hit}" if hit else f"inferred: no {evidence[0]}")
        rodata = image.section(".rodata")
        if rodata is not None and rodata.size:
            text = image.data[rodata.offset:rodata.offset + rodata.size]
            for name, needle in STRING_EVIDENCE.items():
                found = text.find(needle) >= 0
                facts[name] = Fact(name, found, f"inferred: .rodata {'has' if found else 'lacks'} "
                                                f"{needle[:-1].decode()!r}")
            for name, (needle, anchor) in ANCHORED_STRING_EVIDENCE.items():
                if text.find(anchor) >= 0:
                    found = text.find(needle) >= 0
                    facts[name] = Fact(name, found, f"inferred: .rodata {'has' if found else 'lacks'}"
                                                    f" {needle[:-1].decode()!r}")
        for name, v in DEFAULTS.items():
            facts[name] = Fact(name, v, "default")
        for name, v in image.backend.default_facts(image).items():
            facts.setdefault(name, Fact(name, v, f"default ({image.backend.name} CPU assumption)"))
        kall = _kallsyms_all(image)
        if kall is not None:
            facts["KALLSYMS_ALL"] = Fact("KALLSYMS_ALL", *kall)
        if config_path:
            for name, v in read_config_file(config_path).items():
                if name in facts or name in SYMBOL_EVIDENCE:
                    facts[name] = Fact(name, v, f"config file {config_path}")
                else:
                    facts.setdefault(name, Fact(name, v, f"config file {config_path}"))
        for name, v in (overrides or {}).items():
            facts[name] = Fact(name, v, "--set")
        return cls(facts, _bug_entry_size(image))


_LINE = re.compile(r"^CONFIG_(\w+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_(\w+) is not set")


def read_config_file(path: str) -> dict[str, bool]:
    """Parse a /boot/config-* file into {name: enabled}; raises InputError when unreadable."""
    lines = read_text(path, "a /boot/config-* file", "config file", errors="replace").splitlines()
    out: dict[str, bool] = {}
    for line in lines:
        if m := _LINE.match(line):
            out[m.group(1)] = m.group(2) in ("y", "m")
        elif m := _UNSET.match(line):
            out[m.group(1)] = False
    if not out:
        raise InputError(f"{path}: no CONFIG_ lines; give a kernel .config or /boot/config-* file")
    return out


def _bug_entry_size(image: "Image") -> int:
    """12 with CONFIG_DEBUG_BUGVERBOSE (file, line), else 8: the stride whose entries land in text."""
    s, e = image.symtab.value("__start___bug_table"), image.symtab.value("__stop___bug_table")
    if s is None or e is None or e <= s:
        return 12
    v = image.symtab.value
    text = [(v("_stext") or 0, v("_etext") or 0), (v("_sinittext") or 0, v("_einittext") or 0)]
    best = 12
    best_score = -1.0
    for stride in (12, 8):
        if (e - s) % stride:
            continue
        n = min((e - s) // stride, 256)
        raw = image.read(s, n * stride)
        good = 0
        for i in range(n):
            d = int.from_bytes(raw[i * stride:i * stride + 4], "little" if image.little_endian else "big",
                               signed=True)
            a = s + i * stride + d
            good += any(lo <= a < hi for lo, hi in text)
        score = good / max(n, 1)
        if score > best_score:
            best, best_score = stride, score
    return best


def _kallsyms_all(image: "Image") -> tuple[bool, str] | None:
    """CONFIG_KALLSYMS_ALL from ``kallsyms_num_syms`` (a ``.long``): is the kernel's symbol count
    nearer to all kept symbols or to those inside ``_stext.._etext`` / ``_sinittext.._einittext``?"""
    st = image.symtab
    at = st.value("kallsyms_num_syms")
    raw = image.read(at, 4) if at is not None else b""
    if len(raw) < 4:
        return None
    n = int.from_bytes(raw, "little" if image.little_endian else "big")
    v = st.value
    bounds = [(v(a), v(b)) for a, b in (("_stext", "_etext"), ("_sinittext", "_einittext"))]
    ranges = [(lo, hi) for lo, hi in bounds if lo is not None and hi is not None]
    typ = st.info & 0xF
    keep = (st.shndx != 0) & (typ != 3) & (typ != 4)  # defined, not STT_SECTION / STT_FILE
    inside = keep.copy()
    inside[:] = False
    for lo, hi in ranges:
        inside |= (st.values >= np.uint64(lo)) & (st.values <= np.uint64(hi))
    idx = keep.nonzero()[0]
    kept = st.kallsyms_kept()[idx]  # kallsyms_keeps of each name, vectorised
    total = int(kept.sum())
    text = int((kept & inside[idx]).sum())
    if total == text:
        return None
    return abs(n - total) <= abs(n - text), f"inferred: kallsyms_num_syms {n} (all {total}, text {text})"
