"""A kprobe_events line for another architecture: argument registers mapped by position, the
syscall wrapper prefix swapped, with notes on what may differ."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kpatch_arch.base import Backend


def translate_line(line: str, src: "Backend", dst: "Backend") -> tuple[str, list[str]]:
    """The equivalent kprobe_events line for another architecture, and notes on what may differ.

    ``%REG`` that is the n-th argument register of ``src`` becomes the n-th of ``dst`` (on a
    return probe the return-value register maps to the return-value register first); the stack
    pointer maps to the stack pointer; ``$argN``, offsets and everything else are kept.  A syscall
    wrapper prefix (``__x64_sys_``) becomes the other architecture's.

    >>> translate_line("p vfs_read +0(%si):string", X86_64Backend(), Arm64Backend())[0]  # doctest: +SKIP
    'p vfs_read +0(%x1):string'
    """
    argv = line.split("#", 1)[0].split()
    notes: list[str] = []
    if len(argv) < 2 or argv[0][:1] not in ("p", "r", "-"):
        return line.strip(), notes
    is_return = argv[0][0] == "r" or argv[1].endswith("%return")
    place = argv[1]
    if src.syscall_prefix and dst.syscall_prefix and place.startswith(src.syscall_prefix):
        place = dst.syscall_prefix + place[len(src.syscall_prefix):]
        notes.append(f"syscall wrapper {src.syscall_prefix}* is {dst.syscall_prefix}* on {dst.name}")
    m = re.search(r"\+(\w+)", place)
    if m and m.group(1).strip("0x") not in ("", "0"):
        notes.append(f"offset +{m.group(1)} counts bytes of {src.name} code; the instruction "
                     f"there is at another offset on {dst.name}")

    def reg(mm: re.Match) -> str:
        name = mm.group(1)
        order = [("ret", src.retval_reg, dst.retval_reg)] if is_return else []
        if name in src.arg_regs:
            i = src.arg_regs.index(name)
            if i < len(dst.arg_regs):
                order.append(("arg", name, dst.arg_regs[i]))
            else:
                notes.append(f"%{name} is argument {i + 1}; {dst.name} passes it on the stack: "
                             f"use $arg{i + 1}")
                return f"$arg{i + 1}"
        order.append(("sp", src.stack_reg, dst.stack_reg))
        for _kind, s, d in order:
            if s and d and name == s:
                return f"%{d}"
        if dst.register(name) is not None:
            return f"%{name}"
        notes.append(f"%{name} has no counterpart on {dst.name}")
        return f"%{name}"

    args = [re.sub(r"%([A-Za-z0-9_]+)", reg, a) for a in argv[2:]]
    return " ".join([argv[0], place, *args]), notes
