/* a second, local dup_fn: kallsyms then holds the name twice */
#include "common.h"
	.text
	.type dup_fn, @function
	.balign 4
dup_fn:
	.4byte 0x00000013, 0x00000013
	ret
	.size dup_fn, . - dup_fn
	.pushsection __mcount_loc, "a"
	.quad dup_fn
	.popsection
