/* kpt_relocs_riscv64.S: one riscv64 module object with each relocation type the loader
 * handles that kpt_test.c does not produce (testdata/modules/make_modules.py assembles it):
 * JAL, BRANCH, RVC_JUMP, RVC_BRANCH, HI20/LO12_I/LO12_S, 32_PCREL, SET6/8/16/32,
 * SUB6, a lone ADD16 (the loader's buffer starts at 0, not at the field). */
	.option norelax
	.section .modinfo, "a"
	.asciz "name=kpt_relocs"
	.asciz "vermagic=6.12.0 SMP preempt mod_unload "
	.asciz "depends="

	.text
	.globl kpt_r_entry
	.type kpt_r_entry, @function
kpt_r_entry:
	jal	ra, kpt_r_far
	.reloc ., R_RISCV_BRANCH, kpt_r_far
	.word	0x00b50063		/* beq a0, a1, . */
	.reloc ., R_RISCV_RVC_JUMP, kpt_r_far
	.half	0xa001			/* c.j . */
	.reloc ., R_RISCV_RVC_BRANCH, kpt_r_far
	.half	0xc101			/* c.beqz a0, . */
	lui	a0, %hi(a_notrace)
	addi	a0, a0, %lo(a_notrace)
	sw	a1, %lo(a_notrace)(a0)
	ret
	.size kpt_r_entry, . - kpt_r_entry

	.section .text.far, "ax"
	.globl kpt_r_far
	.type kpt_r_far, @function
kpt_r_far:
	ret
	.size kpt_r_far, . - kpt_r_far

	.section .rodata.relocs, "a"
	.balign 8
	.globl kpt_r_table
kpt_r_table:
	.reloc ., R_RISCV_32_PCREL, kpt_r_far
	.word 0
	.reloc ., R_RISCV_SET32, kpt_r_far
	.word 0
	.reloc ., R_RISCV_SET16, kpt_r_far + 0x1234
	.half 0
	.reloc ., R_RISCV_SET8, kpt_r_far + 0x5a
	.byte 0
	.reloc ., R_RISCV_SET6, kpt_r_far + 0x15
	.byte 0xc0
	.reloc ., R_RISCV_SET6, kpt_r_far + 0x30
	.reloc ., R_RISCV_SUB6, kpt_r_entry + 0x10
	.byte 0x40
	.reloc ., R_RISCV_ADD16, kpt_r_far
	.half 0x1111
