#!/usr/bin/env bash
# Project copy of the team's shared tools/fetch-debian-kernel.sh (/work/shared/tools, read-only),
# kept here so kpatch-analyze matrix --debian does not depend on /work/shared at run time.
# Download one Debian kernel build, any release from 5.10 to 7.x, any flavour, any of the five arches.
#   fetch-debian-kernel.sh [--modules] [--debug-modules] KVER-FLAVOUR DEBARCH [DEST]
# e.g. 5.10.0-32-amd64 amd64 | 6.12.117+deb13-rt-amd64 amd64 | 7.2.13+deb14-riscv64 riscv64 |
#      7.2.13+deb14-powerpc64le-64k ppc64el | 6.12.117+deb13-arm64-16k arm64
# DEST defaults to ${KPATCH_KERNELS:-~/.cache/kpatch-kernels}/KVER-FLAVOUR. Result:
#   DEST/vmlinux            the debug ELF (symbols, DWARF)
#   DEST/boot/              what a stock install has in /boot: vmlinuz-* (vmlinux-* on ppc64le, riscv64),
#                           System.map-*, config-*
#   DEST/modules/           with --modules: the stock module tree (*.ko, *.ko.xz, modules.dep ...;
#                           stock modules keep their symbol tables)
#   DEST/debug-modules/     with --debug-modules: the *.ko files with DWARF from the debug package
#                           (several GB unpacked)
# Package layouts differ: up to 6.x the image package (linux-image-KV[-unsigned]) holds /boot and
# /lib/modules; from 7.x /boot moved to linux-binary-KV (usr/lib/modules/KV/vmlinuz), config and
# System.map to linux-base-KV, modules to linux-modules-KV, and the debug vmlinux to
# usr/lib/debug/lib/modules/KV/vmlinux. A private apt state directory leaves the machine's apt alone.
# Suites searched: bullseye(+security), bookworm, bookworm-backports, trixie, trixie-backports, sid.
# Downloaded .deb files are deleted once unpacked (0.1-1.2 GB each); KPATCH_KEEP_DEBS=1 keeps them.
set -euo pipefail
MODULES=0; DEBUGMODS=0
while :; do case "${1:-}" in --modules) MODULES=1; shift;; --debug-modules) DEBUGMODS=1; shift;; *) break;; esac; done
KV=${1:?usage: fetch-debian-kernel.sh [--modules] KVER-FLAVOUR DEBARCH [DEST]}
DARCH=${2:?debian architecture: amd64 arm64 riscv64 s390x ppc64el}
DEST=${3:-${KPATCH_KERNELS:-$HOME/.cache/kpatch-kernels}/$KV}
APTDIR=${KPATCH_APT:-$HOME/.cache/kpatch-apt}
mkdir -p "$APTDIR"/state/lists/partial "$APTDIR"/cache/archives/partial "$APTDIR/debs" "$DEST/boot"
touch "$APTDIR/state/status"
K=/usr/share/keyrings/debian-archive-keyring.gpg
A="arch=amd64,arm64,riscv64,s390x,ppc64el signed-by=$K"
cat > "$APTDIR/sources.list.$$" <<SRC
deb [$A] http://deb.debian.org/debian bullseye main
deb [$A] http://deb.debian.org/debian-security bullseye-security main
deb [$A] http://deb.debian.org/debian bookworm main
deb [$A] http://deb.debian.org/debian bookworm-backports main
deb [$A] http://deb.debian.org/debian trixie main
deb [$A] http://deb.debian.org/debian trixie-backports main
deb [$A] http://deb.debian.org/debian sid main
SRC
# rewritten only when it changed: a new mtime makes apt parse every list again
cmp -s "$APTDIR/sources.list.$$" "$APTDIR/sources.list" && rm -f "$APTDIR/sources.list.$$" \
  || mv "$APTDIR/sources.list.$$" "$APTDIR/sources.list"
BASE=(-o "Dir::State=$APTDIR/state" -o "Dir::State::status=$APTDIR/state/status"
      -o "Dir::Cache=$APTDIR/cache" -o "Dir::Etc::SourceList=$APTDIR/sources.list"
      -o "Dir::Etc::SourceParts=/dev/null")
ALL=("${BASE[@]}" -o APT::Architecture=amd64)
for a in amd64 arm64 riscv64 s390x ppc64el; do ALL+=(-o "APT::Architectures::=$a"); done
stamp=$APTDIR/state/updated
( flock 9  # one update at a time: two first fetches at once (matrix workers) shared a fresh state
  [ -n "$(find "$stamp" -mmin -720 2>/dev/null)" ] || { apt-get "${ALL[@]}" -qq update; touch "$stamp"; }
) 9>"$APTDIR/update.lock"
# Queries go through a package cache kept on disk, one per native arch (Debian's docker images
# set Dir::Cache::pkgcache "", which made every apt call parse the 7 suites x 5 arches of lists
# again: a minute or more per call on a loaded machine, several calls per kernel; now the first
# call builds it and the others take 0.25 s)
APT=("${BASE[@]}" -o "APT::Architecture=$DARCH" -o "APT::Architectures::=$DARCH"
     -o "Dir::Cache::pkgcache=$APTDIR/cache/pkgcache-$DARCH.bin"
     -o "Dir::Cache::srcpkgcache=$APTDIR/cache/srcpkgcache-$DARCH.bin")
exists() { apt-cache "${APT[@]}" show "$1:$DARCH" >/dev/null 2>&1; }
get() { # get PKG: download once into the shared deb cache, print the file
  local f; f=$(ls "$APTDIR/debs/$1"_*_"$DARCH".deb 2>/dev/null | head -1)
  [ -n "$f" ] || { (cd "$APTDIR/debs" && apt-get "${APT[@]}" -qq download "$1:$DARCH" 2>&1 | grep -v '^W:' >&2 || true)
                   f=$(ls "$APTDIR/debs/$1"_*_"$DARCH".deb 2>/dev/null | head -1) || true; }
  [ -n "$f" ] || { echo "cannot download $1:$DARCH (not in the mirror's lists, or the download failed)" >&2; exit 1; }
  echo "$f"
}
has() { local n; n=$(dpkg-deb -c "$1" | awk -v p="$2" '$NF ~ p {c++} END {print c+0}'); [ "$n" -gt 0 ]; }
dbg=$(get "linux-image-$KV-dbg")
if [ ! -s "$DEST/vmlinux" ]; then
  tmp=$(mktemp -d "$DEST/.x.XXXX")
  dpkg-deb --fsys-tarfile "$dbg" | tar -x -C "$tmp" --wildcards './usr/lib/debug/boot/vmlinux-*' \
      "./usr/lib/debug/lib/modules/$KV/vmlinux" "./usr/lib/debug/lib/modules/$KV/System.map" 2>/dev/null || true
  v=$(find "$tmp" -name 'vmlinux*' -type f | head -1); [ -n "$v" ] || { echo "no vmlinux in $dbg" >&2; exit 1; }
  mv "$v" "$DEST/vmlinux"
  m=$(find "$tmp" -name System.map -type f | head -1); [ -z "$m" ] || mv "$m" "$DEST/boot/System.map-$KV"
  rm -rf "$tmp"
fi
if [ ! -e "$DEST/boot.done" ]; then
  tmp=$(mktemp -d "$DEST/.x.XXXX")
  for p in "linux-image-$KV-unsigned" "linux-binary-$KV" "linux-image-$KV" "linux-base-$KV"; do
    exists "$p" || continue
    # the signed image holds the same /boot files as -unsigned: one of them is enough
    [ "$p" = "linux-image-$KV" ] && ls "$tmp"/boot/vmlinu* >/dev/null 2>&1 && continue
    f=$(get "$p")
    dpkg-deb --fsys-tarfile "$f" | tar -x -C "$tmp" --wildcards './boot/*' "./usr/lib/modules/$KV/vmlinu*" \
        "./usr/lib/modules/$KV/config" "./usr/lib/modules/$KV/System.map" 2>/dev/null || true
  done
  [ -d "$tmp/boot" ] && cp -a "$tmp/boot/." "$DEST/boot/"
  for f in "$tmp/usr/lib/modules/$KV"/*; do
    [ -e "$f" ] || continue; b=$(basename "$f")
    [ "$b" = System.map ] && [ "$(stat -c %s "$f")" -lt 1000 ] && continue   # 7.x linux-base ships a stub
    cp "$f" "$DEST/boot/$b-$KV"
  done
  rm -rf "$tmp"
  ls "$DEST"/boot/vmlinu* >/dev/null 2>&1 || { echo "no boot image found for $KV" >&2; exit 1; }
  touch "$DEST/boot.done"
fi
if [ $MODULES = 1 ] && [ ! -e "$DEST/modules.done" ]; then
  for p in "linux-modules-$KV" "linux-image-$KV-unsigned" "linux-image-$KV"; do
    exists "$p" || continue; f=$(get "$p"); has "$f" '[.]ko' || continue
    tmp=$(mktemp -d "$DEST/.x.XXXX")
    dpkg-deb -x "$f" "$tmp"
    d=$(find "$tmp" -type d -path "*/modules/$KV" | head -1)
    [ -n "$d" ] && { rm -rf "$DEST/modules"; mv "$d" "$DEST/modules"; }
    rm -rf "$tmp"; break
  done
  [ -d "$DEST/modules" ] || { echo "no module tree found for $KV" >&2; exit 1; }
  touch "$DEST/modules.done"
fi
if [ $DEBUGMODS = 1 ] && [ ! -e "$DEST/debug-modules.done" ]; then
  tmp=$(mktemp -d "$DEST/.x.XXXX")
  dpkg-deb --fsys-tarfile "$dbg" | tar -x -C "$tmp" --wildcards "./usr/lib/debug/lib/modules/$KV/kernel/*"
  rm -rf "$DEST/debug-modules"; mv "$tmp/usr/lib/debug/lib/modules/$KV/kernel" "$DEST/debug-modules"; rm -rf "$tmp"
  touch "$DEST/debug-modules.done"
fi
[ "${KPATCH_KEEP_DEBS:-0}" = 1 ] || rm -f "$APTDIR/debs/"*"$KV"*_"$DARCH".deb
echo "$KV ($DARCH): $DEST/vmlinux; boot: $(cd "$DEST/boot" && ls | tr '\n' ' ')"
