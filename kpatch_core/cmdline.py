"""What every ``kpatch-analyze`` subcommand shares: the image arguments (VMLINUX, ``--config``,
``--set``) and opening the image with them.  Subcommand modules import this, never ``cli``.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from .image import Image


def add_image_args(p: argparse.ArgumentParser) -> None:
    """VMLINUX, ``--config FILE`` and ``--set FACT=y|n`` on parser ``p``."""
    p.add_argument("vmlinux", help="vmlinux ELF image (unstripped)")
    p.add_argument("--config", metavar="FILE", help="kernel config (/boot/config-*) to read facts from")
    p.add_argument("--set", metavar="FACT=y|n", action="append", default=[],
                   help="override one configuration or runtime fact (e.g. PREEMPTION=n)")


def parse_sets(items: list[str]) -> dict[str, bool]:
    """``--set`` values as {FACT: value}; a malformed one is a usage error."""
    overrides: dict[str, bool] = {}
    for item in items:
        name, _, val = item.partition("=")
        if not name or val.lower() not in ("y", "n", "1", "0", "yes", "no"):
            raise UsageError(f"--set {item!r}: expected FACT=y or FACT=n")
        overrides[name.removeprefix("CONFIG_")] = val.lower() in ("y", "1", "yes")
    return overrides


def open_image(args: argparse.Namespace) -> "Image":
    """The image named by ``args.vmlinux`` with ``args.config`` and the ``args.set`` overrides."""
    from .image import Image
    return Image.open(args.vmlinux, args.config, parse_sets(args.set))
