"""What the kprobe_events parser asks of the kernel: the probe point's verdict at each stage of
``__trace_kprobe_create``, ``kallsyms_lookup_name``, .BTF, and the kernel's features.

:class:`ImageEnv` answers from a vmlinux :class:`~kpatch_core.image.Image` (probe points by
:func:`kpatch_core.probe.check`); tests give a stand-in with the same attributes.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Protocol

import attrs

from ..btf import Btf
from ..target import Target
from ..verdict import Reason, Verdict
from .error_log import EINVAL, ENOENT

if TYPE_CHECKING:
    from kpatch_arch.base import Backend

    from ..features import FeatureSet
    from ..image import Image


@attrs.frozen
class PlaceInfo:
    """What the kprobes core says about a probe point, at the moments the parser asks.

    ``entry`` is ``kprobe_on_func_entry``: True (0), False (-EINVAL) or None (-ENOENT).
    ``parse_error`` is a refusal before the event name is parsed (``validate_probe_symbol`` /
    ``number_of_same_symbols`` / ``BAD_RETPROBE``) as (log id, errno).  ``notrace`` and
    ``register_errno`` come from registration, after every argument parsed.
    """

    entry: bool | None
    parse_error: tuple[str, str] | None = None
    notrace: bool = False
    register_errno: str | None = None
    verdict: Verdict | None = None


class ProbeEnv(Protocol):
    """The kernel facts the events parser needs (an image, or a stand-in in tests)."""

    rules: str  # the rule-set label results carry ("6.1" / "6.12")
    features: "FeatureSet"  # the kernel behaviours the parser follows
    backend: "Backend"
    fetch_args: bool  # CONFIG_HAVE_FUNCTION_ARG_ACCESS_API

    @property
    def btf_args(self) -> bool:
        """CONFIG_PROBE_EVENTS_BTF_ARGS (KPROBE_EVENTS_BTF_ARGS, fetch_args and .BTF)."""

    @property
    def btf(self) -> Btf | None:
        """The image's .BTF, or None."""

    def place(self, kind: str, symbol: str | None, offset: int, address: int | None) -> PlaceInfo:
        """The probe point's verdict, split by the stage of __trace_kprobe_create that sees it."""

    def symbol_address(self, name: str) -> int | None:
        """``kallsyms_lookup_name`` (for ``@SYM`` arguments)."""


class ImageEnv:
    """:class:`ProbeEnv` of a vmlinux image: kallsyms, probe.check, .BTF, the backend."""

    def __init__(self, image: "Image") -> None:
        self.image = image
        self.backend = image.backend
        self.features = image.features
        self.rules = self.features.rules
        # a --config file (or --set) decides; else store_trace_entry_data (EVENTS_RETPROBE_ARGS)
        # shows the API; else the backend's answer for the kernel's features
        known = self._fact("HAVE_FUNCTION_ARG_ACCESS_API")
        if known is None and image.symtab.value("store_trace_entry_data") is not None:
            known = True
        self.fetch_args = known if known is not None else \
            self.backend.fetch_args_supported(self.features)

    def _fact(self, name: str) -> bool | None:
        f = self.image.config.facts.get(name)
        return None if f is None else f.value

    @functools.cached_property
    def btf(self) -> Btf | None:
        return Btf.from_image(self.image)

    @functools.cached_property
    def btf_args(self) -> bool:
        # PROBE_EVENTS_BTF_ARGS (KPROBE_EVENTS_BTF_ARGS): default y, depends on
        # HAVE_FUNCTION_ARG_ACCESS_API and DEBUG_INFO_BTF (a .BTF section)
        if not self.features.has("KPROBE_EVENTS_BTF_ARGS") or not self.fetch_args \
                or self.btf is None:
            return False
        known = self._fact("PROBE_EVENTS_BTF_ARGS")
        return True if known is None else known

    def symbol_address(self, name: str) -> int | None:
        return self.image.kallsyms.lookup(name)

    def place(self, kind: str, symbol: str | None, offset: int, address: int | None) -> PlaceInfo:
        from ..probe import _kprobe_addr, _Refused, check
        module = None
        sym = symbol
        if symbol is not None and ":" in symbol:
            module, sym = symbol.split(":", 1)
        if address is not None:
            text = hex(address)
        else:
            text = f"{symbol}+{offset:#x}" if offset else str(symbol)
        t = Target(text, kind, symbol=sym, offset=offset, address=address, module=module)
        v = check(self.image, t)
        entry: bool | None = None
        where: Image | None = self.image  # MOD:SYM: the live module when given (else -ENOENT)
        if module is not None:
            src = self.image.module_source
            where = src.view(module) if src is not None else None
        if sym is not None and where is not None:
            try:  # kprobe_on_func_entry(NULL, symbol, offset)
                entry = _kprobe_addr(where, Target(text, "p", symbol=sym,
                                                   offset=offset)).on_func_entry
            except _Refused:
                entry = None
        if v.ok:
            return PlaceInfo(entry, verdict=v)
        parse_error = None
        if symbol is not None:
            if v.reason == Reason.NO_SYMBOL:
                parse_error = ("BAD_PROBE_ADDR", v.errno or ENOENT)
            elif v.reason == Reason.NON_UNIQUE_SYMBOL:
                parse_error = ("NON_UNIQ_SYMBOL", v.errno or EINVAL)
            elif v.reason == Reason.RETPROBE_NOT_ENTRY and kind == "r":
                parse_error = ("BAD_RETPROBE", EINVAL)
        if parse_error:
            return PlaceInfo(entry, parse_error=parse_error, verdict=v)
        return PlaceInfo(entry, notrace=v.reason == Reason.NOTRACE,
                         register_errno=v.errno or EINVAL, verdict=v)


