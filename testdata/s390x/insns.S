/* Hand-written functions of the s390x test image: one instruction per kprobe rule, each at a
 * `.L` label (kept in .symtab by --keep-locals, dropped by kallsyms) so tests can find it.
 * FUNC emits what gcc -mfentry -mnop-mcount -mrecord-mcount emits at a function entry: a 6-byte
 * `brcl 0,0` recorded in __mcount_loc (the ftrace site, KPROBES_ON_FTRACE). */

.macro FUNC name
	.text
	.globl \name
	.type \name, @function
	.p2align 3
\name:
999:	brcl 0,0
	.pushsection __mcount_loc, "a"
	.quad 999b
	.popsection
.endm

.macro ENDF name
	.size \name, . - \name
.endm

/* include/asm-generic/kprobes.h NOKPROBE_SYMBOL: one absolute pointer */
.macro NOKPROBE name
	.pushsection _kprobe_blacklist, "aw"
	.balign 8
	.quad \name
	.popsection
.endm

	.section .head.text, "ax"
	.globl startup_continue
	.type startup_continue, @function
startup_continue:
	lgr %r1,%r2
	br %r14
	.size startup_continue, . - startup_continue

/* --- lengths, relative-long instructions, fixup classes ---------------------------------- */
FUNC s390_plain
.Ls_lgr:	lgr %r1,%r2			/* RRE, 4 bytes */
.Ls_ar:		ar %r1,%r2			/* RR, 2 bytes */
.Ls_larl:	larl %r1,s390_data		/* RIL-b: displacement rewritten in the slot */
.Ls_lgrl:	lgrl %r3,s390_data		/* RIL-b */
.Ls_strl:	strl %r3,s390_data		/* RIL-b store */
.Ls_brasl:	brasl %r14,s390_notrace		/* PSW_NORMAL | RETURN_REGISTER */
.Ls_brc:	jne 1f				/* a7x4: PSW_NORMAL */
1:
.Ls_basr:	basr %r14,%r1			/* RETURN_REGISTER */
.Ls_basr0:	basr %r14,%r0			/* RETURN_REGISTER | BRANCH_NOT_TAKEN */
.Ls_bcr:	bcr 8,%r14			/* BRANCH_NOT_TAKEN */
.Ls_crb:	crb %r1,%r2,8,0(%r14)		/* ec..f6: BRANCH_NOT_TAKEN */
.Ls_cgrb:	cgrb %r1,%r2,8,0(%r14)		/* ec..e4: probes.c lists e6, so PSW_NORMAL */
.Ls_lpswe:	lpswe 0(%r15)			/* NOT_REQUIRED */
.Ls_clzg:	.long 0xb9680012		/* clzg %r1,%r2: in the 6.12 opcode table only */
.Ls_unknown:	.long 0xb9ff0012		/* in no opcode table */
.Ls_trap4:	.long 0xb2ff0000		/* trap4: known */
.Ls_ret:	br %r14
ENDF s390_plain

/* A 0x00xx halfword stops can_probe's walk: everything after it is refused (EINVAL). */
FUNC s390_zero_halfword
.Lz_lgr:	lgr %r1,%r2
.Lz_zero:	.short 0x0000			/* "illegal": known, so itself probeable */
.Lz_after:	lgr %r1,%r2
		br %r14
ENDF s390_zero_halfword

/* --- probe_is_prohibited_opcode ----------------------------------------------------------- */
FUNC s390_prohibited
.Lp_ex:		ex %r1,0(%r2)
.Lp_exrl:	exrl %r1,1f
.Lp_diag:	diag %r1,%r2,0x44
.Lp_stnsm:	stnsm 0(%r15),0xfe
.Lp_stosm:	stosm 0(%r15),0x01
.Lp_bsm:	bsm %r1,%r2
.Lp_bassm:	bassm %r1,%r2
.Lp_epsw:	epsw %r1,%r2
.Lp_bakr:	bakr %r1,%r2
.Lp_pc:		pc 0
.Lp_pt:		pt %r1,%r2
.Lp_bsa:	bsa %r1,%r2
.Lp_bsg:	bsg %r1,%r2
.Lp_pr:		pr
.Lp_tbegin:	tbegin 0,0
.Lp_tbeginc:	tbeginc 0,0
.Lp_tend:	tend
1:		br %r14
ENDF s390_prohibited

/* --- reserved text: jump label (6-byte brcl), BUG (mc + __bug_table), extable -------------- */
FUNC s390_reserved
.Lr_jump:	brcl 0,2f			/* arch_static_branch: JUMP_LABEL_NOP_SIZE 6 */
	.pushsection __jump_table, "aw"
	.balign 8
	.long .Lr_jump - .
	.long 2f - .
	.quad s390_key - .
	.popsection
.Lr_bug:	mc 0,0				/* BUG(): monitor call + 12-byte __bug_table entry */
	.pushsection __bug_table, "aw"
3:	.long .Lr_bug - .
	.long s390_file - .
	.short 42
	.short 0
	.org 3b + 12
	.popsection
.Lr_ex:		lg %r1,0(%r2)			/* has an extable entry: s390 does not care */
	.pushsection __ex_table, "a"
	.balign 4
	.long .Lr_ex - .
	.long 2f - .
	.short 0
	.short 0
	.popsection
2:		br %r14
ENDF s390_reserved

/* notrace: no __mcount_loc record, so kprobe_events refuses it (within_notrace_func) */
	.text
	.globl s390_notrace
	.type s390_notrace, @function
	.p2align 3
s390_notrace:
		lgr %r1,%r2
		br %r14
ENDF s390_notrace

/* NOKPROBE_SYMBOL */
FUNC s390_nokprobe
		lgr %r1,%r2
		br %r14
ENDF s390_nokprobe
NOKPROBE s390_nokprobe

/* syscall wrapper entry: __s390x_sys_<name>(struct pt_regs *) */
FUNC __s390x_sys_kpatch_test
		lg %r2,152(%r2)			/* regs->orig_gpr2: arg1 */
		br %r14
ENDF __s390x_sys_kpatch_test

/* noinstr (notrace) */
	.section .noinstr.text, "ax"
	.globl s390_noinstr
	.type s390_noinstr, @function
s390_noinstr:
		lgr %r1,%r2
		br %r14
ENDF s390_noinstr

/* __kprobes (6.1 keeps the ftrace record) and the 6.1 kprobes_insn_page (slots) */
	.section .kprobes.text, "ax"
	.globl s390_kprobes_text
	.type s390_kprobes_text, @function
	.p2align 3
s390_kprobes_text:
999:	brcl 0,0
	.pushsection __mcount_loc, "a"
	.quad 999b
	.popsection
		br %r14
ENDF s390_kprobes_text
	.p2align 3
	.globl kprobes_insn_page
	.type kprobes_insn_page, @function
kprobes_insn_page:
	.rept 64
	.short 0x07fe
	.endr
ENDF kprobes_insn_page

/* .irqentry.text: arch_populate_kprobe_blacklist */
	.section .irqentry.text, "ax"
	.globl s390_irqentry
	.type s390_irqentry, @function
	.p2align 3
s390_irqentry:
999:	brcl 0,0
	.pushsection __mcount_loc, "a"
	.quad 999b
	.popsection
		lgr %r1,%r2
		br %r14
ENDF s390_irqentry

/* init text (freed after boot) and .amode31.text (outside _stext.._etext) */
	.section .init.text, "ax"
	.globl s390_init
	.type s390_init, @function
s390_init:
999:	brcl 0,0
	.pushsection __mcount_loc, "a"
	.quad 999b
	.popsection
		br %r14
ENDF s390_init
	.section .amode31.text, "ax"
	.globl s390_amode31
	.type s390_amode31, @function
s390_amode31:
		br %r14
ENDF s390_amode31

	.data
	.balign 8
	.globl s390_data, s390_key
s390_data:	.quad 0
s390_key:	.quad 0
	.section .rodata
s390_file:	.asciz "insns.S"

/* Stand-ins for the kernel functions whose presence shows CONFIG_KPROBES_ON_FTRACE and
 * CONFIG_KPROBE_EVENTS (kpatch_core.config infers facts from symbols). */
	.text
	.globl arch_prepare_kprobe_ftrace, kprobe_dispatcher
	.type arch_prepare_kprobe_ftrace, @function
	.type kprobe_dispatcher, @function
	.p2align 3
arch_prepare_kprobe_ftrace:
	br %r14
	.size arch_prepare_kprobe_ftrace, . - arch_prepare_kprobe_ftrace
	.p2align 3
kprobe_dispatcher:
	br %r14
	.size kprobe_dispatcher, . - kprobe_dispatcher
