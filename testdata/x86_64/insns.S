/* Hand-written functions of the test image: one instruction per kprobe rule, each at a
 * `.L` label (kept in .symtab by --keep-locals, dropped by kallsyms) so tests can find it.
 * FUNC emits what gcc -mfentry -mrecord-mcount -fcf-protection emits at a C function entry. */

.macro FUNC name
	.text
	.globl \name
	.type \name, @function
	.p2align 4
\name:
	endbr64
999:	call __fentry__
	.pushsection __mcount_loc, "a"
	.quad 999b
	.popsection
.endm

.macro ENDF name
	.size \name, . - \name
.endm

/* arch/x86/include/asm/asm.h: _ASM_NOKPROBE */
.macro ASM_NOKPROBE name
	.pushsection _kprobe_blacklist, "aw"
	.balign 8
	.quad \name
	.popsection
.endm

/* --- .head.text at _stext (HEAD_TEXT), like startup_64 in head_64.S: no __fentry__ ---------- */
	.section .head.text, "ax"
	.globl startup_64
	.type startup_64, @function
startup_64:
	endbr64
	cli
	jmp start_kernel
	.size startup_64, . - startup_64

/* --- instructions the kprobe handler emulates (prepare_emulation) ------------------------- */
FUNC insn_emulated
.Lx_cli:	cli
.Lx_sti:	sti
.Lx_pushf:	pushfq
.Lx_popf:	popfq
.Lx_jmp8:	jmp 1f
1:
.Lx_jcc8:	jz 2f
2:
.Lx_jcc32:	{disp32} jnz 3f
3:
.Lx_jmp32:	{disp32} jmp 4f
4:
.Lx_call:	call insn_helper
.Lx_call_reg:	call *%rax
.Lx_loop:	loop 5f
5:
.Lx_jmp_reg:	jmp *%rdx
.Lx_ret:	ret
ENDF insn_emulated

FUNC insn_helper
	ret
ENDF insn_helper

/* --- instructions the kernel refuses, or that depend on the kernel version ------------------ */
FUNC insn_refused
.Lr_callmem:	call *0x10(%rax)		/* ff /2 memory operand: -EOPNOTSUPP */
.Lr_jmpmem:	jmp *0x10(%rax)			/* ff /4 memory operand: -EOPNOTSUPP */
.Lr_ljmp:	ljmp *(%rax)			/* ff /5 far: -EOPNOTSUPP */
.Lr_vmcall:	vmcall				/* 0f 01 c1: -EOPNOTSUPP */
.Lr_iret:	iretq				/* cf: -EOPNOTSUPP */
.Lr_int3:	int3				/* 6.1 -EINVAL (copy), 6.12 -EILSEQ */
.Lr_movss:	mov %eax, %ss			/* masks exceptions: -EINVAL */
/* 15 bytes: cs nopw with data16 prefixes (not boostable) */
.Lr_long15:	.byte 0x66,0x66,0x66,0x66,0x66,0x66,0x2e,0x0f,0x1f,0x84,0x00,0x00,0x00,0x00,0x00
/* 15 bytes, boostable: data16 x3, movq $0x11223344, 0x12345678(%rax,%rax,8) */
.Lr_long15b:	.byte 0x66,0x66,0x66,0x48,0xc7,0x84,0xc0,0x78,0x56,0x34,0x12,0x44,0x33,0x22,0x11
.Lr_int80:	int $0x80			/* 6.1 single-stepped, 6.12 -EILSEQ */
.Lr_int1:	int1				/* 6.1 single-stepped, 6.12 -EILSEQ */
.Lr_ud2:	ud2				/* not in __bug_table: 6.1 accepted, 6.12 -EILSEQ */
.Lr_ud1:	ud1 %eax, %eax			/* 0f b9: likewise */
.Lr_nop:	nop
	ret
ENDF insn_refused

/* --- single-stepped / boostable instructions ------------------------------------------------ */
FUNC insn_boost
.Lb_mov:	mov %rdi, %rax			/* boostable in both versions */
.Lb_shl:	shl %eax			/* Grp2 d1 /4: boostable on 6.12 only */
.Lb_inc:	inc %eax			/* Grp5 ff /0: boostable on 6.12 only */
.Lb_neg:	neg %eax			/* Grp3 f7 /3: boostable on 6.12 only */
.Lb_movzx:	movzbl %al, %eax		/* 0f b6: two-byte boostable */
.Lb_pshufb:	pshufb %xmm1, %xmm0		/* 66 0f 38 00: three-byte opcode, never boosted */
.Lb_cs:		.byte 0x2e, 0x48, 0x89, 0xf8	/* cs mov %rdi,%rax: CS prefix, not boostable */
.Lb_ex:		mov (%rdi), %rax		/* has an __ex_table fixup: not boostable */
.Lb_ex_end:
	.pushsection __ex_table, "a"
	.balign 4
	.long .Lb_ex - .
	.long .Lb_ex_end - .
	.long 0
	.popsection
.Lb_noex:	mov (%rsi), %rax		/* same instruction, no fixup: boostable */
.Lb_rip:	mov 0x100(%rip), %rax		/* RIP-relative: accepted, displacement fixed */
.Lb_riplea:	lea insn_helper(%rip), %rcx	/* RIP-relative lea */
.Lb_rip_store:	movl $7, sink(%rip)		/* RIP-relative with an immediate after disp32 */
	ret
ENDF insn_boost

/* --- `jmp __x86_return_thunk`: apply_returns() makes it `ret; int3 x4` at boot ---------------- */
FUNC insn_rethunk
	mov %rdi, %rax
.Lrt_site:	jmp __x86_return_thunk
	.pushsection .return_sites, "a"
	.long .Lrt_site - .
	.popsection
ENDF insn_rethunk

/* --- a static call site (.static_call_sites: s32 addr, s32 key) ----------------------------- */
FUNC static_call_func
	mov %rdi, %rax
.Lsc_site:	call __SCT__test_call
.Lsc_after:	ret
	.pushsection .static_call_sites, "a"
	.long .Lsc_site - .
	.long __SCK__test_call - .
	.popsection
ENDF static_call_func

/* --- a BUG() site written in asm, and a ud2 that is not in __bug_table ------------------------ */
FUNC asm_bug_func
	test %edi, %edi
	js .Lbug_site
	ret
.Lbug_site:	ud2
	.pushsection __bug_table, "aw"
2:	.long .Lbug_site - .
	.long .Lbug_file - .
	.word 42
	.word 0
	.org 2b + 12
	.popsection
ENDF asm_bug_func

/* --- _ASM_NOKPROBE, and a compiler-style clone of the blacklisted function ------------------- */
FUNC asm_nokprobe_func
	mov %rdi, %rax
	ret
ENDF asm_nokprobe_func
ASM_NOKPROBE asm_nokprobe_func

/* The suffix rule: foo.isra.0 is refused because foo is blacklisted (within_kprobe_blacklist). */
FUNC asm_nokprobe_func.isra.0
	mov %rdi, %rax
	add $1, %rax
	ret
ENDF asm_nokprobe_func.isra.0

/* A clone of a function that is not blacklisted: accepted. */
FUNC insn_helper.constprop.0
	mov %rdi, %rax
	ret
ENDF insn_helper.constprop.0

/* --- kallsyms: aliases (first alias order) and symbols kallsyms drops ------------------------ */
	.text
	.p2align 4
	.globl _alias_b, alias_c, alias_d
	.weak alias_a_weak
	.type _alias_b, @function
	.type alias_a_weak, @function
	.type alias_c, @function
	.type alias_d, @function
_alias_b:
alias_a_weak:
alias_d:
alias_c:
	endbr64
999:	call __fentry__
	.pushsection __mcount_loc, "a"
	.quad 999b
	.popsection
	mov %rdi, %rax
"$x":				/* an arm64-style mapping symbol: not a kallsyms symbol */
	add $2, %rax
.Lalias_local:			/* a .L local label kept in .symtab: not a kallsyms symbol */
	add $3, %rax
	ret
	.size _alias_b, . - _alias_b
	.size alias_a_weak, . - alias_a_weak
	.size alias_c, . - alias_c
	.size alias_d, . - alias_d

/* Padding after a function: kallsyms size (to the next symbol) exceeds the ELF size. */
FUNC padded_func
	mov %rdi, %rax
	ret
ENDF padded_func
	.p2align 6, 0xcc

/* A CFI/call-padding preamble symbol (is_cfi_preamble_symbol) in front of a function. */
	.globl __pfx_prefixed_func
	.type __pfx_prefixed_func, @function
__pfx_prefixed_func:
	.fill 16, 1, 0x90
	.size __pfx_prefixed_func, 16
FUNC prefixed_func
	mov %rdi, %rax
	ret
ENDF prefixed_func

/* --- helpers the sites above refer to -------------------------------------------------------- */
	.text
	.globl __fentry__
	.type __fentry__, @function
__fentry__:
	ret
	.size __fentry__, . - __fentry__

	.globl __x86_return_thunk
	.type __x86_return_thunk, @function
__x86_return_thunk:
	ret
	int3
	.size __x86_return_thunk, . - __x86_return_thunk

	.section .static_call.text, "ax"
	.globl __SCT__test_call
	.type __SCT__test_call, @function
__SCT__test_call:
	jmp insn_helper
	ud1 %edi, %eax
	.size __SCT__test_call, . - __SCT__test_call

/* --- .entry.text: blacklisted by arch_populate_kprobe_blacklist (and notrace, like entry_64.S) */
	.section .entry.text, "ax"
	.globl entry_SYSCALL_64
	.type entry_SYSCALL_64, @function
	.p2align 6
entry_SYSCALL_64:
	endbr64
	swapgs
	mov %rsp, %gs:0x6014
	mov %rax, %rdi
	swapgs
	sysretq
	.size entry_SYSCALL_64, . - entry_SYSCALL_64

	.globl entry_INT80_compat
	.type entry_INT80_compat, @function
	.p2align 4
entry_INT80_compat:
	endbr64
	mov %rdi, %rax
	iretq
	.size entry_INT80_compat, . - entry_INT80_compat

	.section .rodata
	.globl __SCK__test_call
__SCK__test_call:
	.quad insn_helper
.Lbug_file:
	.asciz "testdata/x86_64/insns.S"
