/*
 * kpt_test: a small kernel module for tests (testdata/modules/make_modules.py builds it with the
 * kernel's x86_64 code generation flags; no kernel tree needed).  It has what the loader and
 * the kprobe rules look at: .modinfo, __fentry__ calls recorded in __mcount_loc, a
 * NOKPROBE_SYMBOL entry, a .kprobes.text function, a notrace function, a jump label, init and
 * exit text, and calls into the kernel.  The arm64 build (kpt_test_arm64.ko) is for
 * testdata/arm64/vmlinux-6.12, the riscv64 one (kpt_test_riscv64.ko) for
 * testdata/riscv64/vmlinux-6.12: it also has the empty .plt/.got/.got.plt the module linker
 * script adds with CONFIG_MODULE_SECTIONS and label differences gas leaves as ADD/SUB pairs.
 */
#define __section(s) __attribute__((__section__(s)))
#define __used __attribute__((__used__))
#if defined(__aarch64__) || defined(__riscv)  /* compiler_types.h: CC_USING_PATCHABLE_FUNCTION_ENTRY */
#define notrace __attribute__((patchable_function_entry(0, 0)))
#else
#define notrace __attribute__((__no_instrument_function__))
#endif
#define noinline __attribute__((__noinline__))

extern int KFUNC(int x);  /* a kernel function: plain_func (x86_64), a_hyp (arm64), a_notrace (riscv64) */

static const char kpt_modinfo[] __used __section(".modinfo") __attribute__((aligned(1))) =
	"license=GPL\0depends=\0name=kpt_test\0"
	"vermagic=" UTS_RELEASE " SMP preempt mod_unload modversions ";

int kpt_counter;
long kpt_key;

noinline int kpt_func(int x)
{
	kpt_counter++;
	return KFUNC(x) + 1;
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
	return (x ^ kpt_counter) + KFUNC(x);
}

/* static_branch_unlikely(): a NOP recorded in __jump_table (s32 code, s32 target, long key) */
#ifdef __aarch64__
#define JUMP_NOP "nop"
#elif defined(__riscv)
#define JUMP_NOP ".option push\n\t.option norvc\n\tnop\n\t.option pop"
#else
#define JUMP_NOP ".byte 0x0f,0x1f,0x44,0x00,0x00"
#endif
noinline int kpt_jl(int x)
{
	asm goto("1: " JUMP_NOP "\n\t"
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

#ifdef __riscv
/* arch/riscv/include/asm/module.lds.h (CONFIG_MODULE_SECTIONS): sized by the loader */
asm(".pushsection .plt, \"ax\"\n\t.byte 0\n\t.popsection\n\t"
    ".pushsection .got, \"aw\"\n\t.byte 0\n\t.popsection\n\t"
    ".pushsection .got.plt, \"aw\"\n\t.byte 0\n\t.popsection");
/* differences across sections: R_RISCV_ADD/SUB pairs (accumulated per location) */
asm(".pushsection .rodata.kpt_diffs, \"a\"\n\t.balign 8\n"
    "kpt_diffs:\n\t.word kpt_counter - kpt_func\n\t.word kpt_func - kpt_key\n\t"
    ".quad kpt_key - kpt_jl\n\t.half kpt_jl - kpt_func + 0\n\t.byte 0\n\t.popsection");
#endif
