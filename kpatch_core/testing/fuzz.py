"""Hostile inputs for ``kpatch-analyze`` and the harness that judges how the CLI takes them.

Each :class:`Case` is one command line plus the files it names (bytes, or a special file: FIFO,
directory, symlink loop, ``/dev/zero``...).  :func:`run_case` runs it in-process
(``kpatch_core.cli.main``) under a timer and :func:`problems` names what went wrong:

- ``traceback``: an exception escaped ``main`` (anything but a one-line error);
- ``hang``: the command did not finish within the timeout;
- ``exit``: an exit code outside {0, 1, 2};
- ``stderr``: an error (non-zero exit) reported on more or fewer than one line;
- ``accepted``: ``ok`` for an input the kernel refuses (``Case.must_refuse``).

The hypothesis strategies: :func:`elf_cases` (mutations of every testdata image: hostile
header and section sizes/offsets/addresses, truncation, wrong class/machine/magic),
:func:`special_file_cases`, :func:`target_cases`, :func:`event_cases`, :func:`config_cases`,
:func:`set_cases`, and :func:`any_case` drawing from all of them.

>>> from hypothesis import given
>>> @given(any_case())                                                 # doctest: +SKIP
... def test(case): assert not problems(case, run_case(case))
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import signal
import struct
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import attrs
from hypothesis import strategies as st

__all__ = ["IMAGES", "Case", "Result", "any_case", "config_cases", "elf_cases", "event_cases",
           "problems", "run_case", "set_cases", "special_file_cases", "target_cases"]

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"
# every testdata image, with a function each of them has (for commands that need a name)
IMAGES: tuple[tuple[str, str], ...] = (
    ("x86_64/vmlinux", "plain_func"), ("x86_64/vmlinux-6.12", "plain_func"),
    ("arm64/vmlinux-6.1", "plain_func"), ("arm64/vmlinux-6.12", "plain_func"),
    ("arm64/vmlinux-6.12-callops", "plain_func"),
    ("riscv64/vmlinux-6.1", "plain_func"), ("riscv64/vmlinux-6.12", "plain_func"),
    ("s390x/vmlinux", "plain_func"), ("s390x/vmlinux-6.12", "plain_func"),
    ("ppc64le/vmlinux", "plain_func"), ("ppc64le/vmlinux-6.12", "plain_func"),
)
SPECIALS = ("fifo", "dir", "loop", "devzero", "devnull", "missing", "empty")
U64 = 1 << 64
# digits Python's int() takes and the kernel's kstrtox does not
UNICODE_DIGITS = "\u0664\u0661\u06f3\u0967\uff11\u2467\U0001d7d8\u00b2"


@attrs.frozen
class Case:
    """One command line (``@name`` tokens are files of ``files``) and what it must not do."""

    kind: str
    argv: tuple[str, ...]
    files: tuple[tuple[str, bytes | str], ...] = ()  # name -> bytes, or a SPECIALS kind
    must_refuse: bool = False
    note: str = ""


@attrs.frozen
class Result:
    """What the CLI did with a :class:`Case`."""

    code: int | None
    stdout: str
    stderr: str
    traceback: str | None = None
    hang: bool = False


class _Hang(BaseException):
    """Raised by the timer (a BaseException: ``except Exception`` in the code under test must
    not swallow it)."""


def _alarm(signum: int, frame: object) -> None:
    raise _Hang()


def _materialise(case: Case, d: str) -> list[str]:
    paths: dict[str, str] = {}
    for name, content in case.files:
        p = os.path.join(d, name)
        if isinstance(content, bytes):
            with open(p, "wb") as f:
                f.write(content)
        elif content == "fifo":
            os.mkfifo(p)
        elif content == "dir":
            os.mkdir(p)
        elif content == "loop":
            os.symlink(p + ".b", p)
            os.symlink(p, p + ".b")
        elif content == "devzero":
            p = "/dev/zero"
        elif content == "devnull":
            p = "/dev/null"
        elif content == "empty":
            open(p, "wb").close()
        # "missing": the path stays absent
        paths[name] = p
    out = []
    for a in case.argv:
        for name, p in paths.items():
            a = a.replace("@" + name, p)
        out.append(a)
    return out


def run_case(case: Case, timeout: float = 20.0) -> Result:
    """Run ``case`` with ``kpatch_core.cli.main`` in this process (results cache off, one job),
    stopped by SIGALRM after ``timeout`` seconds."""
    from kpatch_core.cli import main
    os.environ["KPATCH_CACHE"] = "off"
    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory(prefix="kpatch-fuzz-") as d:
        argv = _materialise(case, d)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
            signal.setitimer(signal.ITIMER_REAL, 0)
            return Result(code, out.getvalue(), err.getvalue())
        except _Hang:
            return Result(None, out.getvalue(), err.getvalue(), hang=True)
        except SystemExit as e:  # argparse --help/--version
            signal.setitimer(signal.ITIMER_REAL, 0)
            return Result(e.code if isinstance(e.code, int) else 2, out.getvalue(), err.getvalue())
        except BaseException:  # noqa: BLE001 - the point: anything that escapes is a finding
            signal.setitimer(signal.ITIMER_REAL, 0)
            return Result(None, out.getvalue(), err.getvalue(), traceback=traceback.format_exc())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


_OK_LINE = re.compile(r"^(?:\S.*?\s+ok\s|accepted\b)", re.MULTILINE)


def problems(case: Case, r: Result) -> list[str]:
    """The kinds of failure ``r`` shows for ``case`` (empty: handled well)."""
    out = []
    if r.hang:
        return ["hang"]
    # the timer firing inside an interpreter callback (gc) on a starved machine is ignored there
    # and printed ("Exception ignored in ... _Hang"): the command went on and finished, so that
    # is neither a traceback of the CLI nor a hang
    stderr = r.stderr if "fuzz._Hang" not in r.stderr else r.stderr.split("Exception ignored")[0] \
        + r.stderr.split("fuzz._Hang: \n", 1)[-1]
    if r.traceback is not None or "Traceback (most recent call last)" in stderr:
        return ["traceback"]
    if r.code not in (0, 1, 2):
        out.append("exit")
    if r.code and stderr.count("\n") != 1:
        out.append("stderr")
    if case.must_refuse and r.code == 0 and _OK_LINE.search(r.stdout):
        out.append("accepted")
    return out


# --- ELF mutations ---------------------------------------------------------------------------
_HOSTILE = (0, 1, 7, 0x40, 0xFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 48,
            (1 << 63) - 1, 1 << 63, U64 - 0x1000, U64 - 64, U64 - 1)


def _shdr_layout(data: bytes) -> tuple[str, int, int, int] | None:
    """(endian, e_shoff, e_shentsize, e_shnum) of a 64-bit ELF, None when unreadable."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return None
    e = "<" if data[5] == 1 else ">"
    shoff, = struct.unpack_from(e + "Q", data, 0x28)
    shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
    return e, shoff, shentsize, shnum


# (field, offset in the ELF header, struct format)
_EHDR_FIELDS = (("e_type", 0x10, "H"), ("e_machine", 0x12, "H"), ("e_entry", 0x18, "Q"),
                ("e_phoff", 0x20, "Q"), ("e_shoff", 0x28, "Q"), ("e_ehsize", 0x34, "H"),
                ("e_phentsize", 0x36, "H"), ("e_phnum", 0x38, "H"), ("e_shentsize", 0x3A, "H"),
                ("e_shnum", 0x3C, "H"), ("e_shstrndx", 0x3E, "H"))
# (field, offset in a section header, struct format)
_SHDR_FIELDS = (("sh_name", 0, "I"), ("sh_type", 4, "I"), ("sh_flags", 8, "Q"), ("sh_addr", 16, "Q"),
                ("sh_offset", 24, "Q"), ("sh_size", 32, "Q"), ("sh_link", 40, "I"),
                ("sh_info", 44, "I"), ("sh_addralign", 48, "Q"), ("sh_entsize", 56, "Q"))


@functools.cache
def _table_symbols(rel: str) -> tuple[tuple[int, int], ...]:
    """(file offset of st_value, value) of the linker symbols bounding kernel tables and text
    (``__start_*``, ``__stop_*``, ``_stext``, ``_etext``, ``__*_end``...) in a testdata image."""
    import io as _io

    from elftools.elf.elffile import ELFFile
    elf = ELFFile(_io.BytesIO((TESTDATA / rel).read_bytes()))
    st = elf.get_section_by_name(".symtab")
    if st is None:
        return ()
    out = []
    for i, s in enumerate(st.iter_symbols()):  # type: ignore[attr-defined]  # a SymbolTableSection
        if s.name.startswith(("__start", "__stop", "_stext", "_etext", "_sinittext", "_einittext")) \
                or (s.name.startswith("__") and s.name.endswith(("_start", "_end"))):
            out.append((st["sh_offset"] + i * st["sh_entsize"] + 8, s["st_value"]))
    return tuple(out)


def _put(data: bytearray, off: int, fmt: str, e: str, value: int) -> None:
    size = struct.calcsize(fmt)
    if 0 <= off and off + size <= len(data):
        struct.pack_into(e + fmt, data, off, value & ((1 << (8 * size)) - 1))


@st.composite
def mutated_elf(draw: st.DrawFn, image: str | None = None) -> tuple[bytes, str, str, bool]:
    """(bytes, image path, a function name, must_refuse) for one mutation of a testdata image."""
    rel, name = (image, "plain_func") if image else draw(st.sampled_from(IMAGES))
    data = bytearray((TESTDATA / rel).read_bytes())
    lay = _shdr_layout(bytes(data))
    assert lay is not None
    e, shoff, shentsize, shnum = lay
    kind = draw(st.sampled_from(("ehdr", "shdr", "shdr", "shdr", "truncate", "class", "machine",
                                 "magic", "bytes", "symtab", "tablesym", "tablesym")))
    refuse = False
    if kind == "ehdr":
        _, off, fmt = draw(st.sampled_from(_EHDR_FIELDS))
        _put(data, off, fmt, e, draw(st.sampled_from(_HOSTILE) | st.integers(0, 1 << 16)))
    elif kind in ("shdr", "symtab"):
        k = draw(st.integers(0, max(shnum - 1, 0)))
        for _ in range(draw(st.integers(1, 3))):
            _, off, fmt = draw(st.sampled_from(_SHDR_FIELDS))
            value = draw(st.sampled_from(_HOSTILE) | st.integers(0, len(data) + 4096))
            _put(data, shoff + k * shentsize + off, fmt, e, value)
    elif kind == "tablesym":  # a table's (or text's) bound symbol moved: past its section...
        syms = _table_symbols(rel)
        if syms:
            off, value = draw(st.sampled_from(syms))
            delta = draw(st.sampled_from((8, 0x1000, 0x100000, 1 << 40, -0x1000, -(1 << 40))))
            _put(data, off, "Q", e, draw(st.sampled_from((value + delta, 0, U64 - 8))))
    elif kind == "truncate":
        n = draw(st.integers(0, len(data) - 1))
        del data[n:]
        refuse = n < shoff + shnum * shentsize  # section headers cut: nothing to analyse
    elif kind == "class":
        data[4] = draw(st.sampled_from((0, 1, 3, 0xFF)))
        refuse = True
    elif kind == "machine":
        _put(data, 0x12, "H", e, draw(st.sampled_from((0, 3, 8, 40, 0x101, 0xFFFF))))
        refuse = True
    elif kind == "magic":
        data[draw(st.integers(0, 3))] ^= draw(st.integers(1, 255))
        refuse = True
    else:  # random bytes somewhere (tables, code, symbol names)
        for _ in range(draw(st.integers(1, 8))):
            p = draw(st.integers(0x40, len(data) - 1))
            data[p] = draw(st.integers(0, 255))
    return bytes(data), rel, name, refuse


@st.composite
def elf_cases(draw: st.DrawFn) -> Case:
    """A mutated testdata image given to ``summary``, ``check``, ``func`` or ``event``."""
    data, rel, name, refuse = draw(mutated_elf())
    cmd = draw(st.sampled_from(("check", "check", "summary", "func", "event")))
    argv: tuple[str, ...]
    if cmd == "check":
        argv = ("check", "@img", name, f"{name}+1", "0x1000")
    elif cmd == "summary":
        argv = ("summary", "@img", "--jobs", "1", "--no-progress", "--no-cache")
    elif cmd == "func":
        argv = ("func", "@img", name, "--no-cache")
    else:
        argv = ("event", "@img", f"p:ev {name} $arg1")
    return Case("elf", argv, (("img", data),), refuse, f"{rel} {cmd}")


# --- special files ---------------------------------------------------------------------------
@st.composite
def special_file_cases(draw: st.DrawFn) -> Case:
    """A FIFO, directory, symlink loop, /dev/zero... where the image, a config file or a targets
    file is expected: always an error, never a block or a traceback."""
    kind = draw(st.sampled_from(SPECIALS))
    where = draw(st.sampled_from(("image", "config", "targets", "other")))
    img = str(TESTDATA / draw(st.sampled_from(IMAGES))[0])
    argv: tuple[str, ...]
    if where == "image":
        argv = (draw(st.sampled_from(("check", "summary", "func", "event"))), "@f")
        argv += {"check": ("plain_func",), "summary": ("--jobs", "1", "--no-progress"),
                 "func": ("plain_func",), "event": ("p plain_func",)}[argv[0]]
    elif where == "config":
        argv = ("check", img, "plain_func", "--config", "@f")
    elif where == "targets":
        argv = ("check", img, "--targets", "@f")
    else:
        argv = ("event", img, "p plain_func", "--arch", "@f")
    # /dev/null as a targets file is an empty list (a usage error), still refused
    return Case("special", argv, (("f", kind),), True, f"{kind} as {where}")


# --- target strings --------------------------------------------------------------------------
def _number(draw: st.DrawFn, big: bool) -> tuple[str, int | None, bool]:
    """(text, value or None, non-ASCII) of a number as a user might write it."""
    v = draw(st.integers(U64, U64 << 8) if big else st.integers(0, 1 << 20) | st.sampled_from(
        (0, 1, 4, 0x7FFFFFFFFFFFFFFF, U64 - 1)))
    form = draw(st.sampled_from(("dec", "hex", "HEX", "oct", "unicode")))
    if form == "dec":
        return str(v), v, False
    if form == "hex":
        return hex(v), v, False
    if form == "HEX":
        return "0X" + format(v, "X"), v, False
    if form == "oct":
        return "0" + format(v, "o"), v, False
    s = list(str(v))
    s[draw(st.integers(0, len(s) - 1))] = draw(st.sampled_from(UNICODE_DIGITS))
    return "".join(s), None, True


@st.composite
def target_strings(draw: st.DrawFn) -> tuple[str, bool]:
    """(target text, must_refuse): symbols, SYM+OFF, addresses, with huge and non-ASCII numbers."""
    shape = draw(st.sampled_from(("sym", "symoff", "addr", "text", "mod")))
    if shape == "text":
        t = draw(st.text(min_size=1, max_size=24).filter(lambda s: s.strip() and "#" not in s))
        # a MOD:SYM of a module not loaded is accepted as pending by kprobe_events
        return t, not t.isascii() and ":" not in t
    sym = draw(st.sampled_from(("plain_func", "plain_loop", "dup_static", "__switch_to",
                                "no_such_sym", "_stext", "plain_func.isra.0")))
    if shape == "sym":
        return sym, False
    big = draw(st.booleans())
    num, v, uni = _number(draw, big)
    if shape == "addr":
        # the kernel: kstrtoul -> ERANGE for 2^64 and more; non-ASCII digits are no number
        return num, uni or big
    if shape == "mod":
        return f"mod:{sym}+{num}", uni or big
    sign = draw(st.sampled_from("+-"))
    # kstrtol refuses more than LONG_MAX; an offset of 4 GiB or more leaves any kernel's text
    return f"{sym}{sign}{num}", uni or big or (v is not None and v >= 1 << 32)


@st.composite
def target_cases(draw: st.DrawFn) -> Case:
    """``check`` with hostile targets, on the command line or in a targets file (also not UTF-8)."""
    img = str(TESTDATA / draw(st.sampled_from(IMAGES))[0])
    t, refuse = draw(target_strings())
    prefix = draw(st.sampled_from(("", "r ", "p ", "r:")))
    how = draw(st.sampled_from(("arg", "arg", "file", "badfile")))
    if how == "arg":
        return Case("target", ("check", img, prefix + t), (), refuse, t)
    if how == "file":
        body = (prefix + t + "\n").encode("utf-8", "surrogatepass")
        return Case("target", ("check", img, "--targets", "@t"), (("t", body),), refuse, t)
    junk = draw(st.binary(min_size=1, max_size=8).filter(lambda b: not _utf8(b)))
    body = b"plain_func\n" + junk + t.encode("utf-8", "surrogatepass") + b"\n"
    return Case("target", ("check", img, "--targets", "@t"), (("t", body),), True, "not UTF-8")


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --- kprobe_events lines ---------------------------------------------------------------------
_ARGS = ("$arg1", "$arg2", "$retval", "$stack", "$stack0", "$comm", "%di", "%x0", "%r2", "%a0",
         "%r3", "+0($arg1)", "+8(%sp)", "@jiffies", "$arg1:u32", "+0($arg1):string", "x=$arg1",
         "\\1", "\\\"s\"")


@st.composite
def event_lines(draw: st.DrawFn) -> tuple[str, bool]:
    """(kprobe_events line, must_refuse): probe points and fetch args with hostile numbers."""
    kind = draw(st.sampled_from(("p", "r", "-", "p:ev", "p:grp/ev", "r5:ev", "p:g/")))
    t, refuse = draw(target_strings())
    args = list(draw(st.lists(st.sampled_from(_ARGS), max_size=3)))
    if draw(st.booleans()):
        big = draw(st.booleans())
        num, _, uni = _number(draw, big)
        form = draw(st.sampled_from(("+{}($arg1)", "$arg{}", "$stack{}", "\\{}", "@{}")))
        args.append(form.format(num))
        # kstrtox: ERANGE for 2^64 and more, no non-ASCII digits; but '@' + a non-digit is a
        # symbol name, looked up at registration (-ENOENT, which a MOD:SYM probe defers)
        refuse = refuse or big or (uni and form != "@{}")
    if kind == "-":
        return f"-:{draw(st.sampled_from(('ev', 'kprobes/ev', '')))}", False
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40)), False
    return " ".join([kind, t, *args]), refuse


@st.composite
def event_cases(draw: st.DrawFn) -> Case:
    """``event`` with one or two hostile lines."""
    img = str(TESTDATA / draw(st.sampled_from(IMAGES))[0])
    lines = draw(st.lists(event_lines(), min_size=1, max_size=1))
    refuse = any(r for _, r in lines)
    argv = ("event", img, *[ln for ln, _ in lines])
    if any(ln.startswith("-") for ln, _ in lines):  # an option-looking line: a usage error at most
        argv = ("event", img, "--", *[ln for ln, _ in lines])
    return Case("event", argv, (), refuse, " | ".join(ln for ln, _ in lines))


# --- config files and --set ------------------------------------------------------------------
_FACTS = ("KPROBES_ON_FTRACE", "OPTPROBES", "PREEMPTION", "DYNAMIC_FTRACE", "X86_KERNEL_IBT",
          "KPROBE_EVENTS_ON_NOTRACE", "KALLSYMS_ALL", "RUNTIME_RETHUNK")


@st.composite
def config_cases(draw: st.DrawFn) -> Case:
    """``--config`` files: real-looking lines, junk, NULs, bytes that are not UTF-8."""
    img = str(TESTDATA / draw(st.sampled_from(IMAGES))[0])
    line = st.one_of(
        st.builds(lambda n, v: f"CONFIG_{n}={v}", st.sampled_from(_FACTS) | st.text(
            "ABCXYZ_019", min_size=1, max_size=12), st.sampled_from(("y", "n", "m", "", "\"s\"",
                                                                     "0x10", "\u0664"))),
        st.builds(lambda n: f"# CONFIG_{n} is not set", st.sampled_from(_FACTS)),
        st.text(max_size=30))
    body = "\n".join(draw(st.lists(line, max_size=8))).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        body += draw(st.binary(max_size=32))
    cmd = draw(st.sampled_from(("check", "func")))
    argv = (cmd, img, "plain_func", "--config", "@c") + (("--no-cache",) if cmd == "func" else ())
    return Case("config", argv, (("c", body),), False, "config")


@st.composite
def set_cases(draw: st.DrawFn) -> Case:
    """``--set FACT=V``: known and unknown facts, good and bad values."""
    img = str(TESTDATA / draw(st.sampled_from(IMAGES))[0])
    name = draw(st.sampled_from(_FACTS + ("PREEMPTON", "CONFIG_OPTPROBES", "", "X=Y", "\u0664"))
                | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=10))
    val = draw(st.sampled_from(("y", "n", "Y", "1", "0", "yes", "no", "", "m", "maybe")))
    from kpatch_core.config import DEFAULTS, SYMBOL_EVIDENCE
    unknown = name.removeprefix("CONFIG_") not in {*SYMBOL_EVIDENCE, *DEFAULTS}
    bad_val = val.lower() not in ("y", "n", "1", "0", "yes", "no")
    # an arch's runtime facts (RUNTIME_LSE_ATOMICS, RUNTIME_RISCV_ZBB) are known too: only
    # names no arch defines count as must-refuse
    refuse = bad_val or (unknown and not name.startswith("RUNTIME_"))
    return Case("set", ("check", img, "plain_func", "--set", f"{name}={val}"), (), refuse,
                f"--set {name}={val}")


def any_case() -> st.SearchStrategy[Case]:
    """One case of any kind (weighted towards the cheap ones)."""
    return st.one_of(target_cases(), target_cases(), event_cases(), event_cases(), elf_cases(),
                     elf_cases(), special_file_cases(), config_cases(), set_cases())


def iter_kinds() -> Iterator[str]:
    """The case kinds, for reports."""
    yield from ("elf", "special", "target", "event", "config", "set")
