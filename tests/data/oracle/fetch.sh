#!/usr/bin/env bash
# Download the Debian kernels whose oracle answers sit beside this script (debug vmlinux +
# bootable image), next to the kernels of ../shared/tools/fetch-kernels.sh:
#   tests/data/oracle/fetch.sh [NAME ...]      NAME: a directory beside this script (default: all)
# into $KPATCH_KERNELS/NAME (default ~/.cache/kpatch-kernels/NAME).
#  - x86_64 arm64 s390x ppc64le (Debian 6.1.0-50, bookworm) and riscv64 (6.12.107, trixie): the
#    kernels of ../shared/data/oracle, whose answers are copied here (seed 1 samples).
#  - arm64-6.12 x86_64-6.12 s390x-6.12 ppc64le-6.12: fetched here from trixie (seed 1 samples).
#  - every other NAME is a Debian build KVER-FLAVOUR (5.10.0-46-amd64, 7.2.13+deb14-riscv64 ...),
#    fetched by tools/fetch-debian-kernel.sh (both package layouts, 5.10 to 7.x) with the Debian
#    arch of DEBIAN below.  Their answers were taken by tools/kernel-oracle (sample_probes.py
#    -n 2000 --seed S, S in NAME/results.meta.json "sample_seed", then oracle.py); see README.md.
# tests/test_real_oracle.py compares them when the vmlinux is cached.
# Uses a private apt state directory; the machine's apt configuration is untouched.
set -euo pipefail
DEST=${KPATCH_KERNELS:-$HOME/.cache/kpatch-kernels}
# NAME : Debian arch : suite : kernel flavour : image package suffix
declare -A SPEC=(
  [x86_64]="amd64:bookworm:6.1.0-50-amd64:-unsigned"
  [arm64]="arm64:bookworm:6.1.0-50-arm64:-unsigned"
  [s390x]="s390x:bookworm:6.1.0-50-s390x:"
  [ppc64le]="ppc64el:bookworm:6.1.0-50-powerpc64le:"
  [riscv64]="riscv64:trixie:6.12.107+deb13-riscv64:"
  [arm64-6.12]="arm64:trixie:6.12.117+deb13-arm64:-unsigned"
  [x86_64-6.12]="amd64:trixie:6.12.117+deb13-amd64:-unsigned"
  [s390x-6.12]="s390x:trixie:6.12.107+deb13-s390x:"
  [ppc64le-6.12]="ppc64el:trixie:6.12.107+deb13-powerpc64le:"
)
# NAME (Debian build) : Debian arch, for tools/fetch-debian-kernel.sh
declare -A DEBIAN=(
  [5.10.0-46-amd64]=amd64
  [5.10.0-32-arm64]=arm64   # 5.10.0-46-arm64's -dbg package is gone from the mirror (404)
  [7.2.13+deb14-amd64]=amd64
  [7.2.13+deb14-arm64]=arm64
  [7.2.13+deb14-riscv64]=riscv64
  [7.2.13+deb14-s390x]=s390x
  [7.2.13+deb14-powerpc64le]=ppc64el
  [6.12.117+deb13-cloud-amd64]=amd64
  [6.12.117+deb13-rt-amd64]=amd64
  [6.12.117+deb13-arm64-16k]=arm64
  [6.12.117+deb13-rt-arm64]=arm64
  [7.2.13+deb14-powerpc64le-64k]=ppc64el
  [7.3.4+deb13-amd64]=amd64   # trixie-backports
  [7.3.4+deb13-arm64]=arm64
  [5.10.0-32-amd64]=amd64
)
NAMES=${*:-"${!SPEC[@]} ${!DEBIAN[@]}"}
OLD=()
for name in $NAMES; do
  if [ -n "${DEBIAN[$name]:-}" ]; then
    "$(dirname "$0")/../../../tools/fetch-debian-kernel.sh" "$name" "${DEBIAN[$name]}" "$DEST/$name"
  elif [ -n "${SPEC[$name]:-}" ]; then
    OLD+=("$name")
  else
    echo "fetch.sh: unknown kernel $name (known: ${!SPEC[*]} ${!DEBIAN[*]})" >&2; exit 2
  fi
done
[ ${#OLD[@]} -gt 0 ] || exit 0
NAMES=${OLD[*]}
APTDIR=$DEST/.apt-trixie
mkdir -p "$APTDIR"/state/lists/partial "$APTDIR"/cache/archives/partial "$DEST/.debs"
touch "$APTDIR/state/status"
cat > "$APTDIR/sources.list" <<SRC
deb [arch=amd64,arm64,s390x,ppc64el,riscv64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [arch=amd64,arm64,s390x,ppc64el,riscv64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SRC
APT=(-o "Dir::State=$APTDIR/state" -o "Dir::State::status=$APTDIR/state/status"
     -o "Dir::Cache=$APTDIR/cache" -o "Dir::Etc::SourceList=$APTDIR/sources.list"
     -o "Dir::Etc::SourceParts=/dev/null" -o APT::Architecture=amd64
     -o APT::Architectures::=amd64 -o APT::Architectures::=arm64
     -o APT::Architectures::=s390x -o APT::Architectures::=ppc64el -o APT::Architectures::=riscv64)
apt-get "${APT[@]}" -qq update
cd "$DEST/.debs"
for name in $NAMES; do
  [ -n "${SPEC[$name]:-}" ] || { echo "fetch.sh: unknown kernel $name (known: ${!SPEC[*]})" >&2; exit 2; }
  IFS=: read -r darch _suite kv suf <<< "${SPEC[$name]}"
  for p in "linux-image-$kv$suf" "linux-image-$kv-dbg"; do
    ls "${p}"_*.deb >/dev/null 2>&1 || apt-get "${APT[@]}" -qq download "$p:$darch"
  done
  out=$DEST/$name; mkdir -p "$out"
  if [ ! -s "$out/vmlinux" ]; then
    dpkg-deb --fsys-tarfile "$(ls "linux-image-$kv-dbg"_*.deb | head -1)" \
      | tar -x -C "$out" --wildcards './usr/lib/debug/boot/vmlinux-*'
    mv "$out"/usr/lib/debug/boot/vmlinux-* "$out/vmlinux" && rm -rf "$out/usr"
  fi
  dpkg-deb --fsys-tarfile "$(ls "linux-image-$kv$suf"_*.deb | head -1)" | tar -x -C "$out" --wildcards './boot/*'
  echo "$name: $out/vmlinux ($kv)"
done
