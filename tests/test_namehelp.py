"""Name help and `list` on the Debian kernels' real clones, duplicates and syscall wrappers."""
from __future__ import annotations

import os

import pytest

from kpatch_core.cli import main
from kpatch_core.image import Image
from kpatch_core.list_cmd import names_for
from kpatch_core.namehelp import CLONE_SUFFIX, clones_of, name_help

CACHE = os.path.expanduser("~/.cache/kpatch-kernels")


def _image(name: str) -> Image:
    path = os.path.join(CACHE, name, "vmlinux")
    if not os.path.exists(path):
        pytest.skip(f"{path} not cached (tests/data/oracle/fetch.sh or fetch-kernels.sh)")
    return Image.open(path)


@pytest.mark.parametrize("suffix", [".isra.0", ".constprop.0", ".part.0", ".cold", ".llvm.1234",
                                    ".constprop.0.isra.0", ".part.0.cold"])
def test_clone_suffixes(suffix):
    assert CLONE_SUFFIX.fullmatch(suffix)
    assert CLONE_SUFFIX.sub("", "finish_task_switch" + suffix) == "finish_task_switch"


@pytest.mark.parametrize("kernel", ["x86_64", "x86_64-6.12", "arm64", "arm64-6.12",
                                    "7.2.13+deb14-amd64", "7.2.13+deb14-arm64"])
def test_clone_of_finish_task_switch(kernel):
    image = _image(kernel)
    assert image.kallsyms.count("finish_task_switch") == 0
    h = name_help(image, "finish_task_switch")
    assert "finish_task_switch.isra.0" in h.candidates
    assert "finish_task_switch.isra.0" in clones_of(image, "finish_task_switch")
    # and from the clone back to a missing sibling: the base name is offered when it exists
    assert name_help(image, "vfs_read.isra.7").candidates[0] == "vfs_read"


@pytest.mark.parametrize("kernel,wrapper", [("x86_64", "__x64_sys_openat"),
                                            ("x86_64-6.12", "__x64_sys_openat"),
                                            ("arm64", "__arm64_sys_openat"),
                                            ("arm64-6.12", "__arm64_sys_openat"),
                                            ("7.2.13+deb14-amd64", "__x64_sys_openat"),
                                            ("7.2.13+deb14-arm64", "__arm64_sys_openat")])
def test_syscall_wrapper(kernel, wrapper):
    image = _image(kernel)
    for asked in ("openat", "sys_openat", "__s390x_sys_openat"):
        assert wrapper in name_help(image, asked).candidates


@pytest.mark.parametrize("kernel", ["x86_64", "x86_64-6.12", "7.2.13+deb14-arm64"])
def test_duplicates_give_their_addresses(kernel):
    image = _image(kernel)
    seen: dict[str, int] = {}
    for n in image.kallsyms.names:
        seen[n] = seen.get(n, 0) + 1
    dup = next(n for n, c in seen.items() if c > 1 and n.isidentifier() and not n.startswith("_"))
    h = name_help(image, dup)
    assert [int(a, 16) for a in h.candidates] == image.kallsyms.addresses_of(dup)
    assert len(h.candidates) > 1 and "0x" in h.hint


def test_close_names():
    image = _image("x86_64")
    assert name_help(image, "vfs_raed").candidates[:1] == ("vfs_read",)


def test_list_kinds_differ_as_the_tools_do():
    image = _image("x86_64-6.12")
    kprobe = names_for(image, "finish_task_switch*", "kprobe")
    assert kprobe == ["finish_task_switch.isra.0"]
    # BTF names the function without the clone suffix: no fentry target matches the clone
    assert names_for(image, "finish_task_switch*", "fentry") == []
    assert "vfs_read" in names_for(image, "vfs_*", "fentry")


def test_list_lsm_hooks():
    """`list --kind lsm`: the image's bpf_lsm_hooks as lsm/HOOK names them; --probeable drops
    bpf_lsm_disabled_hooks (bpf_lsm_verify_prog)."""
    from kpatch_core.attach import check_one
    from kpatch_core.target import Target
    image = _image("x86_64-6.12")
    hooks = names_for(image, "*", "lsm")
    assert "file_open" in hooks and "vm_enough_memory" in hooks and len(hooks) == 266
    assert names_for(image, "file_o*", "lsm") == ["file_open"]
    ok = [h for h in hooks if check_one(image, Target(h, "p", symbol=h, attach="lsm")).ok]
    assert "file_open" in ok and "vm_enough_memory" not in ok


def test_list_cli(capsys):
    path = os.path.join(CACHE, "x86_64-6.12", "vmlinux")
    _image("x86_64-6.12")
    assert main(["list", path, "tcp_v4_conn*", "--probeable"]) == 0
    assert "tcp_v4_connect" in capsys.readouterr().out.split()
    assert main(["list", path, "no_such_function_*"]) == 1
    assert "no kprobe function matches" in capsys.readouterr().err
