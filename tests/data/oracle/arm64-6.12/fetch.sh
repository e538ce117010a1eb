#!/usr/bin/env bash
# Download Debian trixie's arm64 6.12 kernel (debug vmlinux + bootable image) next to the
# kernels of ../shared/tools/fetch-kernels.sh: $KPATCH_KERNELS/arm64-6.12 (default
# ~/.cache/kpatch-kernels/arm64-6.12). The oracle answers beside this script were taken from
# this kernel by ../shared/tools/kernel-oracle (sample_probes.py -n 2000 --seed 1, then
# oracle.py --arch arm64); tests/test_real_oracle.py compares them when the vmlinux is cached.
# Uses a private apt state directory; the machine's apt configuration is untouched.
set -euo pipefail
DEST=${KPATCH_KERNELS:-$HOME/.cache/kpatch-kernels}
KV=${KV:-6.12.117+deb13-arm64}
APTDIR=$DEST/.apt-trixie-arm64
mkdir -p "$APTDIR"/state/lists/partial "$APTDIR"/cache/archives/partial "$DEST/.debs"
touch "$APTDIR/state/status"
cat > "$APTDIR/sources.list" <<SRC
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SRC
APT=(-o "Dir::State=$APTDIR/state" -o "Dir::State::status=$APTDIR/state/status"
     -o "Dir::Cache=$APTDIR/cache" -o "Dir::Etc::SourceList=$APTDIR/sources.list"
     -o "Dir::Etc::SourceParts=/dev/null" -o APT::Architecture=amd64
     -o APT::Architectures::=amd64 -o APT::Architectures::=arm64)
apt-get "${APT[@]}" -qq update
cd "$DEST/.debs"
for p in "linux-image-$KV-unsigned" "linux-image-$KV-dbg"; do
  ls "${p}"_*.deb >/dev/null 2>&1 || apt-get "${APT[@]}" -qq download "$p:arm64"
done
out=$DEST/arm64-6.12; mkdir -p "$out"
if [ ! -s "$out/vmlinux" ]; then
  dpkg-deb --fsys-tarfile "$(ls "linux-image-$KV-dbg"_*.deb | head -1)" \
    | tar -x -C "$out" --wildcards './usr/lib/debug/boot/vmlinux-*'
  mv "$out"/usr/lib/debug/boot/vmlinux-* "$out/vmlinux" && rm -rf "$out/usr"
fi
dpkg-deb --fsys-tarfile "$(ls "linux-image-$KV-unsigned"_*.deb | head -1)" | tar -x -C "$out" --wildcards './boot/*'
echo "arm64 6.12: $out/vmlinux ($KV)"
