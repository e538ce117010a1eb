"""Outcome codes: the kernel's answer for one address as one uint16.

An accepted probe is ``1 + index of its Method`` (:data:`OK_NO_METHOD` when accepted without a
registered kprobe); a refusal is ``REFUSED_BASE + 16 * index of its Reason + index of its errno``;
bit 15 (:data:`OPTIMIZED`) marks an accepted probe the kernel would jump-optimize.  The full
analysis stores one code per instruction; backends' bulk classifiers answer in codes.

>>> decode_code(refused_code(Reason.JUMP_LABEL)).errno        # doctest: +SKIP
'EBUSY'
"""
from __future__ import annotations

import attrs

from .verdict import Execution, Method, Reason, Refusal, reason_errno

# --- outcome codes: one uint16 per instruction -------------------------------------------------
METHODS: tuple[Method, ...] = tuple(Method)
REASONS: tuple[Reason, ...] = tuple(Reason)
ERRNOS = ("EINVAL", "EILSEQ", "ENOENT", "EOPNOTSUPP", "ENOSPC", "EADDRNOTAVAIL", "EBUSY", "EEXIST",
          "EFAULT", "EPERM", "E2BIG", "ENODEV", "ENOMEM", "EIO", "EACCES", "ERANGE")
OK_NO_METHOD = 15  # accepted without a registered kprobe
REFUSED_BASE = 0x100
OPTIMIZED = 0x8000
SLOW = 0x7FFF  # internal: ask backend.prepare
UNSET = 0
_M_INDEX = {m: i for i, m in enumerate(METHODS)}
_R_INDEX = {r: i for i, r in enumerate(REASONS)}
_E_INDEX = {e: i for i, e in enumerate(ERRNOS)}


def ok_code(method: Method | None) -> int:
    """The outcome code of an accepted probe executed by ``method``."""
    return OK_NO_METHOD if method is None else 1 + _M_INDEX[method]


def refused_code(reason: Reason, errno: str | None = None) -> int:
    """The outcome code of a refusal for ``reason`` (errno defaults to the reason's)."""
    e = errno or reason_errno(reason)
    return REFUSED_BASE + _R_INDEX[reason] * 16 + _E_INDEX.get(e, 0)


@attrs.frozen
class Outcome:
    """A decoded outcome code: what ``check`` says about one address."""

    ok: bool
    method: Method | None = None
    reason: Reason | None = None
    errno: str | None = None
    optimized: bool = False

    @property
    def label(self) -> str:
        """``boost`` / ``singlestep`` ... for accepted, the reason name for refused."""
        if self.ok:
            return self.method.value if self.method else "accepted"
        return self.reason.value if self.reason else "?"


def decode_code(code: int) -> Outcome:
    """The :class:`Outcome` an outcome code stands for."""
    code = int(code)
    opt = bool(code & OPTIMIZED)
    code &= ~OPTIMIZED
    if code < REFUSED_BASE:
        if code == OK_NO_METHOD:
            return Outcome(True, optimized=opt)
        return Outcome(True, METHODS[code - 1], optimized=opt)
    r, e = divmod(code - REFUSED_BASE, 16)
    return Outcome(False, reason=REASONS[r], errno=ERRNOS[e])


def outcome_code(out: Execution | Refusal) -> int:
    """Encode a backend's ``prepare`` answer."""
    if isinstance(out, Refusal):
        return refused_code(out.reason, out.errno)
    return ok_code(out.method)
