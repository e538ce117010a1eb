"""Probe lists from real tool files (testdata/tools/, from Debian bookworm's packages)."""
from __future__ import annotations

import os

import pytest

from kpatch_core.errors import InputError
from kpatch_core.readers import detect, read_probe_file
from kpatch_core.readers.bpftrace import read_bpftrace
from kpatch_core.readers.libbpf_obj import embedded_objects

TOOLS = os.path.join(os.path.dirname(__file__), "..", "testdata", "tools")


def _specs(name: str) -> list[tuple[str, str, str | None]]:
    pf = read_probe_file(os.path.join(TOOLS, name))
    return [(str(s.target), s.target.attach, s.regex or s.bcc_syscall) for s in pf.specs]


@pytest.mark.parametrize("name,reader", [
    ("vfsstat.bt", "bpftrace"), ("dcsnoop.bt", "bpftrace"), ("cpudist-bpfcc", "bcc"),
    ("execsnoop-bpfcc", "bcc"), ("vfsstat.bpf.o", "libbpf"),
])
def test_reader_is_picked_by_content(name, reader):
    with open(os.path.join(TOOLS, name), "rb") as f:
        assert detect(f.read()) == reader


def test_bpftrace_vfsstat_headers():
    pf = read_probe_file(os.path.join(TOOLS, "vfsstat.bt"))
    assert [str(s.target) for s in pf.specs] == ["kprobe:vfs_read*", "kprobe:vfs_write*",
                                                 "kprobe:vfs_fsync", "kprobe:vfs_open",
                                                 "kprobe:vfs_create"]
    assert pf.specs[0].target.is_pattern and pf.specs[0].line == 25
    assert set(pf.skipped) == {"BEGIN", "interval:s:1", "END"}


def test_bpftrace_dcsnoop_has_a_clone_glob_and_a_return_probe():
    got = _specs("dcsnoop.bt")
    assert ("kprobe:lookup_fast.constprop.*", "kprobe", None) in got
    assert ("kretprobe:d_lookup", "kretprobe", None) in got


def test_bpftrace_comments_strings_predicates_and_structs():
    text = ('#include <linux/fs.h>\nstruct x { int a; };\n// kprobe:commented\n'
            'kprobe:a, kretprobe:b /pid == 1/ { printf("kprobe:no {"); }\n'
            'fentry:c,\n  uprobe:/bin/sh:main { }\n')
    pf = read_bpftrace("t.bt", text)
    assert [(str(s.target), s.line) for s in pf.specs] == [("kprobe:a", 4), ("kretprobe:b", 4),
                                                          ("fentry:c", 5)]
    assert pf.skipped == ("uprobe:/bin/sh:main",)


def test_bpftrace_lsm_probes():
    pf = read_bpftrace("t.bt", "lsm:file_open { }\nlsm:bprm_check_security, kprobe:x { }\n")
    assert [(str(s.target), s.target.attach, s.target.symbol) for s in pf.specs] == [
        ("lsm:file_open", "lsm", "file_open"), ("lsm:bprm_check_security", "lsm", "bprm_check_security"),
        ("kprobe:x", "kprobe", "x")]


def test_bcc_event_re_and_syscalls():
    assert _specs("cpudist-bpfcc") == [
        ('attach_kprobe(event="{}")', "kprobe",
         r"^finish_task_switch$|^finish_task_switch\.isra\.\d$")]
    got = _specs("execsnoop-bpfcc")
    assert got == [('attach_kprobe(event="{}")', "kprobe", "execve"),
                   ('attach_kretprobe(event="{}")', "kretprobe", "execve")]


def test_bcc_kfunc_placeholders_resolved_through_str_replace():
    got = _specs("opensnoop-bpfcc")
    # KRETFUNC_PROBE(FNNAME, ...) with bpf_text.replace('FNNAME', fnname_open...)
    assert {a for _, a, _ in got} == {"kprobe", "kretprobe", "fexit"}
    assert ("KRETFUNC_PROBE({})", "fexit", "openat") in got
    got = _specs("readahead-bpfcc")
    assert ("KRETFUNC_PROBE(__page_cache_alloc)", "fexit", None) in got


def test_libbpf_object_sections():
    got = _specs("vfsstat.bpf.o")
    assert ("kprobe/vfs_read", "kprobe", None) in got and ("fentry/vfs_read", "fentry", None) in got
    assert len(got) == 10  # vfs_read, vfs_write, vfs_fsync, vfs_open, vfs_create: kprobe and fentry
    got = _specs("cachestat.bpf.o")
    assert [g[0] for g in got] == ["fentry/add_to_page_cache_lru", "fentry/mark_page_accessed",
                                   "fentry/account_page_dirtied", "fentry/mark_buffer_dirty"]


def test_embedded_objects_found_inside_other_bytes():
    with open(os.path.join(TOOLS, "cachestat.bpf.o"), "rb") as f:
        obj = f.read()
    blob = b"\x7fELF" + b"\0" * 100 + obj + b"tail"
    assert embedded_objects(blob) == [obj]


def test_bad_inputs_are_one_line_errors(tmp_path):
    sh = tmp_path / "wrapper"
    sh.write_text("#!/bin/sh\nexec foo\n")
    with pytest.raises(InputError, match="shell script"):
        read_probe_file(str(sh))
    py = tmp_path / "bad.py"
    py.write_text("#!/usr/bin/python3\nfrom bcc import BPF\ndef (:\n")
    with pytest.raises(InputError, match="not valid Python"):
        read_probe_file(str(py))
    elf = tmp_path / "plain.elf"
    elf.write_bytes(b"\x7fELF\x02\x01" + b"\0" * 100)
    with pytest.raises(InputError, match="no BPF object"):
        read_probe_file(str(elf))
    with pytest.raises(InputError, match="cannot read"):
        read_probe_file(str(tmp_path / "missing"))
