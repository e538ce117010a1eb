"""Verdicts of the core engine + x86_64 backend on the committed test image.

testdata/x86_64/vmlinux holds one function (or one `.L`-labelled instruction in insns.S) per
kernel rule; each test names the rule it pins.  vmlinux-6.12 is the same code with a 6.12
banner.  The mutation tests at the end switch one rule off and check the verdict flips: a test
that still passed without its rule would prove nothing.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import X86_VMLINUX, X86_VMLINUX_612, open_image
from kpatch_arch.x86_64 import X86_64Backend, add_nops, kernel_opcode
from kpatch_core import tables as tables_mod
from kpatch_core.probe import check
from kpatch_core.tables import KernelTables
from kpatch_core.verdict import Method, Reason

ENDBR_FENTRY = 9  # endbr64 (4) + call __fentry__ (5): first instruction after the ftrace site


def sym(image, name: str) -> int:
    addr = image.kallsyms.lookup(name)
    assert addr is not None, name
    return addr


def at(image, label_name: str) -> str:
    """Target text for a `.L` label of insns.S: ``0xADDR`` (kallsyms does not know the label)."""
    addr = image.symtab.value(label_name)
    assert addr is not None, label_name
    return hex(addr)


def refused(v, reason: Reason, errno: str) -> None:
    assert not v.ok, v
    assert (v.reason, v.errno) == (reason, errno), v


# --- generic rules (kprobe_events layer and register_kprobe) ----------------------------------

def test_entry_is_ftrace_based_after_endbr(x86):
    # arch_adjust_kprobe_addr moves SYM+0 past ENDBR onto the __fentry__ site (IBT)
    v = check(x86, "plain_func")
    assert v.ok and v.method == Method.FTRACE and v.flags == ("FTRACE",)
    assert v.address == sym(x86, "plain_func") + 4 and v.on_func_entry
    assert x86.tables.is_ftrace_site(v.address)
    assert check(x86, "plain_func+4").address == v.address


def test_endbr_is_an_ordinary_instruction_without_ibt(x86_with):
    # arch_adjust_kprobe_addr only skips ENDBR with CONFIG_X86_KERNEL_IBT (is_endbr)
    image = x86_with(X86_KERNEL_IBT=False)
    v = check(image, "plain_func")
    assert v.ok and v.method == Method.SINGLESTEP and v.address == sym(image, "plain_func")
    assert v.insn == bytes.fromhex("f30f1efa") and v.on_func_entry
    assert check(image, "plain_func+4").method == Method.FTRACE
    refused(check(image, "r plain_func+4"), Reason.RETPROBE_NOT_ENTRY, "EINVAL")


def test_entry_without_endbr_is_ftrace_at_plus_zero(x86):
    # static functions that are never address-taken get no ENDBR: the fentry call is at +0
    v = check(x86, hex(x86.kallsyms.addresses_of("dup_static")[0]))
    assert v.ok and v.method == Method.FTRACE
    assert v.address == x86.kallsyms.addresses_of("dup_static")[0]


def test_ftrace_site_without_kprobes_on_ftrace(x86_with):
    image = x86_with(KPROBES_ON_FTRACE=False)
    refused(check(image, "plain_func"), Reason.FTRACE_SITE, "EINVAL")
    assert check(image, "plain_func+9").ok  # not a site: still fine


def test_ordinary_instruction_is_single_stepped(x86):
    v = check(x86, f"plain_func+{ENDBR_FENTRY}")
    assert v.ok and v.method == Method.SINGLESTEP and not v.on_func_entry
    assert v.insn and v.mnemonic


def test_not_an_instruction_boundary(x86):
    # can_probe: decoding from the symbol start must hit the address
    for off in (1, 2, 3, ENDBR_FENTRY + 1):
        refused(check(x86, f"plain_func+{off}"), Reason.NOT_BOUNDARY, "EILSEQ")
    assert check(x86, "plain_func+1").message == "Probe point is not an instruction boundary"


def test_notrace_function(x86):
    # within_notrace_func: no __fentry__ record anywhere in the function, any offset
    refused(check(x86, "notrace_func"), Reason.NOTRACE, "EINVAL")
    refused(check(x86, "notrace_func+4"), Reason.NOTRACE, "EINVAL")
    refused(check(x86, hex(sym(x86, "notrace_func") + 4)), Reason.NOTRACE, "EINVAL")


def test_notrace_allowed_with_kprobe_events_on_notrace(x86_with):
    v = check(x86_with(KPROBE_EVENTS_ON_NOTRACE=True), "notrace_func+4")
    assert v.ok and v.method == Method.SINGLESTEP


def test_non_unique_symbol(x86, x86_612):
    assert x86.kallsyms.count("dup_static") == 2
    refused(check(x86, "dup_static"), Reason.NON_UNIQUE_SYMBOL, "EADDRNOTAVAIL")
    refused(check(x86_612, "dup_static"), Reason.NON_UNIQUE_SYMBOL, "EINVAL")
    # by address, each copy is fine
    for addr in x86.kallsyms.addresses_of("dup_static"):
        assert check(x86, hex(addr)).ok


def test_missing_symbol(x86, x86_612):
    refused(check(x86, "no_such_function"), Reason.NO_SYMBOL, "ENOENT")
    refused(check(x86_612, "no_such_function"), Reason.NO_SYMBOL, "EINVAL")
    assert check(x86, "no_such_function").message == "Invalid probed address or symbol"


def test_address_outside_kallsyms_is_accepted_unregistered(x86):
    # trace_kprobe takes -ENOENT on a raw address as "module not loaded yet"
    v = check(x86, "0x1000")
    assert v.ok and v.method is None


def test_module_symbol_is_deferred(x86):
    v = check(x86, "ext4:ext4_file_open")
    assert v.ok and v.method is None and "module" in v.detail


def test_retprobe(x86):
    assert check(x86, "r plain_func").ok
    assert check(x86, "r plain_func+4").ok  # +4 after ENDBR still counts as entry
    refused(check(x86, f"r plain_func+{ENDBR_FENTRY}"), Reason.RETPROBE_NOT_ENTRY, "EINVAL")
    assert check(x86, f"r plain_func+{ENDBR_FENTRY}").message == \
        "Retprobe address must be an function entry"


def test_retprobe_order_differs_between_versions(x86, x86_612):
    # 6.1 checks "r at entry" before uniqueness, 6.12 uniqueness first
    refused(check(x86, f"r dup_static+{ENDBR_FENTRY}"), Reason.RETPROBE_NOT_ENTRY, "EINVAL")
    refused(check(x86_612, f"r dup_static+{ENDBR_FENTRY}"), Reason.NON_UNIQUE_SYMBOL, "EINVAL")


def test_kretprobe_blacklist(x86):
    assert check(x86, "__switch_to").ok
    refused(check(x86, "r __switch_to"), Reason.KRETPROBE_BLACKLIST, "EINVAL")


def test_init_text_is_not_probeable(x86, x86_with):
    # init records are freed after boot: notrace in kprobe_events, not core text in kprobes
    refused(check(x86, "init_func"), Reason.NOTRACE, "EINVAL")
    refused(check(x86_with(KPROBE_EVENTS_ON_NOTRACE=True), "init_func"), Reason.NOT_TEXT, "EINVAL")


def test_cfi_preamble_symbol(x86_with):
    image = x86_with(KPROBE_EVENTS_ON_NOTRACE=True)
    refused(check(image, "__pfx_prefixed_func"), Reason.CFI_PREAMBLE, "EINVAL")
    assert check(image, "prefixed_func").ok


# --- the blacklist: one function per source ---------------------------------------------------

def test_blacklist_nokprobe_symbol(x86):
    v = check(x86, "nokprobe_func")
    refused(v, Reason.BLACKLIST_NOKPROBE, "EINVAL")
    refused(check(x86, f"nokprobe_func+{ENDBR_FENTRY}"), Reason.BLACKLIST_NOKPROBE, "EINVAL")
    refused(check(x86, "asm_nokprobe_func"), Reason.BLACKLIST_NOKPROBE, "EINVAL")  # _ASM_NOKPROBE


def test_blacklist_kprobes_text(x86):
    v = check(x86, "kprobes_text_func")
    refused(v, Reason.BLACKLIST_AREA, "EINVAL")
    assert ".kprobes.text" in v.detail


def test_blacklist_noinstr_text(x86_with):
    v = check(x86_with(KPROBE_EVENTS_ON_NOTRACE=True), "noinstr_func")
    refused(v, Reason.BLACKLIST_AREA, "EINVAL")
    assert ".noinstr.text" in v.detail


def test_blacklist_arch_entry_area(x86_with):
    image = x86_with(KPROBE_EVENTS_ON_NOTRACE=True)
    for target in ("entry_SYSCALL_64", "entry_SYSCALL_64+4", "entry_INT80_compat+4"):
        v = check(image, target)
        refused(v, Reason.BLACKLIST_AREA, "EINVAL")
        assert "entry" in v.detail


def test_blacklist_suffix_rule(x86):
    # within_kprobe_blacklist: foo.isra.0 -> foo, and foo is on the NOKPROBE list
    for target in ("asm_nokprobe_func.isra.0", f"asm_nokprobe_func.isra.0+{ENDBR_FENTRY}"):
        v = check(x86, target)
        refused(v, Reason.BLACKLIST_SUFFIX, "EINVAL")
        assert "asm_nokprobe_func" in v.detail
    # a clone of a function that is not blacklisted is fine
    assert check(x86, "insn_helper.constprop.0").ok
    assert check(x86, f"insn_helper.constprop.0+{ENDBR_FENTRY}").ok


def test_notrace_functions_report_notrace_first(x86):
    # kprobe_events checks notrace before register_kprobe reaches the blacklist
    for name in ("noinstr_func", "entry_SYSCALL_64", "startup_64"):
        refused(check(x86, name), Reason.NOTRACE, "EINVAL")


# --- reserved text ------------------------------------------------------------------------------

def test_jump_label_nop5_site(x86):
    site = sym(x86, "jump_label_func") + ENDBR_FENTRY
    assert x86.read(site, 5) == bytes.fromhex("0f1f440000")
    for off in range(5):  # the whole site, checked before the boundary rule
        refused(check(x86, hex(site + off)), Reason.JUMP_LABEL, "EINVAL")
    assert check(x86, hex(site + 5)).ok


def test_jump_label_jmp8_site(x86):
    site = sym(x86, "jump_label_jmp_func") + ENDBR_FENTRY
    assert x86.read(site, 1) == b"\xeb"
    refused(check(x86, hex(site)), Reason.JUMP_LABEL, "EINVAL")
    refused(check(x86, hex(site + 1)), Reason.JUMP_LABEL, "EINVAL")
    assert check(x86, hex(site + 2)).ok  # arch_jump_entry_size: 2 bytes only


def test_static_call_site(x86, label):
    site = label(x86, ".Lsc_site")
    for off in range(5):
        refused(check(x86, hex(site + off)), Reason.STATIC_CALL, "EINVAL")
    v = check(x86, at(x86, ".Lsc_after"))
    assert v.ok and v.method == Method.EMULATE  # ret


def test_bug_sites(x86, label):
    # find_bug: exact addresses listed in __bug_table (C BUG() and asm)
    c_site = sym(x86, "bug_func") + x86.read(sym(x86, "bug_func"), 64).index(b"\x0f\x0b")
    for site in (c_site, label(x86, ".Lbug_site")):
        refused(check(x86, hex(site)), Reason.BUG_SITE, "EINVAL")


# --- arch_prepare_kprobe: emulation, refusals, slot --------------------------------------------

EMULATED = [".Lx_cli", ".Lx_sti", ".Lx_pushf", ".Lx_popf", ".Lx_jmp8", ".Lx_jcc8", ".Lx_jcc32",
            ".Lx_jmp32", ".Lx_call", ".Lx_call_reg", ".Lx_loop", ".Lx_jmp_reg", ".Lx_ret"]


@pytest.mark.parametrize("name", EMULATED)
def test_emulated_instructions(x86, x86_612, name):
    for image in (x86, x86_612):
        v = check(image, at(image, name))
        assert v.ok and v.method == Method.EMULATE, (name, v)


REFUSED = [  # (label, 6.1 (reason, errno), 6.12 (reason, errno))
    (".Lr_callmem", (Reason.EMULATE_UNSUPPORTED, "EOPNOTSUPP"), None),
    (".Lr_jmpmem", (Reason.EMULATE_UNSUPPORTED, "EOPNOTSUPP"), None),
    (".Lr_ljmp", (Reason.EMULATE_UNSUPPORTED, "EOPNOTSUPP"), None),
    (".Lr_vmcall", (Reason.EMULATE_UNSUPPORTED, "EOPNOTSUPP"), None),
    (".Lr_iret", (Reason.EMULATE_UNSUPPORTED, "EOPNOTSUPP"), None),
    (".Lr_int3", (Reason.BREAKPOINT_INSN, "EINVAL"), (Reason.EXCEPTION_INSN, "EILSEQ")),
    (".Lr_movss", (Reason.PROHIBITED_INSN, "EINVAL"), None),
    (".Lr_long15", (Reason.INSN_TOO_LONG, "ENOSPC"), None),
    (".Lr_long15b", (Reason.INSN_TOO_LONG, "ENOSPC"), None),
]


@pytest.mark.parametrize("name,on61,on612", REFUSED)
def test_refused_instructions(x86, x86_612, name, on61, on612):
    refused(check(x86, at(x86, name)), *on61)
    refused(check(x86_612, at(x86_612, name)), *(on612 or on61))


def test_fifteen_byte_instruction_is_enospc_even_when_boostable(x86_with, label):
    # prepare_singlestep: 15 - 15 leaves room for neither the boost jmp nor the int3
    image = x86_with(PREEMPTION=False)
    for name in (".Lr_long15", ".Lr_long15b"):
        addr = label(image, name)
        insn = image.backend.decode(image.read(addr, 15), addr)
        assert insn.length == 15 and image.backend._can_boost(image, insn, addr, image.features)
        refused(check(image, hex(addr)), Reason.INSN_TOO_LONG, "ENOSPC")


@pytest.mark.parametrize("name", [".Lr_int80", ".Lr_int1", ".Lr_ud2", ".Lr_ud1"])
def test_exception_instructions_by_version(x86, x86_612, name):
    # 6.12 can_probe: is_exception_insn; 6.1 single-steps them (outside __bug_table)
    v = check(x86, at(x86, name))
    assert v.ok and v.method == Method.SINGLESTEP, v
    refused(check(x86_612, at(x86_612, name)), Reason.EXCEPTION_INSN, "EILSEQ")
    assert check(x86_612, at(x86_612, name)).message == "Probe point is not an instruction boundary"


def test_ud1_has_a_modrm_byte(x86, label):
    # the kernel's opcode map gives 0f b9 (UD1) a ModRM: the next boundary is 3 bytes on
    v = check(x86, at(x86, ".Lr_nop"))
    assert label(x86, ".Lr_nop") - label(x86, ".Lr_ud1") == 3
    assert v.ok and v.mnemonic == "nop"
    refused(check(x86, hex(label(x86, ".Lr_ud1") + 2)), Reason.NOT_BOUNDARY, "EILSEQ")


@pytest.mark.parametrize("name", [".Lb_rip", ".Lb_riplea", ".Lb_rip_store"])
def test_rip_relative_is_accepted(x86, name):
    v = check(x86, at(x86, name))
    assert v.ok and v.method == Method.SINGLESTEP
    assert x86.backend.decode(v.insn, v.address).rip_relative


BOOST = [  # (label, boosted on 6.1, boosted on 6.12) without CONFIG_PREEMPTION
    (".Lb_mov", True, True),
    (".Lb_shl", False, True),  # Grp2
    (".Lb_inc", False, True),  # Grp5 /0
    (".Lb_neg", False, True),  # Grp3 /3
    (".Lb_movzx", True, True),  # two-byte bitmap
    (".Lb_pshufb", False, False),  # three-byte opcode
    (".Lb_cs", False, False),  # CS prefix
    (".Lb_ex", False, False),  # exception-table fixup
    (".Lb_noex", True, True),
    (".Lb_rip", True, True),
    (".Lx_cli", True, True),  # boost wins over emulation in the int3 handler
    (".Lx_jmp8", False, False),
    (".Lx_jmp_reg", True, True),  # ff /4
    (".Lx_call_reg", False, False),  # ff /2
]


@pytest.mark.parametrize("name,b61,b612", BOOST)
def test_can_boost(x86_with, name, b61, b612):
    for path, boosted in ((X86_VMLINUX, b61), (X86_VMLINUX_612, b612)):
        image = x86_with(path, PREEMPTION=False)
        v = check(image, at(image, name))
        assert v.ok and (v.method == Method.BOOST) == boosted, (path.name, name, v)


def test_never_boosted_with_preemption(x86, x86_612):
    assert x86.config.enabled("PREEMPTION")  # inferred from preempt_schedule, like Debian
    for image in (x86, x86_612):
        for name, *_ in BOOST:
            assert check(image, at(image, name)).method in (Method.SINGLESTEP, Method.EMULATE)


def test_rethunk_site_is_ret_int3_at_runtime(x86, x86_612, x86_with, label):
    # apply_returns: `jmp __x86_return_thunk` becomes `ret; int3 x4` unless the CPU needs thunks
    site = label(x86, ".Lrt_site")
    v = check(x86, hex(site))
    assert v.ok and v.method == Method.EMULATE and v.insn == b"\xc3"
    refused(check(x86, hex(site + 1)), Reason.BREAKPOINT_INSN, "EINVAL")
    refused(check(x86_612, hex(site + 1)), Reason.EXCEPTION_INSN, "EILSEQ")
    thunked = x86_with(RUNTIME_RETHUNK=True)
    assert check(thunked, hex(site)).insn[:1] == b"\xe9"
    refused(check(thunked, hex(site + 1)), Reason.NOT_BOUNDARY, "EILSEQ")


def test_int3_padding_after_a_function(x86):
    # kallsyms sizes run to the next symbol: the linker's int3 fill belongs to the function
    start = sym(x86, "dup_a_caller")
    code = x86.read(start, x86.kallsyms.containing(start).size)
    pad = code.index(b"\xc3") + 1
    assert code[pad] == 0xCC
    refused(check(x86, hex(start + pad)), Reason.BREAKPOINT_INSN, "EINVAL")


def test_verdict_json_schema(x86):
    j = check(x86, "insn_refused+9").to_json()
    assert j["ok"] is False and j["errno"] == "EOPNOTSUPP" and j["reason"] == "EMULATE_UNSUPPORTED"
    assert j["kernel_function"] == "prepare_emulation" and j["rules"] == "6.1"
    j = check(x86, "plain_func").to_json()
    assert j["ok"] is True and j["method"] == "ftrace" and j["flags"] == ["FTRACE"]
    assert j["symbol"] == "plain_func+0x4" and int(j["address"], 16) == sym(x86, "plain_func") + 4


# --- the summary over every function entry ------------------------------------------------------

def test_summary_counts(x86):
    from kpatch_core.report import summarize
    s = summarize(x86)
    assert s.arch == "x86_64" and s.rules == "6.1"
    rejected = {r: c for r, _, c in s.rejected}
    assert rejected["BLACKLIST_NOKPROBE"] == 2 and rejected["BLACKLIST_SUFFIX"] == 1
    assert rejected["BLACKLIST_AREA"] == 1  # kprobes_text_func (noinstr/entry are notrace first)
    assert s.functions == s.probeable_entries + sum(rejected.values())
    assert dict(s.methods) == {"ftrace": s.probeable_entries}


# --- decoder: differential against objdump, and properties --------------------------------------

def _objdump_starts(path) -> set[int]:
    out = subprocess.run(["objdump", "-d", "-j", ".text", "--no-show-raw-insn", str(path)],
                         check=True, capture_output=True, text=True).stdout
    starts = set()
    for line in out.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\t", line)
        if m and "(bad)" not in line:
            starts.add(int(m.group(1), 16))
    return starts


def _text_functions(image):
    t = image.tables
    return [s for s in image.kallsyms.in_range(t.stext, t.etext) if s.size]


@pytest.mark.skipif(shutil.which("objdump") is None, reason="binutils objdump not installed")
def test_boundaries_match_objdump(x86):
    want = _objdump_starts(X86_VMLINUX)
    funcs = _text_functions(x86)
    assert len(funcs) > 30
    for f in funcs:
        ours = x86.backend.boundaries(x86.read(f.addr, f.size), f.addr)
        theirs = sorted(a for a in want if f.addr <= a < f.end)
        assert ours == theirs, f.name


@pytest.mark.parametrize("name", ["plain_func", "plain_loop", "insn_emulated", "insn_boost",
                                  "insn_refused", "_alias_b"])
def test_boundaries_cover_the_function(x86, name):
    f = x86.kallsyms.containing(sym(x86, name))
    b = x86.backend.boundaries(x86.read(f.addr, f.size), f.addr)
    assert b[0] == f.addr
    ends = [a + x86.backend.insn_length(x86.read(a, 15)) for a in b]
    assert all(x < y for x, y in zip(b, b[1:]))
    assert ends[:-1] == b[1:] and ends[-1] == f.end


_PROPERTY_FUNCS = ("plain_func", "plain_loop", "insn_boost", "insn_emulated")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(_PROPERTY_FUNCS), frac=st.floats(0, 1, exclude_max=True))
def test_boundary_rule_property(x86, name, frac):
    """Inside functions no other rule touches, a probe is refused exactly off the boundaries."""
    f = x86.kallsyms.containing(sym(x86, name))
    off = int(frac * f.size)
    starts = set(x86.backend.boundaries(x86.read(f.addr, f.size), f.addr))
    v = check(x86, f"{name}+{off}")
    if off == 0 or f.addr + off in starts:
        assert v.ok, v
    else:
        refused(v, Reason.NOT_BOUNDARY, "EILSEQ")


def test_kernel_opcode_split():
    assert kernel_opcode(bytes.fromhex("4889f8")) == (b"\x89", b"", 0x48, False, 2)
    assert kernel_opcode(bytes.fromhex("660f3800c1"))[0] == bytes.fromhex("0f3800")
    assert kernel_opcode(bytes.fromhex("2e0f1f840000000000"))[:2] == (b"\x0f\x1f", b"\x2e")
    assert kernel_opcode(bytes.fromhex("c5f877"))[0] == b"\x77" and kernel_opcode(bytes.fromhex("c5f877"))[3]


def test_insn_length_capstone_gaps():
    b = X86_64Backend()
    assert b.insn_length(bytes.fromhex("0f01e8")) == 3  # serialize
    assert b.insn_length(bytes.fromhex("0f0b")) == 2
    assert b.insn_length(bytes.fromhex("0fb94000")) == 4  # ud1 with disp8
    assert b.insn_length(b"\x0f") == 0


def test_add_nops():
    assert add_nops(5) == bytes.fromhex("0f1f440000")
    assert add_nops(11) == bytes.fromhex("0f1f840000000000") + bytes.fromhex("0f1f00")
    assert add_nops(0) == b""


def test_backend_tables_are_consistent():
    b = X86_64Backend()
    offs = [f.offset for f in b.pt_regs]
    assert len(set(offs)) == len(offs) and all(o % 8 == 0 for o in offs)
    assert max(offs) + 8 == b.pt_regs_size
    assert {f.name for f in b.pt_regs} >= set(b.arg_regs) | {b.retval_reg, b.stack_reg}
    assert b.register("di").offset == 112 and b.register("rax") is None
    insn = next(b._cs.disasm(b.breakpoint, 0))
    assert insn.mnemonic == "int3"


# --- mutation tests: each rule is the only thing refusing its probe -----------------------------

def _fresh(**facts):
    return open_image(X86_VMLINUX, **facts)


def test_without_nokprobe_list_nokprobe_func_is_accepted(monkeypatch):
    monkeypatch.setattr(KernelTables, "nokprobe_list", property(lambda self: np.zeros(0, np.uint64)))
    assert check(_fresh(), "nokprobe_func").ok


def _drop_area(monkeypatch, start_symbol: str) -> None:
    real = KernelTables._range

    def _range(self, start, end):
        return None if start == start_symbol else real(self, start, end)
    monkeypatch.setattr(KernelTables, "_range", _range)


def test_without_kprobes_text_area_the_function_is_accepted(monkeypatch):
    _drop_area(monkeypatch, "__kprobes_text_start")
    assert check(_fresh(), "kprobes_text_func").ok


def test_without_noinstr_area_the_function_is_accepted(monkeypatch):
    _drop_area(monkeypatch, "__noinstr_text_start")
    assert check(_fresh(KPROBE_EVENTS_ON_NOTRACE=True), "noinstr_func").ok


def test_without_arch_entry_area_entry_code_is_accepted(monkeypatch):
    monkeypatch.setattr(X86_64Backend, "blacklist_areas", lambda self, version: ())
    assert check(_fresh(KPROBE_EVENTS_ON_NOTRACE=True), "entry_SYSCALL_64+4").ok


def test_without_suffix_rule_the_clone_is_accepted(monkeypatch):
    monkeypatch.setattr(tables_mod, "base_name", lambda name: name)
    assert check(_fresh(), "asm_nokprobe_func.isra.0").ok
    assert not check(_fresh(), "asm_nokprobe_func").ok


def test_without_boundary_walk_mid_instruction_is_accepted(monkeypatch):
    monkeypatch.setattr(X86_64Backend, "insn_length", lambda self, code: 1)
    assert check(_fresh(), "plain_func+10").ok


# --- optional: the real Debian kernel (skipped when ~/.cache/kpatch-kernels/x86_64 is absent) -----

@pytest.fixture(scope="module")
def real_x86():
    from conftest import real_vmlinux
    from kpatch_core.image import Image
    return Image.open(str(real_vmlinux("x86_64")))


@pytest.mark.realkernel
def test_real_kernel_facts(real_x86):
    assert real_x86.version.rules == "6.1" and real_x86.backend.name == "x86_64"
    for fact in ("KPROBES_ON_FTRACE", "PREEMPTION"):
        assert real_x86.config.enabled(fact), fact
    assert not real_x86.config.enabled("X86_KERNEL_IBT")  # Debian 6.1: no IBT, fentry at +0
    v = check(real_x86, "vfs_read")
    assert v.ok and v.method == Method.FTRACE and v.address == real_x86.kallsyms.lookup("vfs_read")
