/* Helpers shared by the riscv64 test-image sources (see build.sh). */
	.option norelax
/* A traced function: -fpatchable-function-entry=4 with RVC gives four c.nop (8 bytes) and an
 * __mcount_loc record at func+0; ftrace_init_nop rewrites them to two 4-byte nops at boot. */
.macro FUNC name
	.globl \name
	.type \name, @function
	.balign 4
\name:
	.option push
	.option rvc
	c.nop
	c.nop
	c.nop
	c.nop
	.option pop
	.pushsection __mcount_loc, "a"
	.quad \name
	.popsection
.endm
.macro ENDF name
	.size \name, . - \name
.endm
/* FUNC with one instruction at +8 then `ret` (4 bytes): the probe target is NAME+8 */
.macro ONE name, insn:vararg
	FUNC \name
	\insn
	.option push
	.option norvc
	ret
	.option pop
	ENDF \name
.endm
/* the same with a raw 16-bit or 32-bit encoding */
.macro ONEH name, half
	FUNC \name
	.2byte \half
	.option push
	.option norvc
	ret
	.option pop
	ENDF \name
.endm
.macro ONEW name, word
	FUNC \name
	.4byte \word
	.option push
	.option norvc
	ret
	.option pop
	ENDF \name
.endm
