/* One of two static functions called dup_static (the other is in dup_b.c): kallsyms then holds
 * the name twice and kprobe_events refuses it as not unique. */
#include "kernel.h"

extern volatile long sink;

static noinline long dup_static(long a)
{
	sink = a * 5;
	return a + 1;
}

noinline long dup_a_caller(long a)
{
	return dup_static(a) + 1;
}
