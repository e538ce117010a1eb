"""kpatch-core: offline kprobe placement for Linux kernel images.

The names below are loaded on first use, so importing one submodule (``kpatch_core.verdict``
from a backend) does not import the whole engine.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .image import Image
    from .probe import check
    from .verdict import Method, Reason, Verdict

__all__ = ["Image", "check", "Method", "Reason", "Verdict"]
__version__ = "0.1.0"

_WHERE = {"Image": "image", "check": "probe", "Method": "verdict", "Reason": "verdict",
          "Verdict": "verdict"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
