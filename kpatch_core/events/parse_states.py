"""The loop-based fetch argument parser of kernel/trace/trace_probe.c (7.3, feature
EVENTS_NESTED_PARSE_STATES): ``parse_probe_arg`` peels the nested layers of an argument
(dereferences ``+OFFS(...)``, typecasts ``(STRUCT[,FIELD])...->FIELD``, ``this_cpu_ptr(...)`` /
``this_cpu_read(...)``) onto a stack of at most TRACEPROBE_MAX_NESTED_LEVEL parse states
(``parse_probe_arg_nested``), parses the innermost leaf (``parse_probe_arg_leaf``, the
parser's :meth:`~.trace_probe.TraceProbeParser.parse_probe_arg_leaf`) and builds the fetch
program outwards (``unwind_parse_states``).

The kernel's caret offsets, checks and their order are kept; error ids come from the kernel's
features (TOO_MANY_NESTED, TYPECAST_*, NOSUP_PERCPU).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..kstrtox import kstrtol
from .error_log import E2BIG, EOPNOTSUPP, TRACEPROBE_MAX_NESTED_LEVEL

if TYPE_CHECKING:
    from .trace_probe import FetchInsn, ParseContext, TraceProbeParser

THIS_CPU_PTR_PREFIX = "this_cpu_ptr("
THIS_CPU_READ_PREFIX = "this_cpu_read("


@attrs.frozen
class DerefState:
    """``struct parse_state`` STATE_DEREF: one ``+OFFS(`` / ``-OFFS(`` / ``+uOFFS(`` /
    ``this_cpu_*(`` layer."""

    deref: str  # 'DEREF', 'UDEREF' or 'CPU_PTR'
    offset: int
    cur_offs: int  # the caret offset of the layer's inner argument
    inner_arg: str
    is_cpu_read: bool = False


@attrs.frozen
class TypecastState:
    """``struct parse_state`` STATE_TYPECAST: one ``(STRUCT[,FIELD])INNER->FIELDS`` layer."""

    casttype: str  # 'STRUCT' or 'STRUCT,FIELD'
    fieldname: str
    orig_offset: int  # the caret offset of the '('
    field_offset_diff: int  # where the field names start, from the '('
    inner_arg: str


def _is_nested(arg: str) -> bool:
    return arg[:1] in ("+", "-", "(") or arg.startswith((THIS_CPU_PTR_PREFIX, THIS_CPU_READ_PREFIX))


def _find_matched_close_paren(s: str) -> int:
    """``find_matched_close_paren``: the index of the ')' closing the first '(' of ``s``, -1."""
    count = 0
    for i, ch in enumerate(s):
        if ch == "(":
            count += 1
        elif ch == ")":
            count -= 1
            if count == 0:
                return i
    return -1


def parse_probe_arg_states(p: "TraceProbeParser", arg: str, pc: list[int], end: int,
                           code: list["FetchInsn"], ctx: "ParseContext") -> None:
    """``parse_probe_arg`` (loop-based): nested layers, the leaf, then the layers' fetch ops."""
    states: list[DerefState | TypecastState] = []
    arg = parse_probe_arg_nested(p, arg, states, ctx)
    p.parse_probe_arg_leaf(arg, pc, end, code, ctx)
    unwind_parse_states(p, states, pc, end, code, ctx)


def parse_probe_arg_nested(p: "TraceProbeParser", arg: str,
                           states: list[DerefState | TypecastState], ctx: "ParseContext") -> str:
    """``parse_probe_arg_nested``: push each nested layer; the innermost argument is returned."""
    while _is_nested(arg):
        if len(states) >= TRACEPROBE_MAX_NESTED_LEVEL:
            raise p.log.fail(ctx.offset, "TOO_MANY_NESTED", E2BIG)
        state: DerefState | TypecastState
        if arg[0] in "+-":
            state = parse_probe_arg_deref(p, arg, ctx)
        elif arg[0] == "(":
            state = handle_typecast(p, arg, ctx)
        else:
            state = parse_this_cpu(p, arg, ctx)
        states.append(state)
        arg = state.inner_arg
    return arg


def parse_probe_arg_deref(p: "TraceProbeParser", arg: str, ctx: "ParseContext") -> DerefState:
    """``parse_probe_arg_deref``: ``+OFFS(INNER)``, ``-OFFS(INNER)``, ``+uOFFS(INNER)``."""
    deref = "DEREF"
    if arg[1:2] == "u":
        deref = "UDEREF"
        arg = arg[0] + arg[2:]
    if arg[0] == "+":
        arg = arg[1:]  # kstrtol() rejects '+'
    lp = arg.find("(")
    if lp < 0:
        raise p.log.fail(ctx.offset, "DEREF_NEED_BRACE")
    off, err = kstrtol(arg[:lp], 0)
    if off is None:
        raise p.log.fail(ctx.offset, "BAD_DEREF_OFFS", err)
    ctx.offset += (lp + 1) + (1 if arg[0] != "-" else 0)
    inner = arg[lp + 1:]
    rp = inner.rfind(")")
    if rp < 0:
        raise p.log.fail(ctx.offset + len(inner), "DEREF_OPEN_BRACE")
    return DerefState(deref, off, ctx.offset, inner[:rp])  # text after the last ')' is ignored


def parse_this_cpu(p: "TraceProbeParser", arg: str, ctx: "ParseContext") -> DerefState:
    """``parse_this_cpu``: ``this_cpu_ptr(INNER)`` / ``this_cpu_read(INNER)``."""
    if "KERNEL" not in ctx.flags or "TEVENT" in ctx.flags:
        raise p.log.fail(ctx.offset, "NOSUP_PERCPU")
    is_read = arg.startswith(THIS_CPU_READ_PREFIX)
    n = len(THIS_CPU_READ_PREFIX if is_read else THIS_CPU_PTR_PREFIX)
    arg = arg[n:]
    ctx.offset += n
    rp = arg.rfind(")")
    if rp < 0:
        raise p.log.fail(ctx.offset + len(arg), "DEREF_OPEN_BRACE")
    return DerefState("CPU_PTR", 0, ctx.offset, arg[:rp], is_read)


def handle_typecast(p: "TraceProbeParser", arg: str, ctx: "ParseContext") -> TypecastState:
    """``handle_typecast``: split ``(CAST)INNER->FIELDS`` (INNER a variable, ``(ARG)``, a
    dereference or a this_cpu_*())."""
    orig_offset = ctx.offset
    if not (p.has("EVENTS_KPROBE_TYPECAST") and p.env.btf_args) or \
            not ("TEVENT" in ctx.flags or ctx.entry() or ctx.ret()):
        raise p.log.fail(ctx.offset, "NOSUP_BTFARG", EOPNOTSUPP)
    rp = arg.find(")")
    if rp < 0:
        raise p.log.fail(ctx.offset + len(arg), "DEREF_OPEN_BRACE")
    casttype = arg[1:rp]
    t0 = rp + 1  # index of the inner argument in arg
    tmp = arg[t0:]
    ctx.offset += t0
    if tmp[:1] == "(":
        close = _find_matched_close_paren(tmp)
        if close < 0:
            raise p.log.fail(ctx.offset, "DEREF_OPEN_BRACE")
        if tmp[close + 1:close + 3] != "->":
            raise p.log.fail(ctx.offset + close + 1, "TYPECAST_REQ_FIELD")
        ctx.offset += 1
        inner, field_at = tmp[1:close], t0 + close + 3
    elif tmp[:1] in ("+", "-") or tmp.startswith((THIS_CPU_PTR_PREFIX, THIS_CPU_READ_PREFIX)):
        open_ = tmp.find("(", 1)
        if open_ < 0:
            raise p.log.fail(ctx.offset, "DEREF_NEED_BRACE")
        close = _find_matched_close_paren(tmp[open_:])
        if close < 0:
            raise p.log.fail(ctx.offset + len(tmp), "DEREF_OPEN_BRACE")
        close += open_ + 1
        if tmp[close:close + 2] != "->":
            raise p.log.fail(ctx.offset + close, "TYPECAST_REQ_FIELD")
        inner, field_at = tmp[:close], t0 + close + 2
    else:
        if tmp[:1] == "@":  # @SYM+OFFS must be in parentheses
            i = next((k for k, ch in enumerate(tmp) if ch in "+-"), -1)
            if i >= 0 and tmp[i + 1:i + 2].isdigit() and tmp[i + 1:i + 2].isascii():
                raise p.log.fail(ctx.offset, "TYPECAST_SYM_OFFSET")
        close = tmp.find("-")
        if close < 0 or tmp[close + 1:close + 2] != ">":
            raise p.log.fail(ctx.offset + len(tmp), "TYPECAST_REQ_FIELD")
        inner, field_at = tmp[:close], t0 + close + 2
    return TypecastState(casttype, arg[field_at:], orig_offset, field_at, inner)


def unwind_parse_states(p: "TraceProbeParser", states: list[DerefState | TypecastState],
                        pc: list[int], end: int, code: list["FetchInsn"],
                        ctx: "ParseContext") -> None:
    """``unwind_parse_states``: the fetch ops of each layer, innermost first."""
    for state in reversed(states):
        if isinstance(state, DerefState):
            c = pc[0]
            ctx.offset = state.cur_offs
            if code[c].op in ("COMM", "DATA"):
                raise p.log.fail(ctx.offset, "COMM_CANT_DEREF")
            if not (state.deref == "CPU_PTR" and state.inner_arg[:1] == "@"):
                c += 1  # this_cpu_*(@SYM) turns @SYM's load into the per-cpu address
                if c == end:
                    raise p.log.fail(ctx.offset, "TOO_MANY_OPS")
            pc[0] = c
            code[c].op, code[c].offset = state.deref, state.offset
            ctx.last_type = None
            if state.is_cpu_read:
                c += 1
                if c == end:
                    raise p.log.fail(ctx.offset, "TOO_MANY_OPS")
                code[c].op, code[c].offset = "DEREF", 0
                pc[0] = c
        else:
            ctx.struct_btf = False  # clear_struct_btf
            ctx.offset = state.orig_offset + 1  # the '('
            parse_btf_casttype(p, state.casttype, ctx)
            ctx.offset = state.orig_offset + state.field_offset_diff
            try:
                assert ctx.last_struct is not None
                p.parse_btf_field(state.fieldname, ctx.last_struct, pc, end, code, ctx)
            finally:
                ctx.prefix_byteoffs = 0


def parse_btf_casttype(p: "TraceProbeParser", casttype: str, ctx: "ParseContext") -> None:
    """``parse_btf_casttype``: the struct named by the cast (``query_btf_struct``) and the byte
    offset of its ``,FIELD`` option (what the pointer points at inside the struct)."""
    name, comma, field = casttype.partition(",")
    btf = p.env.btf
    st = btf.struct_named(name) if btf is not None else None
    if st is None:
        raise p.log.fail(ctx.offset, "NO_PTR_STRCT")
    ctx.struct_btf, ctx.last_struct = True, st
    if comma:
        ctx.offset += len(name) + 1
        bitoffs, rest, _ = p.get_bitoffset_of_field(field, st, ctx)
        if bitoffs % 8:
            raise p.log.fail(ctx.offset, "TYPECAST_NOT_ALIGNED")
        if rest is not None:  # the field option went through '->'
            raise p.log.fail(ctx.offset - 2, "TYPECAST_BAD_ARROW")
        ctx.prefix_byteoffs = bitoffs // 8
