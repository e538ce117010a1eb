/* Diff test, new kernel: one function vanished, one became a .constprop clone (constant
 * argument from its only caller), one became notrace, one NOKPROBE, two appeared, and
 * diff_sig changed its prototype. */
#include "kernel.h"

int diff_sink;

noinline int diff_keep(int x) { diff_sink += x; return x * 3; }
noinline notrace int diff_goes_notrace(int x) { diff_sink ^= x; return x + 7; }
static noinline int diff_becomes_clone(int x, int k) { diff_sink += x * k; return x + k; }
noinline int diff_nokprobe_later(int x) { diff_sink |= x; return x << 1; }
NOKPROBE_SYMBOL(diff_nokprobe_later);
noinline long diff_sig(long x, int y) { diff_sink -= 3 * y; return x; }
noinline int diff_appear(int x) { diff_sink &= x; return x / 3; }
noinline int diff_appear_too(int x) { diff_sink += 2 * x; return x % 5; }

__used int diff_user(int x)
{
	return diff_keep(x) + diff_goes_notrace(x) + diff_becomes_clone(x, 5) +
	       diff_becomes_clone(x + 1, 5) + diff_nokprobe_later(x) + diff_appear(x) +
	       diff_appear_too(x) + (int)diff_sig(x, 2);
}
