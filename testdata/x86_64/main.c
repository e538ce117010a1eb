/* C functions of the test image: compiled with -pg -mfentry -mrecord-mcount, so each has an
 * ENDBR and a `call __fentry__` recorded in __mcount_loc, like a distribution kernel. */
#include "kernel.h"

struct static_key test_key_false;
struct static_key test_key_true = { 1 };
volatile long sink;

/* An ordinary function: entry is ftrace-based, later boundaries single-stepped. */
noinline long plain_func(long a, long b)
{
	sink = a;
	return a * 3 + b;
}

/* A second ordinary function (the differential test walks every function). */
noinline long plain_loop(long n)
{
	long s = 0;
	for (long i = 0; i < n; i++)
		s += i ^ sink;
	return s;
}

/* NOKPROBE_SYMBOL: the only reason this function is refused. */
noinline long nokprobe_func(long a)
{
	sink = a + 1;
	return a;
}
NOKPROBE_SYMBOL(nokprobe_func)

/* __kprobes (6.1 flavour, keeps __fentry__): blacklisted only by .kprobes.text. */
noinline __kprobes long kprobes_text_func(long a)
{
	sink = a + 2;
	return a;
}

/* noinstr: .noinstr.text, and notrace like the kernel's noinstr. */
noinstr long noinstr_func(long a)
{
	sink = a + 3;
	return a;
}

/* notrace: no __fentry__, so kprobe_events refuses it (within_notrace_func). */
noinline notrace long notrace_func(long a)
{
	sink = a + 4;
	return a;
}

/* Jump labels: a 5-byte NOP site and a 2-byte `jmp` site. */
noinline long jump_label_func(long a)
{
	if (arch_static_branch(&test_key_false, 0))
		sink = a;
	return a + 5;
}

noinline long jump_label_jmp_func(long a)
{
	if (arch_static_branch_jump(&test_key_true, 1))
		sink = a;
	return a + 6;
}

/* BUG(): a ud2 listed in __bug_table. */
noinline long bug_func(long a)
{
	if (a < 0)
		BUG();
	return a + 7;
}

/* A user of the exception table (a fixup for the load). */
noinline long extable_func(const volatile long *p)
{
	long v;
	asm volatile("1: mov (%1), %0\n"
		     "2:\n"
		     _ASM_EXTABLE(1b, 2b)
		     : "=r"(v) : "r"(p));
	return v;
}

/* kretprobe_blacklist[] on x86: a return probe here is refused. */
noinline long __switch_to(long prev, long next)
{
	sink = prev;
	return next;
}

/* Functions whose presence config.py takes as evidence of kernel options. */
noinline void arch_prepare_kprobe_ftrace(void) { sink = 10; }   /* KPROBES_ON_FTRACE */
noinline void kprobe_dispatcher(void) { sink = 11; }            /* KPROBE_EVENTS */
noinline void ftrace_make_nop(void) { sink = 12; }              /* DYNAMIC_FTRACE */
noinline void preempt_schedule(void) { sink = 13; }             /* PREEMPTION */
noinline void ibt_selftest(void) { sink = 14; }                 /* X86_KERNEL_IBT */
noinline void arch_prepare_optimized_kprobe(void) { sink = 15; } /* OPTPROBES */

/* .init.text: its __mcount_loc record is freed after boot, and it is not core text. */
noinline __init long init_func(long a)
{
	sink = a + 8;
	return a;
}

long dup_a_caller(long a);
long dup_b_caller(long a);

void start_kernel(void)
{
	long v = 0;
	v += plain_func(1, 2) + plain_loop(3) + nokprobe_func(4) + kprobes_text_func(5);
	v += noinstr_func(6) + notrace_func(7) + jump_label_func(8) + jump_label_jmp_func(9);
	v += bug_func(10) + extable_func(&sink) + __switch_to(1, 2) + init_func(11);
	v += dup_a_caller(12) + dup_b_caller(13);
	arch_prepare_kprobe_ftrace();
	kprobe_dispatcher();
	ftrace_make_nop();
	preempt_schedule();
	ibt_selftest();
	arch_prepare_optimized_kprobe();
	sink = v;
}
