"""Verdicts for fentry/fexit, fprobe events and kprobe_multi on the Debian kernels, and the
kprobe spellings of BPF tools; each case is a kernel rule (bpf_check_attach_target,
check_attach_btf_id, register_fentry, trace_fprobe.c, ftrace_lookup_symbols)."""
from __future__ import annotations

import gzip
import json
import os

import pytest

from kpatch_core.attach import Unmatched, check_one, check_request, check_targets
from kpatch_core.attach_verdict import AttachReason
from kpatch_core.cli import main
from kpatch_core.fprobe import check_kprobe_multi
from kpatch_core.image import Image
from kpatch_core.target import parse_target
from kpatch_core.verdict import Reason

CACHE = os.path.expanduser("~/.cache/kpatch-kernels")
TOOLS = os.path.join(os.path.dirname(__file__), "..", "testdata", "tools")


def _path(name: str) -> str:
    path = os.path.join(CACHE, name, "vmlinux")
    if not os.path.exists(path):
        pytest.skip(f"{path} not cached (tests/data/oracle/fetch.sh or fetch-kernels.sh)")
    return path


def _image(name: str) -> Image:
    return Image.open(_path(name))


def _v(image: Image, spec: str):
    return check_one(image, parse_target(spec))


@pytest.mark.parametrize("kernel", ["x86_64", "x86_64-6.12"])
def test_bpftrace_kprobe_spellings(kernel):
    image = _image(kernel)
    missing = _v(image, "kprobe:does_not_exist_at_all")
    # perf's kprobe PMU (create_local_trace_kprobe) answers -ENOENT on every version, where a
    # kprobe_events write answers -EINVAL on 6.12
    assert (missing.ok, missing.reason, missing.errno) == (False, Reason.NO_SYMBOL, "ENOENT")
    ret = _v(image, "kretprobe:vfs_read")
    assert ret.ok and ret.kind == "r"
    assert _v(image, "kprobe:vfs_read").kind == "p"


def test_fentry_rules_x86_64_612():
    image = _image("x86_64-6.12")
    ok = _v(image, "fentry:vfs_read")
    assert ok.ok and ok.address == image.kallsyms.lookup("vfs_read")
    assert _v(image, "fexit/vfs_read").ok
    deny = _v(image, "fentry:migrate_disable")
    assert (deny.reason, deny.errno) == (AttachReason.DENY_LIST, "EINVAL")
    # PREEMPT_RCU build: __rcu_read_lock is on 6.12's deny list
    assert _v(image, "fentry:__rcu_read_lock").reason == AttachReason.DENY_LIST
    assert _v(image, "fexit:do_exit").reason == AttachReason.NORETURN_DENY
    assert _v(image, "fentry:do_exit").ok
    # noinstr: no ftrace record; x86's bpf_arch_text_poke finds no 5-byte NOP: -EBUSY
    idle = _v(image, "fentry:default_idle")
    assert (idle.reason, idle.errno) == (AttachReason.NO_FTRACE_LOCATION, "EBUSY")


def test_fmod_ret_needs_error_injection_or_security_hook():
    image = _image("x86_64-6.12")
    assert _v(image, "fmod_ret/security_file_open").ok  # check_attach_modify_return: security_
    bad = _v(image, "fmod_ret/vfs_read")
    assert (bad.reason, bad.errno) == (AttachReason.NOT_MODIFIABLE, "EINVAL")


def test_fentry_rules_x86_64_61():
    image = _image("x86_64")
    assert _v(image, "fentry:__rcu_read_lock").ok  # not on 6.1's deny list
    assert _v(image, "fexit:do_exit").ok  # no noreturn_deny in 6.1
    union = _v(image, "fentry:sidtab_destroy_tree")  # arg0 is a union: refused until 6.13
    assert (union.reason, union.errno) == (AttachReason.BTF_ARG_TYPE, "EINVAL")
    clone = _v(image, "fentry:finish_task_switch")
    assert (clone.reason, clone.errno) == (AttachReason.NO_BTF_FUNC, "ESRCH")


def test_sleepable_programs_need_the_kernels_allow_lists():
    """btf_id_allow_sleepable: fentry.s/fexit.s/fmod_ret.s only on ALLOW_ERROR_INJECTION
    functions outside btf_non_sleepable_error_inject; lsm.s only on sleepable_lsm_hooks."""
    # Debian builds without CONFIG_FUNCTION_ERROR_INJECTION: 7.x's check_attach_sleepable and
    # check_attach_modify_return then take the arch's syscall entries (has_arch_syscall_prefix);
    # 6.12's error-injection list is simply empty (within_error_injection_list stub)
    image = _image("7.2.13+deb14-amd64")
    for spec in ("fentry.s/__x64_sys_openat", "fexit.s/__x64_sys_openat", "fmod_ret.s/__x64_sys_openat"):
        t = parse_target(spec)
        assert t.sleepable and _v(image, spec).ok, spec
    assert not parse_target("fentry/vfs_read").sleepable
    bad = _v(image, "fentry.s/vfs_read")
    assert (bad.ok, bad.reason, bad.errno) == (False, AttachReason.NOT_SLEEPABLE, "EINVAL")
    assert _v(image, "fentry/vfs_read").ok
    assert _v(image, "fmod_ret/__x64_sys_openat").ok
    assert _v(image, "fmod_ret/vfs_read").reason == AttachReason.NOT_MODIFIABLE
    assert _v(_image("7.2.13+deb14-arm64"), "fentry.s/__arm64_sys_openat").ok
    old = _image("x86_64-6.12")
    assert _v(old, "fentry.s/__x64_sys_openat").reason == AttachReason.NOT_SLEEPABLE
    assert _v(old, "fmod_ret/__x64_sys_openat").reason == AttachReason.NOT_MODIFIABLE
    assert _v(old, "fmod_ret/security_file_open").ok


def test_bpf_lsm_hooks():
    """lsm/HOOK attaches to bpf_lsm_HOOK (bpf_lsm_verify_prog: a hook, not disabled; lsm.s:
    a sleepable hook); the sets are read from the image's .BTF_ids."""
    for kernel in ("x86_64-6.12", "7.2.13+deb14-amd64"):
        image = _image(kernel)
        ok = _v(image, "lsm/file_open")
        assert ok.ok and ok.address == image.kallsyms.lookup("bpf_lsm_file_open"), kernel
        assert _v(image, "lsm:file_open").ok  # bpftrace's spelling
        assert _v(image, "lsm.s/file_open").ok  # in sleepable_lsm_hooks
        assert _v(image, "lsm.s/file_permission").reason == AttachReason.LSM_NOT_SLEEPABLE
        assert _v(image, "lsm/file_permission").ok
        assert _v(image, "lsm/vm_enough_memory").reason == AttachReason.LSM_DISABLED_HOOK
        # a bpf_lsm_ function that is not a hook
        assert _v(image, "lsm/find_cgroup_shim").reason == AttachReason.LSM_NOT_A_HOOK
        assert _v(image, "lsm/no_such_hook").reason == AttachReason.NO_BTF_FUNC
    # check: a refused hook is not an unknown name (the attach looks up bpf_lsm_HOOK)
    assert main(["check", _path("x86_64-6.12"), "lsm.s/file_permission"]) == 0
    assert main(["check", _path("x86_64-6.12"), "lsm/no_such_hook"]) == 1
    # 7.2 added ___migrate_enable to btf_id_deny; the image's set says so, 6.12 has no such BTF FUNC
    assert _v(_image("7.2.13+deb14-amd64"), "fentry:___migrate_enable").reason == AttachReason.DENY_LIST


def test_fentry_on_a_cpu_feature_alternative():
    """softleaf_to_pfn starts with static_cpu_has(X86_FEATURE_LA57)'s jmp: apply_alternatives
    leaves a NOP5 on a CPU with LA57 (QEMU -cpu max: the kernel attached fexit), a jmp
    without (-EBUSY). We answer -EBUSY and name the feature."""
    image = _image("7.2.13+deb14-amd64")
    v = _v(image, "fexit:softleaf_to_pfn")
    assert (v.ok, v.reason, v.errno) == (False, AttachReason.ENTRY_CPU_ALTERNATIVE, "EBUSY")
    assert "16*32+16" in v.detail and "CPU_DEPENDENT" in v.flags
    idle = _v(image, "fentry:default_idle")  # noinstr, entry not an alternative NOP
    assert idle.reason == AttachReason.NO_FTRACE_LOCATION


def test_arm64_72_trampoline_takes_stack_arguments():
    """calc_arg_aux (6.16+): arguments past x0-x7 go on the stack; 6.12 refuses them."""
    name = "fentry:vring_create_virtqueue"  # 11 arguments
    assert _v(_image("7.2.13+deb14-arm64"), name).ok
    old = _v(_image("arm64-6.12"), name)
    assert (old.reason, old.errno) == (AttachReason.TRAMPOLINE_ARGS, "ENOTSUPP")


def test_fentry_arm64_61_has_no_direct_calls():
    image = _image("arm64")
    v = _v(image, "fentry:vfs_read")
    assert (v.reason, v.errno) == (AttachReason.NO_DIRECT_CALLS, "ENOTSUPP")
    assert _v(_image("arm64-6.12"), "fentry:vfs_read").ok


def test_fprobe_events():
    image = _image("x86_64-6.12")
    assert _v(image, "f:ev vfs_read").ok
    r = _v(image, "f vfs_read%return")
    assert r.ok and r.attach == "fprobe_return" and r.kind == "r"
    bad = _v(image, "f:ev default_idle")  # noinstr: no ftrace record to match
    assert (bad.reason, bad.errno, bad.message) == (AttachReason.FPROBE_NO_MATCH, "EINVAL",
                                                    "Failed to register probe event")
    old = _v(_image("x86_64"), "f:ev vfs_read")
    assert (old.reason, old.errno) == (AttachReason.FPROBE_EVENTS_MISSING, "EINVAL")


def test_kprobe_multi_names_the_failing_symbols():
    image = _image("x86_64-6.12")
    v = check_kprobe_multi(image, ["vfs_read", "default_idle", "no_such_fn", "vfs_write"])
    assert (v.ok, v.reason, v.errno) == (False, AttachReason.MULTI_NOT_FOUND, "ESRCH")
    assert v.failed == ("default_idle", "no_such_fn")
    assert check_kprobe_multi(image, ["vfs_read", "vfs_write"]).ok
    pattern = _v(image, "kprobe.multi/vfs_rea*")
    assert pattern.ok and pattern.count >= 3
    assert _v(image, "kprobe.multi/zz_no_such_*").reason == AttachReason.MULTI_NO_MATCH
    old = _v(_image("x86_64"), "kprobe.multi/vfs_read")  # Debian 6.1: no CONFIG_FPROBE
    assert (old.reason, old.errno) == (AttachReason.MULTI_NO_FPROBE, "EOPNOTSUPP")


def test_globs_and_syscalls_expand():
    image = _image("x86_64-6.12")
    got = check_targets(image, [parse_target("kprobe:vfs_rea*"), parse_target("ksyscall/openat"),
                                parse_target("kprobe:zz_nothing_*")])
    names = [str(t) for t, _ in got]
    assert "kprobe:vfs_read" in names and "kprobe:vfs_readv" in names
    sys_t, sys_v = next((t, v) for t, v in got if t.symbol == "__x64_sys_openat")
    assert sys_v.ok
    assert isinstance(got[-1][1], Unmatched)


def test_check_cli_json_fields(capsys):
    path = _path("x86_64-6.12")
    rc = main(["check", path, "--json", "vfs_read", "fentry:vfs_read", "finish_task_switch"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 1  # finish_task_switch is not in kallsyms
    assert "attach" not in rows[0] and "hint" not in rows[0]  # plain kprobe: unchanged fields
    assert rows[1]["attach"] == "fentry" and rows[1]["ok"]
    assert rows[2]["candidates"] == ["finish_task_switch.isra.0"]


def test_check_from_tool_files(capsys):
    path = _path("x86_64-6.12")
    rc = main(["check", path, "--from", os.path.join(TOOLS, "cpudist-bpfcc")])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith('attach_kprobe(event="finish_task_switch.isra.0")')
    rc = main(["check", path, "--from", os.path.join(TOOLS, "vfsstat.bpf.o")])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(out) == 10 and all(" ok " in line for line in out)


ORACLE = os.path.join(os.path.dirname(__file__), "data", "attach_oracle")


@pytest.mark.parametrize("answers_file", sorted(f for f in os.listdir(ORACLE) if f.endswith(".jsonl.gz"))
                         if os.path.isdir(ORACLE) else [])
def test_agrees_with_the_real_kernel(answers_file):
    """Answers of Debian kernels booted with tools/bpf-attach-oracle (fentry, fexit, fprobe
    events, kprobe_multi; see tests/data/attach_oracle/README.md): >= 99.9% (ok, errno)
    agreement and no false accept."""
    image = _image(answers_file.split(".jsonl")[0].split("--")[0])  # KERNEL[--LABEL].jsonl.gz
    with gzip.open(os.path.join(ORACLE, answers_file), "rt") as f:
        answers = [json.loads(line) for line in f]
    agree = false_accepts = 0
    for a in answers:
        v = check_request(image, a["request"])
        agree += v.ok == a["ok"] and (v.ok or v.errno == a["errno"])
        false_accepts += v.ok and not a["ok"]
    assert len(answers) >= 300
    assert false_accepts == 0
    assert agree / len(answers) >= 0.999, f"{agree}/{len(answers)}"


def test_fprobe_event_alias_matched_through_kallsyms():
    """7.x fprobe events match the symbol over every kallsyms alias with an ftrace location
    (get_ips_from_filter); Debian 7.2.13 arm64 created `f: __kvm_nvhe_nvhe_hyp_panic_handler`,
    an alias of the traced nvhe_hyp_panic_handler that ftrace's record names do not carry."""
    image = _image("7.2.13+deb14-arm64")
    assert image.features.has("FPROBE_FILTER_BY_KALLSYMS")
    assert check_request(image, "fprobe __kvm_nvhe_nvhe_hyp_panic_handler").ok
    assert not check_request(image, "fprobe __kvm_nvhe_does_not_exist_at_all").ok
