"""Plain target lists: one target a line in any spelling :func:`parse_target` reads,
``#`` comments."""
from __future__ import annotations

from ..errors import UsageError
from ..target import parse_target
from .probe_file import ProbeFile, ProbeSpec


def read_plain(path: str, text: str) -> ProbeFile:
    """One :class:`ProbeSpec` per non-empty line; a malformed line raises UsageError naming it."""
    specs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.split("#", 1)[0].strip():
            continue
        try:
            specs.append(ProbeSpec(parse_target(line), n, line.strip()))
        except UsageError as e:
            raise UsageError(f"{path}:{n}: {e}") from None
    return ProbeFile(path, "targets", tuple(specs))
