#include "common.h"
	.text
	.type dup_fn, %function
	.balign 8
dup_fn:
	nop
	nop
	ret
	.size dup_fn, . - dup_fn
	.pushsection __mcount_loc, "a"
	.quad dup_fn
	.popsection
