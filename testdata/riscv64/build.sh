#!/bin/sh
# Rebuild the riscv64 test images: vmlinux-6.1 and vmlinux-6.12 differ only in linux_banner,
# which selects the kernel rule set.  Needs riscv64-linux-gnu-gcc and binutils.
set -eu
cd "$(dirname "$0")"
CC=${CROSS_COMPILE:-riscv64-linux-gnu-}gcc
LD=${CROSS_COMPILE:-riscv64-linux-gnu-}ld
FLAGS="-march=rv64imafdc_zicsr_zifencei -mabi=lp64d"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for src in insns areas dup; do
	$CC $FLAGS -c -o "$tmp/$src.o" "$src.S"
done
for ver in 6.1 6.12; do
	extra=""
	[ "$ver" = 6.1 ] && extra=-DKPROBES_ON_FTRACE  # riscv lost KPROBES_ON_FTRACE in 6.6
	$CC $FLAGS -c -DKVER="\"$ver.0\"" $extra -o "$tmp/banner-$ver.o" banner.S
	$LD -T vmlinux.lds -z max-page-size=4096 --no-warn-rwx-segments --build-id=none \
		-o "vmlinux-$ver" "$tmp/insns.o" "$tmp/areas.o" "$tmp/dup.o" "$tmp/banner-$ver.o"
done
ls -l vmlinux-6.1 vmlinux-6.12
