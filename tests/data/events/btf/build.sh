#!/bin/sh
# Rebuild funcs.btf (the raw .BTF section of funcs.c) with GCC >= 12's BTF output.
# -funsigned-char as the kernel builds since 6.2 (so "char" is an unsigned 8-bit BTF int).
set -e
cd "$(dirname "$0")"
gcc -c -gbtf -O1 -fno-inline -funsigned-char funcs.c -o /tmp/kpatch-funcs-btf.o
objcopy --dump-section .BTF=funcs.btf /tmp/kpatch-funcs-btf.o /dev/null
rm -f /tmp/kpatch-funcs-btf.o
