#!/bin/sh
# Regenerates testdata/tools/ from Debian bookworm's packages (bpftrace 0.17.0-1,
# bpfcc-tools 0.26.0+ds-1, libbpf-tools 0.26.0+ds-1; all Apache-2.0):
#   sh testdata/tools/fetch.sh
# The *.bpf.o files are the BPF objects libbpf-tools' skeletons embed in the binaries.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
cd "$tmp"
apt-get download bpftrace bpfcc-tools libbpf-tools >/dev/null
for d in *.deb; do dpkg-deb -x "$d" root; done
s=root/usr/sbin
cp "$s/vfsstat.bt" "$s/dcsnoop.bt" "$s/tcpconnect.bt" "$here/"
cp "$s/cpudist-bpfcc" "$s/execsnoop-bpfcc" "$s/opensnoop-bpfcc" "$s/readahead-bpfcc" "$here/"
python3 - "$s" "$here" <<'PY'
import sys
from kpatch_core.readers.libbpf_obj import embedded_objects
src, dst = sys.argv[1:]
for tool in ("vfsstat", "cachestat"):
    (obj,) = embedded_objects(open(f"{src}/{tool}", "rb").read())
    open(f"{dst}/{tool}.bpf.o", "wb").write(obj)
PY
rm -rf "$tmp"
