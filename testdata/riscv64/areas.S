/* Functions in blacklisted areas and reserved sites: the probe target is NAME+8. */
#include "common.h"
	.option norvc
	.section .irqentry.text, "ax"
	ONE a_irqentry, add a0, a0, a1
	.section .entry.text, "ax"
	ONE a_entry, add a0, a0, a1		/* riscv does not blacklist .entry.text */
	.section .kprobes.text, "ax"
	ONE a_kprobes, add a0, a0, a1
	.section .noinstr.text, "ax"
	ONE a_noinstr, add a0, a0, a1

	.text
	ONE a_nokprobe, add a0, a0, a1
	.pushsection _kprobe_blacklist, "aw"
	.quad a_nokprobe
	.popsection
	FUNC a_jump_label
1:	nop				/* +8 */
	ret
	ENDF a_jump_label
	.pushsection __jump_table, "aw"
	.balign 8
	.long 1b - ., 2f - .
	.quad 0
	.popsection
2:	ret
	FUNC a_bug
1:	ebreak				/* +8 */
	ret
	ENDF a_bug
	.pushsection __bug_table, "aw"
	.balign 4
	.long 1b - ., 0
	.short 0, 0
	.popsection
	.globl a_notrace
	.type a_notrace, @function
a_notrace:
	add a0, a0, a1
	ret
	.size a_notrace, . - a_notrace
	.type dup_fn, @function
	FUNC dup_fn
	ret
	ENDF dup_fn
