/* linux_banner: the core reads the kernel version (and so the rule set) from it */
	.section .rodata, "a"
	.globl linux_banner
	.type linux_banner, %object
linux_banner:
	.asciz "Linux version " KVER " (kpatch-core testdata) #1 SMP PREEMPT"
	.size linux_banner, . - linux_banner
