/* init/version.c: the banner the version rules are read from (UTS_RELEASE from build.sh). */
	.section .rodata
	.globl linux_banner
	.type linux_banner, @object
linux_banner:
	.asciz "Linux version " UTS_RELEASE " (kpatch@testdata) (s390x-linux-gnu-gcc) #1 SMP Debian kpatch-test\n"
	.size linux_banner, . - linux_banner
