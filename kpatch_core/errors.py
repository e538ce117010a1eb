"""Errors a user can act on: each prints as one line and maps to an exit code."""
from __future__ import annotations


class KpatchError(Exception):
    """Base of every error the CLI reports as one line instead of a traceback."""

    exit_code = 1


class InputError(KpatchError):
    """The input (vmlinux, targets file, config file) is unusable. Exit code 1."""

    exit_code = 1


class UsageError(KpatchError):
    """The command line or a probe spec is malformed. Exit code 2."""

    exit_code = 2
