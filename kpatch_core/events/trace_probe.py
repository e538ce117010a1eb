"""kprobe_events argument parsing, as kernel/trace/trace_probe.c does it.

:class:`TraceProbeParser` holds the argument side of a kprobe_events write: the event name
(``traceprobe_parse_event_name``), ``$arg*`` expansion (``traceprobe_expand_meta_args``), each
argument (``traceprobe_parse_probe_arg`` -> ``traceprobe_parse_probe_arg_body`` ->
``parse_probe_arg`` / ``parse_probe_vars`` / ``parse_btf_arg``) and ``finalize_fetch_insn``,
with the behaviours of the kernel's :class:`~kpatch_core.features.FeatureSet`.
:mod:`.trace_kprobe` builds the command handling on it.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

from ..btf import INT, PTR, STRUCT, UNION, BtfType, FuncProto
from ..kstrtox import ULONG_MAX, is_digit, kstrtol, kstrtoul, kstrtouint, simple_strtoul
from .error_log import (
    E2BIG,
    EINVAL,
    ENOENT,
    EOPNOTSUPP,
    FETCH_INSN_MAX,
    MAX_ARG_NAME_LEN,
    MAX_ARRAY_LEN,
    MAX_BTF_ARGS_LEN,
    MAX_EVENT_NAME_LEN,
    MAX_PROBE_EVENT_SIZE,
    RESERVED_FIELD_NAMES,
    ParseFailure,
    TraceProbeLog,
    error_messages,
    max_argstr_len,
)
from .parse_states import parse_probe_arg_deref, parse_probe_arg_states

if TYPE_CHECKING:
    from kpatch_arch.base import Backend

    from ..features import FeatureSet
    from .probe_env import ProbeEnv

# --- fetch types  [trace_probe.c: probe_fetch_types]: name -> (size, is_string, is_signed) -------
# strings are __data_loc u32 fields that the format file marks signed
_FETCH_TYPES_BASE: dict[str, tuple[int, bool, bool]] = {
    "string": (4, True, True), "ustring": (4, True, True), "symstr": (4, True, True),
    **{f"{s}{b}": (b // 8, False, s == "s") for s in "usx" for b in (8, 16, 32, 64)},
    "symbol": (8, False, False),
}
DEFAULT_FETCH_TYPE = "u64"  # u<BITS_PER_LONG>


def fetch_types(features: "FeatureSet") -> dict[str, tuple[int, bool, bool]]:
    """``probe_fetch_types`` of a kernel with ``features``."""
    if features.has("FETCH_TYPE_CHAR"):
        return {**_FETCH_TYPES_BASE, "char": (1, False, False)}
    return _FETCH_TYPES_BASE


def is_good_name(name: str) -> bool:
    """``is_good_name``: a C identifier."""
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name))


def is_good_system_name(name: str) -> bool:
    """``is_good_system_name``: like a C identifier, with '-' allowed."""
    return bool(re.fullmatch(r"[A-Za-z_-][A-Za-z0-9_-]*", name))


def str_to_immediate(s: str) -> tuple[int | None, str]:
    """``str_to_immediate``."""
    if is_digit(s[:1]):
        return kstrtoul(s, 0)
    if s[:1] == "-":
        return kstrtol(s, 0)
    if s[:1] == "+":
        return kstrtol(s[1:], 0)
    return None, EINVAL


@attrs.frozen
class FetchArg:
    """One parsed fetch argument: name, type and how it reads its value on this architecture."""

    name: str
    comm: str  # the argument body as written (the kernel's ``parg->comm``)
    type: str  # fetch type name ('u64', 'string', 'b4@4/32' keeps its bitfield text)
    type_id: str  # identity the kernel compares for multi-probe events ('u32' for b4@4/32)
    count: int  # array length, 0 if not an array
    fetch: str  # the fetch program with this arch's register names, e.g. '+0(%si)'
    ops: tuple[str, ...]  # the kernel's fetch_insn ops, e.g. ('ARG', 'DEREF', 'ST_STRING')
    btf: str = ""  # the BTF parameter it came from, e.g. 'char *buf' (6.12)
    symbols: tuple[str, ...] = ()  # @SYM[+|-OFFS] texts, resolved at registration

    def to_json(self) -> dict:
        return attrs.asdict(self)



@attrs.define
class FetchInsn:
    """One ``struct fetch_insn`` slot."""

    op: str = "NOP"
    param: int = 0
    offset: int = 0
    data: str = ""
    reg: str = ""


@attrs.define
class ParseContext:
    """``struct traceprobe_parse_context``: the probe's flags and function, the caret offset
    and what the BTF side found so far."""

    flags: frozenset[str]
    funcname: str | None
    offset: int = 0
    proto: FuncProto | None = None
    btf_queried: bool = False
    last_type: BtfType | None = None
    last_bitoffs: int = 0
    last_bitsize: int = 0
    btf_param: str = ""
    struct_btf: bool = False  # ctx->struct_btf: the next field chain starts in last_struct
    last_struct: BtfType | None = None  # a typecast's struct, or task_struct for $current
    prefix_byteoffs: int = 0  # a typecast's ',FIELD' offset

    def entry(self) -> bool:
        """``tparg_is_function_entry``."""
        return self.flags == frozenset({"KERNEL", "FENTRY"})

    def ret(self) -> bool:
        """``tparg_is_function_return``."""
        return self.flags == frozenset({"KERNEL", "RETURN"})



class TraceProbeParser:
    """The argument parser of trace_probe.c for one kernel (``env``), logging into
    ``trace_probe_log`` (:attr:`log`) as the kernel does."""

    def __init__(self, env: "ProbeEnv") -> None:
        self.env = env
        self.features = env.features
        self.rules = env.rules  # the label results carry
        self.log = TraceProbeLog(error_messages(self.features))
        self.types = fetch_types(self.features)
        self.param_max_stack = env.backend.thread_size // 8  # PARAM_MAX_STACK

    def has(self, name: str) -> bool:
        """Does the kernel have behaviour ``name`` (:mod:`kpatch_core.features`)?"""
        return self.features.has(name)

    def dentry_offsets(self) -> tuple[int, int]:
        """offsetof(struct dentry, d_name.name) and offsetof(struct file, f_path.dentry), from
        BTF when the image has it (else 6.12.107's 64-bit values, read from riscv64 BTF)."""
        btf = self.env.btf
        d = btf.member_offset("dentry", "d_name.name") if btf else None
        f = btf.member_offset("file", "f_path.dentry") if btf else None
        return (0x28 if d is None else d), (0x48 if f is None else f)

    def traceprobe_parse_event_name(self, event: str, offset: int) -> tuple[str | None, str | None]:
        """``traceprobe_parse_event_name``: (group or None, event or None for an auto name)."""
        group = None
        slash = event.find("/")
        if slash < 0:
            slash = event.find(".")
        if slash >= 0:
            if slash == 0:
                raise self.log.fail(offset, "NO_GROUP_NAME")
            if slash + 1 > MAX_EVENT_NAME_LEN:
                raise self.log.fail(offset, "GROUP_TOO_LONG")
            group = event[:slash]
            if not is_good_system_name(group):
                raise self.log.fail(offset, "BAD_GROUP_NAME")
            offset += slash + 1
            event = event[slash + 1:]
        if not event:
            if slash >= 0:
                return group, None
            raise self.log.fail(offset, "NO_EVENT_NAME")
        if len(event) >= MAX_EVENT_NAME_LEN:
            raise self.log.fail(offset, "EVENT_TOO_LONG")
        if not is_good_name(event):
            raise self.log.fail(offset, "BAD_EVENT_NAME")
        return group, event


    def traceprobe_update_arg(self, args: tuple[FetchArg, ...]) -> str | None:
        """``traceprobe_update_arg``: each ``@SYM[+|-OFFS]`` split and looked up in kallsyms."""
        for a in args:
            for data in a.symbols:
                m = re.search(r"[+-]", data)
                name = data
                if m:
                    off, err = kstrtol(data[m.start():], 0)
                    if off is None:
                        return err
                    name = data[:m.start()]
                if not self.env.symbol_address(name):
                    return ENOENT
        return None


    # -- traceprobe_expand_meta_args (EVENTS_META_ARGS) -------------------------------------------
    def traceprobe_expand_meta_args(self, argv: list[str], ctx: ParseContext) -> list[str]:
        args_idx = -1
        found = False
        for i, a in enumerate(argv):  # argv_has_var_arg
            if not a.startswith("$arg"):
                continue
            self.log.trace_probe_log_set_index(i + 2)
            if not ctx.entry() and not ctx.ret():
                raise self.log.fail(0, "NOFENTRY_ARGS")
            if is_digit(a[4:5]):
                found = True
                continue
            if a[4:5] != "*":
                raise self.log.fail(0, "BAD_VAR")
            if 0 <= args_idx < len(argv):
                raise self.log.fail(0, "DOUBLE_ARGS")
            found, args_idx = True, i
        if not found:
            return argv
        proto = self.query_btf_context(ctx)
        if proto is None or not proto.params:
            if args_idx != -1:
                # "$arg* requires BTF info": logged, but the kernel returns NULL (not an error)
                # and goes on to parse '$arg*' as it stands
                self.log.trace_probe_log_err(0, "NOSUP_BTFARG")
            return argv
        out: list[str] = []
        used = 0
        for i, a in enumerate(argv):
            self.log.trace_probe_log_set_index(i + 2)
            if i == args_idx:
                for n in range(len(proto.params)):
                    s = self.sprint_nth_btf_arg(n, "", proto, MAX_BTF_ARGS_LEN - used)
                    out.append(s)
                    used += len(s) + 1
                continue
            if a.startswith("$arg"):
                n, end = simple_strtoul(a[4:], 10)
                rest = a[4 + end:]
                if rest and rest[0] != ":":
                    raise self.log.fail(0, "BAD_VAR", ENOENT)
                if n == 0:
                    raise self.log.fail(0, "BAD_ARG_NUM")
                s = self.sprint_nth_btf_arg(n - 1, rest, proto, MAX_BTF_ARGS_LEN - used)
                out.append(s)
                used += len(s) + 1
            else:
                out.append(a)
        return out

    def sprint_nth_btf_arg(self, idx: int, type_: str, proto: FuncProto, bufsize: int) -> str:
        """``sprint_nth_btf_arg``."""
        if idx >= len(proto.params):
            raise self.log.fail(0, "NO_BTFARG", ENOENT)
        name = proto.params[idx].name
        if not name:
            raise self.log.fail(0, "NO_BTF_ENTRY", ENOENT)
        s = name + type_
        if len(s) >= bufsize:
            raise self.log.fail(0, "ARGS_2LONG", E2BIG)
        return s

    def query_btf_context(self, ctx: ParseContext) -> FuncProto | None:
        """``query_btf_context``: the probed function's prototype, or None."""
        if not self.env.btf_args:
            return None
        if not ctx.btf_queried:
            ctx.btf_queried = True
            btf = self.env.btf
            ctx.proto = btf.func(ctx.funcname) if (btf is not None and ctx.funcname) else None
        return ctx.proto

    # -- traceprobe_parse_probe_arg ------------------------------------------------------------
    def traceprobe_parse_probe_arg(self, arg: str, i: int, prev: list[FetchArg], ctx: ParseContext,
                         size: int) -> tuple[FetchArg, int]:
        eq = arg.find("=")
        if eq >= 0:
            if eq > MAX_ARG_NAME_LEN:
                raise self.log.fail(0, "ARG_NAME_TOO_LONG")
            if eq == 0:
                raise self.log.fail(0, "NO_ARG_NAME")
            name, body, body_off = arg[:eq], arg[eq + 1:], eq + 1
        else:
            name = f"arg{i + 1}"
            if self.has("KPROBE_EVENTS_BTF_ARGS") and self.env.btf_args:  # generate_probe_arg_name
                cand = arg.split(":", 1)[0]
                name = cand if is_good_name(cand) and cand else name
            body, body_off = arg, 0
        if not is_good_name(name):
            raise self.log.fail(0, "BAD_ARG_NAME")
        if name in RESERVED_FIELD_NAMES or any(p.name == name for p in prev):
            raise self.log.fail(0, "USED_ARG_NAME")
        ctx.offset = body_off
        return self.traceprobe_parse_probe_arg_body(body, name, ctx, size)

    def traceprobe_parse_probe_arg_body(self, body: str, name: str, ctx: ParseContext,
                                        size: int) -> tuple[FetchArg, int]:
        """``traceprobe_parse_probe_arg_body`` (+ ``parse_probe_arg_type``, ``finalize_fetch_insn``)."""
        parse_ctx = self.has("EVENTS_PARSE_CONTEXT")
        if len(body) > max_argstr_len(self.features):
            raise self.log.fail(ctx.offset, "ARG_TOO_LONG", E2BIG if parse_ctx else EINVAL)
        if not body:
            raise self.log.fail(ctx.offset, "NO_ARG_BODY")
        body_offset = ctx.offset
        # split the type: first ':'; an array suffix '[N]'
        colon = body.find(":")
        arg, t = (body[:colon], body[colon + 1:]) if colon >= 0 else (body, None)
        count = 0
        if t is not None:
            lb = t.find("[")
            if lb >= 0:
                inner = t[lb + 1:]
                t = t[:lb]
                t2 = colon + 1 + lb + 1  # index of the array size in body
                rb = inner.find("]")
                if rb < 0:
                    raise self.log.fail(ctx.offset + t2 + len(inner), "ARRAY_NO_CLOSE")
                if inner[rb + 1:]:
                    raise self.log.fail(ctx.offset + t2 + rb + 1, "BAD_ARRAY_SUFFIX")
                n, _ = kstrtouint(inner[:rb], 0)
                if not n:
                    raise self.log.fail(ctx.offset + t2, "BAD_ARRAY_NUM")
                if n > MAX_ARRAY_LEN:
                    raise self.log.fail(ctx.offset + t2, "ARRAY_TOO_BIG")
                count = n
        toff = colon + 1 if t is not None else 0
        if arg in ("$comm", "$COMM") or arg.startswith('\\"'):
            if count or (t is not None and t != "string"):
                if not self.has("EVENTS_COMM_NEEDS_STRING_TYPE"):
                    raise ParseFailure(EINVAL)  # plain -EINVAL, nothing logged
                raise self.log.fail(ctx.offset + toff, "NEED_STRING_TYPE")
            ftype = "string"
        else:
            found = self.find_fetch_type(t)
            if found is None:
                raise self.log.fail(ctx.offset + toff, "BAD_TYPE")
            ftype = found

        if not parse_ctx:  # the event size is checked before the fetch program is parsed
            size = self._add_event_size(size, ftype, count, ctx.offset)
        code = [FetchInsn() for _ in range(FETCH_INSN_MAX)]
        code[FETCH_INSN_MAX - 1].op = "END"
        ctx.last_type, ctx.btf_param = None, ""
        ctx.struct_btf, ctx.last_struct = False, None  # clear_struct_btf after each argument
        pc = [0]
        self.parse_probe_arg(arg, pc, FETCH_INSN_MAX - 1, code, ctx)
        if not parse_ctx:
            ctx.offset = body_offset  # the offset is passed by value
        display_type = t if t is not None else ftype
        if self.has("KPROBE_EVENTS_BTF_ARGS") and self.env.btf_args and ctx.last_type is not None:
            if t is None:
                ftype = self.find_fetch_type_from_btf_type(ctx)
                display_type = ftype
            elif "string" in t:
                self.check_prepare_btf_string_fetch(t, pc, code, ctx)
        if parse_ctx:
            size = self._add_event_size(size, ftype, count, ctx.offset)
        fetch = render_fetch(code, self.env.backend)  # before finalize turns DEREF into ST_MEM
        ops = self.finalize_fetch_insn(code, pc[0], ftype, t, count, toff, ctx)
        type_id = ftype
        syms = tuple(i.data for i in code if i.op == "NOP_SYMBOL")
        return FetchArg(name, body, display_type or ftype, type_id, count, fetch, ops,
                        ctx.btf_param, syms), size

    def _add_event_size(self, size: int, ftype: str, count: int, offset: int) -> int:
        size += self.types[ftype][0] * (count or 1)
        if size > MAX_PROBE_EVENT_SIZE:
            raise self.log.fail(offset, "EVENT_TOO_BIG", E2BIG)
        return size

    def find_fetch_type(self, t: str | None) -> str | None:
        """``find_fetch_type``: the fetch type's name ('u16' for a bitfield in a u16)."""
        if t is None:
            return DEFAULT_FETCH_TYPE
        if t.startswith("b"):
            slash = t.find("/")
            if slash < 0:
                return None
            bs, _ = kstrtoul(t[slash + 1:], 0)
            return {8: "u8", 16: "u16", 32: "u32", 64: "u64"}.get(bs or 0)
        return t if t in self.types else None

    # -- parse_probe_arg ---------------------------------------------------------------------------
    def parse_probe_arg(self, arg: str, pc: list[int], end: int, code: list[FetchInsn],
                        ctx: ParseContext) -> None:
        """``parse_probe_arg``: loop-based with EVENTS_NESTED_PARSE_STATES (.parse_states),
        recursive before."""
        if self.has("EVENTS_NESTED_PARSE_STATES"):
            parse_probe_arg_states(self, arg, pc, end, code, ctx)
            return
        head = arg[:1]
        if head in ("+", "-"):
            self._parse_deref_recursive(arg, pc, end, code, ctx)
        elif head == "(" and self.has("EVENTS_EPROBE_TYPECAST"):
            raise self.log.fail(ctx.offset, "TYPECAST_NOT_EVENT")  # handle_typecast, not TEVENT
        else:
            self.parse_probe_arg_leaf(arg, pc, end, code, ctx)

    def _parse_deref_recursive(self, arg: str, pc: list[int], end: int, code: list[FetchInsn],
                               ctx: ParseContext) -> None:
        """``parse_probe_arg`` case '+'/'-' before 7.3: the inner argument parsed recursively."""
        c = pc[0]
        st = parse_probe_arg_deref(self, arg, ctx)  # the same prefix as 7.3's loop parser
        sub = [c]
        self.parse_probe_arg(st.inner_arg, sub, end, code, ctx)
        c = sub[0]
        ctx.offset = st.cur_offs
        if code[c].op in ("COMM", "DATA"):
            raise self.log.fail(ctx.offset, "COMM_CANT_DEREF")
        c += 1
        if c == end:
            raise self.log.fail(ctx.offset, "TOO_MANY_OPS")
        pc[0] = c
        code[c].op, code[c].offset = st.deref, st.offset  # text after the last ')' is ignored
        ctx.last_type = None

    def parse_probe_arg_leaf(self, arg: str, pc: list[int], end: int, code: list[FetchInsn],
                             ctx: ParseContext) -> None:
        """``parse_probe_arg_leaf``: a $-variable, register, @address/@symbol, immediate or BTF
        variable (a fetch op at ``pc``)."""
        btf_args = self.has("KPROBE_EVENTS_BTF_ARGS")
        c = pc[0]  # the local 'code' pointer
        c0 = code[c]
        head = arg[:1]
        if head == "$":
            self.parse_probe_vars(arg, pc, end, code, ctx)
        elif head == "%":
            f = self.env.backend.register(arg[1:])  # regs_query_register_offset
            if f is None:
                raise self.log.fail(ctx.offset, "BAD_REG_NAME")
            c0.op, c0.param, c0.reg = "REG", f.offset, f.name
        elif head == "@":
            deref_off = 0
            if is_digit(arg[1:2]):
                v, err = kstrtoul(arg[1:], 0)
                if v is None:
                    raise self.log.fail(ctx.offset, "BAD_MEM_ADDR", err)
                c0.op, c0.param = "IMM", v
            elif arg[1:2] == "+":
                raise self.log.fail(ctx.offset, "FILE_ON_KPROBE")  # TPARG_FL_KERNEL
            else:
                c0.op, c0.data = "NOP_SYMBOL", arg[1:]
                c += 1
                if c == end:
                    raise self.log.fail(ctx.offset, "TOO_MANY_OPS")
                code[c].op = "IMM"
            c += 1
            if c == end:
                raise self.log.fail(ctx.offset, "TOO_MANY_OPS")
            pc[0] = c
            code[c].op, code[c].offset = "DEREF", deref_off
        elif head == "\\":
            if arg[1:2] == '"':
                s = arg[2:]
                if not s or s[-1] != '"':
                    raise self.log.fail(ctx.offset + 2 + len(s), "IMMSTR_NO_CLOSE")
                c0.op, c0.data = "DATA", s[:-1]
            else:
                v, err = str_to_immediate(arg[1:])
                if v is None:
                    raise self.log.fail(ctx.offset + 1, "BAD_IMM", err)
                c0.op, c0.param, c0.data = "IMM", v & ULONG_MAX, arg[1:]
        elif btf_args and (head.isalpha() or head == "_") and head.isascii():  # BTF variable
            if not ctx.entry() and not ctx.ret():
                raise self.log.fail(ctx.offset, "NOSUP_BTFARG")
            self.parse_btf_arg(arg, pc, end, code, ctx)
        if c0.op == "NOP":
            raise self.log.fail(ctx.offset, "BAD_FETCH_ARG")

    def parse_probe_vars(self, orig: str, pc: list[int], end: int, code: list[FetchInsn],
                         ctx: ParseContext) -> None:
        """``parse_probe_vars``."""
        btf_args = self.has("KPROBE_EVENTS_BTF_ARGS")
        c0 = code[pc[0]]
        arg = orig[1:]
        if (btf_args and arg.startswith("retval")) or arg == "retval":
            if "RETURN" not in ctx.flags:
                raise self.log.fail(ctx.offset, "RETVAL_ON_PROBE")
            if btf_args and self.env.btf_args:
                self.parse_btf_arg(orig, pc, end, code, ctx)
                return
            c0.op = "RETVAL"
            return
        if arg.startswith("stack"):
            rest = arg[5:]
            if rest == "":
                c0.op = "STACKP"
                return
            if is_digit(rest[0]):
                n, _ = kstrtoul(rest, 10)
                if n is None:
                    raise self.log.fail(ctx.offset, "BAD_VAR")
                if n > self.param_max_stack:
                    raise self.log.fail(ctx.offset, "BAD_STACK_NUM")
                c0.op, c0.param = "STACK", n
                return
            raise self.log.fail(ctx.offset, "BAD_VAR")
        if arg in ("comm", "COMM"):
            c0.op = "COMM"
            return
        if arg.startswith("current") and self.has("EVENTS_CURRENT_VAR"):  # parse_probe_var_current
            rest = arg[7:]
            if rest[:1] == "-" and self.env.btf_args:
                self.parse_btf_arg(orig, pc, end, code, ctx)
                return
            if rest:
                raise self.log.fail(ctx.offset, "BAD_VAR")
            c0.op = "CURRENT"
            return
        if self.env.fetch_args and arg.startswith("arg") and \
                (self.has("EVENTS_RETPROBE_ARGS") or ctx.entry()):
            n, _ = kstrtoul(arg[3:], 10)
            if n is None:
                raise self.log.fail(ctx.offset, "BAD_VAR")
            if not n or n > self.param_max_stack:
                raise self.log.fail(ctx.offset, "BAD_ARG_NUM")
            if ctx.entry():
                c0.op, c0.param = "ARG", n - 1
            elif ctx.ret():
                c0.op, c0.param = "EDATA", n - 1  # captured by the kretprobe entry handler
            else:
                raise self.log.fail(ctx.offset, "NOFENTRY_ARGS")
            return
        raise self.log.fail(ctx.offset, "BAD_VAR")

    # -- BTF arguments (KPROBE_EVENTS_BTF_ARGS): parse_btf_arg, parse_btf_field, split_next_field --
    def split_next_field(self, varname: str, ctx: ParseContext) -> tuple[int, str, str | None]:
        """(is_ptr, head, next field or None)."""
        m = re.search(r"[.-]", varname)
        if not m:
            return 0, varname, None
        i = m.start()
        if varname[i] == "-" and varname[i + 1:i + 2] == ">":
            return 1, varname[:i], varname[i + 2:]
        if varname[i] == ".":
            return 0, varname[:i], varname[i + 1:]
        raise self.log.fail(ctx.offset + i, "BAD_HYPHEN")

    def parse_btf_arg(self, varname: str, pc: list[int], end: int, code: list[FetchInsn],
                       ctx: ParseContext) -> None:
        if not self.env.btf_args:
            raise self.log.fail(ctx.offset, "NOSUP_BTFARG", EOPNOTSUPP)
        btf = self.env.btf
        assert btf is not None
        c0 = code[pc[0]]
        is_ptr, head, field = self.split_next_field(varname, ctx)
        if not is_ptr and field is not None:
            raise self.log.fail(ctx.offset + len(head) + 1, "NOSUP_DAT_ARG", EOPNOTSUPP)
        field_pos = len(head) + (2 if is_ptr else 1)
        if head == "$current" and self.has("EVENTS_CURRENT_VAR"):
            c0.op = "CURRENT"  # task_struct by default (the struct itself, not a pointer)
            t_cur = btf.struct_named("task_struct")
            if t_cur is None:
                raise self.log.fail(ctx.offset, "NO_BTF_ENTRY", ENOENT)
            ctx.struct_btf, ctx.last_struct = True, t_cur
            ctx.last_type, ctx.last_bitoffs, ctx.last_bitsize = t_cur, 0, 0
            ctx.btf_param = "struct task_struct *current"
            if field is not None:
                ctx.offset += field_pos
                self.parse_btf_field(field, t_cur, pc, end, code, ctx)
            return
        if "RETURN" in ctx.flags and head == "$retval":
            c0.op = "RETVAL"
            proto = self.query_btf_context(ctx)
            if proto is not None:
                if proto.returns_void:
                    raise self.log.fail(ctx.offset, "NO_RETVAL", ENOENT)
                tid = proto.ret_type_id
                ctx.btf_param = f"{proto.ret_ctype} (return value)"
            else:
                if field is not None:
                    raise self.log.fail(ctx.offset + field_pos, "NO_BTF_ENTRY", ENOENT)
                return
        else:
            proto = self.query_btf_context(ctx)
            if proto is None or not proto.params:
                raise self.log.fail(ctx.offset, "NO_BTF_ENTRY", ENOENT)
            for i, p in enumerate(proto.params):
                if p.name and p.name == head:
                    if ctx.entry():
                        c0.op, c0.param = "ARG", i
                    elif ctx.ret():
                        c0.op, c0.param = "EDATA", i
                    tid = p.type_id
                    ctx.btf_param = p.ctype + ("" if p.ctype.endswith("*") else " ") + p.name
                    break
            else:
                raise self.log.fail(ctx.offset, "NO_BTFARG", ENOENT)
        _, t = btf.skip_modifiers(tid)
        if t is None:
            raise self.log.fail(ctx.offset, "BAD_BTF_TID")
        ctx.last_type, ctx.last_bitoffs, ctx.last_bitsize = t, 0, 0
        if field is not None:
            ctx.offset += field_pos
            self.parse_btf_field(field, t, pc, end, code, ctx)

    def parse_btf_field(self, fieldname: str, t: BtfType, pc: list[int], end: int,
                         code: list[FetchInsn], ctx: ParseContext) -> None:
        """``parse_btf_field``: one DEREF per '->' step; with ``ctx.struct_btf`` (a typecast,
        $current) the first step starts in the struct ``t`` itself."""
        btf = self.env.btf
        assert btf is not None
        c = pc[0]
        name: str | None = fieldname
        first = True
        while name is not None:
            st: BtfType | None = t
            if not (first and ctx.struct_btf):
                if t.kind != PTR:
                    raise self.log.fail(ctx.offset, "NO_PTR_STRCT")
                _, st = btf.skip_modifiers(t.size_or_type)
            if st is None:
                raise self.log.fail(ctx.offset, "BAD_BTF_TID")
            bitoffs, name, mt = self.get_bitoffset_of_field(name, st, ctx)
            c += 1
            if c == end:
                raise self.log.fail(ctx.offset, "TOO_MANY_OPS")
            code[c].op, code[c].offset = "DEREF", bitoffs // 8
            if first and ctx.struct_btf:
                code[c].offset -= ctx.prefix_byteoffs  # a typecast's ',FIELD' option
            pc[0] = c
            ctx.last_bitoffs = bitoffs % 8
            ctx.last_type = t = mt
            first = False

    def get_bitoffset_of_field(self, name: str, st: BtfType,
                               ctx: ParseContext) -> tuple[int, str | None, BtfType]:
        """``get_bitoffset_of_field``: the '.' chain from struct ``st`` up to the next '->':
        (bit offset, the field names after '->' or None, the last member's type)."""
        btf = self.env.btf
        assert btf is not None
        bitoffs = 0
        nxt: str | None = name
        while True:
            is_ptr, head, nxt = self.split_next_field(name, ctx)
            if st.kind not in (STRUCT, UNION):
                raise self.log.fail(ctx.offset, "BAD_BTF_TID")
            m = btf.find_member(st, head)
            if m is None:
                raise self.log.fail(ctx.offset, "NO_BTF_FIELD", ENOENT)
            bitoffs += m.anon_offset
            if st.kflag:  # btf_type_kflag of the outer type, as the kernel reads it
                bitoffs += m.raw_offset & 0xFFFFFF
                ctx.last_bitsize = m.raw_offset >> 24
            else:
                bitoffs += m.raw_offset
                ctx.last_bitsize = 0
            _, mt = btf.skip_modifiers(m.type_id)
            if mt is None:
                raise self.log.fail(ctx.offset, "BAD_BTF_TID")
            if nxt is not None:
                ctx.offset += len(head) + (2 if is_ptr else 1)
            if is_ptr or nxt is None:
                return bitoffs, nxt, mt
            name, st = nxt, mt

    def find_fetch_type_from_btf_type(self, ctx: ParseContext) -> str:
        """``find_fetch_type_from_btf_type``."""
        btf, t = self.env.btf, ctx.last_type
        assert btf is not None and t is not None
        if t.kind == INT:
            enc, boff, bits = btf.int_info(t)
            if not enc & 1 and bits not in (8, 16, 32, 64):
                ctx.last_bitsize = bits
                ctx.last_bitoffs += boff
        return btf.fetch_type(t.id)

    def check_prepare_btf_string_fetch(self, t: str, pc: list[int], code: list[FetchInsn],
                                       ctx: ParseContext) -> None:
        """``check_prepare_btf_string_fetch``: char[] as is, char * dereferenced, else an error."""
        btf, lt = self.env.btf, ctx.last_type
        assert btf is not None and lt is not None
        if btf.is_char_array(lt):
            return
        if btf.is_char_ptr(lt):  # the kernel reads lt->type without checking for a pointer
            c = pc[0] + 1
            if code[c].op == "END":
                raise self.log.fail(ctx.offset, "TOO_MANY_OPS", E2BIG)
            code[c].op, code[c].offset = ("UDEREF" if t[0] == "u" else "DEREF"), 0
            pc[0] = c
            return
        raise self.log.fail(ctx.offset, "BAD_TYPE4STR")

    # -- finalize_fetch_insn -------------------------------------------------------------------
    def finalize_fetch_insn(self, code: list[FetchInsn], c: int, ftype: str, t: str | None, count: int,
                  toff: int, ctx: ParseContext) -> tuple[str, ...]:
        size, is_string, _ = self.types[ftype]
        op = code[c].op
        if is_string:
            if ftype == "symstr":
                if op not in ("REG", "STACK", "RETVAL", "ARG", "DEREF", "TP_ARG"):
                    raise self.log.fail(ctx.offset + toff, "BAD_SYMSTRING")
            elif op not in ("DEREF", "UDEREF", "IMM", "COMM", "DATA", "TP_ARG"):  # not CURRENT/CPU_PTR
                raise self.log.fail(ctx.offset + toff, "BAD_STRING")
            if ftype == "symstr" or op in ("IMM", "COMM", "DATA", "TP_ARG") or count:
                c += 1
                if code[c].op != "NOP":
                    raise self.log.fail(ctx.offset, "TOO_MANY_OPS")
            if ftype == "ustring" or code[c].op == "UDEREF":
                code[c].op = "ST_USTRING"
            elif ftype == "symstr":
                code[c].op = "ST_SYMSTR"
            else:
                code[c].op = "ST_STRING"
        elif op == "DEREF":
            code[c].op = "ST_MEM"
        elif op == "UDEREF":
            code[c].op = "ST_UMEM"
        else:
            c += 1
            if code[c].op != "NOP":
                raise self.log.fail(ctx.offset, "TOO_MANY_OPS", E2BIG)
            code[c].op = "ST_RAW"
        scode = c
        if t is not None:
            if not parse_bitfield_probe_arg(t, size, code, c):
                raise self.log.fail(ctx.offset + toff, "BAD_BITFIELD")
            if t.startswith("b"):
                c += 1
        elif self.has("KPROBE_EVENTS_BTF_ARGS") and self.env.btf_args and ctx.last_type is not None:
            if not (ctx.last_bitsize % 8 == 0 and ctx.last_bitoffs == 0):  # parse_btf_bitfield
                c += 1
                if code[c].op != "NOP":
                    raise self.log.fail(ctx.offset, "TOO_MANY_OPS")
                code[c].op = "MOD_BF"
        if count:
            if code[scode].op not in ("ST_MEM", "ST_STRING", "ST_USTRING"):
                raise self.log.fail(ctx.offset + toff, "BAD_STRING")
            c += 1
            if code[c].op != "NOP":
                raise self.log.fail(ctx.offset, "TOO_MANY_OPS", E2BIG)
            code[c].op = "LP_ARRAY"
        return tuple(i.op for i in code[:c + 1])



# --- helpers ---------------------------------------------------------------------------------------
def parse_bitfield_probe_arg(t: str, size: int, code: list[FetchInsn], c: int) -> bool:
    """``__parse_bitfield_probe_arg``: ``b<width>@<offset>/<container>`` fits its container."""
    if not t.startswith("b"):
        return True
    bw, i = simple_strtoul(t[1:], 0)
    tail = t[1 + i:]
    if bw == 0 or not tail.startswith("@"):
        return False
    rest = tail[1:]
    bo, j = simple_strtoul(rest, 0)
    if j == 0 or rest[j:j + 1] != "/":
        return False
    if code[c + 1].op != "NOP":
        return False
    code[c + 1].op = "MOD_BF"
    return size * 8 >= bw + bo


def trace_probe_compare_arg_type(a: tuple[FetchArg, ...], b: tuple[FetchArg, ...]) -> int:
    """``trace_probe_compare_arg_type``: 0, or the 1-based position of the first difference."""
    if len(a) < len(b):
        return len(a) + 1
    if len(a) > len(b):
        return len(b) + 1
    for i, (x, y) in enumerate(zip(a, b)):
        if x.type_id != y.type_id or x.count != y.count or x.name != y.name:
            return i + 1
    return 0



def expand_dentry_arg(arg: str, d_name: int, f_dentry: int) -> str:
    """``traceprobe_expand_dentry_args`` (6.12): ``ARG:%pd`` / ``ARG:%pD`` to string fetches,
    with the offsets of ``dentry.d_name.name`` and ``file.f_path.dentry``."""
    m = re.fullmatch(r"(.*):%p([dD])", arg)
    if not m:
        return arg
    head, kind = m.group(1), m.group(2)
    name, eq, val = head.partition("=")
    target = val if eq else name
    prefix = f"{name}=" if eq else ""
    if kind == "d":
        return f"{prefix}+0x0(+0x{d_name:x}({target})):string"
    return f"{prefix}+0x0(+0x{d_name:x}(+0x{f_dentry:x}({target}))):string"


def render_fetch(code: list[FetchInsn], backend: "Backend") -> str:
    """The fetch program written back as a fetch argument, with this arch's register names."""
    out = ""
    i = 0
    while i < len(code):
        ins = code[i]
        op = ins.op
        if op in ("NOP", "END") or op.startswith("ST_") or op in ("MOD_BF", "LP_ARRAY"):
            break
        if op == "REG":
            out = f"%{ins.reg}"
        elif op == "STACK":
            out = f"$stack{ins.param}"
        elif op == "STACKP":
            out = "$stack"
        elif op == "RETVAL":
            out = "$retval"
        elif op == "COMM":
            out = "$comm"
        elif op == "CURRENT":
            out = "$current"
        elif op == "CPU_PTR":
            out = f"this_cpu_ptr({out})"
        elif op == "DATA":
            out = f'\\"{ins.data}"'
        elif op == "IMM":
            if i + 1 < len(code) and code[i + 1].op in ("DEREF", "CPU_PTR") and not out:
                out = f"@0x{ins.param:x}"
                if code[i + 1].op == "CPU_PTR":  # this_cpu_*(@ADDR)
                    out = f"this_cpu_ptr({out})"
                i += 2
                continue
            out = f"\\{ins.data}"
        elif op == "NOP_SYMBOL":
            out = f"@{ins.data}"
            if i + 2 < len(code) and code[i + 2].op == "CPU_PTR":  # this_cpu_*(@SYM)
                out = f"this_cpu_ptr({out})"
            i += 3  # NOP_SYMBOL, IMM, DEREF (or CPU_PTR)
            continue
        elif op in ("ARG", "EDATA"):
            out = argument_fetch(backend, ins.param)
        elif op in ("DEREF", "UDEREF"):
            u = "u" if op == "UDEREF" else ""
            sign = "-" if ins.offset < 0 else "+"
            out = f"{sign}{u}{abs(ins.offset)}({out})"
        i += 1
    return out


def argument_fetch(backend: "Backend", n: int) -> str:
    """What ``regs_get_kernel_argument(regs, n)`` reads (n is 0-based): ``%di``, ``$stack1``
    or ``0`` where the architecture reads no argument past its registers.

    >>> argument_fetch(X86_64Backend(), 6)         # doctest: +SKIP
    '$stack1'
    """
    regs = backend.arg_regs
    if n < len(regs):
        return f"%{regs[n]}"
    if backend.arg_stack_base is None:
        return "\\0"
    return f"$stack{backend.arg_stack_base + n - len(regs)}"

