/* Diff test, old kernel: functions that the new kernel drops, clones, or marks notrace; diff_sig
 * changes its prototype (seen through .BTF). */
#include "kernel.h"

int diff_sink;

noinline int diff_keep(int x) { diff_sink += x; return x * 3; }
noinline int diff_goes_notrace(int x) { diff_sink ^= x; return x + 7; }
noinline int diff_vanish(int x) { diff_sink -= x; return x - 1; }
noinline int diff_becomes_clone(int x, int k) { diff_sink += x * k; return x + k; }
noinline int diff_nokprobe_later(int x) { diff_sink |= x; return x << 1; }
noinline int diff_sig(int x) { diff_sink -= 3 * x; return x; }

__used int diff_user(int x)
{
	return diff_keep(x) + diff_goes_notrace(x) + diff_vanish(x) +
	       diff_becomes_clone(x, x + 1) + diff_nokprobe_later(x) + diff_sig(x);
}
