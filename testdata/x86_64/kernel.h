/* The few kernel macros the test image imitates (include/linux/{compiler,kprobes,init}.h,
 * arch/x86/include/asm/{jump_label,bug}.h), written out so the image builds freestanding. */
#ifndef KPATCH_TEST_KERNEL_H
#define KPATCH_TEST_KERNEL_H

#define noinline __attribute__((__noinline__))
#define __used __attribute__((__used__))
#define notrace __attribute__((__no_instrument_function__))
#define __section(s) __attribute__((__section__(s)))
/* 6.1: __kprobes only moves the function to .kprobes.text (it keeps its __fentry__ call) */
#define __kprobes __section(".kprobes.text")
#define noinstr noinline notrace __section(".noinstr.text")
#define __init __section(".init.text")

/* include/asm-generic/kprobes.h: one absolute pointer per blacklisted function */
#define NOKPROBE_SYMBOL(fname) \
	static unsigned long __used __section("_kprobe_blacklist") _kbl_addr_##fname = \
		(unsigned long)fname;

struct static_key { int enabled; };

/* arch/x86/include/asm/jump_label.h: 16-byte entries, s32 code, s32 target, s64 key */
#define JUMP_TABLE_ENTRY \
	".pushsection __jump_table, \"aw\"\n\t" \
	".balign 8\n\t" \
	".long 1b - .\n\t" \
	".long %l[l_yes] - .\n\t" \
	".quad %c0 + %c1 - .\n\t" \
	".popsection\n\t"

static inline __attribute__((always_inline)) int arch_static_branch(struct static_key *key, int branch)
{
	asm goto("1: .byte 0x0f,0x1f,0x44,0x00,0x00\n\t" JUMP_TABLE_ENTRY
		 : : "i"(key), "i"(branch) : : l_yes);
	return 0;
l_yes:
	return 1;
}

static inline __attribute__((always_inline)) int arch_static_branch_jump(struct static_key *key, int branch)
{
	asm goto("1: jmp %l[l_yes]\n\t" JUMP_TABLE_ENTRY
		 : : "i"(key), "i"(branch) : : l_yes);
	return 0;
l_yes:
	return 1;
}

/* arch/x86/include/asm/bug.h with CONFIG_DEBUG_BUGVERBOSE: ud2 + 12-byte relative entry */
#define BUG() do { \
	asm volatile("1: ud2\n\t" \
		     ".pushsection __bug_table, \"aw\"\n\t" \
		     "2: .long 1b - .\n\t" \
		     ".long %c0 - .\n\t" \
		     ".word %c1\n\t" \
		     ".word 0\n\t" \
		     ".org 2b + 12\n\t" \
		     ".popsection" : : "i"(__FILE__), "i"(__LINE__)); \
	__builtin_unreachable(); \
} while (0)

/* arch/x86/include/asm/asm.h: _ASM_EXTABLE, 12-byte entries (insn, fixup, data) */
#define _ASM_EXTABLE(from, to) \
	".pushsection __ex_table, \"a\"\n\t" \
	".balign 4\n\t" \
	".long " #from " - .\n\t" \
	".long " #to " - .\n\t" \
	".long 0\n\t" \
	".popsection\n\t"

#endif
