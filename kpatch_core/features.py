"""Kernel behaviours as named features: which kernels have each, and where it comes from.

Code never compares kernel versions; it asks ``image.features.has("NAME")``.  Each row of
:data:`FEATURES` names one behaviour that changed between kernels, the versions where it holds
(``since`` inclusive, ``until`` exclusive, as (major, minor)), the architectures it concerns,
the ``CONFIG_`` option that decides it when it is a configuration choice (then evidence in the
image decides, the version only says whether the option exists), and the kernel function or
commit it comes from.  A new kernel version is new rows (or a new ``until``), not new code.

The rows were checked against real kernels on :data:`VERIFIED` (Debian 6.1 and 6.12) and
:data:`VERIFIED_ALSO` (Debian 5.10, 7.2 and 7.3); a
``since``/``until`` between them comes from the kernel's history and is marked "not pinned" in
its source when it was not confirmed against the tag.  An image outside the verified range gets
``exact=False``: the outputs say so (``"rules_exact": false`` and a one-line note).

>>> fs = FeatureSet.decide((6, 12), "x86_64")
>>> fs.has("EVENTS_NONUNIQUE_EINVAL"), fs.rules, fs.exact
(True, '6.12', True)
>>> FeatureSet.decide((7, 2), "x86_64").exact, FeatureSet.decide((7, 1), "x86_64").exact
(True, False)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from .image import Image, KernelVersion

Version = tuple[int, int]


@attrs.frozen
class Feature:
    """One kernel behaviour: where it holds, and the kernel source it comes from."""

    name: str
    doc: str  # one line: what the kernel does when the feature holds
    source: str  # kernel function and/or commit
    since: Version | None = None  # first version with it (None: every known kernel)
    until: Version | None = None  # first version without it (None: still there)
    arches: tuple[str, ...] = ()  # () : every architecture
    config: str | None = None  # CONFIG_ option that decides it (image evidence wins)

    def in_versions(self, version: Version) -> bool:
        """True when ``version`` lies in ``[since, until)``."""
        return (self.since is None or version >= self.since) and \
            (self.until is None or version < self.until)


_F = Feature
FEATURES: tuple[Feature, ...] = (
    # --- kprobe_events: trace_kprobe.c __trace_kprobe_create -------------------------------
    _F("EVENTS_VALIDATE_SYMBOL_FIRST",
       "the symbol's uniqueness (validate_probe_symbol) is checked before a return probe's "
       "function-entry check",
       "kernel/trace/trace_kprobe.c: __trace_kprobe_create, validate_probe_symbol "
       "(6.1.y: number_of_same_symbols after kprobe_on_func_entry; since not pinned)",
       since=(6, 6)),
    _F("EVENTS_UNIQUE_SYMBOL",
       "a probe symbol that names several kallsyms symbols is refused (NON_UNIQ_SYMBOL 'The "
       "symbol is not unique'); before, kallsyms_lookup_name's first match is probed",
       "kernel/trace/trace_kprobe.c: number_of_same_symbols; b022f0c7e404 'tracing/kprobes: "
       "Return EADDRNOTAVAIL when func matches several symbols' (v6.6, in 6.1.y and late "
       "5.10.y: the image's .rodata text decides; Debian 5.10.223 lacks it, 5.10.262 has it)",
       since=(5, 10), config="TRACE_KPROBE_UNIQUE_SYMBOL"),
    _F("KALLSYMS_IGNORES_KVM_NVHE",
       "kallsyms drops the whole arm64 non-VHE KVM namespace (__kvm_nvhe_*): kprobe_events "
       "cannot name those symbols (ENOENT), and the kprobe blacklist's __hyp_text area is one "
       "entry per remaining kallsyms symbol; later kernels keep them (only their $/.L labels "
       "are dropped)",
       "scripts/kallsyms.c: is_ignored_symbol ignored_prefixes ('__kvm_nvhe_' in 5.10, "
       "'__kvm_nvhe_$' and '__kvm_nvhe_.L' in 6.1; until not pinned; Debian 5.10.223 arm64: "
       "oracle)",
       until=(6, 1), arches=("arm64",)),
    _F("EVENTS_NONUNIQUE_EINVAL",
       "a missing or non-unique probe symbol fails the write with -EINVAL (goto parse_error), "
       "not -ENOENT / -EADDRNOTAVAIL",
       "kernel/trace/trace_kprobe.c: __trace_kprobe_create parse_error (since not pinned)",
       since=(6, 6)),
    _F("EVENTS_BAD_MAXACT_TYPE",
       "'pN' (maxactive on a kprobe) logs BAD_MAXACT_TYPE 'Maxactive is only for function "
       "exit' (before: MAXACT_NO_KPROBE)",
       "kernel/trace/trace_probe.h: ERRORS; 334e5519c375 'tracing/probes: Add tracepoint "
       "support on fprobe_events' (v6.5)",
       since=(6, 5)),
    _F("EVENTS_FPROBE_TRACEPOINT_ERRORS",
       "error_log has the tracepoint ids NO_TRACEPOINT and BAD_TP_NAME",
       "kernel/trace/trace_probe.h: ERRORS; 334e5519c375 (v6.5)",
       since=(6, 5)),
    _F("ERRORS_BAD_VAR_SPELLING_FIXED",
       "error_log BAD_VAR reads 'Invalid $-variable specified' (before: '$-valiable')",
       "kernel/trace/trace_probe.h: ERRORS BAD_VAR (since not pinned; the fix reached "
       "5.10.y but not 6.1.y: the image's .rodata text decides, Debian 5.10.262 / 6.1.176 / "
       "7.2.13 checked by the oracle)",
       since=(6, 6), config="TRACE_PROBE_BAD_VAR_SPELLING_FIXED"),
    _F("KPROBE_EVENTS_BTF_ARGS",
       "BTF function arguments: parameter names, $retval types and fields, BTF fetch types and "
       "bitfields, with their error ids (NOSUP_BTFARG...); also needs "
       "CONFIG_PROBE_EVENTS_BTF_ARGS, $argN access and a .BTF section",
       "kernel/trace/trace_probe.c: parse_btf_arg, parse_btf_field, generate_probe_arg_name; "
       "b576e09701c7 'tracing/probes: Support function parameters if BTF is available' (v6.5)",
       since=(6, 5)),
    _F("EVENTS_META_ARGS",
       "'$arg*' expands to every BTF parameter (traceprobe_expand_meta_args), and more than "
       "MAX_TRACE_ARGS arguments fail with -E2BIG (before: the extra ones are ignored)",
       "kernel/trace/trace_probe.c: traceprobe_expand_meta_args; 18b1e870a496 'tracing/probes: "
       "Add $arg* meta argument for all function args' (v6.5)",
       since=(6, 5)),
    _F("EVENTS_PARSE_CONTEXT",
       "traceprobe_parse_context carries the caret offset through an argument, the event size "
       "(EVENT_TOO_BIG) is counted after the fetch program, ARG_TOO_LONG fails with -E2BIG",
       "kernel/trace/trace_probe.c: traceprobe_parse_probe_arg_body (struct "
       "traceprobe_parse_context, v6.5; since not pinned)",
       since=(6, 6)),
    _F("EVENTS_COMM_NEEDS_STRING_TYPE",
       "$comm / an immediate string with a non-string type logs NEED_STRING_TYPE (before: "
       "-EINVAL, nothing logged)",
       "kernel/trace/trace_probe.c: traceprobe_parse_probe_arg_body; 'tracing/probes: Fix to "
       "show a parse error for bad type for $comm' (since not pinned)",
       since=(6, 6)),
    _F("EVENTS_RETPROBE_ARGS",
       "$argN on return probes (fetched at function entry, store_trace_entry_data); the FENTRY "
       "flag is set for entry probes only",
       "kernel/trace/trace_probe.c: parse_probe_vars; 25f00e40ce79 'tracing/probes: Support "
       "$argN in return probe (kprobe and fprobe)' (v6.9)",
       since=(6, 9)),
    _F("EVENTS_DENTRY_ARGS",
       "ARG:%pd / ARG:%pD print a dentry / file name (traceprobe_expand_dentry_args)",
       "kernel/trace/trace_probe.c: traceprobe_expand_dentry_args; 'tracing/probes: support "
       "%pd/%pD type' (v6.10)",
       since=(6, 10)),
    _F("EVENTS_SANITIZE_ASTERISK",
       "an automatic event name has '*' replaced by '_' as well as ':' and '.'",
       "kernel/trace/trace_probe.h: sanitize_event_name (since not pinned)",
       since=(6, 6)),
    _F("EVENTS_EPROBE_TYPECAST",
       "a fetch argument starting with '(' is a typecast, only for eprobe fields: a kprobe logs "
       "TYPECAST_NOT_EVENT 'Typecasts are only for eprobe fields' (before: BAD_FETCH_ARG)",
       "kernel/trace/trace_probe.c: handle_typecast (7.2.13: TYPECAST_NOT_EVENT; 6.12 has no "
       "typecast; since not pinned)",
       since=(7, 2)),
    _F("EVENTS_ARGSTR_LEN_255",
       "a fetch argument body may be 255 characters long (MAX_ARGSTR_LEN; before: 63)",
       "kernel/trace/trace_probe.h: MAX_ARGSTR_LEN, traceprobe_parse_probe_arg_body (7.2.13: "
       "63, 7.3.4: 255; both checked by the oracle)",
       since=(7, 3)),
    _F("ERRORS_FILE_ON_KPROBE_KERNEL_PROBES",
       "error_log FILE_ON_KPROBE reads 'File offset is not available for kernel probes' "
       "(before: 'with kprobe')",
       "kernel/trace/trace_probe.h: ERRORS FILE_ON_KPROBE (7.2.13 / 7.3.4: oracle)",
       since=(7, 3)),
    _F("EVENTS_NESTED_PARSE_STATES",
       "fetch arguments are parsed by a loop over at most TRACEPROBE_MAX_NESTED_LEVEL (8) "
       "nested dereferences / typecasts / this_cpu_*(): a 9th logs TOO_MANY_NESTED 'Too many "
       "nested typecasts/dereferences' with -E2BIG (before: recursion limited by "
       "FETCH_INSN_MAX, TOO_MANY_OPS)",
       "kernel/trace/trace_probe.c: parse_probe_arg_nested, parse_probe_arg_leaf, "
       "unwind_parse_states (7.2.13 / 7.3.4: oracle)",
       since=(7, 3)),
    _F("EVENTS_CURRENT_VAR",
       "'$current' fetches the current task_struct's address on kernel probes; "
       "'$current->FIELD' reads its fields through BTF (task_struct) on any kernel probe",
       "kernel/trace/trace_probe.c: parse_probe_var_current, parse_btf_arg (FETCH_OP_CURRENT; "
       "7.2.13 / 7.3.4: oracle)",
       since=(7, 3)),
    _F("EVENTS_THIS_CPU",
       "'this_cpu_ptr(ARG)' and 'this_cpu_read(ARG)' read per-cpu variables on kernel probes "
       "(FETCH_OP_CPU_PTR; NOSUP_PERCPU elsewhere)",
       "kernel/trace/trace_probe.c: parse_this_cpu, unwind_parse_states (7.2.13 / 7.3.4: "
       "oracle)",
       since=(7, 3)),
    _F("EVENTS_KPROBE_TYPECAST",
       "'(STRUCT[,FIELD])VAR->FIELD' typecasts work on function entry and exit kprobes "
       "(BTF struct types; TYPECAST_REQ_FIELD, TYPECAST_SYM_OFFSET, TYPECAST_NOT_ALIGNED, "
       "TYPECAST_BAD_ARROW), other kprobes log NOSUP_BTFARG",
       "kernel/trace/trace_probe.c: handle_typecast, parse_btf_casttype, parse_btf_field "
       "(7.2.13 / 7.3.4: oracle)",
       since=(7, 3)),
    _F("EVENTS_MATCH_HEAD_FULL_PLACE",
       "'-:EVENT PLACE' compares the whole probe place (SYM[+OFFS], MOD:SYM...) with PLACE; "
       "before, the place as snprintf left it in char[MAX_ARGSTR_LEN + 1] (its first 63 "
       "characters), so a longer place only matched its 63-character prefix",
       "kernel/trace/trace_kprobe.c: trace_kprobe_match_command_head (7.2.13 / 7.3.4: oracle, "
       "deleting MOD:SYM places of 62-80 characters)",
       since=(7, 3)),
    _F("FETCH_TYPE_CHAR",
       "the 'char' fetch type",
       "kernel/trace/trace_probe.c: probe_fetch_types (since not pinned)",
       since=(6, 6)),
    # --- x86_64 ------------------------------------------------------------------------------
    _F("X86_UPROBE_OPTIMIZE_NOP10",
       "a uprobe on the 10-byte NOP '66 2e 0f 1f 84 SIB disp32' within one page is optimizable "
       "(it becomes a call to the uprobe trampoline): uprobe_init_insn is skipped, so its CS "
       "prefix is not refused (before: BAD_PREFIX, -ENOTSUPP)",
       "arch/x86/kernel/uprobes.c: arch_uprobe_analyze_insn, can_optimize, "
       "is_optimizable_nop10 (uprobe oracle on 70 nop10 offsets of busybox and libc: 6.12.117 "
       "refuses them, 7.2.13 and 7.3.4 accept; since not pinned between 6.13 and 7.2)",
       since=(7, 2), arches=("x86_64",)),
    _F("X86_INSN_DECODER_REX2",
       "the x86 instruction decoder reads 0xd5 in 64-bit mode as the APX REX2 prefix (two "
       "bytes, then a map-0 or map-1 opcode): uprobes judge the opcode after it (before: 0xd5 "
       "is an opcode, invalid in 64-bit mode, refused by good_insns_64)",
       "arch/x86/lib/insn.c: insn_get_prefixes/insn_get_opcode, 'x86/insn: Add support for "
       "REX2 prefix to the instruction decoder' (v6.10)",
       since=(6, 10), arches=("x86_64",)),
    _F("X86_CAN_PROBE_EXCEPTION_INSN",
       "can_probe refuses INT3 / INT n / INTO / INT1 / UD0 / UD1 / UD2 (is_exception_insn) and "
       "an instruction the decoder cannot decode",
       "arch/x86/kernel/kprobes/core.c: can_probe, is_exception_insn (since not pinned)",
       since=(6, 6), arches=("x86_64",)),
    _F("X86_CAN_BOOST_GROUP_REGS",
       "can_boost boosts the group opcodes C0/C1/D0-D3/F6/F7/FE/FF by ModRM.reg (before: only "
       "FF /4)",
       "arch/x86/kernel/kprobes/core.c: can_boost (since not pinned)",
       since=(6, 6), arches=("x86_64",)),
    _F("X86_OPTPROBE_NO_INDIRECT_SCAN_WITH_RETPOLINE_IBT",
       "can_optimize skips the indirect-jump scan when retpolines or IBT guard indirect jumps "
       "(before: it always scans, and refuses jumps into __indirect_thunk_*)",
       "arch/x86/kernel/kprobes/opt.c: can_optimize, insn_is_indirect_jump (since not pinned)",
       since=(6, 6), arches=("x86_64",)),
    _F("X86_PARAVIRT_NATIVE_PATCH",
       "apply_paravirt inlines the native code of the irq, cr2/cr3, wbinvd and (native) lock pv "
       "ops (cli, sti, pushf;pop, movb $0,(%rdi) ...) and _paravirt_ident_64 as mov %rdi,%rax; "
       "later kernels patch these with ALTERNATIVE instead",
       "arch/x86/kernel/paravirt_patch.c: native_patch, paravirt_patch_insns; removed by "
       "'x86/paravirt: switch functions with custom code to ALTERNATIVE' (v5.13; until not "
       "pinned; Debian 5.10.262 checked by the oracle)",
       until=(5, 13), arches=("x86_64",)),
    _F("X86_DYNAMIC_NOPS",
       "add_nops pads patched sites (apply_paravirt, alternatives) with ideal_nops, chosen at "
       "boot from the CPU: k8_nops (two 0x66-prefixed 0x90 instructions for 5-8 bytes) on "
       "AMD family <= 0xf, e.g. QEMU TCG -cpu max, else p6_nops (= the later x86_nops)",
       "arch/x86/kernel/alternative.c: arch_init_ideal_nops, add_nops; removed by 'x86: Remove "
       "dynamic NOP selection' (v5.15); Debian 5.10.223 and 5.10.262 have arch_init_ideal_nops",
       until=(5, 15), arches=("x86_64",)),
    _F("X86_PARAVIRT_ALTERNATIVES",
       "pv-op calls are .altinstructions entries (no .parainstructions): ALT_FLAG_DIRECT_CALL "
       "turns `call *pv_ops(%rip)` into a direct call, ALT_NOT(XENPV/VCPUPREEMPT...) into the "
       "native code (vcpu_is_preempted: xor %eax,%eax), so such a site is probed and boosted "
       "as that code",
       "arch/x86/kernel/alternative.c: apply_alternatives, alt_replace_call; 'x86/paravirt: "
       "switch mixed paravirt/alternative calls to alternatives' (v6.8; since not pinned; "
       "Debian 7.2.13 amd64 checked by the oracle)",
       since=(6, 8), arches=("x86_64",)),
    # --- arm64 -------------------------------------------------------------------------------
    _F("ARM64_BCOND_MATCHES_BC",
       "aarch64_insn_is_bcond's mask also takes BC.cond (bit 4 set): simulated as a branch",
       "arch/arm64/include/asm/insn.h: aarch64_insn_is_bcond (FEAT_HBC; since not pinned)",
       since=(6, 6), arches=("arm64",)),
    _F("ARM64_MOPS_NOT_STEPPABLE",
       "aarch64_insn_is_steppable refuses the MOPS memcpy/memset instructions",
       "arch/arm64/kernel/probes/decode-insn.c: aarch64_insn_is_steppable "
       "(aarch64_insn_is_mops; FEAT_MOPS support, v6.5; since not pinned)",
       since=(6, 6), arches=("arm64",)),
    _F("ARM64_EXCLUSIVE_MASKS_EXACT",
       "is_probed_address_atomic opens/closes its window only at LDXR/LDAXR/LDXP/LDAXP and "
       "STXR/STLXR/STXP/STLXP (o2 = 0); before, the load_ex/store_ex masks also took LDAR/STLR "
       "and the LSE CAS forms, refusing probes after them",
       "arch/arm64/kernel/probes/decode-insn.c: is_probed_address_atomic, asm/insn.h "
       "aarch64_insn_is_load_ex (since not pinned: 6.1.176 and 6.12.117 have the wide masks, "
       "7.2.13 arm64 accepts 7/7 probes after LDAR/CAS in the oracle)",
       since=(6, 13), arches=("arm64",)),
    _F("ARM64_IDMAP_TEXT_BLACKLISTED",
       "arch_populate_kprobe_blacklist adds __idmap_text_start..__idmap_text_end",
       "arch/arm64/kernel/probes/kprobes.c: arch_populate_kprobe_blacklist (until not pinned)",
       until=(6, 6), arches=("arm64",)),
    _F("ARM64_DYNAMIC_FTRACE_WITH_CALL_OPS",
       "-fpatchable-function-entry=4,2: each ftrace record sits 8 bytes before its function "
       "(the image's record layout decides; the version only says the option exists)",
       "arch/arm64/kernel/ftrace.c: ftrace_call_adjust; baaf553d3bc3 'arm64: Implement "
       "HAVE_DYNAMIC_FTRACE_WITH_CALL_OPS' (v6.4)",
       since=(6, 4), arches=("arm64",), config="DYNAMIC_FTRACE_WITH_CALL_OPS"),
    # --- riscv64 -----------------------------------------------------------------------------
    _F("RISCV_KPROBES_ON_FTRACE",
       "HAVE_KPROBES_ON_FTRACE (DYNAMIC_FTRACE_WITH_REGS): a probe on an ftrace site uses "
       "ftrace (the image's kprobe_ftrace_handler decides)",
       "arch/riscv/Kconfig: HAVE_KPROBES_ON_FTRACE, dropped with DYNAMIC_FTRACE_WITH_ARGS "
       "(until not pinned)",
       until=(6, 6), arches=("riscv64",), config="KPROBES_ON_FTRACE"),
    _F("RISCV_SYSCALL_WRAPPER",
       "ARCH_HAS_SYSCALL_WRAPPER: syscall entry points are __riscv_sys_* (before: sys_*)",
       "arch/riscv/include/asm/syscall_wrapper.h; 08d0ce30e0e4 'riscv: Implement syscall "
       "wrappers' (v6.6)",
       since=(6, 6), arches=("riscv64",)),
    _F("RISCV_ALTERNATIVE_OFFSETS",
       ".alternative entries hold relative offsets (struct alt_entry old_offset/alt_offset), "
       "applied by riscv_cpufeature_patch_func",
       "arch/riscv/include/asm/alternative.h: struct alt_entry (since not pinned)",
       since=(6, 6), arches=("riscv64",)),
    _F("RISCV_KPROBES_SIMULATE_RVC",
       "compressed jumps and branches (c.j, c.jr, c.jalr, c.beqz, c.bnez) are simulated, with "
       "the masks of asm/insn.h (before: rejected, with simulate-insn.h's masks)",
       "arch/riscv/kernel/probes/decode-insn.c: riscv_probe_decode_insn (since not pinned)",
       since=(6, 6), arches=("riscv64",)),
    _F("RISCV_FTRACE_AUIPC_AT_INIT",
       "ftrace_init_nop writes 'auipc t0, ftrace_caller' + a 4-byte nop over the patchable "
       "entry and only the second word is toggled: the ftrace site (rec->ip) is the word after "
       "the auipc, so SYM+0 (the auipc) is probed by breakpoint and SYM+4 is the ftrace site",
       "arch/riscv/kernel/ftrace.c: ftrace_call_adjust (+MCOUNT_AUIPC_SIZE), ftrace_init_nop; "
       "'riscv: ftrace: prepare ftrace for atomic code patching' (since not pinned; Debian "
       "7.2.13 riscv64 checked by the oracle)",
       since=(6, 16), arches=("riscv64",)),
    _F("RISCV_DYNAMIC_FTRACE_WITH_CALL_OPS",
       "-fpatchable-function-entry=8,4: each ftrace record sits 8 bytes (the ops literal) "
       "before its function, ftrace_call_adjust adds 8 (the image's record layout decides)",
       "arch/riscv/kernel/ftrace.c: ftrace_call_adjust; 'riscv: Implement "
       "HAVE_DYNAMIC_FTRACE_WITH_CALL_OPS' (since not pinned)",
       since=(6, 16), arches=("riscv64",), config="DYNAMIC_FTRACE_WITH_CALL_OPS"),
    _F("RISCV_UPROBE_TRAP_ANY_EBREAK",
       "prepare_uprobe refuses (-ENOTSUPP) an ebreak as well as a c.ebreak at the uprobe "
       "offset (is_trap_insn); before: only c.ebreak (weak is_swbp_insn), and the decoder "
       "rejects a 32-bit ebreak with -EINVAL",
       "arch/riscv/kernel/probes/uprobes.c: is_trap_insn (absent in 6.1, present in 6.12; "
       "since not pinned)",
       since=(6, 6), arches=("riscv64",)),
    # --- s390x -------------------------------------------------------------------------------
    _F("S390_OPCODES_ARCH15",
       "the disassembler's opcode table (find_insn) knows the arch15 instructions (and prno "
       "for ppno): probe_is_prohibited_opcode accepts them",
       "arch/s390/tools/opcodes.txt, arch/s390/kernel/dis.c: find_insn (since not pinned)",
       since=(6, 6), arches=("s390x",)),
    _F("S390_KPROBES_INSN_PAGE",
       "kernel probes take their slots from kprobes_insn_page inside vmlinux (within a "
       "relative-long displacement of the text)",
       "arch/s390/kernel/kprobes.c: alloc_s390_insn_page (until not pinned)",
       until=(6, 6), arches=("s390x",)),
    _F("S390_KERNEL_IMAGE_BASE",
       "the running kernel (nokaslr) sits at CONFIG_KERNEL_IMAGE_BASE + TEXT_OFFSET, not at "
       "its link address",
       "arch/s390/boot/startup.c: setup_kernel_memory_layout (v6.10)",
       since=(6, 10), arches=("s390x",)),
    # --- ppc64le -----------------------------------------------------------------------------
    _F("PPC_FUNCTION_ARG_ACCESS_API",
       "HAVE_FUNCTION_ARG_ACCESS_API: $argN in kprobe_events (regs_get_kernel_argument)",
       "arch/powerpc/Kconfig: HAVE_FUNCTION_ARG_ACCESS_API (since not pinned)",
       since=(6, 6), arches=("ppc64le",)),
    _F("PPC_FTRACE_PATCHABLE_ENTRY",
       "ftrace records are the first of two patchable-entry NOPs (the site is record + 4) and "
       "records in .exit.text are dropped (before: -mprofile-kernel, the record is bl _mcount)",
       "arch/powerpc/include/asm/ftrace.h: ftrace_call_adjust; kernel/trace/ftrace.c "
       "(since not pinned)",
       since=(6, 6), arches=("ppc64le",)),
    _F("PPC_FTRACE_OUT_OF_LINE",
       "the patchable entry is one NOP (branching to an out-of-line stub when traced): the "
       "ftrace record is the site itself (the image's ftrace_ool_stub_text decides)",
       "arch/powerpc/Kconfig PPC_FTRACE_OUT_OF_LINE, arch/powerpc/kernel/trace/ftrace.c "
       "(ftrace_init_ool_stub); 'powerpc64/ftrace: Move ftrace sequence out of line' (v6.13; "
       "since not pinned; Debian 7.2.13 ppc64le checked by the oracle)",
       since=(6, 13), arches=("ppc64le",), config="PPC_FTRACE_OUT_OF_LINE"),
    _F("PPC_KPROBE_ENTRY_BY_FTRACE_LOCATION",
       "arch_kprobe_on_func_entry: an offset counts as the function entry up to the ftrace site "
       "(offset <= ftrace_location(addr) - addr; 8 without one), not up to 16 bytes",
       "arch/powerpc/kernel/kprobes.c: arch_kprobe_on_func_entry; 'powerpc/kprobes: Use ftrace "
       "to determine if a probe is at function entry' (since not pinned; Debian 7.2.13 "
       "ppc64le checked by the oracle)",
       since=(6, 13), arches=("ppc64le",)),
    # --- BPF attach types: fentry/fexit, kprobe_multi (kpatch_core/bpf_trampoline.py, fprobe.py)
    _F("FENTRY_DENY_RCU_READ_LOCK",
       "fentry/fexit on __rcu_read_lock/__rcu_read_unlock (CONFIG_PREEMPT_RCU) is refused: "
       "btf_id_deny lists them",
       "kernel/bpf/verifier.c: btf_id_deny (absent in 6.1, present in 6.12; since not pinned)",
       since=(6, 6)),
    _F("FEXIT_NORETURN_DENY",
       "fexit/fmod_ret on a __noreturn function (do_exit, make_task_dead, ...) is refused",
       "kernel/bpf/verifier.c: check_attach_btf_id, noreturn_deny (since not pinned)",
       since=(6, 6)),
    _F("FEXIT_RETVAL_MAX_8",
       "fexit/fmod_ret on a function whose return value is larger than 8 bytes: -EOPNOTSUPP",
       "kernel/bpf/verifier.c: bpf_check_attach_target, attach_uses_trampoline_retval "
       "(since not pinned)",
       since=(6, 6)),
    _F("BPF_TRAMPOLINE_STACK_ARGS",
       "the x86_64 BPF trampoline takes up to MAX_BPF_FUNC_ARGS (12) argument registers' worth, "
       "7-12 on the stack (before: at most 6)",
       "arch/x86/net/bpf_jit_comp.c: arch_prepare_bpf_trampoline nr_regs "
       "(473e3150e30a, v6.6)",
       since=(6, 6), arches=("x86_64",)),
    _F("BPF_TRAMPOLINE_ARM64_STACK_ARGS",
       "the arm64 BPF trampoline passes the arguments past x0-x7 on the stack (structs too), "
       "so only the verifier's MAX_BPF_FUNC_ARGS (12) limits them (before: more than 8 "
       "argument registers -ENOTSUPP)",
       "arch/arm64/net/bpf_jit_comp.c: calc_arg_aux ('bpf, arm64: Support up to 12 function "
       "arguments', v6.16; Debian 6.12 refuses, 7.2.13 accepts: oracle)",
       since=(6, 16), arches=("arm64",)),
    _F("FPROBE_FILTER_BY_KALLSYMS",
       "an fprobe event's symbol is matched against every kallsyms name (aliases included) "
       "whose address is an ftrace location; before, against ftrace's record names "
       "(ftrace_set_filter: one name per record, the first alias)",
       "kernel/trace/fprobe.c: register_fprobe -> get_ips_from_filter / filter_match_callback "
       "(the fprobe rewrite on the function-graph tracer; 6.12 still calls ftrace_set_filter; "
       "7.2.13 arm64 answered f: __kvm_nvhe_nvhe_hyp_panic_handler; since not pinned)",
       since=(7, 0)),
    _F("SLEEPABLE_SYSCALLS_WITHOUT_ERROR_INJECTION",
       "without CONFIG_FUNCTION_ERROR_INJECTION (Debian), sleepable fentry/fexit/fmod_ret and "
       "fmod_ret programs may attach to the arch's syscall entries (__x64_, __arm64_...); "
       "before, the error-injection list is always empty and only security_ hooks take fmod_ret",
       "kernel/bpf/verifier.c: check_attach_sleepable / check_attach_modify_return, "
       "has_arch_syscall_prefix (absent in 6.12, present in 7.2.13; since not pinned)",
       since=(7, 0)),
    _F("BPF_TRAMPOLINE_STRUCT_ARGS",
       "struct arguments of at most 16 bytes pass through the BPF trampoline (one register per "
       "8 bytes); before, the trampoline refuses them -ENOTSUPP",
       "arch/x86/net/bpf_jit_comp.c: arch_prepare_bpf_trampoline (v6.1); "
       "arch/arm64/net/bpf_jit_comp.c: btf_func_model_nregs (arm64: not in 6.1, in 6.12; "
       "since not pinned, taken as 6.1 for both)",
       since=(6, 1), arches=("x86_64", "arm64")),
    _F("KPROBE_MULTI_CNT_LIMIT",
       "a kprobe_multi link of more than MAX_KPROBE_MULTI_CNT (1 << 20) symbols: -E2BIG",
       "kernel/trace/bpf_trace.c: bpf_kprobe_multi_link_attach (since not pinned)",
       since=(6, 6)),
    _F("TRACING_UNION_ARGS",
       "fentry/fexit take union arguments of at most 16 bytes like structs (before: "
       "btf_distill_func_proto refuses a union argument, 'arg0 type UNION is unsupported')",
       "kernel/bpf/btf.c: __get_type_size / __btf_type_is_struct (6.1 and 6.12: struct only, "
       "checked on Debian 6.1; since not pinned)",
       since=(6, 13)),
    _F("MODULE_MAPPING_SYMBOLS_ANY_DOLLAR",
       "a module's kallsyms lookups skip every '$'-prefixed symbol (riscv's '$xrv64i2p1_...' "
       "ISA mapping symbols too) and 'L0' labels; before, only '$a/$d/$t/$x' (optionally "
       "followed by '.') and '.L'",
       "include/linux/module_symbol.h: is_mapping_symbol (6.12); kernel/module/kallsyms.c: "
       "is_arm_mapping_symbol (6.1; since not pinned)",
       since=(6, 6)),
)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

# The kernel versions the table was checked against with real kernels (the oracle).
VERIFIED: tuple[Version, Version] = ((6, 1), (6, 12))
# Versions outside that range whose every oracle kernel agrees (tests/data/oracle/README.md):
# bullseye 5.10 (5.10.262 amd64, 5.10.223 arm64), sid 7.2.13 (all five arches) and
# trixie-backports 7.3.4 (amd64, arm64: probes, kprobe_events, BPF attach, uprobes on amd64).
VERIFIED_ALSO: tuple[Version, ...] = ((5, 10), (7, 2), (7, 3))
# The rule-set label outputs print ("rules": "6.1"): the verified kernel whose rows an image
# shares; kept from before the table, where 6.6 was the only boundary.
RULE_LABELS: tuple[tuple[Version, str], ...] = (((6, 6), "6.12"), ((0, 0), "6.1"))


def feature(name: str) -> Feature:
    """The row called ``name``; an unknown name raises (a typo must fail loudly)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown kernel feature {name!r} (see kpatch_core.features.FEATURES)") \
            from None


@attrs.frozen
class FeatureSet:
    """The kernel behaviours one image has, decided once from its version and evidence.

    ``rules`` is the label outputs print ("6.1" / "6.12"); ``exact`` is False when the version
    lies outside :data:`VERIFIED` (the nearest rows are applied, and the outputs say so).
    """

    version: Version
    arch: str
    names: frozenset[str]
    rules: str
    exact: bool

    def has(self, name: str) -> bool:
        """True when the kernel has behaviour ``name``; an unknown name raises KeyError."""
        return feature(name).name in self.names

    @classmethod
    def decide(cls, version: "Version | KernelVersion", arch: str = "",
               evidence: Mapping[str, bool] | None = None) -> "FeatureSet":
        """The features of kernel ``version`` ((major, minor) or a KernelVersion) on ``arch``.

        ``evidence`` maps ``CONFIG_`` names to what the image shows; a row with a ``config``
        holds when the evidence says the option is on (and, without evidence, on the versions
        the row gives).  Rows for other architectures never hold.
        """
        v = _as_version(version)
        evidence = evidence or {}
        names = set()
        for f in FEATURES:
            if f.arches and arch not in f.arches:
                continue
            if f.config is not None and f.config in evidence:
                held = evidence[f.config]
            else:
                held = f.in_versions(v)
            if held:
                names.add(f.name)
        label = next(lab for since, lab in RULE_LABELS if v >= since)
        return cls(v, arch, frozenset(names), label,
                   VERIFIED[0] <= v <= VERIFIED[1] or v in VERIFIED_ALSO)

    @classmethod
    def for_image(cls, image: "Image") -> "FeatureSet":
        """The features of ``image``: its version, its backend, the evidence of its config
        facts for the rows that are configuration options (defaults are not evidence)."""
        facts = image.config.facts
        evidence = {f.config: facts[f.config].value for f in FEATURES
                    if f.config is not None and f.config in facts
                    and facts[f.config].source.startswith(("inferred", "config file", "--set"))}
        return cls.decide(image.version, image.backend.name, evidence)

    def note(self) -> str:
        """The one-line note printed when :attr:`exact` is False ('' otherwise)."""
        if self.exact:
            return ""
        known = sorted([*VERIFIED_ALSO, *VERIFIED])
        side = ("newer than" if self.version > known[-1] else
                "older than" if self.version < known[0] else "not one of")
        lo, hi = VERIFIED
        names = [f"{a}.{b}" for a, b in known if not lo <= (a, b) <= hi]
        names.insert(sum(v < lo for v in VERIFIED_ALSO), f"{lo[0]}.{lo[1]}..{hi[0]}.{hi[1]}")
        v = self.version
        near = min(known, key=lambda k: (abs((k[0] - v[0]) * 100 + k[1] - v[1]), k))
        return (f"note: kernel {v[0]}.{v[1]} is {side} the kernels "
                f"the rules were verified on ({', '.join(names)}); applying the features "
                f"table's rows for {v[0]}.{v[1]} (nearest verified: {near[0]}.{near[1]}; "
                f"{self.rules} rules)")


def _as_version(version: "Version | KernelVersion") -> Version:
    if isinstance(version, tuple):
        return (version[0], version[1])
    return (version.major, version.minor)
