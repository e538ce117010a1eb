/* linux_banner: the core reads the kernel version (and so the rule set) from it */
	.section .rodata, "a"
	.globl linux_banner
	.type linux_banner, @object
linux_banner:
	.asciz "Linux version " KVER " (kpatch-core testdata) #1 SMP PREEMPT"
	.size linux_banner, . - linux_banner
#ifdef KPROBES_ON_FTRACE
/* 6.1 has arch/riscv/kernel/probes/ftrace.c (CONFIG_KPROBES_ON_FTRACE): the core infers the
 * option from this symbol */
	.text
	.globl kprobe_ftrace_handler
	.type kprobe_ftrace_handler, @function
kprobe_ftrace_handler:
	ret
	.size kprobe_ftrace_handler, . - kprobe_ftrace_handler
#endif
