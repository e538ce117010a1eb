/* The second static dup_static (see dup_a.c). */
#include "kernel.h"

extern volatile long sink;

static noinline long dup_static(long a)
{
	sink = a * 7;
	return a - 1;
}

noinline long dup_b_caller(long a)
{
	return dup_static(a) - 1;
}
