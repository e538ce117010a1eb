"""kprobe_events definitions: the 58 kprobe_syntax_errors.tc vectors as four real kernels answered
them (x86_64 and arm64, 6.1 and 6.12), argument resolution per architecture, BTF arguments,
multi-probe events and the ``event`` subcommand."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kpatch_arch.base import Backend
from kpatch_core.btf import Btf
from kpatch_core.features import FeatureSet
from kpatch_core.events import (
    MESSAGES,
    EventSet,
    PlaceInfo,
    argument_fetch,
    kstrtol,
    kstrtoul,
    kstrtouint,
    simple_strtoul,
    translate_line,
)
from kpatch_core.registry import backend_named

DATA = Path(__file__).parent / "data" / "events"
BTF_BLOB = (DATA / "btf" / "funcs.btf").read_bytes()
KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))


def _backend(name: str) -> Backend:
    return backend_named(name)  # a broken backend fails the test, never skips it


class FakeEnv:
    """A stand-in kernel: a few functions with their instruction starts, a data symbol, and the
    BTF of tests/data/events/btf/funcs.c.  ``place`` answers as kprobe.c would for them."""

    FUNCS = {"vfs_read": 0x1000, "kfree": 0x2000, "kernel_clone": 0x3000, "do_exit": 0x4000,
             "dput": 0x5000, "nine_args": 0x6000, "takes_struct": 0x7000, "notrace_fn": 0x8000}
    DATA_SYMS = {"linux_proc_banner": 0x9000}
    BOUNDARIES = {0, 4, 8, 10, 16, 20, 24}  # instruction starts in every function

    def __init__(self, rules: str, backend: Backend, btf: bool = True, fetch_args: bool = True):
        major, minor = rules.split(".")
        self.features = FeatureSet.decide((int(major), int(minor)), backend.name)
        self.rules = self.features.rules
        self.backend = backend
        self.fetch_args = fetch_args
        self.btf = Btf(BTF_BLOB) if btf else None
        self.btf_args = self.features.has("KPROBE_EVENTS_BTF_ARGS") and fetch_args \
            and self.btf is not None

    def symbol_address(self, name: str) -> int | None:
        return self.FUNCS.get(name) or self.DATA_SYMS.get(name)

    def place(self, kind: str, symbol: str | None, offset: int, address: int | None) -> PlaceInfo:
        if symbol is None or ":" in symbol:
            return PlaceInfo(None)  # unknown address / module not loaded: accepted, deferred
        if symbol not in self.FUNCS:  # validate_probe_symbol / number_of_same_symbols
            einval = self.features.has("EVENTS_NONUNIQUE_EINVAL")
            return PlaceInfo(None, parse_error=("BAD_PROBE_ADDR", "EINVAL" if einval else "ENOENT"))
        entry = offset == 0
        if kind == "r" and not entry:
            return PlaceInfo(False, parse_error=("BAD_RETPROBE", "EINVAL"))
        if symbol == "notrace_fn":
            return PlaceInfo(entry, notrace=True, register_errno="EINVAL")
        if offset % self.backend.insn_align:
            return PlaceInfo(entry, register_errno="EINVAL")  # arch_prepare_kprobe: misaligned
        if offset not in self.BOUNDARIES:
            return PlaceInfo(entry, register_errno="EILSEQ")  # can_probe: not a boundary
        return PlaceInfo(entry)


def _vectors(name: str) -> list[dict]:
    with open(DATA / f"syntax-{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# kprobe_syntax_errors.tc truncates kprobe_events and writes these before the multi-probe vectors
SETUP = {43: ["p:kprobes/testevent kernel_clone"], 44: ["p:kprobes/testevent kernel_clone abcd=\\1"]}


def _run_vectors(env, vectors: list[dict]) -> list[str]:
    s = EventSet(env)
    bad = []
    for v in vectors:
        n = v["vector"]
        if n in SETUP:
            s.clear()
            for line in SETUP[n]:
                assert s.write(line).ok, line
        elif not 43 <= n <= 47:
            s.clear()
        r = s.write(v["input"], keep=False)
        e = r.error
        got = (r.ok, e.errno if e else None, e.message if e else None, e.caret if e else None)
        want = (v["observed_ok"], v["observed_errno"], v["observed_message"], v["observed_caret"])
        if got != want:
            bad.append(f"#{n} {v['input']!r}: got {got}, kernel {want}")
        elif e is not None and e.log_id:  # the whole error_log entry, timestamp aside
            log = [ln.split("] ", 1)[-1] if ln.startswith("[") else ln
                   for ln in v["observed_error_log"]]
            if e.error_log() != log:
                bad.append(f"#{n}: error_log {e.error_log()} != {log}")
    return bad


@pytest.mark.parametrize("kernel", ["x86_64-6.1", "x86_64-6.12", "arm64-6.1", "arm64-6.12"])
def test_syntax_error_vectors(kernel: str) -> None:
    """58/58 vectors: ok/errno/message/caret and the error_log lines, per kernel."""
    arch, rules = kernel.split("-")
    vectors = _vectors(kernel)
    assert len(vectors) == 58
    bad = _run_vectors(FakeEnv(rules, _backend(arch)), vectors)
    assert not bad, "\n".join(bad)


@pytest.mark.realkernel
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_syntax_error_vectors_real_image(arch: str) -> None:
    """The same vectors against the cached Debian 6.1 vmlinux (probe points decided by
    probe.check on the real image); skipped when the image is not cached."""
    path = KERNELS / arch / "vmlinux"
    if not path.exists():
        pytest.skip(f"{path} not cached")
    from kpatch_core.events import ImageEnv
    from kpatch_core.image import Image
    env = ImageEnv(Image.open(str(path)))
    bad = _run_vectors(env, _vectors(f"{arch}-{env.rules}"))
    assert not bad, "\n".join(bad)


def test_messages_per_version() -> None:
    assert MESSAGES["6.1"]["BAD_VAR"] == "Invalid $-valiable specified"
    assert MESSAGES["6.12"]["BAD_VAR"] == "Invalid $-variable specified"
    assert "MAXACT_NO_KPROBE" in MESSAGES["6.1"] and "MAXACT_NO_KPROBE" not in MESSAGES["6.12"]
    assert "NO_BTFARG" not in MESSAGES["6.1"]
    assert MESSAGES["6.12"]["IMMSTR_NO_CLOSE"] == "String is not closed with '\"'"


# --- resolution -------------------------------------------------------------------------------
def _write(env, line: str):
    return EventSet(env).write(line)


def test_resolve_x86_61() -> None:
    env = FakeEnv("6.1", _backend("x86_64"))
    r = _write(env, "p:grp/ev vfs_read a=$arg1 b=+0($arg2):string c=%ax:x32 d=+8($stack):u8[4] "
                    "e=@linux_proc_banner+8:symstr f=+u0(%si):string g=\\-5 h=%di:b4@4/32 $comm")
    assert r.ok, r.error
    ev = r.event
    assert (ev.group, ev.event, ev.is_return, ev.symbol, ev.offset) == ("grp", "ev", False, "vfs_read", 0)
    fetch = {a.name: (a.fetch, a.type, a.count, a.ops) for a in ev.args}
    assert fetch["a"] == ("%di", "u64", 0, ("ARG", "ST_RAW"))
    assert fetch["b"] == ("+0(%si)", "string", 0, ("ARG", "ST_STRING"))
    assert fetch["c"] == ("%ax", "x32", 0, ("REG", "ST_RAW"))
    assert fetch["d"] == ("+8($stack)", "u8", 4, ("STACKP", "ST_MEM", "LP_ARRAY"))
    assert fetch["e"][0] == "@linux_proc_banner+8" and fetch["e"][3][-1] == "ST_SYMSTR"
    assert fetch["f"] == ("+u0(%si)", "string", 0, ("REG", "ST_USTRING"))
    assert fetch["g"][:3] == ("\\-5", "u64", 0)
    assert fetch["h"][3] == ("REG", "ST_RAW", "MOD_BF")
    assert ev.args[-1].name == "arg9" and ev.args[-1].type == "string"  # $comm is a string
    assert ev.resolved().startswith("p:grp/ev vfs_read a=%di b=+0(%si):string c=%ax:x32")
    assert ev.readback() == ("p:grp/ev vfs_read a=$arg1 b=+0($arg2):string c=%ax:x32 "
                             "d=+8($stack):u8[4] e=@linux_proc_banner+8:symstr f=+u0(%si):string "
                             "g=\\-5 h=%di:b4@4/32 arg9=$comm")


def test_resolve_arm64_arg_registers() -> None:
    env = FakeEnv("6.1", _backend("arm64"))
    r = _write(env, "p vfs_read $arg1 $arg8 $arg9 +0($arg2):string")
    assert r.ok, r.error
    assert [a.fetch for a in r.event.args] == ["%x0", "%x7", "\\0", "+0(%x1)"]
    assert r.event.event == "p_vfs_read_0"


def test_argument_fetch_past_registers() -> None:
    """regs_get_kernel_argument: x86_64 reads $stack1 for the 7th argument, s390 $stack20 for
    the 6th; arm64/riscv/ppc read nothing."""
    class StackArgs(Backend):
        arg_regs = ("di", "si", "dx", "cx", "r8", "r9")
        arg_stack_base = 1
    assert argument_fetch(StackArgs(), 0) == "%di"
    assert argument_fetch(StackArgs(), 6) == "$stack1"
    assert argument_fetch(StackArgs(), 8) == "$stack3"
    assert argument_fetch(_backend("arm64"), 8) == "\\0"


def test_argn_rules_61() -> None:
    env = FakeEnv("6.1", _backend("x86_64"))
    for line, caret in (("r vfs_read $arg1", 11), ("p vfs_read+4 $arg1", 13),
                        ("p vfs_read%return $arg1", 18), ("p 0x1000 $arg1", 9)):
        e = _write(env, line).error
        assert (e.log_id, e.caret) == ("BAD_VAR", caret), line
    assert _write(env, "p kfree $arg10").ok  # no BTF check on 6.1
    assert _write(env, "r kfree $retval").ok
    e = _write(env, "p vfs_read hoge").error
    assert (e.log_id, e.caret) == ("BAD_FETCH_ARG", 11)


def test_no_fetch_args_backend() -> None:
    """Without HAVE_FUNCTION_ARG_ACCESS_API (ppc64le 6.1), $argN is just an unknown variable."""
    env = FakeEnv("6.1", _backend("x86_64"), fetch_args=False)
    e = _write(env, "p vfs_read $arg1").error
    assert (e.log_id, e.message, e.caret) == ("BAD_VAR", "Invalid $-valiable specified", 11)


def test_btf_arguments_612() -> None:
    env = FakeEnv("6.12", _backend("x86_64"))
    r = _write(env, "p vfs_read file->f_flags buf:string count pos")
    assert r.ok, r.error
    a = {x.name: x for x in r.event.args}
    assert list(a) == ["arg1", "buf", "count", "pos"]
    assert (a["arg1"].fetch, a["arg1"].type, a["arg1"].ops) == ("+24(%di)", "u32", ("ARG", "ST_MEM"))
    assert (a["buf"].fetch, a["buf"].ops) == ("+0(%si)", ("ARG", "ST_STRING"))
    assert (a["count"].fetch, a["count"].type) == ("%dx", "u64")
    assert (a["pos"].type, a["pos"].btf) == ("x64", "loff_t *pos")
    # a bitfield member: the BTF bit offset and size add a MOD_BF step
    r = _write(env, "p vfs_read file->f_bits")
    assert r.event.args[0].ops == ("ARG", "ST_MEM", "MOD_BF")
    # $arg* expands to every parameter, named after them; on a return probe they are captured
    # at entry (EDATA) and $retval takes the BTF return type
    r = _write(env, "r vfs_read $arg* $retval")
    assert [(x.name, x.fetch, x.type) for x in r.event.args] == [
        ("file", "%di", "x64"), ("buf", "%si", "x64"), ("count", "%dx", "u64"),
        ("pos", "%cx", "x64"), ("arg5", "$retval", "s64")]
    assert r.event.args[0].ops[0] == "EDATA"
    # $argN becomes the parameter's name, with its type suffix
    r = _write(env, "p vfs_read $arg2:string $arg3:x32")
    assert [(x.name, x.comm, x.fetch) for x in r.event.args] == [
        ("buf", "buf:string", "+0(%si)"), ("count", "count:x32", "%dx")]


@pytest.mark.parametrize("line,log_id,caret,errno", [
    ("p vfs_read file->f_nope", "NO_BTF_FIELD", 17, "ENOENT"),
    ("p vfs_read file.f_flags", "NOSUP_DAT_ARG", 16, "EOPNOTSUPP"),
    ("p vfs_read file-f_flags", "BAD_HYPHEN", 15, "EINVAL"),
    ("p vfs_read count->x", "NO_PTR_STRCT", 18, "EINVAL"),
    ("p vfs_read count:string", "BAD_TYPE4STR", 11, "EINVAL"),
    ("p vfs_read+4 file", "NOSUP_BTFARG", 13, "EINVAL"),
    ("p vfs_read+4 $arg1", "NOFENTRY_ARGS", 13, "EINVAL"),
    ("p vfs_read $arg0", "BAD_ARG_NUM", 11, "EINVAL"),
    ("p vfs_read $arg2x", "BAD_VAR", 11, "ENOENT"),
    ("p vfs_read $argx", "BAD_VAR", 11, "EINVAL"),
    ("r kfree $retval", "NO_RETVAL", 8, "ENOENT"),
    ("p vfs_read $comm:x64", "NEED_STRING_TYPE", 17, "EINVAL"),
    ("p vfs_read \\\"ab\":u8", "NEED_STRING_TYPE", 17, "EINVAL"),
    ("p vfs_read +0($arg1)+10", None, None, None),
])
def test_btf_errors_612(line: str, log_id: str | None, caret: int | None, errno: str | None) -> None:
    env = FakeEnv("6.12", _backend("x86_64"))
    r = _write(env, line)
    if errno is None:  # text after the last ')' is dropped by the kernel: accepted
        assert r.ok, r.error
        return
    assert not r.ok
    assert (r.error.log_id, r.error.caret, r.error.errno) == (log_id, caret, errno), r.error


def test_argn_inside_deref_612() -> None:
    """Only arguments that start with '$arg' are rewritten from BTF; '+0($arg9)' and 'x=$arg9'
    stay register/stack fetches, even past the function's parameters."""
    env = FakeEnv("6.12", _backend("arm64"))
    r = _write(env, "p vfs_read x=+0($arg9) y=$arg2")
    assert r.ok, r.error
    assert [(a.name, a.fetch) for a in r.event.args] == [("x", "+0(\\0)"), ("y", "%x1")]


def test_612_without_btf() -> None:
    """6.12 with no BTF for the function: $argN stays a register fetch, names are argN."""
    env = FakeEnv("6.12", _backend("x86_64"), btf=False)
    r = _write(env, "p vfs_read $arg1 r $retval")
    assert not r.ok and r.error.log_id == "NOSUP_BTFARG"  # 'r' is a BTF name: unsupported
    r = _write(env, "p vfs_read $arg1 $arg2")
    assert [(a.name, a.fetch) for a in r.event.args] == [("arg1", "%di"), ("arg2", "%si")]
    # $arg* logs NOSUP_BTFARG, goes on, and fails as a $-variable (the kernel's last entry)
    e = _write(env, "p vfs_read $arg*").error
    assert (e.log_id, e.caret, e.errno) == ("BAD_VAR", 11, "EINVAL")


def test_dentry_types_612() -> None:
    env = FakeEnv("6.12", _backend("x86_64"))
    r = _write(env, "p dput $arg1:%pd")
    assert r.ok, r.error
    assert (r.event.args[0].fetch, r.event.args[0].type) == ("+0(+40(%di))", "string")
    r = _write(env, "p vfs_read f=$arg1:%pD")
    assert r.event.args[0].fetch == "+0(+40(+16(%di)))"


def test_fetch_program_limits() -> None:
    env = FakeEnv("6.1", _backend("x86_64"))
    deep = "+0(" * 13 + "%di" + ")" * 13  # 13 derefs + REG + store = 15 slots: fits
    assert len(deep) <= 63 and _write(env, f"p vfs_read {deep}").ok
    e = _write(env, "p vfs_read " + "+0(" * 14 + "@0" + ")" * 14).error
    assert (e.log_id, e.caret) == ("TOO_MANY_OPS", 14)
    args = " ".join(f"a{i}=%di:u8[64]" for i in range(47))  # 47 * 64 bytes > 3072
    e = _write(env, f"p vfs_read {args}").error
    assert e.log_id == "BAD_STRING"  # arrays of a register are refused before the size matters
    args = " ".join(f"a{i}=+0(%di):u8[64]" for i in range(49))
    e = _write(env, f"p vfs_read {args}").error
    assert (e.log_id, e.errno) == ("EVENT_TOO_BIG", "E2BIG")
    e = _write(env, "p vfs_read %di:b0@1/32").error
    assert (e.log_id, e.caret) == ("BAD_BITFIELD", 15)
    e = _write(env, "p vfs_read %di:b30@4/32").error
    assert e.log_id == "BAD_BITFIELD"
    assert _write(env, "p vfs_read %di:b28@4/32").ok
    e = _write(env, "p vfs_read %di:char").error  # 6.12 only
    assert (e.log_id, e.caret) == ("BAD_TYPE", 15)
    assert _write(FakeEnv("6.12", _backend("x86_64")), "p vfs_read %di:char").ok


def test_registration_stage() -> None:
    env = FakeEnv("6.1", _backend("x86_64"))
    e = _write(env, "p vfs_read+3 %di").error
    assert (e.log_id, e.caret, e.errno) == ("BAD_INSN_BNDRY", 2, "EILSEQ")
    e = _write(env, "p vfs_read @nonexistent").error  # traceprobe_update_arg -> -ENOENT
    assert (e.log_id, e.caret, e.errno) == ("BAD_PROBE_ADDR", 2, "ENOENT")
    e = _write(env, "p vfs_read @linux_proc_banner*8").error
    assert e.log_id == "BAD_PROBE_ADDR"
    assert _write(env, "p 0x1234 @nonexistent").ok  # -ENOENT on an address: accepted
    e = _write(env, "p notrace_fn @nonexistent").error  # notrace is checked before the args
    assert (e.log_id, e.errno) == ("FAIL_REG_PROBE", "EINVAL")
    assert _write(env, "p mod:func $stack1").ok  # module not loaded: deferred


def test_event_names_and_commands() -> None:
    env = FakeEnv("6.12", _backend("x86_64"))
    s = EventSet(env)
    assert s.write("r10:grp.ev vfs_read").event.readback() == "r10:grp/ev vfs_read"
    assert s.write("p mod:fn.isra.0").event.event == "p_mod_fn_isra_0_0"
    assert s.write("p:grp/ kfree").event.event == "p_kfree_0"
    assert s.write("p vfs_read # a comment").ok
    assert s.write("").op == "empty"
    assert s.write("x vfs_read").error.log_id is None
    assert s.write("p").error.errno == "EINVAL"
    assert s.write("p /tmp/x:0x10").error.log_id is None  # a uprobe spec: -ECANCELED
    e = s.write("p vfs_read " + "x" * 5000).error
    assert e.errno == "EINVAL" and e.log_id is None
    e = s.write("r0 vfs_read").error
    assert (e.log_id, e.caret) == ("BAD_MAXACT", 1)
    e = s.write("p:-grp/ev vfs_read")
    assert e.ok and e.event.group == "-grp"
    assert s.write(f"p:{'g' * 63}/ev vfs_read").ok  # slash - event + 1 > 64 is too long
    e = s.write(f"p:{'g' * 64}/ev vfs_read").error
    assert e.log_id == "GROUP_TOO_LONG"
    e = s.write("p vfs_read common_pid=%di").error
    assert e.log_id == "USED_ARG_NAME"


def test_multiprobe_and_delete() -> None:
    env = FakeEnv("6.1", _backend("x86_64"))
    s = EventSet(env)
    assert s.write("p:kprobes/t vfs_read a=%di").ok
    assert s.write("p:kprobes/t kfree a=%si").ok  # same name and type: appended
    e = s.write("p:kprobes/t kfree a=%si").error
    assert (e.log_id, e.caret, e.errno) == ("SAME_PROBE", 0, "EEXIST")
    e = s.write("p:kprobes/t kfree a=%si b=%dx").error
    assert (e.log_id, e.caret) == ("DIFF_ARG_TYPE", len("p:kprobes/t kfree a=%si "))  # at b=%dx
    assert len(s.events[("kprobes", "t")]) == 2
    assert s.write("-:kprobes/t kfree a=%si").ok
    assert len(s.events[("kprobes", "t")]) == 1
    assert s.write("-:t").ok and not s.events
    assert s.write("-:t").error.errno == "ENOENT"
    assert s.write("-:").error.errno == "EINVAL"
    assert s.write("-t").error.errno == "EINVAL"


# --- helpers ------------------------------------------------------------------------------------
def test_kstrtox() -> None:
    assert kstrtoul("0x10") == (16, "") and kstrtoul("010") == (8, "") and kstrtoul("+5") == (5, "")
    assert kstrtoul("0x")[0] is None and kstrtoul("1a")[0] is None and kstrtoul("")[0] is None
    assert kstrtoul(str(1 << 64)) == (None, "ERANGE")
    assert kstrtol("-0x10") == (-16, "") and kstrtol("-")[0] is None
    assert kstrtouint("4294967296") == (None, "ERANGE")
    assert simple_strtoul("10@a/16") == (10, 2) and simple_strtoul("a/16") == (0, 0)
    assert simple_strtoul("0x1f@") == (31, 4)


def test_translate_line() -> None:
    x86, arm = _backend("x86_64"), _backend("arm64")
    line, notes = translate_line("p:g/e vfs_read a=%di b=+0(%si):string c=$arg3 d=+8(%sp)", x86, arm)
    assert line == "p:g/e vfs_read a=%x0 b=+0(%x1):string c=$arg3 d=+8(%sp)"
    assert not notes
    line, notes = translate_line("r __x64_sys_read ret=%ax", x86, arm)
    assert line == "r __arm64_sys_read ret=%x0" and notes
    line, notes = translate_line("r vfs_read ret=%x0 h=%x7", arm, x86)
    assert line == "r vfs_read ret=%ax h=$arg8"
    line, notes = translate_line("p vfs_read+8 %bp", x86, arm)
    assert any("offset" in n for n in notes) and any("%bp" in n for n in notes)


def test_event_command_bad_input(tmp_path: Path, capsys) -> None:
    from kpatch_core.cli import main
    assert main(["event", str(tmp_path / "nope"), "p vfs_read"]) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and len(err.strip().splitlines()) == 1
    assert main(["event"]) == 2


def test_event_command_test_image(capsys) -> None:
    """The committed x86_64 test image (6.1): ImageEnv decides the probe point with
    probe.check (non-unique symbol, notrace, IBT entry), the parser the arguments."""
    from kpatch_core.cli import main
    path = Path(__file__).resolve().parent.parent / "testdata" / "x86_64" / "vmlinux"
    if not path.exists():
        pytest.skip("testdata/x86_64/vmlinux not built")
    assert main(["event", str(path), "p plain_func %none_reg", "p:g/e plain_func a=$arg1 s=+0($arg2):string",
                 "p dup_static", "p notrace_func", "r plain_func+1", "p no_such", "--json"]) == 1
    res = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = [(r["ok"], r["error"] and (r["error"]["log_id"], r["error"]["errno"], r["error"]["caret"]))
           for r in res]
    assert got == [(False, ("BAD_REG_NAME", "EINVAL", 13)), (True, None),
                   (False, ("NON_UNIQ_SYMBOL", "EADDRNOTAVAIL", 2)),
                   (False, ("FAIL_REG_PROBE", "EINVAL", 2)), (False, ("BAD_RETPROBE", "EINVAL", 2)),
                   (False, ("BAD_PROBE_ADDR", "ENOENT", 2))]
    ev = res[1]["event"]
    assert ev["resolved"] == "p:g/e plain_func a=%di s=+0(%si):string"
    assert ev["probe"]["on_func_entry"] and ev["probe"]["ok"]


@pytest.mark.realkernel
def test_event_command_real(capsys) -> None:
    """On the cached Debian image: the error_log entry of a refused line, the resolved form of
    an accepted one, and --arch with the arm64 image."""
    from kpatch_core.cli import main
    path = KERNELS / "x86_64" / "vmlinux"
    if not path.exists():
        pytest.skip(f"{path} not cached")
    # exit 1: the kernel refuses a line
    assert main(["event", str(path), "p vfs_read %none_reg", "p:g/e vfs_read b=+0($arg2):string"]) == 1
    out = capsys.readouterr().out
    assert "Invalid register name  [BAD_REG_NAME]" in out
    assert "  Command: p vfs_read %none_reg\n" + " " * 22 + "^" in out
    assert "resolved  p:g/e vfs_read b=+0(%si):string" in out
    assert main(["event", str(path), "p vfs_read $arg1", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["ok"] and obj["event"]["args"][0]["fetch"] == "%di"
    arm = KERNELS / "arm64" / "vmlinux"
    if arm.exists():
        assert main(["event", str(path), "p vfs_read a=%di", "--arch", str(arm)]) == 0
        out = capsys.readouterr().out
        assert "on arm64: p vfs_read a=%x0" in out
        assert "resolved  p:kprobes/p_vfs_read_0 vfs_read a=%x0" in out


@pytest.mark.realkernel
@pytest.mark.parametrize("name", ["x86_64", "arm64", "riscv64", "riscv64-mid", "s390x", "ppc64le"])
def test_oracle_lines_real_image(name: str) -> None:
    """301 generated lines per arch, as the real kernel answered them (kernel-oracle --events):
    ok, errno, error_log message, caret and the kprobe_events read-back must all agree."""
    path = KERNELS / name.split("-")[0] / "vmlinux"
    if not path.exists():
        pytest.skip(f"{path} not cached")
    import re

    from kpatch_core.events import ImageEnv
    from kpatch_core.image import Image
    s = EventSet(ImageEnv(Image.open(str(path))))
    bad, n = [], 0
    with open(DATA / f"oracle-{name}.jsonl", encoding="utf-8") as f:
        for rec in map(json.loads, f):
            if rec["op"] == "clear":
                s.clear()
                continue
            line = rec["line"].removeprefix("!keep ")
            r = s.write(line, keep=rec["op"] == "keep")
            e = r.error
            got = (r.ok, e.errno if e else None, e.message if e else None, e.caret if e else None)
            want = (bool(rec["ok"]), rec["error"], rec["error_message"], rec["caret"])
            n += 1
            if got != want:
                bad.append(f"{line!r}: got {got}, kernel {want}")
            elif rec["readback"] and r.event is not None:
                ours = re.sub(r"^r\d*:", "r:", r.event.readback())
                if ours != re.sub(r"^r\d*:", "r:", rec["readback"]):
                    bad.append(f"{line!r}: readback {ours!r} != {rec['readback']!r}")
    assert n == 295 and not bad, "\n".join(bad[:20])
