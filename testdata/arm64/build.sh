#!/bin/sh
# Rebuild the arm64 test images: vmlinux-6.1 and vmlinux-6.12 differ only in linux_banner, which
# selects the kernel rule set.  Linked like the real arm64 vmlinux: PIE, --no-apply-dynamic-relocs,
# so pointer tables (__mcount_loc, _kprobe_blacklist) read as zero and live in .rela.dyn
# (R_AARCH64_RELATIVE).  Needs aarch64-linux-gnu-gcc and binutils.
set -eu
cd "$(dirname "$0")"
CC=${CROSS_COMPILE:-aarch64-linux-gnu-}gcc
LD=${CROSS_COMPILE:-aarch64-linux-gnu-}ld
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
link() {  # link OUTPUT VERSION OBJDIR
	$CC -c -DKVER="\"$2.0\"" -o "$3/banner.o" banner.S
	$LD -T vmlinux.lds -pie --no-dynamic-linker --no-apply-dynamic-relocs -z norelro \
		-z max-page-size=4096 --no-warn-rwx-segments --build-id=none \
		-o "$1" "$3/insns.o" "$3/areas.o" "$3/dup.o" "$3/banner.o"
}
mkdir "$tmp/plain" "$tmp/callops"
for src in insns areas dup; do
	$CC -c -o "$tmp/plain/$src.o" "$src.S"
	$CC -c -DCALL_OPS -o "$tmp/callops/$src.o" "$src.S"
done
link vmlinux-6.1 6.1 "$tmp/plain"
link vmlinux-6.12 6.12 "$tmp/plain"
# 6.12 with DYNAMIC_FTRACE_WITH_CALL_OPS: records 8 bytes before each function
link vmlinux-6.12-callops 6.12 "$tmp/callops"
ls -l vmlinux-6.1 vmlinux-6.12 vmlinux-6.12-callops
