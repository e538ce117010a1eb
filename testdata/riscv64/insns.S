/* One function per riscv_probe_decode_insn class: the instruction under test is at NAME+8. */
#include "common.h"
	.text
	.option norvc
/* rejected in both rule sets */
	ONE k_ecall, ecall
	ONE k_ebreak, ebreak
	ONE k_csrr, csrr a0, sstatus
	ONE k_sret, sret
	ONE k_wfi, wfi
	ONE k_sfence_vma, sfence.vma
	ONE k_fence, fence rw, rw
	ONE k_fence_i, fence.i
	ONEW k_pause, 0x0100000f
	ONEH k_c_ebreak, 0x9002
/* compressed control transfers: rejected by 6.1, simulated by 6.12 */
	ONEH k_c_j, 0xa001 | (2 << 2)
	ONEH k_c_jr, 0x8082			/* c.jr ra (ret) */
	ONEH k_c_jalr, 0x9502			/* c.jalr a0 */
	ONEH k_c_beqz, 0xc001 | (2 << 2)	/* c.beqz s0, +... */
	ONEH k_c_bnez, 0xe001 | (2 << 2)
/* c_jal's encoding is RV64's c.addiw: 6.1 rejects it, 6.12 steps it */
	ONEH k_c_addiw, 0x2505			/* c.addiw a0, 1 */
/* c.jr x0 is reserved: 6.1's mask matches it, 6.12 wants rs1 != 0 */
	ONEH k_c_jr_x0, 0x8002
/* simulated in both */
	ONE k_jal, jal ra, k_ecall
	ONE k_jalr, jalr ra, 0(a0)
	ONE k_auipc, auipc a0, 0x12
	ONE k_beq, beq a0, a1, 1f; 1:
	ONE k_bne, bne a0, a1, 1f; 1:
	ONE k_blt, blt a0, a1, 1f; 1:
	ONE k_bge, bge a0, a1, 1f; 1:
	ONE k_bltu, bltu a0, a1, 1f; 1:
	ONE k_bgeu, bgeu a0, a1, 1f; 1:
/* single-stepped from a slot (everything else) */
	ONE k_add, add a0, a1, a2
	ONE k_ld, ld a0, 8(a1)
	ONE k_sd, sd a0, 8(a1)
	ONE k_lr_w, lr.w a0, (a1)
	ONE k_sc_w, sc.w a2, a0, (a1)
	ONE k_amoadd, amoadd.w a0, a2, (a1)
	ONE k_fld, fld fa0, 8(a1)
	ONEW k_sh1add, 0x20b52533		/* Zba sh1add a0, a0, a1 (unknown to capstone 5) */
	ONEW k_jalr_f3, 0x000510e7		/* opcode 0x67 with funct3 = 1: not jalr */
	ONEH k_c_addi, 0x0505			/* c.addi a0, 1 */
	ONEH k_c_mv, 0x852e			/* c.mv a0, a1 */
	ONEH k_c_ld, 0x6588			/* c.ld a0, 8(a1) */
	ONEH k_c_li, 0x4505			/* c.li a0, 1 */
	ONEH k_c_nop, 0x0001

/* mixed 2- and 4-byte instructions: boundaries come from the low two bits of each halfword */
	FUNC k_mixed
	.option push
	.option rvc
	c.addi	a0, 1			/* +8  (2 bytes) */
	.option norvc
	add	a0, a0, a1		/* +10 (4 bytes) */
	.option rvc
	c.mv	a1, a0			/* +14 */
	.option norvc
	auipc	a2, 0			/* +16 PC-relative: simulated */
	ld	a2, 0(a2)		/* +20 */
	ret				/* +24 */
	.option pop
	ENDF k_mixed

/* riscv has no exception-table check: an instruction with a fixup is probed normally */
	FUNC k_extable
	ld	a0, 0(a1)		/* +8 */
	ret
	ENDF k_extable
	.pushsection __ex_table, "a"
	.balign 4
	.long	k_extable + 8 - .
	.long	k_fixup - .
	.short	3
	.short	0
	.popsection
k_fixup:
	ret

/* boot-time alternatives (6.12 struct alt_entry): riscv_cpufeature_patch_func applies an entry
 * when the hart has the extension in patch_id; entries with a vendor_id are errata */
.macro ALT_ENTRY old, new, vendor, len, patch
	.pushsection .alternative, "a"
	.balign 4
	.long	\old - .
	.long	\new - .
	.short	\vendor
	.short	\len
	.long	\patch
	.popsection
.endm
	FUNC k_alt_zbb
661:	j	662f			/* +8  nop when the CPU has Zbb (simulate -> singlestep) */
	add	a0, a0, a1		/* +12 */
662:	ret
	ENDF k_alt_zbb
	.pushsection .altinstr_replacement, "ax"
663:	nop
	.popsection
	ALT_ENTRY 661b, 663b, 0, 4, 30	/* RISCV_ISA_EXT_ZBB */

	FUNC k_alt_zicbom
661:	nop				/* +8  cbo.clean (a0) with Zicbom: rejected (MISC-MEM) */
	ret
	ENDF k_alt_zicbom
	.pushsection .altinstr_replacement, "ax"
663:	.4byte	0x0015200f		/* cbo.clean (a0) */
	.popsection
	ALT_ENTRY 661b, 663b, 0, 4, 31	/* RISCV_ISA_EXT_ZICBOM */

	FUNC k_alt_errata
661:	nop				/* +8  a T-Head erratum: not this CPU */
	ret
	ENDF k_alt_errata
	.pushsection .altinstr_replacement, "ax"
663:	ecall
	.popsection
	ALT_ENTRY 661b, 663b, 0x5b7, 4, 30
