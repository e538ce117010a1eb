"""uprobes: the kernel's verdict for a uprobe in a user-space ELF file, offline.

``elf`` (the file: PT_LOAD offsets, symbols, build-id debug files, .eh_frame ranges),
``target`` (uprobe_events, bpftrace, perf and USDT syntaxes), ``usdt`` (.note.stapsdt),
``probe`` (the pipeline: __uprobe_register, prepare_uprobe, arch_uprobe_analyze_insn, then our
boundary warnings), ``verdict`` (values), ``executor`` (unicorn with uprobes installed),
``properties`` (a)-(d).  Per-architecture rules live in ``kpatch_arch.<arch>.uprobe``.

>>> from kpatch_core.uprobe import UserElf, check_uprobe              # doctest: +SKIP
>>> check_uprobe(UserElf.open("/lib/x86_64-linux-gnu/libc.so.6"), "malloc").ok   # doctest: +SKIP
True
"""
from .elf import UserElf
from .probe import check_offset, check_uprobe, check_uprobes
from .target import UprobeTarget, parse_uprobe_target
from .verdict import UMethod, UprobeVerdict, UReason, WarningKind

__all__ = ["UserElf", "check_uprobe", "check_uprobes", "check_offset", "UprobeTarget",
           "parse_uprobe_target", "UprobeVerdict", "UReason", "UMethod", "WarningKind"]
