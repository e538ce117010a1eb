"""arm64: which kernel function loads which table, and how its code forms the address.

Read by ``kpatch_core.bootimage.code_refs`` when an Image's kallsyms holds text symbols only
(CONFIG_KALLSYMS_ALL off: Debian 5.10 and 6.1 arm64). Each row names the functions whose code
forms both bounds of one table, in the kernels checked (5.10, 6.1, 6.12, 7.2), and the shape of
its entries. arm64 code forms a data address PC-relatively: ``adrp Xd, sym`` (the 4 KiB page)
then ``add Xn, Xd, #:lo12:sym`` (or ``ldr Xt, [Xd, #:lo12:sym]`` for a word there).

>>> adrp_targets(code, 0xffff800009677174)    # doctest: +SKIP
[0xffff800009781c68, 0xffff8000097d80d8, ...]
"""
from __future__ import annotations

import capstone
from capstone import arm64_const as A

from kpatch_core.bootimage.code_refs import CodeRefs, TableShape, btf_blob, rodata_blob

# struct exception_table_entry: {int insn, fixup; short type, data} from 5.16 (12 bytes), {int
# insn, fixup} before (8); struct bug_entry with DEBUG_BUGVERBOSE: {int bug_addr_disp,
# file_disp; u16 line, flags} (12); struct alt_instr (12); struct jump_entry {s32 code, target;
# long key} (16); __mcount_loc and _kprobe_blacklist hold unsigned long addresses
TABLES = (
    # kernel/trace/ftrace.c ftrace_init: ftrace_process_locs(NULL, __start_mcount_loc, __stop_mcount_loc)
    TableShape("__start_mcount_loc", "__stop_mcount_loc", ("ftrace_init",), (8,), True, zeros=True),
    # kernel/kprobes.c init_kprobes: populate_kprobe_blacklist(__start_kprobe_blacklist, __stop_...)
    TableShape("__start_kprobe_blacklist", "__stop_kprobe_blacklist", ("init_kprobes",), (8,), True),
    # kernel/jump_label.c jump_label_init: iter_start/iter_stop; code and target are text
    TableShape("__start___jump_table", "__stop___jump_table", ("jump_label_init",), (16,), False,
               fields=(0, 4)),
    # kernel/extable.c search_kernel_exception_table (5.10: search_exception_tables),
    # sort_main_extable; sorted by insn at build time (scripts/sorttable)
    TableShape("__start___ex_table", "__stop___ex_table",
               ("search_kernel_exception_table", "search_exception_tables", "sort_main_extable"),
               (12, 8), False, sorted=True),
    # lib/bug.c find_bug: for (bug = __start___bug_table; bug < __stop___bug_table; ++bug)
    TableShape("__start___bug_table", "__stop___bug_table", ("find_bug", "generic_bug_clear_once"),
               (12,), False),
    # arch/arm64/kernel/alternative.c: __apply_alternatives_multi_stop / apply_boot_alternatives
    # (6.1+: through the struct alt_region kernel_alternatives = {__alt_instructions, ..._end})
    TableShape("__alt_instructions", "__alt_instructions_end",
               ("__apply_alternatives_multi_stop", "apply_boot_alternatives", "apply_alternatives_all"),
               (12,), False, via_struct=True),
    # kernel/bpf/btf.c btf_parse_vmlinux: btf->data = __start_BTF, data_size = __stop_BTF -
    # __start_BTF (weak symbols: loaded from GOT entries); kernel/bpf/sysfs_btf.c btf_vmlinux_init
    TableShape("__start_BTF", "__stop_BTF", ("btf_parse_vmlinux", "btf_vmlinux_init"), (1,), False,
               via_struct=True, blob=btf_blob, weak=True),
    # mm/util.c kfree_const/kstrdup_const: is_kernel_rodata() compares with __start_rodata and
    # __end_rodata (include/asm-generic/sections.h); .rodata's strings decide config facts
    TableShape("__start_rodata", "__end_rodata", ("kfree_const", "kstrdup_const"), (1,), False,
               blob=rodata_blob),
)

_CS = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
_CS.detail = True


def adrp_targets(code: bytes, addr: int) -> list[int]:
    """Addresses ``code`` (at ``addr``) forms with ``adrp`` followed by an ``add`` immediate or
    an ``ldr``/``str`` at an immediate offset from the adrp register, in code order; an adrp
    page used otherwise is an address too (the linker turns ``add Xd, Xd, #:lo12:sym`` into a
    NOP when ``sym`` is page-aligned: 7.x ``__start_BTF``)."""
    page: dict[int, list[int]] = {}  # register -> [page, used as a base]
    out: list[int] = []

    def drop(reg: int) -> None:
        p = page.pop(reg, None)
        if p is not None and not p[1]:
            out.append(p[0])
    for ins in _CS.disasm(code, addr):
        ops = ins.operands
        if ins.id == A.ARM64_INS_ADRP:
            drop(ops[0].reg)
            page[ops[0].reg] = [ops[1].imm & (2**64 - 1), 0]
            continue
        if ins.id == A.ARM64_INS_ADD and len(ops) == 3 and ops[1].reg in page \
                and ops[2].type == A.ARM64_OP_IMM and not ops[2].shift.value:
            page[ops[1].reg][1] = 1
            out.append((page[ops[1].reg][0] + ops[2].imm) & (2**64 - 1))
        elif ins.id in (A.ARM64_INS_LDR, A.ARM64_INS_STR) and len(ops) == 2 \
                and ops[1].type == A.ARM64_OP_MEM and ops[1].mem.base in page \
                and not ops[1].mem.index and not ins.writeback:
            page[ops[1].mem.base][1] = 1
            out.append((page[ops[1].mem.base][0] + ops[1].mem.disp) & (2**64 - 1))
        _, written = ins.regs_access()
        for r in written:
            drop(r)
    for r in list(page):
        drop(r)
    return out


BOOT_REFS = CodeRefs(TABLES, adrp_targets)
