/* A tiny program and library to place uprobes on: branches, calls, PC-relative data,
 * pushes, loops, a USDT probe with a semaphore, and one function per architecture holding
 * instructions the kernel refuses.  No libc: _start and a raw exit syscall.
 * Built by ../build.sh for x86_64, arm64, riscv64, s390x and ppc64le. */

/* The .note.stapsdt layout of <sys/sdt.h> (STAP_PROBE with a semaphore), written out so the
 * build needs no systemtap-sdt-dev. */
#define USDT_SEMA(provider, name)                                                    \
    __attribute__((section(".probes"), used)) volatile unsigned short                \
        provider##_##name##_semaphore
#define USDT(provider, name)                                                          \
    __asm__ __volatile__(                                                             \
        "990: nop\n"                                                                  \
        ".pushsection .note.stapsdt,\"?\",\"note\"\n"                                 \
        ".balign 4\n.4byte 992f-991f, 994f-993f, 3\n"                                 \
        "991: .asciz \"stapsdt\"\n992: .balign 4\n"                                   \
        "993: .8byte 990b\n.8byte _.stapsdt.base\n"                                   \
        ".8byte " #provider "_" #name "_semaphore\n"                                  \
        ".asciz \"" #provider "\"\n.asciz \"" #name "\"\n.asciz \"\"\n994: .balign 4\n" \
        ".popsection\n"                                                               \
        ".ifndef _.stapsdt.base\n"                                                    \
        ".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n"       \
        ".weak _.stapsdt.base\n.hidden _.stapsdt.base\n_.stapsdt.base: .space 1\n"    \
        ".size _.stapsdt.base, 1\n.popsection\n.endif\n")

USDT_SEMA(demo, tick);

__attribute__((visibility("hidden"))) volatile long counter;
long table[16] = {1, 2, 3, 5, 8, 13, 21, 34};

__attribute__((noinline)) long leaf_add(long a, long b) { return a + b * 3; }

__attribute__((noinline)) long sum_table(long n)
{
    long s = 0;
    for (long i = 0; i < n && i < 16; i++)
        s += table[i];
    counter = s;
    return s;
}

__attribute__((noinline)) long branchy(long x)
{
    if (x > 10)
        return leaf_add(x, 1);
    if (x & 1)
        return sum_table(x);
    return -x;
}

__attribute__((noinline)) long with_usdt(long x)
{
    if (demo_tick_semaphore)
        counter++;
    USDT(demo, tick);
    return branchy(x) + 1;
}

#if defined(__x86_64__)
/* push %r12; lock incl (%rax); cs mov; int3; 16-bit call; ret -- refused and emulated forms */
__asm__(".globl special\n.type special,@function\nspecial:\n"
        "push %r12\npush %rbp\nmov counter(%rip), %rax\nmovl $1, counter(%rip)\n"
        "lock incl (%rax)\n.byte 0x2e\nmov (%rax), %eax\nint3\n.byte 0x66, 0xe8, 0, 0, 0, 0\n"
        "pop %rbp\npop %r12\nret\n.size special, .-special\n");
#elif defined(__aarch64__)
__asm__(".globl special\n.type special,@function\nspecial:\n"
        "stp x29, x30, [sp, #-16]!\nadrp x0, counter\nldr x1, [x0, :lo12:counter]\n"
        "ldxr x2, [x0]\nbrk #0\nsvc #0\nldp x29, x30, [sp], #16\nret\n.size special, .-special\n");
#elif defined(__riscv)
__asm__(".globl special\n.type special,@function\nspecial:\n"
        "addi sp, sp, -16\nauipc a0, 0\nlr.d a1, (a0)\n.4byte 0x00100073\nc.ebreak\necall\nfence\n"
        "addi sp, sp, 16\nret\n.size special, .-special\n");
#elif defined(__s390x__)
__asm__(".globl special\n.type special,@function\nspecial:\n"
        "stmg %r14,%r15,112(%r15)\nlarl %r1, counter\nlgrl %r2, counter\nex %r0, 0(%r1)\n"
        ".short 0x0002\nsvc 0\nlmg %r14,%r15,112(%r15)\nbr %r14\n.size special, .-special\n");
#elif defined(__powerpc64__)
__asm__(".globl special\n.type special,@function\nspecial:\n"
        "mflr 0\nstd 0, 16(1)\ntw 31, 0, 0\nsc\nmtmsrd 3\nld 0, 16(1)\nmtlr 0\nblr\n"
        ".size special, .-special\n");
#endif

#ifndef LIBRARY
static long sys_exit(long code)
{
#if defined(__x86_64__)
    __asm__ volatile("syscall" : : "a"(60), "D"(code));
#elif defined(__aarch64__)
    register long x0 __asm__("x0") = code, x8 __asm__("x8") = 93;
    __asm__ volatile("svc #0" : : "r"(x0), "r"(x8));
#elif defined(__riscv)
    register long a0 __asm__("a0") = code, a7 __asm__("a7") = 93;
    __asm__ volatile("ecall" : : "r"(a0), "r"(a7));
#elif defined(__s390x__)
    register long r2 __asm__("r2") = code;
    __asm__ volatile("svc 1" : : "r"(r2));
#elif defined(__powerpc64__)
    register long r0 __asm__("r0") = 1, r3 __asm__("r3") = code;
    __asm__ volatile("sc" : : "r"(r0), "r"(r3));
#endif
    for (;;)
        ;
}

void _start(void)
{
    long r = 0;
    for (long i = 0; i < 20; i++)
        r += with_usdt(i);
    sys_exit(r & 0x7f);
}
#endif
