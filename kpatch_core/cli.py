"""``kpatch-analyze``: argument parsing and printing only.

    kpatch-analyze VMLINUX [VMLINUX ...] [--json] [--html FILE]   full analysis (summary)
    kpatch-analyze func VMLINUX NAME [--json] [--slots] [--optimized] one function, per instruction
    kpatch-analyze diff OLD NEW [--json]                            what changed between kernels
    kpatch-analyze check VMLINUX [TARGET ...] [--targets FILE] [--json] [--config FILE]
"""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

import importlib
from types import ModuleType

from .cmdline import add_image_args, open_image
from .errors import KpatchError, UsageError

# subcommand -> (module of kpatch_core, its parser hook, its run function).  Only the module of
# the command given is imported (a cold `check` does not load the full analysis, the events
# layer or the matrix); --help and errors before a command load them all.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "summary": ("analyze_cmd", "add_parsers", "run_summary"),
    "func": ("analyze_cmd", "add_parsers", "run_func"),
    "diff": ("analyze_cmd", "add_parsers", "run_diff"),
    "event": ("event_cmd", "add_parser", "run"),
    "list": ("list_cmd", "add_parser", "run"),
    "matrix": ("matrix_cmd", "add_parser", "run"),
    "uprobe": ("uprobe_cmd", "add_parser", "run"),
    "modules": ("module_cmd", "add_parser", "run"),
}
COMMANDS = ("check", *SUBCOMMANDS)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f".{name}", __package__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``only``: just that command's subparser (the others' modules are
    not imported)."""
    p = _Parser(prog="kpatch-analyze",
                description="Offline kprobe placement: where the kernel accepts a kprobe, how it "
                            "runs it, and why it refuses it.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"kpatch-analyze {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    if only in (None, "check"):
        _add_check_parser(sub)
    # each module once, in table order (the help lists the commands as before)
    for mod, add in dict.fromkeys((m, a) for c, (m, a, _) in SUBCOMMANDS.items() if only in (None, c)):
        getattr(_module(mod), add)(sub)
    return p


def _add_check_parser(sub: "argparse._SubParsersAction") -> None:
    c = sub.add_parser("check", help="verdicts for probe targets",
                       description="Verdicts for probe targets, registered together in the order "
                                   "given (limits such as ppc64le's optprobe detour buffers apply "
                                   "across them).")
    add_image_args(c)
    c.add_argument("targets", nargs="*", metavar="TARGET",
                   help="SYM, SYM+OFF, 0xADDR or MOD:SYM; prefix 'r ' (quoted) for a return probe")
    c.add_argument("--targets", dest="targets_file", metavar="FILE",
                   help="file with one target per line ('#' comments, 'r ' return probes)")
    c.add_argument("--from", dest="from_file", metavar="FILE",
                   help="read the probes a tool file asks for: bpftrace script, BCC tool, libbpf "
                        "object (or a binary embedding one), or a targets list")
    c.add_argument("--json", action="store_true", help="one JSON object per target")
    _module("module_cmd").add_module_args(c)  # --module/--modules: MOD:SYM checked


def _cmd_check(args: argparse.Namespace) -> int:
    from . import check_report
    return check_report.run(args, _module("module_cmd").opener(open_image))  # targets, --targets, --from; verdicts; name help


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kpatch-analyze``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "modules" if "--modules" in argv else "summary")
    try:
        args, extra = _parser(argv[0] if argv and argv[0] in COMMANDS else None) \
            .parse_known_args(argv)
        # targets may follow options (`check VMLINUX --json T`): argparse leaves them over
        bad = [a for a in extra if a.startswith("-") or args.command not in ("check", "uprobe")]
        if bad:
            raise UsageError(f"unrecognized arguments: {' '.join(bad)} (see kpatch-analyze --help)")
        if extra:
            args.targets += extra
        if getattr(args, "live", False) and args.vmlinux and args.command == "check":
            args.targets.insert(0, args.vmlinux)  # `check --live TARGET...`: no image argument
            args.vmlinux = None
        if args.command is None:
            raise UsageError("give a vmlinux, or a command: check, summary, func, diff, event "
                             "(see kpatch-analyze --help)")
        images = getattr(args, "vmlinux", None)
        if images and not getattr(args, "live", False):
            from .boot_decode import start  # stdlib only: a bzImage decodes while the engine loads
            paths = [images] if isinstance(images, str) else images
            decoding = [start(path) for path in paths]
            from .bootimage import prefetch  # a boot image unpacks while the command loads
            for path in paths:
                prefetch(path, getattr(args, "system_map", None))
            if any(decoding):  # and the backends load meanwhile, not after
                from .registry import backends
                backends()
        if args.command == "check":
            return _cmd_check(args)
        mod, _, run = SUBCOMMANDS[args.command]
        return getattr(_module(mod), run)(args)
    except KpatchError as e:
        print(f"kpatch-analyze: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


def end_process(rc: int) -> NoReturn:
    """End the process with ``rc`` once its output is out: the streams flushed and the atexit
    handlers run (temporary directories), then ``os._exit``, without the interpreter's teardown
    (which frees a full analysis' million objects one by one: about 0.07 s)."""
    import atexit
    import os
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader went away: what is left has nowhere to go
        rc = rc or 0
    atexit._run_exitfuncs()
    os._exit(rc)


def entry() -> NoReturn:
    """The ``kpatch-analyze`` console script (and ``python -m kpatch_core.cli``):
    :func:`main`, then :func:`end_process`."""
    end_process(main())


if __name__ == "__main__":
    entry()
