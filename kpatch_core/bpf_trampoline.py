"""fentry/fexit: what loading and attaching a BPF trampoline program to a kernel function does.

The loader (libbpf, bpftrace) finds the function's ``BTF_KIND_FUNC`` id in vmlinux BTF; the
verifier's ``bpf_check_attach_target`` distils the prototype (``btf_distill_func_proto``) and
looks the name up in kallsyms; ``check_attach_btf_id`` applies the deny lists; at attach
``bpf_trampoline_update`` asks the arch to build the trampoline
(``arch_prepare_bpf_trampoline``: argument-register limits) and ``register_fentry`` hooks the
function through its ftrace location (or asks ``bpf_arch_text_poke`` to patch the entry).
The first failing rule decides, in that order.

>>> v = check_fentry(image, parse_target("fentry:vfs_read"))    # doctest: +SKIP
>>> v.ok, v.address                                             # doctest: +SKIP
(True, 18446744071581962656)
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from . import btf as B
from .attach_verdict import AttachReason, AttachVerdict, refuse
from .spec import image_btf
from .target import Target

if TYPE_CHECKING:
    from .image import Image

MAX_BPF_FUNC_ARGS = 12  # include/linux/bpf.h
# check_attach_btf_id: btf_id_deny (the entries built in depend on the config; an entry whose
# function the image lacks never matches, as BTF_ID resolves it to 0)
BTF_ID_DENY = ("migrate_disable", "migrate_enable", "rcu_read_unlock_strict",
               "preempt_count_add", "preempt_count_sub")
BTF_ID_DENY_PREEMPT_RCU = ("__rcu_read_lock", "__rcu_read_unlock")  # FEATURE FENTRY_DENY_RCU_READ_LOCK
# check_attach_btf_id: noreturn_deny (FEATURE FEXIT_NORETURN_DENY)
NORETURN_DENY = ("__ia32_sys_exit", "__ia32_sys_exit_group", "__kunit_abort",
                 "kunit_try_catch_throw", "__module_put_and_kthread_exit", "__x64_sys_exit",
                 "__x64_sys_exit_group", "do_exit", "do_group_exit", "kthread_complete_and_exit",
                 "kthread_exit", "make_task_dead")
# check_non_sleepable_error_inject: btf_non_sleepable_error_inject (when the image lacks the set)
NON_SLEEPABLE_ERROR_INJECT = ("__filemap_add_folio", "should_fail_alloc_page", "should_failslab")
# register_fentry needs CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS (tr->fops); its API's names
DIRECT_CALLS_EVIDENCE = ("register_ftrace_direct", "register_ftrace_direct_multi")


def _type_size(btf: B.Btf, tid: int, unions: bool) -> tuple[int, B.BtfType | None]:
    """``__get_type_size``: bytes of the type after modifiers (-1 when unsupported), and it;
    a union counts as a struct only with ``unions`` (FEATURE TRACING_UNION_ARGS)."""
    if tid == 0:
        return 0, None
    _, t = btf.skip_modifiers(tid)
    if t is None:
        return -1, None
    if t.kind == B.PTR:
        return B.POINTER_SIZE, t
    if t.kind in (B.INT, B.ENUM, B.ENUM64, B.STRUCT) or (unions and t.kind == B.UNION):
        return t.size_or_type, t
    return -1, t


def _distill(btf: B.Btf, name: str, fexit: bool, retval_max_8: bool,
             unions: bool) -> tuple[AttachReason, str] | None:
    """``btf_distill_func_proto`` (+ the >8-byte return check): None when the prototype fits."""
    fid = btf._funcs.get(name)  # btf_find_by_name_kind(vmlinux, name, BTF_KIND_FUNC)
    ft = btf.type(fid) if fid else None
    proto = btf.type(ft.size_or_type) if ft else None
    if proto is None or proto.kind != B.FUNC_PROTO:
        return AttachReason.NO_BTF_FUNC, name
    if proto.vlen > MAX_BPF_FUNC_ARGS:
        return AttachReason.BTF_TOO_MANY_ARGS, f"{proto.vlen} arguments"
    ret_size, rt = _type_size(btf, proto.size_or_type, unions)
    if ret_size < 0 or (rt is not None and rt.kind in (B.STRUCT, B.UNION)):
        return AttachReason.BTF_RET_TYPE, rt.kind_name if rt else "?"
    raw = btf._u32s(proto.extra, 2 * proto.vlen) if proto.vlen else ()
    for i in range(proto.vlen):
        ptid = raw[2 * i + 1]
        if i == proto.vlen - 1 and ptid == 0:
            return AttachReason.BTF_VARARGS, ""
        size, _ = _type_size(btf, ptid, unions)
        if size < 0 or size > 16:
            return AttachReason.BTF_ARG_TYPE, f"arg{i} {btf.c_type(ptid)}"
        if size == 0:
            return AttachReason.BTF_ARG_TYPE, f"arg{i} is void"
    if fexit and ret_size > 8 and retval_max_8:
        return AttachReason.BTF_RET_SIZE, f"{ret_size} bytes"
    return None


def _arg_regs(btf: B.Btf, name: str, unions: bool) -> tuple[int, bool]:
    """Registers the arguments take (a struct of 9-16 bytes takes two) and whether any
    argument is a struct by value  [arch_prepare_bpf_trampoline: nr_regs]."""
    fid = btf._funcs[name]
    proto = btf.type(btf.type(fid).size_or_type)  # type: ignore[union-attr]
    assert proto is not None
    raw = btf._u32s(proto.extra, 2 * proto.vlen) if proto.vlen else ()
    regs, structs = 0, False
    for i in range(proto.vlen):
        size, t = _type_size(btf, raw[2 * i + 1], unions)
        is_struct = t is not None and t.kind in (B.STRUCT, B.UNION)
        structs |= is_struct
        regs += (size + 7) // 8 if is_struct else 1
    return regs, structs


def error_injection_list(image: Image) -> frozenset[int]:
    """Addresses of ALLOW_ERROR_INJECTION functions (``_error_injection_whitelist``: struct
    error_injection_entry {unsigned long addr; int etype;}, 16 bytes); empty without
    CONFIG_FUNCTION_ERROR_INJECTION  [within_error_injection_list]."""
    st = image.symtab
    start, stop = st.value("__start_error_injection_whitelist"), st.value("__stop_error_injection_whitelist")
    if start is None or stop is None or stop <= start:
        return frozenset()
    words = image.read_pointers(start, stop)
    return frozenset(int(a) for a in words[::2].tolist())


@functools.lru_cache(maxsize=64)
def btf_id_set(image: Image, name: str) -> frozenset[str] | None:
    """The function names of the kernel's ``BTF_SET_START(name)`` as resolve_btfids wrote it
    into the image (``__BTF_ID__set__NAME``: u32 cnt, u32 ids[cnt]); None when the image has
    no such symbol  [btf_id_set_contains]."""
    addr = image.symtab.value("__BTF_ID__set__" + name)
    btf = image_btf(image)
    if addr is None or btf is None:
        return None
    cnt = int.from_bytes(image.read(addr, 4), "little")
    if cnt > 65536:
        return None
    raw = image.read(addr + 4, 4 * cnt)
    out = set()
    for i in range(cnt):
        t = btf.type(int.from_bytes(raw[4 * i:4 * i + 4], "little"))
        if t is not None and t.name:
            out.add(t.name)
    return frozenset(out)


def _has_arch_syscall_prefix(image: Image, name: str) -> bool:
    """``has_arch_syscall_prefix``: ``__x64_``, ``__arm64_``, ``__s390x_``, ``__riscv_``, or
    ``sys_`` (powerpc): the arch's syscall wrapper prefix without its ``sys_``."""
    p = image.backend.syscall_prefix
    p = p[:-4] if p.endswith("sys_") and len(p) > 4 else p
    return bool(p) and name.startswith(p)


def _syscalls_instead(image: Image) -> bool:
    """Without CONFIG_FUNCTION_ERROR_INJECTION (no whitelist section in the image) newer kernels
    let sleepable and fmod_ret programs attach to the syscall entries instead (FEATURE
    SLEEPABLE_SYSCALLS_WITHOUT_ERROR_INJECTION); older ones have an always-empty list."""
    return image.symtab.value("__start_error_injection_whitelist") is None and \
        image.features.has("SLEEPABLE_SYSCALLS_WITHOUT_ERROR_INJECTION")


def allows_sleepable(image: Image, name: str, addr: int, lsm: bool = False) -> bool:
    """``btf_id_allow_sleepable``: an LSM hook must be in sleepable_lsm_hooks; a tracing
    function must be ALLOW_ERROR_INJECTION and not in btf_non_sleepable_error_inject
    (``check_attach_sleepable``; without CONFIG_FUNCTION_ERROR_INJECTION on 7.x: a syscall
    entry, on 6.x nothing)."""
    if lsm:  # bpf_lsm_is_sleepable_hook
        return name in (btf_id_set(image, "sleepable_lsm_hooks") or ())
    if _syscalls_instead(image):
        return _has_arch_syscall_prefix(image, name)
    deny = btf_id_set(image, "btf_non_sleepable_error_inject")
    return addr in error_injection_list(image) and \
        name not in (NON_SLEEPABLE_ERROR_INJECT if deny is None else deny)


def _not_modifiable(image: Image, name: str, addr: int) -> bool:
    """``check_attach_modify_return``: an ALLOW_ERROR_INJECTION function (without
    CONFIG_FUNCTION_ERROR_INJECTION on 7.x: a syscall entry) or a ``security_`` hook."""
    if name.startswith("security_"):
        return False
    if _syscalls_instead(image):
        return not _has_arch_syscall_prefix(image, name)
    return addr not in error_injection_list(image)


def check_fentry(image: Image, target: Target) -> AttachVerdict:
    """The verdict for attaching an fentry, fexit, fmod_ret or LSM program (``target.attach``;
    ``target.sleepable`` for the ``.s`` variants) to ``target.symbol`` on ``image`` (for
    ``lsm`` the hook's function ``bpf_lsm_<symbol>``)."""
    assert target.symbol is not None
    attach, kind = target.attach, target.kind
    lsm = attach == "lsm"
    name = target.kernel_symbol or target.symbol  # lsm: libbpf find_attach_btf_id's "bpf_lsm_" + hook
    fexit = attach in ("fexit", "fmod_ret")  # attach_uses_trampoline_retval, noreturn_deny
    rules = image.version.rules
    common = {"spelling": target.spelling, "rules": rules}

    def no(reason: AttachReason, detail: str = "", **kw: object) -> AttachVerdict:
        return refuse(str(target), kind, attach, reason, detail, **common, **kw)  # type: ignore[arg-type]

    btf = image_btf(image)
    if btf is None:  # bpf_get_btf_vmlinux: no vmlinux BTF, no attach_btf_id
        return no(AttachReason.NO_BTF)
    unions = image.features.has("TRACING_UNION_ARGS")
    bad = _distill(btf, name, fexit, image.features.has("FEXIT_RETVAL_MAX_8"), unions)  # bpf_check_attach_target
    if bad is not None:
        return no(*bad)
    addr = image.kallsyms.lookup(name)  # bpf_check_attach_target: kallsyms_lookup_name(tname)
    if addr is None:
        return no(AttachReason.NO_ADDRESS, name)
    sym = f"{name}+0x0"
    if target.sleepable:  # bpf_check_attach_target -> btf_id_allow_sleepable
        if not allows_sleepable(image, name, addr, lsm):
            return no(AttachReason.LSM_NOT_SLEEPABLE if lsm else AttachReason.NOT_SLEEPABLE,
                      name, address=addr, symbol=sym)
    # bpf_check_attach_target -> check_attach_modify_return
    elif attach == "fmod_ret" and _not_modifiable(image, name, addr):
        return no(AttachReason.NOT_MODIFIABLE, name, address=addr, symbol=sym)
    if lsm:  # check_attach_btf_id -> bpf_lsm_verify_prog
        if name in (btf_id_set(image, "bpf_lsm_disabled_hooks") or ()):
            return no(AttachReason.LSM_DISABLED_HOOK, name, address=addr, symbol=sym)
        hooks = btf_id_set(image, "bpf_lsm_hooks")
        if hooks is not None and name not in hooks:
            return no(AttachReason.LSM_NOT_A_HOOK, name, address=addr, symbol=sym)
    else:
        deny = btf_id_set(image, "btf_id_deny")
        if deny is None:  # no set in the image: the source's list, per feature
            deny = frozenset(BTF_ID_DENY + (BTF_ID_DENY_PREEMPT_RCU if image.features.has(
                "FENTRY_DENY_RCU_READ_LOCK") else ()))
        if name in deny:  # check_attach_btf_id: btf_id_set_contains(&btf_id_deny, btf_id)
            return no(AttachReason.DENY_LIST, name, address=addr, symbol=sym)
        noreturn = btf_id_set(image, "noreturn_deny")
        if noreturn is None:
            noreturn = frozenset(NORETURN_DENY) if image.features.has("FEXIT_NORETURN_DENY") else frozenset()
        if fexit and name in noreturn:
            return no(AttachReason.NORETURN_DENY, name, address=addr, symbol=sym)
    # bpf_trampoline_update -> arch_prepare_bpf_trampoline: argument registers
    regs, structs = _arg_regs(btf, name, unions)
    limit = MAX_BPF_FUNC_ARGS if image.features.has("BPF_TRAMPOLINE_STACK_ARGS") else len(image.backend.arg_regs)
    if structs and not image.features.has("BPF_TRAMPOLINE_STRUCT_ARGS"):
        return no(AttachReason.TRAMPOLINE_STRUCT_ARGS, "", address=addr, symbol=sym)
    if regs > limit and not image.features.has("BPF_TRAMPOLINE_ARM64_STACK_ARGS"):  # calc_arg_aux
        return no(AttachReason.TRAMPOLINE_ARGS, f"{regs} registers, at most {limit}",
                  address=addr, symbol=sym)
    ks = image.kallsyms.containing(addr)
    size = ks.size if ks is not None and ks.addr == addr else 1
    # register_fentry: ftrace_location(ip) (sym+0 maps to the function's __fentry__ record)
    if not image.tables.has_ftrace_record(addr, size):
        # bpf_arch_text_poke: x86 refuses an address outside core text (init text is freed)
        # with -EINVAL before comparing the entry with its NOP
        outside = image.backend.bpf_text_poke_checks_text and not image.tables.is_core_text(addr)
        feature = None if outside else image.backend.bpf_poke_nop_feature(image, addr)
        if feature is not None:  # __bpf_arch_text_poke: memcmp(ip, nop) after apply_alternatives
            return no(AttachReason.ENTRY_CPU_ALTERNATIVE,
                      f"CPU feature {feature // 32}*32+{feature % 32} (cpufeatures.h): attaches "
                      "on a CPU that has it", address=addr, symbol=sym,
                      errno=image.backend.bpf_text_poke_errno, flags=("CPU_DEPENDENT",))
        return no(AttachReason.NO_FTRACE_LOCATION,
                  "no ftrace record in the function" + ("; not core kernel text" if outside else ""),
                  address=addr, symbol=sym,
                  errno="EINVAL" if outside else image.backend.bpf_text_poke_errno)
    if not any(image.symtab.value(s) is not None for s in DIRECT_CALLS_EVIDENCE):
        return no(AttachReason.NO_DIRECT_CALLS, "no register_ftrace_direct in the image",
                  address=addr, symbol=sym)
    return AttachVerdict(str(target), kind, attach, True, address=addr, symbol=sym,
                         spelling=target.spelling, rules=rules, flags=("FTRACE",))
