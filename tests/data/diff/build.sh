#!/bin/sh
# Rebuild the two diff test images from old.c / new.c plus the x86_64 test kernel
# (testdata/x86_64: main.c, dup_*.c, insns.S, banner.c, kernel.lds), Debian gcc 12 / binutils 2.40.
#   vmlinux-old  banner 6.1.0-kpatch-diff-old     vmlinux-new  banner 6.1.0-kpatch-diff-new
# Each image also carries a .BTF section: GCC's -gbtf output for old.c / new.c alone (one object,
# so the section is one valid BTF blob), added with objcopy, like pahole adds .BTF to a vmlinux.
# Usage: tests/data/diff/build.sh   (writes next to this script)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
td="$here/../../../testdata/x86_64"
CC=${CC:-gcc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CFLAGS="-O2 -g0 -ffreestanding -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone
  -mno-sse -mno-mmx -fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables
  -fcf-protection=branch -pg -mfentry -mrecord-mcount -fno-common -fno-strict-aliasing
  -fno-ipa-icf -Wall -Werror -I$td"
for src in main.c dup_a.c dup_b.c; do
	$CC $CFLAGS -c "$td/$src" -o "$tmp/${src%.c}.o"
done
$CC -c -Wa,--keep-locals "$td/insns.S" -o "$tmp/insns.o"
for v in old new; do
	$CC $CFLAGS -c "$here/$v.c" -o "$tmp/$v.o"
	$CC $CFLAGS -DUTS_RELEASE="\"6.1.0-kpatch-diff-$v\"" -c "$td/banner.c" -o "$tmp/banner.o"
	$CC -nostdlib -static -no-pie -Wl,-T,"$td/kernel.lds" -Wl,--build-id=sha1 -Wl,--discard-none \
		-Wl,-z,max-page-size=4096 -Wl,-z,noexecstack -Wl,--no-warn-rwx-segments \
		-o "$here/vmlinux-$v" "$tmp/main.o" "$tmp/dup_a.o" "$tmp/dup_b.o" "$tmp/insns.o" \
		"$tmp/$v.o" "$tmp/banner.o"
	$CC $CFLAGS -gbtf -c "$here/$v.c" -o "$tmp/$v-btf.o"
	objcopy --dump-section .BTF="$tmp/$v.btf" "$tmp/$v-btf.o" /dev/null
	objcopy --add-section .BTF="$tmp/$v.btf" --set-section-flags .BTF=contents,readonly \
		"$here/vmlinux-$v"
done
ls -l "$here/vmlinux-old" "$here/vmlinux-new"
