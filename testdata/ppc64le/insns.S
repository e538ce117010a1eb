/* Hand-written functions of the ppc64le test image: one instruction per kprobe rule, each at a
 * `.L` label (kept in .symtab by --keep-locals, dropped by kallsyms) so tests can find it.
 * FUNC emits what gcc -mprofile-kernel emits for a kernel function: the ELFv2 global entry
 * (TOC setup from r12), `.localentry` (st_other = 3: local entry at +8), then
 * `mflr r0; bl _mcount`, whose address scripts/recordmcount puts in __mcount_loc. */

.macro FUNC name
	.text
	.globl \name
	.type \name, @function
	.p2align 4
\name:
0:	addis 2,12,.TOC.-0b@ha
	addi 2,2,.TOC.-0b@l
	.localentry \name, .-\name
	mflr 0
999:	bl _mcount
	.pushsection __mcount_loc, "a"
	.balign 8
	.quad 999b
	.popsection
.endm

/* A function that needs no TOC: no global-entry prologue, ftrace site at +4 */
.macro FUNC_NOTOC name
	.text
	.globl \name
	.type \name, @function
	.p2align 4
\name:
	mflr 0
999:	bl _mcount
	.pushsection __mcount_loc, "a"
	.balign 8
	.quad 999b
	.popsection
.endm

.macro ENDF name
	.size \name, . - \name
.endm

.macro NOKPROBE name
	.pushsection _kprobe_blacklist, "aw"
	.balign 8
	.quad \name
	.popsection
.endm

/* --- .head.text: [_stext, __head_end) is blacklisted by arch_within_kprobe_blacklist -------- */
	.section .head.text, "ax"
	.globl __start
	.type __start, @function
__start:
	nop
	b ppc_toc_func
	.size __start, . - __start
	.globl head_traced
	.type head_traced, @function
head_traced:				/* has an ftrace record, still blacklisted */
	mflr 0
999:	bl _mcount
	.pushsection __mcount_loc, "a"
	.balign 8
	.quad 999b
	.popsection
	blr
	.size head_traced, . - head_traced

/* --- emulate_step versus single-step, optprobes ------------------------------------------- */
FUNC ppc_toc_func
.Lt_add:	add 3,3,4			/* emulated in registers; optimizable */
.Lt_ld:		ld 5,8(3)			/* emulated load (emulate_loadstore); not optimizable */
.Lt_std:	std 5,16(3)			/* emulated store */
.Lt_lwarx:	lwarx 6,0,3			/* emulated larx */
.Lt_dcbf:	dcbf 0,3			/* cache op: emulated */
.Lt_sync:	sync				/* barrier: emulated, optimizable */
.Lt_mflr:	mflr 7				/* mfspr LR: registers */
.Lt_mfpvr:	mfspr 7,287			/* mfspr PVR: single-stepped */
.Lt_mfmsr:	mfmsr 8				/* emulated (MFMSR) */
.Lt_fadd:	fadd 1,2,3			/* FP arithmetic: single-stepped */
.Lt_beq:	beq 0,1f			/* conditional branch: emulated, never optimized */
1:
.Lt_bl:		bl ppc_notoc_func		/* branch: emulated, optimizable */
.Lt_zero:	.long 0				/* a data word in .text: primary opcode 0, accepted */
.Lt_blr:	blr				/* bclr: conditional-branch class, not optimized */
ENDF ppc_toc_func

FUNC_NOTOC ppc_notoc_func
.Ln_add:	addi 3,3,1
		blr
ENDF ppc_notoc_func

/* 6.12 -fpatchable-function-entry=2 style (ARCH_USING_PATCHABLE_FUNCTION_ENTRY): the record is
 * the first of two NOPs; 6.12's ftrace_call_adjust moves the site to the second one (+4) */
	.text
	.globl ppc_pfe_func
	.type ppc_pfe_func, @function
	.p2align 4
ppc_pfe_func:
0:	addis 2,12,.TOC.-0b@ha
	addi 2,2,.TOC.-0b@l
	.localentry ppc_pfe_func, .-ppc_pfe_func
999:	nop
	nop
	.pushsection __mcount_loc, "a"
	.balign 8
	.quad 999b
	.popsection
		addi 3,3,3
		blr
ENDF ppc_pfe_func

/* TOC prologue but no _mcount call: SYM+0 moves to the local entry (ppc_function_entry) */
	.text
	.globl ppc_toc_notrace
	.type ppc_toc_notrace, @function
	.p2align 4
ppc_toc_notrace:
0:	addis 2,12,.TOC.-0b@ha
	addi 2,2,.TOC.-0b@l
	.localentry ppc_toc_notrace, .-ppc_toc_notrace
.Lu_local:	addi 3,3,2
		blr
ENDF ppc_toc_notrace

/* --- can_single_step: refused instructions ------------------------------------------------ */
FUNC ppc_prohibited
.Lp_tw:		tw 4,3,4
.Lp_td:		td 4,3,4
.Lp_twi:	twi 4,3,0
.Lp_tdi:	tdi 4,3,0
.Lp_trap:	trap				/* tw 31,0,0: the breakpoint itself */
.Lp_sc:		sc
.Lp_mtmsr:	mtmsr 3
.Lp_mtmsrd:	mtmsrd 3,1
.Lp_rfid:	rfid
.Lp_hrfid:	hrfid
.Lp_urfid:	.long 0x4c000264		/* urfid */
.Lp_rfscv:	.long 0x4c0000a4		/* rfscv */
.Lp_stop:	.long 0x4c0002e4		/* stop */
.Lp_nap:	.long 0x4c000364		/* nap */
.Lp_rfi:	.long 0x4c000064		/* rfi */
		blr
ENDF ppc_prohibited

/* --- prefixed instructions (ISA 3.1, -mcpu=power10) ---------------------------------------- */
FUNC ppc_prefixed
.Lx_pld:	pld 3,8(4),0			/* prefix word, then the suffix word */
.Lx_paddi:	paddi 3,4,1,0
		.p2align 6
		.skip 60
.Lx_cross:	.long 0x04000000, 0xe4640008	/* pld 3,8(4) at 64n+60: crosses 64 bytes */
		blr
ENDF ppc_prefixed

/* --- reserved text: jump label (4-byte nop), BUG (twi 31,0,0 + __bug_table), extable ------- */
FUNC ppc_reserved
.Lr_jump:	nop
	.pushsection __jump_table, "aw"
	.balign 8
	.long .Lr_jump - .
	.long 2f - .
	.quad ppc_key - .
	.popsection
.Lr_bug:	twi 31,0,0
	.pushsection __bug_table, "aw"
3:	.long .Lr_bug - .
	.long ppc_file - .
	.short 42
	.short 0
	.org 3b + 12
	.popsection
.Lr_ex:		ld 3,0(4)			/* has an extable entry: powerpc does not care */
	.pushsection __ex_table, "a"
	.balign 4
	.long .Lr_ex - .
	.long 2f - .
	.popsection
2:		blr
ENDF ppc_reserved

FUNC ppc_nokprobe
		addi 3,3,1
		blr
ENDF ppc_nokprobe
NOKPROBE ppc_nokprobe

/* syscall: the wrapper keeps the sys_ name; regs->gpr[3] at +24(r3) */
FUNC sys_kpatch_test
		ld 3,24(3)
		blr
ENDF sys_kpatch_test

	.section .noinstr.text, "ax"
	.globl ppc_noinstr
	.type ppc_noinstr, @function
ppc_noinstr:
		addi 3,3,1
		blr
ENDF ppc_noinstr

	.section .kprobes.text, "ax"
	.globl ppc_kprobes_text
	.type ppc_kprobes_text, @function
ppc_kprobes_text:
		mflr 0
999:		bl _mcount
	.pushsection __mcount_loc, "a"
	.balign 8
	.quad 999b
	.popsection
		blr
ENDF ppc_kprobes_text

/* prefix word at 0x...fffc, suffix at the 64 KiB page start: the suffix check is skipped */
	.section .pagecross.text, "ax"
	.globl ppc_pagecross
	.type ppc_pagecross, @function
ppc_pagecross:
		mflr 0
999:		bl _mcount
	.pushsection __mcount_loc, "a"
	.balign 8
	.quad 999b
	.popsection
.Lg_prefix:	.long 0x04000000
.Lg_suffix:	.long 0xe4640008
		blr
ENDF ppc_pagecross

/* Stand-ins for kernel symbols the core infers facts from (KPROBES_ON_FTRACE, KPROBE_EVENTS,
 * OPTPROBES) and the optprobe detour buffer; _mcount itself has no record. */
	.text
	.p2align 4
	.globl _mcount, arch_prepare_kprobe_ftrace, kprobe_dispatcher, arch_prepare_optimized_kprobe
	.globl optinsn_slot
	.type _mcount, @function
_mcount:	blr
	.size _mcount, 4
	.type arch_prepare_kprobe_ftrace, @function
arch_prepare_kprobe_ftrace: blr
	.size arch_prepare_kprobe_ftrace, 4
	.type kprobe_dispatcher, @function
kprobe_dispatcher: blr
	.size kprobe_dispatcher, 4
	.type arch_prepare_optimized_kprobe, @function
arch_prepare_optimized_kprobe: blr
	.size arch_prepare_optimized_kprobe, 4
	.type optinsn_slot, @function
optinsn_slot:	.skip 64
	.size optinsn_slot, 64

	.data
	.balign 8
	.globl ppc_key
ppc_key:	.quad 0
	.section .rodata
ppc_file:	.asciz "insns.S"
