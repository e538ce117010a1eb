/* Helpers shared by the arm64 test-image sources (see build.sh). */
/* A traced function: two patchable NOPs (-fpatchable-function-entry=2) and an __mcount_loc
 * record at the first one; ftrace_call_adjust() moves the site to func+4.  With -DCALL_OPS
 * (6.12 DYNAMIC_FTRACE_WITH_CALL_OPS, -fpatchable-function-entry=4,2) two more NOPs precede
 * the function and the record points at them. */
.macro FUNC name
	.globl \name
	.type \name, %function
	.balign 8
#ifdef CALL_OPS
	nop
	nop
#endif
\name:
	nop
	nop
	.pushsection __mcount_loc, "a"
#ifdef CALL_OPS
	.quad \name - 8
#else
	.quad \name
#endif
	.popsection
.endm
.macro ENDF name
	.size \name, . - \name
.endm
/* FUNC with one instruction at +8 followed by `ret`: the probe target is NAME+8 */
.macro ONE name, insn:vararg
	FUNC \name
	\insn
	ret
	ENDF \name
.endm
.macro ONEW name, word
	FUNC \name
	.inst \word
	ret
	ENDF \name
.endm
