#!/bin/sh
# Rebuild the x86_64 test images from these sources with Debian's gcc 12 / binutils 2.40:
#   vmlinux       banner "Linux version 6.1.0-kpatch-test"  (6.1 rules)
#   vmlinux-6.12  the same code, banner "Linux version 6.12.0-kpatch-test"  (6.12 rules)
# Usage: testdata/x86_64/build.sh   (from anywhere; writes next to this script)
set -eu
cd "$(dirname "$0")"
CC=${CC:-gcc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The kernel's x86_64 code model and the flags that shape kprobe placement: __fentry__ calls
# recorded in __mcount_loc, ENDBR at each function (IBT), no PIC, no unwind tables.
CFLAGS="-O2 -g0 -ffreestanding -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone
  -mno-sse -mno-mmx -fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables
  -fcf-protection=branch -pg -mfentry -mrecord-mcount -fno-common -fno-strict-aliasing
  -fno-ipa-icf -Wall -Werror"

for src in main.c dup_a.c dup_b.c; do
	$CC $CFLAGS -c "$src" -o "$tmp/${src%.c}.o"
done
$CC -c -Wa,--keep-locals insns.S -o "$tmp/insns.o"

link() {  # link OUTPUT UTS_RELEASE
	$CC $CFLAGS -DUTS_RELEASE="\"$2\"" -c banner.c -o "$tmp/banner.o"
	$CC -nostdlib -static -no-pie -Wl,-T,kernel.lds -Wl,--build-id=sha1 -Wl,--discard-none \
		-Wl,-z,max-page-size=4096 -Wl,-z,noexecstack -Wl,--no-warn-rwx-segments \
		-o "$1" "$tmp/main.o" "$tmp/dup_a.o" "$tmp/dup_b.o" "$tmp/insns.o" "$tmp/banner.o"
}
link vmlinux 6.1.0-kpatch-test
link vmlinux-6.12 6.12.0-kpatch-test
ls -l vmlinux vmlinux-6.12
