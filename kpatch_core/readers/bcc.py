"""BCC Python tools: the kprobes and kfuncs a tool attaches, read with Python's ``ast``.

Found: ``attach_kprobe``/``attach_kretprobe`` calls with ``event=`` (a string, a variable
assigned one, or ``get_syscall_fnname("x")``) or ``event_re=`` (a regex BCC matches at run
time); in the embedded C text, functions named ``kprobe__NAME``/``kretprobe__NAME`` (BCC
attaches them by name) and ``KFUNC_PROBE(NAME``/``KRETFUNC_PROBE(NAME`` (fentry/fexit), with
placeholders the tool fills by ``str.replace`` resolved when the replacement is a constant.
Specs inside ``if BPF.support_kfunc()`` / ``if not is_support_kfunc`` branches are all kept:
the tool picks one set at run time, and the note says which.

>>> pf = read_bcc("opensnoop", open("/usr/sbin/opensnoop-bpfcc").read())  # doctest: +SKIP
"""
from __future__ import annotations

import ast
import re
import warnings
from typing import TYPE_CHECKING

from ..errors import InputError
from ..target import Target
from .probe_file import ProbeFile, ProbeSpec

if TYPE_CHECKING:
    from ..image import Image

# bcc/__init__.py BPF._syscall_prefixes (0.26): the first whose 'bpf' entry kallsyms has wins
BCC_SYSCALL_PREFIXES = ("sys_", "__x64_sys_", "__x32_compat_sys_", "__ia32_compat_sys_",
                        "__arm64_sys_", "__s390x_sys_", "__s390_sys_")
_C_PROBE = re.compile(r"\b(kprobe|kretprobe)__(\w+)\s*\(|\b(KFUNC_PROBE|KRETFUNC_PROBE)\(\s*(\w+)")


def syscall_fnname(image: Image, name: str) -> str:
    """BCC ``get_syscall_fnname``: the first prefix whose ``<prefix>bpf`` is in kallsyms."""
    prefix = next((p for p in BCC_SYSCALL_PREFIXES if image.kallsyms.count(p + "bpf")),
                  BCC_SYSCALL_PREFIXES[0])
    return prefix + name


def kprobe_functions(image: Image, regex: str) -> list[str]:
    """BCC ``get_kprobe_functions(event_re)``: kallsyms text names that ``re.match`` the
    regex, outside init text, not ``_kbl_addr_*``, ``__perf*``/``perf_*``, ``__SCT__*``,
    ``*.cold``, and not in the kprobe blacklist."""
    from ..spec import text_functions
    rx = re.compile(regex)
    black = {b.symbol for b in image.tables.blacklist}
    out = []
    for n in dict.fromkeys(text_functions(image)):
        if not rx.match(n) or n in black or n.startswith(("_kbl_addr_", "__perf", "perf_", "__SCT__")) \
                or re.match(r"^.*\.cold(\.\d+)?$", n):
            continue
        a = image.kallsyms.lookup(n)
        if a is not None and image.tables.is_init_text(a):
            continue
        out.append(n)
    return out


class _Walker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.consts: dict[str, ast.expr] = {}  # simple-name assignments (last wins)
        self.specs: list[ProbeSpec] = []
        self.unresolved: list[str] = []
        self.replacements: dict[str, list[ast.expr]] = {}
        self.strings: list[tuple[str, int]] = []
        self.kfunc_lines: set[int] = set()

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            if isinstance(t, ast.Name):
                self.consts[t.id] = node.value
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and ("__" in node.value or "PROBE(" in node.value):
            self.strings.append((node.value, node.lineno))

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "replace" and len(node.args) == 2 and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self.replacements.setdefault(node.args[0].value, []).append(node.args[1])
        if isinstance(f, ast.Attribute) and f.attr in ("attach_kprobe", "attach_kretprobe"):
            self._attach(node, f.attr == "attach_kretprobe")
        self.generic_visit(node)

    def value(self, e: ast.expr, depth: int = 0) -> tuple[str, str] | None:
        """('name', X) for a constant, ('syscall', X) for get_syscall_fnname(X), else None."""
        if depth > 5:
            return None
        if isinstance(e, ast.Constant) and isinstance(e.value, (str, bytes)):
            v = e.value.decode() if isinstance(e.value, bytes) else e.value
            return ("name", v)
        if isinstance(e, ast.Name) and e.id in self.consts:
            return self.value(self.consts[e.id], depth + 1)
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and \
                e.func.attr in ("decode", "encode"):
            return self.value(e.func.value, depth + 1)
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and \
                e.func.attr == "get_syscall_prefix":
            return ("prefix", "")
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            left, right = self.value(e.left, depth + 1), self.value(e.right, depth + 1)
            if left and right and right[0] == "name":
                if left[0] == "prefix":
                    return ("syscall", right[1])
                if left[0] == "name":
                    return ("name", left[1] + right[1])
            return None
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and \
                e.func.attr == "get_syscall_fnname" and e.args:
            inner = self.value(e.args[0], depth + 1)
            if inner and inner[0] == "name":
                return ("syscall", inner[1])
        return None

    def _attach(self, node: ast.Call, ret: bool) -> None:
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        fn = "attach_kretprobe" if ret else "attach_kprobe"
        kind = "r" if ret else "p"
        attach = "kretprobe" if ret else "kprobe"
        ev = kw.get("event", node.args[0] if node.args else None)
        if "event_re" in kw:
            v = self.value(kw["event_re"])
            if v and v[0] == "name":
                self.specs.append(ProbeSpec(Target(v[1], kind, symbol=v[1], attach=attach,
                                                   spelling=f'{fn}(event="{{}}")'),
                                            node.lineno, fn, regex=v[1]))
                return
            self.unresolved.append(f"line {node.lineno}: {fn}(event_re=...) not a constant")
            return
        v = self.value(ev) if ev is not None else None
        if v is None:
            self.unresolved.append(f"line {node.lineno}: {fn}(event=...) not known statically")
        elif v[0] == "syscall":
            self.specs.append(ProbeSpec(Target(v[1], kind, symbol=v[1], attach=attach,
                                               spelling=f'{fn}(event="{{}}")'),
                                        node.lineno, fn, bcc_syscall=v[1]))
        else:
            self.specs.append(ProbeSpec(Target(v[1], kind, symbol=v[1], attach=attach,
                                               spelling=f'{fn}(event="{v[1]}")'), node.lineno, fn))


def read_bcc(path: str, text: str) -> ProbeFile:
    """The kernel-function probes of a BCC Python tool; raises InputError on a syntax error."""
    try:
        with warnings.catch_warnings():  # the tool's own invalid escapes ('\.' in a regex)
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(text, filename=path)
    except SyntaxError as e:
        raise InputError(f"{path}:{e.lineno}: not valid Python ({e.msg}); "
                         "give a BCC tool, a bpftrace script, a BPF object or a targets list") from None
    w = _Walker()
    w.visit(tree)
    specs = list(w.specs)
    seen: set[tuple[str, str]] = set()
    for s, line in w.strings:
        for m in _C_PROBE.finditer(s):
            lineno = line + s.count("\n", 0, m.start())
            if m.group(1):
                attach, name = m.group(1), m.group(2)
                macro = f"{attach}__{name}"
            else:
                attach = "fentry" if m.group(3) == "KFUNC_PROBE" else "fexit"
                name, macro = m.group(4), f"{m.group(3)}({m.group(4)})"
            names = [name]
            if not re.match(r"^[a-z_]\w*$", name) or name.isupper():  # a placeholder: FNNAME
                names = []
                for rep in w.replacements.get(name, []):
                    v = w.value(rep)
                    if v and v[0] == "name":
                        names.append(v[1])
                    elif v and v[0] == "syscall":
                        names.append("\0" + v[1])
                if not names:
                    w.unresolved.append(f"line {lineno}: {macro}: {name} is filled in at run time")
                    continue
            for n in names:
                kind = "r" if attach in ("kretprobe", "fexit") else "p"
                key = (attach, n)
                if key in seen:
                    continue
                seen.add(key)
                if n.startswith("\0"):
                    specs.append(ProbeSpec(Target(n[1:], kind, symbol=n[1:], attach=attach,
                                                  spelling=macro.replace(name, "{}")),
                                           lineno, macro, bcc_syscall=n[1:]))
                else:
                    specs.append(ProbeSpec(Target(n, kind, symbol=n, attach=attach,
                                                  spelling=macro.replace(name, n)), lineno, macro,
                                           note="BPF.support_kfunc() path"
                                           if attach in ("fentry", "fexit") else ""))
    return ProbeFile(path, "bcc", tuple(specs), (), tuple(w.unresolved))
