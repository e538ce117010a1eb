"""s390x: which kernel function loads which table, and how its code forms the address.

Read by ``kpatch_core.bootimage.code_refs`` when an image's kallsyms holds text symbols only
(CONFIG_KALLSYMS_ALL off: Debian 6.1 s390x). s390x code forms a data address PC-relatively with
``larl Rn, sym`` (RIL-b, opcode 0xc0 x0: address = pc + 2 * signed 32-bit halfwords) and loads a
word at such an address with ``lgrl Rn, sym`` (0xc4 x8) or compares with one (``clgrl``, 0xc6 xa:
kfree_const's is_kernel_rodata). The kernel is built -fPIE: an extern
table bound is loaded from its GOT entry, so every table is read through the words the code loads.

>>> larl_targets(code, 0xe1cd40)    # doctest: +SKIP
[0x1085d40, ...]
"""
from __future__ import annotations

from kpatch_core.bootimage.code_refs import CodeRefs, TableShape, btf_blob, rodata_blob

# struct exception_table_entry {int insn, fixup; short type, data} (5.19+: 12 bytes, 8 before);
# struct bug_entry {int bug_addr_disp, file_disp; u16 line, flags} (12); struct jump_entry
# {s32 code, target; long key} (16); __mcount_loc and _kprobe_blacklist hold addresses
TABLES = (
    # kernel/trace/ftrace.c ftrace_init: ftrace_process_locs(NULL, __start_mcount_loc, __stop_mcount_loc)
    TableShape("__start_mcount_loc", "__stop_mcount_loc", ("ftrace_init",), (8,), True, zeros=True,
               via_struct=True),
    # kernel/kprobes.c init_kprobes: populate_kprobe_blacklist(__start_kprobe_blacklist, __stop_...)
    TableShape("__start_kprobe_blacklist", "__stop_kprobe_blacklist", ("init_kprobes",), (8,), True,
               via_struct=True),
    # kernel/jump_label.c jump_label_init: iter_start/iter_stop; code and target are text
    TableShape("__start___jump_table", "__stop___jump_table", ("jump_label_init",), (16,), False,
               fields=(0, 4), via_struct=True),
    # kernel/extable.c search_kernel_exception_table, sort_main_extable (sorted at build time)
    TableShape("__start___ex_table", "__stop___ex_table",
               ("search_kernel_exception_table", "search_exception_tables", "sort_main_extable"),
               (12, 8), False, sorted=True, via_struct=True),
    # lib/bug.c find_bug
    TableShape("__start___bug_table", "__stop___bug_table", ("find_bug", "generic_bug_clear_once"),
               (12,), False, via_struct=True),
    # kernel/bpf/btf.c btf_parse_vmlinux, kernel/bpf/sysfs_btf.c btf_vmlinux_init (weak: via GOT)
    TableShape("__start_BTF", "__stop_BTF", ("btf_parse_vmlinux", "btf_vmlinux_init"), (1,), False,
               via_struct=True, blob=btf_blob, weak=True),
    # mm/util.c kfree_const/kstrdup_const: is_kernel_rodata()
    TableShape("__start_rodata", "__end_rodata", ("kfree_const", "kstrdup_const"), (1,), False,
               via_struct=True, blob=rodata_blob),
)


def larl_targets(code: bytes, addr: int) -> list[int]:
    """Addresses ``code`` (at ``addr``) forms with ``larl`` or reads with a relative-long load,
    store or compare (``lgrl``, ``clgrl``...: opcodes 0xc4 x, 0xc6 x but ``exrl``), in code
    order (the instruction length is the top two bits of the first byte: 2, 4, 4 or 6 bytes)."""
    out: list[int] = []
    i, n = 0, len(code)
    while i + 2 <= n:
        op = code[i]
        size = 2 if op < 0x40 else 4 if op < 0xC0 else 6
        if size == 6 and i + 6 <= n and (op == 0xC0 and code[i + 1] & 0xF == 0x0 or op == 0xC4
                                          or op == 0xC6 and code[i + 1] & 0xF != 0x0):
            imm = int.from_bytes(code[i + 2:i + 6], "big", signed=True)
            out.append((addr + i + 2 * imm) & (2**64 - 1))
        i += size
    return out


# against a .dynsym symbol the boot writes S + A (arch/s390/boot/startup.c handle_relocs):
# R_390_64, and R_390_GLOB_DAT for the GOT entries of weak symbols (__start_BTF)
R_390_64, R_390_GLOB_DAT = 22, 10
BOOT_REFS = CodeRefs(TABLES, larl_targets, (R_390_64, R_390_GLOB_DAT))
