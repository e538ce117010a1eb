#!/usr/bin/env python3
"""Write the kprobe_events vectors of the 7.3 trace_probe rework as a kernel-oracle ``--events``
file (x86_64 or arm64 register names).

    python3 tests/data/oracle/events73.py x86_64 > events73.txt
    python3 tools/kernel-oracle/oracle.py --arch x86_64 --kernel-dir ~/.cache/kpatch-kernels/NAME \\
        --events events73.txt --out events-7.3.jsonl

What changed from 7.2 to 7.3 (kernel/trace/trace_probe.[ch]) and the neighbours of each change:
the nesting limit (TRACEPROBE_MAX_NESTED_LEVEL 8, parse_probe_arg_nested) at depths 7/8/9/10/13/14
with every kind of leaf; MAX_ARGSTR_LEN 63 -> 255 (lengths 63/64/255/256); FILE_ON_KPROBE's new
text; ``$current`` (parse_probe_var_current, parse_btf_arg); ``this_cpu_ptr()`` /
``this_cpu_read()`` (parse_this_cpu); typecasts ``(STRUCT[,FIELD])VAR->FIELD`` on function entry
and exit kprobes (handle_typecast, parse_btf_casttype: on 7.2 TYPECAST_NOT_EVENT); deleting
events by a place of 62-80 characters (trace_kprobe_match_command_head); the unchanged checks
around them ($comm/immediate-string dereference, brace errors).
"""
from __future__ import annotations

import sys

REG = {"x86_64": "%di", "arm64": "%x0"}


def _nest(depth: int, leaf: str, off: str = "+0") -> str:
    return f"{off}(" * depth + leaf + ")" * depth


def _long(n: int, inner: str) -> str:
    """A dereference ``+000..01(INNER)`` exactly ``n`` characters long."""
    pad = n - len("+(") - len(inner) - len(")")
    return "+" + "0" * (pad - 1) + "1" + f"({inner})"


def lines(arch: str) -> list[str]:
    """The events file, one kernel write per line."""
    r = REG[arch]
    out: list[str] = []
    # -- nesting depth (TOO_MANY_NESTED from 7.3; TOO_MANY_OPS before) --------------------
    for leaf in ("@0", "@jiffies", r, "$arg1", "$stack", "\\1"):
        for depth in (7, 8, 9, 10):
            out.append(f"p vfs_read {_nest(depth, leaf)}")
    for depth in (13, 14):
        out.append(f"p vfs_read {_nest(depth, '@0')}")
    out.append(f"p vfs_read x={_nest(9, '@0', '-8')}")
    out.append(f"p vfs_read {_nest(9, r, '+u0')}")
    out.append(f"p vfs_read {_nest(8, r)}:string")
    out.append(f"p vfs_read {_nest(8, r)}:u8[4]")
    out.append(f"r vfs_read {_nest(9, '$retval')}")
    out.append(f"p vfs_read {_nest(8, '$comm')}")
    out.append(f"p vfs_read {_nest(9, '$comm')}")
    out.append("p vfs_read +0(\\\"abc\")")
    # -- argument length (MAX_ARGSTR_LEN 63 -> 255) ---------------------------------------
    for n in (63, 64, 100, 255, 256, 300):
        out.append(f"p vfs_read {_long(n, r)}")
    out.append(f"p vfs_read name={_long(255, '@jiffies')}")
    out.append(f"p vfs_read name={_long(256, '@jiffies')}")
    out.append("p vfs_read +1234567(+1234567(+1234567(+1234567(+1234567(+1234567(+1234567("
               "+1234567(@1234))))))))")
    # -- FILE_ON_KPROBE's text; neighbours -------------------------------------------------
    out.append("p vfs_read @+10")
    out.append("p vfs_read +0(@+10)")
    out.append("p vfs_read @jiffies+8")
    # -- $current ------------------------------------------------------------------------------
    for a in ("$current", "cur=$current", "$current:x64", "$current:string", "$current->pid",
              "$current->tgid:s32", "$current->comm", "$current->comm:string", "$current->mm->pgd",
              "$current->nosuch", "$current->mm->nosuch", "$current.pid", "$current-pid",
              "$currentx", "$current->", "+0($current)", "+0($current):u32",
              "+8(+0($current->mm))", "$current->pid:u8[2]", "$current->comm:u8[16]",
              "$current->stack", "$current->se.vruntime"):
        out.append(f"p vfs_read {a}")
    out.append("p vfs_read+4 $current->pid")
    out.append("r vfs_read $current->pid")
    out.append("r vfs_read $current")
    out.append("p vfs_read $arg1->f_mode $current->pid")
    # -- this_cpu_ptr / this_cpu_read -----------------------------------------------------------
    for a in ("this_cpu_ptr(@runqueues)", "this_cpu_read(@irq_stat)", "this_cpu_read(@irq_stat):u32",
              "this_cpu_ptr(@runqueues):string", "this_cpu_read(@runqueues+8)",
              f"this_cpu_ptr({r})", f"this_cpu_read({r})", "this_cpu_read(+0(@runqueues))",
              "+0(this_cpu_ptr(@runqueues))", "this_cpu_ptr(this_cpu_ptr(@runqueues))",
              "this_cpu_read(@irq_stat", "this_cpu_read(@irq_stat)x", "this_cpu_foo(@irq_stat)",
              "this_cpu_read()", "this_cpu_read($comm)", "this_cpu_read(\\1)",
              "this_cpu_read(@nosuchsym_xyz)", "this_cpu_ptr", "x=this_cpu_read(@irq_stat)",
              _nest(7, "this_cpu_read(@irq_stat)"), _nest(8, "this_cpu_read(@irq_stat)")):
        out.append(f"p vfs_read {a}")
    out.append("r vfs_read this_cpu_read(@irq_stat)")
    out.append("p vfs_read+4 this_cpu_read(@irq_stat)")
    # -- typecasts on kprobes ----------------------------------------------------------------
    for a in ("(file)file->f_mode", "(file)$arg1->f_flags", f"(file){r}->f_flags",
              f"(file)({r})->f_flags", f"(file)+0({r})->f_flags", "(file)file->f_path.dentry",
              "(file)file->f_inode->i_ino", "(file)file->f_flags:x32", "(task_struct)$current->pid",
              "(task_struct)$current->comm:string", f"(task_struct,tasks){r}->pid",
              f"(task_struct,tasks){r}->mm->pgd", f"(task_struct,sched_reset_on_fork){r}->pid",
              f"(task_struct,sched_contributes_to_load){r}->pid", f"(task_struct,mm->pgd){r}->pid",
              f"(task_struct,nosuch){r}->pid", f"(nosuch_struct){r}->x", f"(file){r}",
              f"(file){r}->nosuch", f"(file {r}->f_flags", f"(file)({r}", f"(file)({r})",
              "(file)@jiffies+8->f_flags", "(file)(@jiffies+8)->f_flags", "(file)@jiffies->f_flags",
              f"(file)+0{r}->f_flags", f"(file)+0({r}->f_flags", f"(file)+0({r})", "()file->f_mode",
              "(file)->f_mode", "(file)file.f_mode", "(file)file-f_mode", f"+0((file){r}->f_inode)",
              f"(inode)(file){r}->f_inode->i_ino", f"(file)this_cpu_ptr({r})->f_flags",
              "x=(file)file->f_mode", "(file)$comm->f_mode", f"(file){r}->f_inode:string",
              _nest(7, f"(file){r}->f_inode"), _nest(8, f"(file){r}->f_inode")):
        out.append(f"p vfs_read {a}")
    out.append("r vfs_read (file)$arg1->f_flags")
    out.append("r vfs_read (file)$retval->f_flags")
    out.append(f"p vfs_read+4 (file){r}->f_flags")
    out.append("p vfs_read+4 $arg1")
    # -- '-:EVENT PLACE' with long places (trace_kprobe_match_command_head: 63 characters before
    # 7.3); MOD:SYM of a module that is not loaded is accepted (registered when it loads) -------
    mod = "kpatch_long_module_name_for_delete_matching"

    def keep_delete(name: str, place: str, delete: str | None = None) -> None:
        out.extend(["!clear", f"!keep p:grp/{name} {place}", f"-:grp/{name} {delete or place}"])
    for total in (62, 63, 64, 65, 80):
        keep_delete(f"s{total}", f"{mod}:" + "f" * (total - len(mod) - 1))
    for total in (63, 64, 70):
        keep_delete(f"o{total}", f"{mod}:" + "g" * (total - len(mod) - 4) + "+16")
    place = f"{mod}:" + "h" * (70 - len(mod) - 1)
    keep_delete("t70", place, place[:63])  # what 7.2's snprintf kept
    keep_delete("a64", f"{mod}:" + "k" * (64 - len(mod) - 1) + " x=\\1")
    out.append("!clear")
    # -- unchanged neighbours ----------------------------------------------------------------------
    for a in (f"+0({r}", f"+0{r}", "$comm:u32", "+0($comm)", "$stack1", "$stackx", "$arg0",
              "$retval", "\\\"abc\"", "@nosuchsym_xyz"):
        out.append(f"p vfs_read {a}")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in REG:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(REG)}}}")
    sys.stdout.write("\n".join(lines(sys.argv[1])) + "\n")
