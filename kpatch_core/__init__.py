"""kpatch-core: offline kprobe placement for Linux kernel images."""
from .image import Image
from .probe import check
from .verdict import Method, Reason, Verdict

__all__ = ["Image", "check", "Method", "Reason", "Verdict"]
__version__ = "0.1.0"
