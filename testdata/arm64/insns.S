/* One function per decode-insn.c class: the instruction under test is at NAME+8. */
#include "common.h"
	.text
	.arch armv8.5-a
/* simulated (INSN_GOOD_NO_SLOT) */
	ONE k_ldr_lit_x, ldr x0, lit64
	ONE k_ldr_lit_w, ldr w0, lit64
	ONE k_ldrsw_lit, ldrsw x0, lit64
	ONE k_adr, adr x0, lit64
	ONE k_adrp, adrp x0, lit64
	ONE k_b, b 1f; 1:
	ONE k_bl, bl k_b
	ONE k_bcond, b.eq 1f; 1:
	ONE k_cbz, cbz x0, 1f; 1:
	ONE k_cbnz, cbnz w0, 1f; 1:
	ONE k_tbz, tbz x0, #3, 1f; 1:
	ONE k_tbnz, tbnz x0, #63, 1f; 1:
	ONE k_br, br x1
	ONE k_blr, blr x1
	ONE k_ret, ret x1
/* BC.cond (FEAT_HBC, bit 4 set): 6.1 steps it, 6.12 simulates it */
	ONEW k_bc_cond, 0x54000040 | 0x10
/* rejected (INSN_REJECTED) */
	ONE k_prfm_lit, prfm pldl1keep, lit64
	ONEW k_retaa, 0xd65f0bff
	ONEW k_braa, 0xd71f0801
	ONEW k_blraa, 0xd73f0801
	ONEW k_eret, 0xd69f03e0
	ONEW k_eretaa, 0xd69f0bff
	ONE k_svc, svc #0
	ONE k_hvc, hvc #0
	ONE k_smc, smc #0
	ONE k_brk, brk #0x100
	ONE k_hlt, hlt #0
	ONE k_msr_imm, msr daifset, #2
	ONE k_msr_reg, msr sctlr_el1, x0
	ONE k_mrs_daif, mrs x0, daif
	ONE k_hint_yield, yield
	ONE k_hint_wfe, wfe
	ONE k_hint_wfi, wfi
	ONE k_hint_sev, sev
	ONE k_hint_autiasp, hint #29
	ONE k_hint_autia1716, hint #12
	ONE k_hint_esb, hint #16
	ONE k_hint_csdb, hint #20
	ONE k_ldxr, ldxr x0, [x1]
	ONE k_stxr, stxr w2, x0, [x1]
	ONE k_ldaxr, ldaxr w0, [x1]
	ONE k_stlxr, stlxr w2, w0, [x1]
	ONE k_ldxp, ldxp x0, x3, [x1]
	ONE k_stxp, stxp w2, x0, x3, [x1]
/* MOPS (CPYFP x1!, x2!, x1!): 6.1 steps it, 6.12 rejects it */
	ONEW k_mops, 0x19010441
/* single-stepped out of line (INSN_GOOD) */
	ONE k_mrs_tpidr, mrs x0, tpidr_el1
	ONE k_hint_nop, nop
	ONE k_hint_xpaclri, hint #7
	ONE k_hint_pacia1716, hint #8
	ONE k_hint_pacib1716, hint #10
	ONE k_hint_paciaz, hint #24
	ONE k_hint_paciasp, hint #25
	ONE k_hint_pacibz, hint #26
	ONE k_hint_pacibsp, hint #27
	ONE k_hint_bti, hint #32
	ONE k_hint_bti_c, hint #34
	ONE k_hint_bti_j, hint #36
	ONE k_hint_bti_jc, hint #38
	ONE k_dsb, dsb sy
	ONE k_isb, isb
	ONE k_clrex, clrex
	ONE k_dc, dc civac, x0
	ONE k_tlbi, tlbi vmalle1
	ONE k_add, add x0, x1, x2
	ONE k_ldr_imm, ldr x0, [x1, #8]
	ONE k_ldar, ldar x0, [x1]
	ONE k_ldadd, ldadd x0, x2, [x1]
	ONE k_ldr_lit_q, ldr q0, lit64

/* exclusive-monitor loop: probes between ldxr and stxr are refused (is_probed_address_atomic) */
	FUNC k_excl_loop
1:	ldxr	w1, [x0]		/* +8  */
	add	w1, w1, #1		/* +12 inside the window */
	stxr	w2, w1, [x0]		/* +16 */
	cbnz	w2, 1b			/* +20 after the store: not atomic */
	ret				/* +24 */
	ENDF k_excl_loop

/* ldar/casa match load_ex (bit 23 ignored): they open a window too */
	FUNC k_ldar_window
	ldar	x1, [x0]		/* +8 */
	add	x1, x1, #1		/* +12 */
	stlr	x1, [x0]		/* +16 matches store_ex: closes it */
	ret				/* +20 */
	ENDF k_ldar_window

/* the scan covers 32 instructions when the probe is >= 128 bytes into the symbol */
	FUNC k_far_window
	ldxr	x1, [x0]		/* +8 */
	.rept 40
	add	x1, x1, #1		/* +12 .. +168 */
	.endr
	stxr	w2, x1, [x0]
	ret
	ENDF k_far_window

/* ...and starts no earlier than the symbol when the probe is < 128 bytes in */
	FUNC k_prev_ldxr
	ldxr	x1, [x0]
	ENDF k_prev_ldxr
	FUNC k_after_ldxr
	add	x1, x1, #1		/* +8: the ldxr is in the previous symbol */
	ret
	ENDF k_after_ldxr

/* exception-table users: refused by search_exception_tables */
	FUNC k_extable
	ldtr	x0, [x1]		/* +8 has a fixup */
	ldtr	x0, [x1]		/* +12 has none */
	ret
	ENDF k_extable
	.pushsection __ex_table, "a"
	.balign 4
	.long	k_extable + 8 - .
	.long	k_fixup - .
	.short	3			/* EX_TYPE_UACCESS_ERR_ZERO */
	.short	0
	.popsection
k_fixup:
	ret

/* ARM64_LSE_ATOMIC_INSN(): an LL/SC loop that apply_alternatives() replaces, on a CPU with LSE
 * atomics, by `stadd` and three NOPs; the kernel judges the patched text */
	FUNC k_lse_alt
661:	ldxr	w1, [x0]		/* +8  stadd at runtime */
	add	w1, w1, w2		/* +12 nop at runtime */
	stxr	w3, w1, [x0]		/* +16 nop at runtime */
	cbnz	w3, 661b		/* +20 nop at runtime */
662:	ret
	ENDF k_lse_alt
	.pushsection .altinstructions, "a"
	.long	661b - .
	.long	663f - .
	.short	26			/* cpucap ARM64_HAS_LSE_ATOMICS (6.1 numbering) */
	.byte	662b - 661b
	.byte	664f - 663f
	.popsection
	.pushsection .altinstr_replacement, "ax"
663:	stadd	w2, [x0]
	nop
	nop
	nop
664:
	.popsection

/* BTI C before the patchable NOPs (CONFIG_ARM64_BTI_KERNEL): the ftrace site moves with it */
	.globl k_bti_entry
	.type k_bti_entry, %function
	.balign 8
#ifdef CALL_OPS
	nop
	nop
#endif
k_bti_entry:
	hint	#34			/* +0 bti c */
	nop				/* +4 */
	nop				/* +8 the site with CALL_OPS (record + 8 + 4 + 4) */
	ret
	.size k_bti_entry, . - k_bti_entry
	.pushsection __mcount_loc, "a"
#ifdef CALL_OPS
	.quad k_bti_entry - 8
#else
	.quad k_bti_entry + 4
#endif
	.popsection

/* PC-relative literal pool used above */
	.balign 8
lit64:	.quad 0x1122334455667788
