"""Tool spellings resolved against an image: globs, ``ksyscall/NAME``, the lists tools match.

:func:`kpatch_core.target.parse_target` reads a spelling without an image; here the image
answers what the tool would do with it before asking the kernel:

- a glob (``kprobe:vfs_*``, ``fentry:tcp_*``, perf probe ``'vfs_*'``) becomes one target per
  matching function, from the list that tool matches against (bpftrace and libbpf:
  ``available_filter_functions``; bpftrace's fentry also needs a BTF ``FUNC``; perf probe: the
  kallsyms text symbols);
- ``kprobe.multi/PATTERN`` stays one target: one attach of every match (see
  :mod:`kpatch_core.kprobe_multi`);
- ``ksyscall/NAME`` becomes the arch's syscall entry (libbpf ``SEC("ksyscall")``: the
  ``ARCH_HAS_SYSCALL_WRAPPER`` name when the kernel has the wrapper, else ``__se_sys_NAME``).

>>> [str(t) for t in expand(image, parse_target("kprobe:vfs_rea*"))]   # doctest: +SKIP
['kprobe:vfs_read', 'kprobe:vfs_readv']
"""
from __future__ import annotations

import fnmatch
import functools
import re
from typing import TYPE_CHECKING

import attrs
import numpy as np

from .symbols import STT_FUNC
from .target import Target, spelling_source

if TYPE_CHECKING:
    from .image import Image


def available_filter_functions(image: Image) -> tuple[str, ...]:
    """The names ``/sys/kernel/tracing/available_filter_functions`` lists, in address order
    (ftrace.c ``t_show``: the kallsyms name of each ftrace record's function; a name appears
    once per record, so a duplicate name appears once per copy)."""
    return _available_filter_functions(image)


@functools.lru_cache(maxsize=8)
def _available_filter_functions(image: Image) -> tuple[str, ...]:
    ks = image.kallsyms
    sites = image.tables.ftrace_sites
    if not len(sites) or not len(ks.uaddrs):
        return ()
    j = np.searchsorted(ks.uaddrs, sites, side="right").astype(np.int64) - 1
    j = j[j >= 0]
    firsts = ks.ufirst[np.unique(j)]
    return tuple(ks.names[int(i)] for i in firsts)


@functools.lru_cache(maxsize=8)
def traceable_names(image: Image) -> frozenset[str]:
    """The distinct names of :func:`available_filter_functions`, for exact lookups."""
    return frozenset(available_filter_functions(image))


@functools.lru_cache(maxsize=8)
def text_functions(image: Image) -> tuple[str, ...]:
    """Every kallsyms name of an ELF function symbol in kernel text, in address order (what
    ``perf probe -F`` lists from kallsyms, before its blacklist filter)."""
    ks = image.kallsyms
    typ = ks.symtab.info[ks.sym_index] & 0xF
    idx = np.nonzero(typ == STT_FUNC)[0]
    return tuple(ks.names[int(i)] for i in idx)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The shell glob ``pattern`` as a compiled regex (fnmatch rules, case-sensitive)."""
    return re.compile(fnmatch.translate(pattern))


def matching_names(image: Image, target: Target) -> list[str]:
    """The distinct function names ``target``'s glob matches in the list its tool reads."""
    assert target.symbol is not None
    rx = glob_regex(target.symbol)
    if spelling_source(target) in ("bpftrace", "libbpf"):
        names = available_filter_functions(image)  # bpftrace/libbpf read this file
    else:  # perf probe: kallsyms function symbols
        names = text_functions(image)
    out = list(dict.fromkeys(n for n in names if rx.match(n)))
    if target.attach in ("fentry", "fexit", "fmod_ret"):  # bpftrace matches BTF functions
        btf_names = btf_function_names(image)
        out = [n for n in out if n in btf_names]
    return out


@functools.lru_cache(maxsize=8)
def btf_function_names(image: Image) -> frozenset[str]:
    """Every name with a ``BTF_KIND_FUNC`` in the image's .BTF (empty without BTF)."""
    btf = image_btf(image)
    return frozenset(btf.func_names()) if btf is not None else frozenset()


@functools.lru_cache(maxsize=8)
def image_btf(image: Image) -> Btf | None:
    """The image's ``.BTF`` (parsed once per image), or None."""
    from .btf import Btf
    return Btf.from_image(image)


def syscall_symbol(image: Image, name: str) -> str:
    """libbpf ``SEC("ksyscall/NAME")``: the kernel function for syscall ``name``
    (libbpf.c ``attach_ksyscall``: ``__<arch>_sys_NAME`` when the kernel has
    ARCH_HAS_SYSCALL_WRAPPER (probed on ``sys_bpf``), else ``__se_sys_NAME``)."""
    prefix = image.backend.syscall_prefix_for(image.features)
    if prefix and image.kallsyms.lookup(prefix + "bpf") is not None:
        return prefix + name
    return "__se_sys_" + name


def expand(image: Image, target: Target) -> list[Target]:
    """The targets a tool would attach for ``target`` on ``image`` (globs expanded; a glob
    that matches nothing gives ``[]``); ``kprobe.multi`` patterns stay one target."""
    if target.syscall and target.symbol is not None:
        sym = syscall_symbol(image, target.symbol)
        return [attrs.evolve(target, symbol=sym, text=sym, syscall=False)]
    if not target.is_pattern or target.module or target.attach in ("kprobe_multi", "kretprobe_multi"):
        return [target]
    out = []
    for name in matching_names(image, target):
        spelling = target.spelling.replace(target.text, name, 1) if target.spelling else ""
        out.append(attrs.evolve(target, text=name, symbol=name, spelling=spelling))
    return out


if TYPE_CHECKING:
    from .btf import Btf
