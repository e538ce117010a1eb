#!/bin/sh
# Rebuild the ppc64le test images with Debian's powerpc64le-linux-gnu-gcc / binutils:
#   vmlinux       banner "Linux version 6.1.0-kpatch-test"   (6.1 rules)
#   vmlinux-6.12  the same code, banner "Linux version 6.12.0-kpatch-test"
# Usage: testdata/ppc64le/build.sh   (from anywhere; writes next to this script)
set -eu
cd "$(dirname "$0")"
CC=${CC:-powerpc64le-linux-gnu-gcc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# -mcpu=power10: prefixed instructions (pld, paddi)
$CC -mcpu=power10 -c -Wa,--keep-locals insns.S -o "$tmp/insns.o"
link() {  # link OUTPUT UTS_RELEASE
	$CC -DUTS_RELEASE="\"$2\"" -c banner.S -o "$tmp/banner.o"
	$CC -nostdlib -static -no-pie -Wl,-T,kernel.lds -Wl,--build-id=sha1 \
		-Wl,-z,max-page-size=4096 -Wl,-z,noexecstack -Wl,--no-warn-rwx-segments \
		-o "$1" "$tmp/insns.o" "$tmp/banner.o"
}
link vmlinux 6.1.0-kpatch-test
link vmlinux-6.12 6.12.0-kpatch-test
ls -l vmlinux vmlinux-6.12
