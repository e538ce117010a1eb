""".BTF parsing: function prototypes, printable C types, members, fetch types; checked on a
GCC-built BTF blob (tests/data/events/btf, rebuilt by build.sh) and, when cached, on the real
Debian vmlinux images."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from kpatch_core.btf import Btf
from kpatch_core.errors import InputError

BLOB = (Path(__file__).parent / "data" / "events" / "btf" / "funcs.btf").read_bytes()
KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))


@pytest.fixture(scope="module")
def btf() -> Btf:
    return Btf(BLOB)


def test_prototypes(btf: Btf) -> None:
    assert sorted(btf.func_names()) == sorted(["vfs_read", "kfree", "kernel_clone", "do_exit",
                                               "nine_args", "dput", "takes_struct"])
    p = btf.func("vfs_read")
    assert p.signature() == "ssize_t vfs_read(struct file *file, char *buf, size_t count, loff_t *pos)"
    assert [(a.name, a.ctype, a.size, a.kind, a.fetch_type) for a in p.params] == [
        ("file", "struct file *", 8, "ptr", "x64"), ("buf", "char *", 8, "ptr", "x64"),
        ("count", "size_t", 8, "int", "u64"), ("pos", "loff_t *", 8, "ptr", "x64")]
    assert (p.ret_ctype, p.ret_fetch_type, p.returns_void) == ("ssize_t", "s64", False)
    k = btf.func("kfree")
    assert k.returns_void and k.params[0].ctype == "const void *"
    n = btf.func("nine_args")
    assert len(n.params) == 9 and n.params[0].fetch_type == "s32" and n.params[8].fetch_type == "u8"
    s = btf.func("takes_struct")
    assert (s.params[0].ctype, s.params[0].size, s.params[0].fetch_type) == ("struct path", 16, "u64")
    assert btf.func("no_such_function") is None


def test_members(btf: Btf) -> None:
    assert btf.member_offset("dentry", "d_name.name") == 40
    assert btf.member_offset("file", "f_path.dentry") == 16
    assert btf.member_offset("file", "f_flags") == 24
    assert btf.member_offset("file", "f_rcuhead") == 0  # inside the anonymous union
    assert btf.member_offset("file", "nope") is None
    _, file_t = btf.skip_modifiers(btf.func("vfs_read").params[0].type_id)
    _, st = btf.skip_modifiers(file_t.size_or_type)
    assert st.kind_name == "struct" and st.kflag  # has bitfields: offsets are kflag-packed
    m = btf.find_member(st, "f_bits")
    assert (m.raw_offset & 0xFFFFFF, m.raw_offset >> 24) == (28 * 8 + 4, 12)
    arr = btf.find_member(st, "f_name")
    assert btf.c_type(arr.type_id) == "char[16]" and btf.size_of(arr.type_id) == 16
    assert btf.is_char_array(btf.type(arr.type_id))  # built with -funsigned-char


def test_bad_input() -> None:
    with pytest.raises(InputError, match="bad magic"):
        Btf(b"\0" * 64)
    with pytest.raises(InputError, match="only 3 bytes"):
        Btf(b"abc")
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 1000, 1000, 10)
    with pytest.raises(InputError, match="truncated"):
        Btf(hdr + b"\0" * 40)
    with pytest.raises(InputError, match="version 2"):
        Btf(struct.pack("<HBBIIIII", 0xEB9F, 2, 0, 24, 0, 0, 0, 0))


def test_big_endian_blob() -> None:
    """s390x BTF is big-endian: the magic tells the byte order."""
    be = bytearray(struct.pack(">HBBIIIII", 0xEB9F, 1, 0, 24, 0, 16, 16, 5))
    be += struct.pack(">III", 1, (1 << 24), 4) + struct.pack(">I", (1 << 24) | 32)  # INT 'int'
    be += b"\0int\0"
    b = Btf(bytes(be))
    assert len(b) == 2 and b.c_type(1) == "int" and b.fetch_type(1) == "s32"


@pytest.mark.realkernel
@pytest.mark.parametrize("arch", ["x86_64", "arm64", "riscv64"])
def test_real_vmlinux(arch: str) -> None:
    path = KERNELS / arch / "vmlinux"
    if not path.exists():
        pytest.skip(f"{path} not cached")
    from kpatch_core.image import Image
    btf = Btf.from_image(Image.open(str(path)))
    assert btf is not None and len(btf) > 50000
    assert btf.func("vfs_read").signature() == \
        "ssize_t vfs_read(struct file *file, char *buf, size_t count, loff_t *pos)"
    assert btf.func("kfree").returns_void
    assert btf.member_offset("dentry", "d_name.name") == 40
