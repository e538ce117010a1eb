#!/bin/sh
# Rebuild the s390x test images with Debian's s390x-linux-gnu-gcc / binutils:
#   vmlinux       banner "Linux version 6.1.0-kpatch-test"   (6.1 rules, 6.1 opcode table)
#   vmlinux-6.12  the same code, banner "Linux version 6.12.0-kpatch-test"
# Usage: testdata/s390x/build.sh   (from anywhere; writes next to this script)
# The opcode table module is rebuilt separately from the kernel trees:
#   python3 tools/gen_s390x_opcodes.py LINUX_6_1 LINUX_6_12 > arch/s390x/opcodes.py
set -eu
cd "$(dirname "$0")"
CC=${CC:-s390x-linux-gnu-gcc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CFLAGS="-O2 -g0 -march=z13 -ffreestanding -fno-pic -fno-pie -fno-asynchronous-unwind-tables
  -pg -mfentry -mnop-mcount -mrecord-mcount -fno-common -Wall -Werror"
$CC $CFLAGS -c main.c -o "$tmp/main.o"
$CC -march=z13 -c -Wa,--keep-locals insns.S -o "$tmp/insns.o"
link() {  # link OUTPUT UTS_RELEASE
	$CC -DUTS_RELEASE="\"$2\"" -c banner.S -o "$tmp/banner.o"
	$CC -nostdlib -static -no-pie -Wl,-T,kernel.lds -Wl,--build-id=sha1 \
		-Wl,-z,max-page-size=4096 -Wl,-z,noexecstack -Wl,--no-warn-rwx-segments \
		-o "$1" "$tmp/main.o" "$tmp/insns.o" "$tmp/banner.o"
}
link vmlinux 6.1.0-kpatch-test
link vmlinux-6.12 6.12.0-kpatch-test
ls -l vmlinux vmlinux-6.12
