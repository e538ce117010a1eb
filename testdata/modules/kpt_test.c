/*
 * kpt_test: a small kernel module for tests (testdata/modules/make_modules.py builds it with the
 * kernel's x86_64 code generation flags; no kernel tree needed).  It has what the loader and
 * the kprobe rules look at: .modinfo, __fentry__ calls recorded in __mcount_loc, a
 * NOKPROBE_SYMBOL entry, a .kprobes.text function, a notrace function, a jump label, init and
 * exit text, and calls into the kernel (testdata/x86_64/vmlinux: plain_func).
 */
#define __section(s) __attribute__((__section__(s)))
#define __used __attribute__((__used__))
#define notrace __attribute__((__no_instrument_function__))
#define noinline __attribute__((__noinline__))

extern int plain_func(int x);

static const char kpt_modinfo[] __used __section(".modinfo") __attribute__((aligned(1))) =
	"license=GPL\0depends=\0name=kpt_test\0"
	"vermagic=" UTS_RELEASE " SMP preempt mod_unload modversions ";

int kpt_counter;
long kpt_key;

noinline int kpt_func(int x)
{
	kpt_counter++;
	return plain_func(x) + 1;
}

noinline int kpt_nokprobe(int x)
{
	return x * 3 + kpt_counter;
}
/* NOKPROBE_SYMBOL(kpt_nokprobe) */
static void *__kbl_kpt_nokprobe __used __section("_kprobe_blacklist") = (void *)kpt_nokprobe;

noinline __section(".kprobes.text") int kpt_kprobes_fn(int x)
{
	return x + 7 + kpt_counter;
}

noinline notrace int kpt_notrace(int x)
{
	return (x ^ kpt_counter) + plain_func(x);
}

/* static_branch_unlikely(): a 5-byte NOP recorded in __jump_table (s32 code, s32 target, long key) */
noinline int kpt_jl(int x)
{
	asm goto("1: .byte 0x0f,0x1f,0x44,0x00,0x00\n\t"
		 ".pushsection __jump_table, \"aw\"\n\t.balign 8\n\t"
		 ".long 1b - ., %l[l_yes] - .\n\t.quad kpt_key - .\n\t.popsection"
		 : : : : l_yes);
	return x + kpt_counter;
l_yes:
	return x + 1;
}

__section(".init.text") int kpt_init(void)
{
	return kpt_func(kpt_counter);
}
int init_module(void) __attribute__((alias("kpt_init")));

__section(".exit.text") void kpt_exit(void)
{
	kpt_counter = 0;
}
void cleanup_module(void) __attribute__((alias("kpt_exit")));
