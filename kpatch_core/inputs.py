"""Input files as the CLI takes them: regular files only, checked before they are opened.

A FIFO would block ``open`` until a writer comes, ``/dev/zero`` never ends, a directory or a
symlink loop fails late with an unhelpful message: :func:`check_regular` refuses them all with
one line (an :class:`~kpatch_core.errors.InputError`) before anything reads the path, and
:func:`read_text` decodes strictly (bytes that are not UTF-8 are an error naming the line).
"""
from __future__ import annotations

import errno
import os
import stat

from .errors import InputError

_KINDS = ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a FIFO (named pipe)"),
          (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
          (stat.S_ISSOCK, "is a socket"))


def _error(path: str, problem: str, what: str, kind: str | None) -> InputError:
    if kind:  # "cannot read targets file (is a FIFO); give ..."
        return InputError(f"{path}: cannot read {kind} ({problem}); give {what}")
    return InputError(f"{path}: {problem}; give {what}")


def check_regular(path: str, what: str, kind: str | None = None) -> os.stat_result:
    """``stat`` of ``path``; InputError unless it is a regular file (``what``: 'the path of a
    vmlinux ELF image'... what to give instead; ``kind``: 'targets file'... what was read)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _error(path, "no such file", what, kind) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _error(path, "symbolic link loop", what, kind) from None
        raise _error(path, f"cannot stat: {e.strerror}", what, kind) from None
    if not stat.S_ISREG(st.st_mode):
        problem = next((k for test, k in _KINDS if test(st.st_mode)), "is not a regular file")
        raise _error(path, problem, what, kind)
    return st


def read_bytes(path: str, what: str, kind: str | None = None) -> bytes:
    """The contents of the regular file ``path`` (opened non-blocking, checked again after
    ``open``: a path swapped for a FIFO in between still cannot block)."""
    check_regular(path, what, kind)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise _error(path, str(e.strerror), what, kind) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _error(path, "is not a regular file", what, kind)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as e:
        raise _error(path, str(e.strerror), what, kind) from None
    finally:
        os.close(fd)


def read_text(path: str, what: str, kind: str | None = None, errors: str = "strict") -> str:
    """The contents of ``path`` as UTF-8 text; InputError naming the first line that is not
    UTF-8 (``errors="replace"`` to take it anyway)."""
    raw = read_bytes(path, what, kind)
    try:
        return raw.decode("utf-8", errors)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                         f"give {what}") from None
