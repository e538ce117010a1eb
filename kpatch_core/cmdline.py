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
    p.add_argument("vmlinux", nargs="?", help="vmlinux ELF image, or a /boot/vmlinuz-*, Image, "
                   "stripped vmlinux (System.map-*/config-* beside it are used)")
    p.add_argument("--config", metavar="FILE", help="kernel config (/boot/config-*) to read facts from")
    p.add_argument("--system-map", metavar="FILE", help="System.map of a boot image (default: "
                   "System.map-RELEASE beside it, else the image's own kallsyms tables)")
    p.add_argument("--live", action="store_true", help="the running kernel: /boot/vmlinuz-$(uname -r), "
                   "/proc/kallsyms, /sys/kernel/btf/vmlinux; compared with its blacklist and ftrace list")
    p.add_argument("--live-root", metavar="DIR", default="/", help="root of /proc, /sys, /boot for --live")
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
    sets = parse_sets(args.set)
    if getattr(args, "live", False):  # the running kernel (kpatch_core/live.py)
        import sys
        from .live import open_live
        image, report = open_live(args.live_root, sets, args.config)
        for line in report.lines():
            print(f"kpatch-analyze: live: {line}", file=sys.stderr)
    elif not args.vmlinux:
        raise UsageError("give a vmlinux (or a /boot/vmlinuz-*), or --live for the running kernel")
    else:
        image = Image.open(args.vmlinux, args.config, sets, getattr(args, "system_map", None))
        if image.boot is not None:  # say where the symbols came from
            import sys
            print(f"kpatch-analyze: {args.vmlinux}: {image.boot.describe()}", file=sys.stderr)
    check_set_names(image, sets)
    return image


def check_set_names(image: "Image", sets: dict[str, bool]) -> None:
    """A ``--set`` of a fact nothing reads is a usage error listing the facts there are (the
    image's inferred and assumed facts, and those of its ``--config`` file)."""
    if not sets:
        return
    from .config import KernelConfig
    known = KernelConfig.for_image(image, image.config_path, None).facts
    unknown = sorted(n for n in sets if n not in known)
    if unknown:
        raise UsageError(f"--set {', '.join(unknown)}: unknown fact for {image.backend.name}; "
                         f"known: {', '.join(sorted(known))}")
