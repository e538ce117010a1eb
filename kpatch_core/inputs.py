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


def check_regular(path: str, what: str) -> os.stat_result:
    """``stat`` of ``path``; InputError unless it is a regular file (``what``: 'a vmlinux ELF
    image', 'a kernel config file'... for the message)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; give {what}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{path}: symbolic link loop; give {what}") from None
        raise InputError(f"{path}: cannot stat ({e.strerror}); give {what}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "is not a regular file")
        raise InputError(f"{path}: {kind}; give {what}")
    return st


def read_bytes(path: str, what: str) -> bytes:
    """The contents of the regular file ``path`` (opened non-blocking, checked again after
    ``open``: a path swapped for a FIFO in between still cannot block)."""
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror}); give {what}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{path}: is not a regular file; give {what}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}); give {what}") from None
    finally:
        os.close(fd)


def read_text(path: str, what: str, errors: str = "strict") -> str:
    """The contents of ``path`` as UTF-8 text; InputError naming the first line that is not
    UTF-8 (``errors="replace"`` to take it anyway)."""
    raw = read_bytes(path, what)
    try:
        return raw.decode("utf-8", errors)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                         f"give {what}") from None
