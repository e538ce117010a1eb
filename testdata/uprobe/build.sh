#!/bin/sh
# Regenerate the uprobe test binaries (tiny, no libc) for the five architectures:
#   <arch>/probed        static non-PIE executable with .symtab
#   <arch>/probed-pie    PIE executable, stripped (.dynsym only: -rdynamic exports)
#   <arch>/libprobed.so  shared library, stripped, its symbols in a separate debug file:
#   debug/.build-id/xx/yyyy.debug  (objcopy --only-keep-debug), found by build-id
# Needs Debian's gcc and gcc-{aarch64,riscv64,s390x,powerpc64le}-linux-gnu, binutils-* of each.
set -eu
cd "$(dirname "$0")"
CFLAGS="-Os -fno-asynchronous-unwind-tables -fno-stack-protector -fcf-protection=none -nostdlib -ffreestanding -Wl,--build-id=sha1 -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack"
for pair in x86_64:x86_64-linux-gnu arm64:aarch64-linux-gnu riscv64:riscv64-linux-gnu \
            s390x:s390x-linux-gnu ppc64le:powerpc64le-linux-gnu; do
  arch=${pair%%:*}; tri=${pair#*:}
  cc=$tri-gcc; strip=$tri-strip; objcopy=$tri-objcopy
  extra=""
  [ "$arch" = x86_64 ] && extra="-fcf-protection=none"
  [ "$arch" = riscv64 ] && extra="-Wl,--no-relax"  # no gp: _start does not set it up
  mkdir -p "$arch"
  $cc $CFLAGS $extra -static -no-pie -o "$arch/probed" src/probed.c
  $cc $CFLAGS $extra -fPIE -pie -rdynamic -o "$arch/probed-pie" src/probed.c
  $strip --strip-all "$arch/probed-pie"
  $cc $CFLAGS $extra -fPIC -shared -DLIBRARY -o "$arch/libprobed.so" src/probed.c
  id=$(readelf -n "$arch/libprobed.so" | sed -n 's/.*Build ID: \([0-9a-f]*\).*/\1/p')
  mkdir -p "debug/.build-id/$(echo "$id" | cut -c1-2)"
  dbg="debug/.build-id/$(echo "$id" | cut -c1-2)/$(echo "$id" | cut -c3-).debug"
  $objcopy --only-keep-debug "$arch/libprobed.so" "$dbg"
  $strip --strip-all "$arch/libprobed.so"
done
ls -l */probed* */libprobed.so debug/.build-id/*/*
