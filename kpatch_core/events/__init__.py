"""kprobe_events definitions: parse, validate and resolve a line as the kernel would.

``EventSet(env).write(line)`` answers what ``echo 'LINE' >> kprobe_events`` does on the kernel of
``env`` (an image, its backend, its BTF): the same checks in the same order as the kernel, for
the kernel's named features (:mod:`kpatch_core.features`).  The package follows the kernel's
files:

- :mod:`.error_log`: the error_log messages and limits (trace_probe.h ``ERRORS``) and
  ``trace_probe_log``; the number parsers are :mod:`kpatch_core.kstrtox` (lib/kstrtox.c);
- :mod:`.trace_probe`: argument parsing (trace_probe.c: ``traceprobe_parse_event_name``,
  ``traceprobe_expand_meta_args``, ``traceprobe_parse_probe_arg``, ``parse_probe_arg``,
  ``parse_probe_vars``, ``parse_btf_arg``, ``finalize_fetch_insn``);
- :mod:`.trace_kprobe`: command handling (trace_kprobe.c: ``__trace_kprobe_create``,
  ``register_trace_kprobe``, ``dyn_event_release``);
- :mod:`.probe_env`: what the parser asks of the image (probe points by
  :func:`kpatch_core.probe.check`);
- :mod:`.translate`: the same line for another architecture.

A refusal is an :class:`EventError` carrying the kernel's error_log id and message, the errno of
the write and the caret position.

>>> s = EventSet(ImageEnv(Image.open("vmlinux")))           # doctest: +SKIP
>>> r = s.write("p vfs_read %none_reg")                     # doctest: +SKIP
>>> r.error.log_id, r.error.caret, r.error.errno            # doctest: +SKIP
('BAD_REG_NAME', 11, 'EINVAL')
"""
from __future__ import annotations

from ..features import VERIFIED, FeatureSet
from ..kstrtox import kstrtol, kstrtoul, kstrtoull, kstrtouint, simple_strtoul
from .error_log import ERRORS, MESSAGES, EventError, errno_name, error_messages
from .probe_env import ImageEnv, PlaceInfo, ProbeEnv
from .trace_kprobe import EventResult, EventSet, ProbeEvent
from .trace_probe import (
    DEFAULT_FETCH_TYPE,
    FetchArg,
    argument_fetch,
    fetch_types,
    is_good_name,
    is_good_system_name,
)
from .translate import translate_line

# fetch types of the verified kernels, by rule-set label ({"6.1": ..., "6.12": ...})
FETCH_TYPES: dict[str, dict[str, tuple[int, bool, bool]]] = {
    fs.rules: fetch_types(fs) for fs in (FeatureSet.decide(v) for v in VERIFIED)}

__all__ = [
    "DEFAULT_FETCH_TYPE", "ERRORS", "FETCH_TYPES", "MESSAGES", "EventError", "EventResult",
    "EventSet", "FetchArg", "ImageEnv", "PlaceInfo", "ProbeEnv", "ProbeEvent", "argument_fetch",
    "errno_name", "error_messages", "fetch_types", "is_good_name", "is_good_system_name", "kstrtol",
    "kstrtoul", "kstrtoull", "kstrtouint", "simple_strtoul", "translate_line",
]
