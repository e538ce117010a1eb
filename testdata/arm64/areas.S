/* Functions in the areas and tables that reserve text: the probe target is NAME+8. */
#include "common.h"
	.arch armv8.5-a
	.section .entry.text, "ax"
	ONE a_entry, add x0, x0, #1
	.section .irqentry.text, "ax"
	ONE a_irqentry, add x0, x0, #1
	.section .idmap.text, "ax"
	ONE a_idmap, add x0, x0, #1		/* blacklisted by 6.1 only */
	.section .hyp.text, "ax"
	ONE a_hyp, add x0, x0, #1
	.section .hyp.idmap.text, "ax"
	ONE a_hyp_idmap, add x0, x0, #1
	.section .kprobes.text, "ax"
	ONE a_kprobes, add x0, x0, #1
	.section .noinstr.text, "ax"
	ONE a_noinstr, add x0, x0, #1

	.text
/* NOKPROBE_SYMBOL(a_nokprobe) */
	ONE a_nokprobe, add x0, x0, #1
	.pushsection _kprobe_blacklist, "aw"
	.quad a_nokprobe
	.popsection
/* a clone of a blacklisted function is blacklisted too */
	FUNC a_nokprobe.part.0
	add x0, x0, #1
	ret
	ENDF a_nokprobe.part.0
/* a static key site: arch_static_branch's NOP */
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
/* BUG(): brk #0x800 with a __bug_table entry (CONFIG_DEBUG_BUGVERBOSE layout) */
	FUNC a_bug
1:	brk #0x800			/* +8 */
	ret
	ENDF a_bug
	.pushsection __bug_table, "aw"
	.balign 4
	.long 1b - ., 0
	.short 0, 0
	.popsection
/* no __mcount_loc record: kprobe_events refuses it (within_notrace_func) */
	.globl a_notrace
	.type a_notrace, %function
a_notrace:
	add x0, x0, #1
	ret
	.size a_notrace, . - a_notrace
/* a name kallsyms holds twice (the other one is in dup.S) */
	.type dup_fn, %function
	FUNC dup_fn
	ret
	ENDF dup_fn
