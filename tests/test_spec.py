"""Every spelling users write: kprobe_events, perf probe, bpftrace, libbpf section names."""
from __future__ import annotations

import pytest

from kpatch_core.errors import UsageError
from kpatch_core.target import parse_target, spelling_source


@pytest.mark.parametrize("spec,attach,kind,symbol,offset,module,source", [
    # kprobe_events / perf probe
    ("vfs_read", "kprobe", "p", "vfs_read", 0, None, "perf"),
    ("r vfs_read", "kretprobe", "r", "vfs_read", 0, None, "perf"),
    ("vfs_read%return", "kretprobe", "r", "vfs_read", 0, None, "perf"),
    ("vfs_read+0x10", "kprobe", "p", "vfs_read", 16, None, "perf"),
    ("p:grp/ev vfs_read+4 buf=%si", "kprobe", "p", "vfs_read", 4, None, "kprobe_events"),
    ("r:ev vfs_read", "kretprobe", "r", "vfs_read", 0, None, "kprobe_events"),
    ("r16:ev vfs_read", "kretprobe", "r", "vfs_read", 0, None, "kprobe_events"),
    ("p:ev vfs_read%return", "kretprobe", "r", "vfs_read", 0, None, "kprobe_events"),
    ("f:ev vfs_read", "fprobe", "p", "vfs_read", 0, None, "fprobe_events"),
    ("f vfs_read%return", "fprobe_return", "r", "vfs_read", 0, None, "fprobe_events"),
    # bpftrace
    ("kprobe:vfs_read", "kprobe", "p", "vfs_read", 0, None, "bpftrace"),
    ("k:vfs_read", "kprobe", "p", "vfs_read", 0, None, "bpftrace"),
    ("kprobe:vfs_read+8", "kprobe", "p", "vfs_read", 8, None, "bpftrace"),
    ("kretprobe:vfs_read", "kretprobe", "r", "vfs_read", 0, None, "bpftrace"),
    ("kr:vfs_read", "kretprobe", "r", "vfs_read", 0, None, "bpftrace"),
    ("kprobe:ext4:ext4_file_open", "kprobe", "p", "ext4_file_open", 0, "ext4", "bpftrace"),
    ("fentry:vfs_read", "fentry", "p", "vfs_read", 0, None, "bpftrace"),
    ("fentry:vmlinux:vfs_read", "fentry", "p", "vfs_read", 0, None, "bpftrace"),
    ("kfunc:vfs_read", "fentry", "p", "vfs_read", 0, None, "bpftrace"),
    ("f:vfs_read", "fentry", "p", "vfs_read", 0, None, "bpftrace"),
    ("fexit:vfs_read", "fexit", "r", "vfs_read", 0, None, "bpftrace"),
    ("kretfunc:vfs_read", "fexit", "r", "vfs_read", 0, None, "bpftrace"),
    ("kprobe:vfs_*", "kprobe", "p", "vfs_*", 0, None, "bpftrace"),
    ("kprobe:lookup_fast.constprop.*", "kprobe", "p", "lookup_fast.constprop.*", 0, None, "bpftrace"),
    # libbpf section names
    ("kprobe/vfs_read", "kprobe", "p", "vfs_read", 0, None, "libbpf"),
    ("kprobe/vfs_read+0x10", "kprobe", "p", "vfs_read", 16, None, "libbpf"),
    ("kretprobe/vfs_read", "kretprobe", "r", "vfs_read", 0, None, "libbpf"),
    ("fentry/tcp_sendmsg", "fentry", "p", "tcp_sendmsg", 0, None, "libbpf"),
    ("fexit/tcp_sendmsg", "fexit", "r", "tcp_sendmsg", 0, None, "libbpf"),
    ("fmod_ret/security_file_open", "fmod_ret", "p", "security_file_open", 0, None, "libbpf"),
    ("kprobe.multi/tcp_*", "kprobe_multi", "p", "tcp_*", 0, None, "libbpf"),
    ("kretprobe.multi/tcp_*", "kretprobe_multi", "r", "tcp_*", 0, None, "libbpf"),
    ("ksyscall/openat", "kprobe", "p", "openat", 0, None, "libbpf"),
    ("kretsyscall/openat", "kretprobe", "r", "openat", 0, None, "libbpf"),
])
def test_spellings(spec, attach, kind, symbol, offset, module, source):
    t = parse_target(spec)
    assert (t.attach, t.kind, t.symbol, t.offset, t.module) == (attach, kind, symbol, offset, module)
    assert spelling_source(t) == source
    assert t.syscall == spec.startswith(("ksyscall/", "kretsyscall/"))


def test_kprobe_colon_is_not_a_module():
    # the bug of issue 19: kprobe:vfs_read was module "kprobe", symbol "vfs_read"
    t = parse_target("kprobe:does_not_exist_at_all")
    assert t.module is None and t.symbol == "does_not_exist_at_all" and t.attach == "kprobe"
    assert str(t) == "kprobe:does_not_exist_at_all"


def test_modules_still_parse():
    t = parse_target("ext4:ext4_file_open")
    assert (t.module, t.symbol, t.attach, t.spelling) == ("ext4", "ext4_file_open", "kprobe", "")


def test_globs_are_patterns_only_where_a_tool_takes_them():
    assert parse_target("vfs_*").is_pattern
    assert parse_target("kprobe:vfs_read*").is_pattern
    assert not parse_target("vfs_read").is_pattern
    with pytest.raises(UsageError, match="malformed"):
        parse_target("p:ev vfs_*")  # kprobe_events takes no globs
    with pytest.raises(UsageError, match="malformed"):
        parse_target("ksyscall/open*")


@pytest.mark.parametrize("spec,msg", [
    ("uprobe:/bin/bash:readline", "not a kernel function probe"),
    ("tracepoint:syscalls:sys_enter_open", "not a kernel function probe"),
    ("tp_btf/sched_switch", "not a kernel function probe"),
    ("fentry:vfs_read+4", "without \\+offset"),
    ("fentry/0xffffffff81000000", "not an address"),
    ("kprobe:", "nothing after"),
    ("kprobe:vfs_read%return", "%return"),
    ("f:ev vfs_read+4", "without offset"),
    ("p5:ev vfs_read", "malformed"),
])
def test_bad_spellings_name_the_problem(spec, msg):
    with pytest.raises(UsageError, match=msg):
        parse_target(spec)
