"""Where modules come from: ``--module PATH.ko`` (any number) and ``--modules DIR`` (a module
tree: ``modules.dep`` where depmod made one, else the files themselves, named as the loader
names them (``name=`` of .modinfo; the file name with '-' as '_' finds it first).  Modules are
loaded with their ``depends=`` first, one after another in the module area, so symbols one
module takes from another resolve as ``resolve_symbol`` does.

>>> ms = ModuleSet(kernel, paths=["ext4.ko.xz"], tree=None)   # doctest: +SKIP
>>> ms.view("ext4")                                           # doctest: +SKIP
"""
from __future__ import annotations

import os
import sys

from ..errors import InputError
from ..image import Image
from .kofile import KoFile
from .view import LoadedModule, ModuleImage, arch_module, kernel_release, load

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_file_name(path: str) -> str | None:
    """The module name a file name gives (``nf_conntrack.ko.xz`` -> ``nf_conntrack``;
    ``snd-hda-intel.ko`` -> ``snd_hda_intel``), or None for a non-module file."""
    base = os.path.basename(path)
    for sfx in _SUFFIXES:
        if base.endswith(sfx):
            return base[: -len(sfx)].replace("-", "_")
    return None


def index_tree(tree: str) -> dict[str, str]:
    """name -> path of every module under ``tree`` (modules.dep's paths when present)."""
    if not os.path.isdir(tree):
        raise InputError(f"{tree}: not a directory; give a module tree (/lib/modules/RELEASE)")
    out: dict[str, str] = {}
    dep = os.path.join(tree, "modules.dep")
    if os.path.isfile(dep):
        with open(dep, encoding="utf-8", errors="replace") as f:
            for line in f:
                rel = line.split(":", 1)[0].strip()
                n = module_file_name(rel)
                if n:
                    out.setdefault(n, os.path.join(tree, rel))
        if out:
            return out
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for fn in sorted(files):
            n = module_file_name(fn)
            if n:
                out.setdefault(n, os.path.join(root, fn))
    return out


class ModuleSet:
    """The modules given for one kernel, loaded on demand (with their dependencies)."""

    def __init__(self, kernel: Image, paths: list[str] | None = None, tree: str | None = None,
                 warn: bool = True) -> None:
        self.kernel = kernel
        self.arch = arch_module(kernel)
        self.tree = tree
        self.index: dict[str, str] = index_tree(tree) if tree else {}
        self.given: dict[str, KoFile] = {}
        self.warn = warn
        self.notes: list[str] = []
        for p in paths or []:
            ko = self._open(p)
            self.given[ko.name] = ko
        self._loaded: dict[str, LoadedModule] = {}
        self._views: dict[str, ModuleImage] = {}
        self._kernel_syms: dict[str, int] | None = None
        self._deps_seen: set[str] = set()
        self._exports: dict[int, tuple[LoadedModule, dict[str, int]]] = {}
        text = kernel.symtab.value("_text") or kernel.link_range[0]
        end = kernel.symtab.value("_end") or kernel.link_range[1]
        self._kernel_text = int(text)
        self._next = int(self.arch.module_base(int(text), int(end)))

    def _open(self, path: str) -> KoFile:
        ko = KoFile.open(path)
        if ko.machine != _machine_number(self.kernel):
            raise InputError(f"{path}: module is for ELF machine {ko.machine}, the kernel "
                             f"{self.kernel.path} is {self.kernel.backend.name}; give the "
                             "module of the same build")
        rel = kernel_release(self.kernel)
        if rel and ko.release and ko.release != rel:
            note = (f"{path}: module built for {ko.release}, the kernel is {rel} (vermagic "
                    "differs: the kernel would refuse to load it; verdicts are for this pair)")
            self.notes.append(note)
            if self.warn:
                print(f"kpatch-analyze: warning: {note}", file=sys.stderr)
        return ko

    def names(self) -> list[str]:
        """Every module name known (given, then the tree's)."""
        return sorted(set(self.given) | set(self.index))

    def has(self, name: str) -> bool:
        """True when module ``name`` was given or is in the tree."""
        return name in self.given or name.replace("-", "_") in self.index

    def ko(self, name: str) -> KoFile | None:
        """The module file of ``name``, opened (None when not given)."""
        n = name.replace("-", "_")
        if n in self.given:
            return self.given[n]
        p = self.index.get(n)
        if p is None:
            return None
        ko = self._open(p)
        self.given[n] = ko
        return ko

    def _resolver(self, deps: list[LoadedModule]):  # type: ignore[no-untyped-def]
        if self._kernel_syms is None:
            st = self.kernel.symtab
            glob = ((st.info >> 4) != 0) & (st.shndx != 0)
            self._kernel_syms = {st.names[i]: int(st.values[i]) for i in glob.nonzero()[0].tolist()}
        ks = self._kernel_syms
        exports = [self._exports_of(d) for d in deps]  # resolve_symbol: the first that has it

        def resolve(name: str) -> int | None:
            if not name:
                return self._kernel_text  # an unresolved symbol: somewhere in reach
            v = ks.get(name)
            if v is None:
                for e in exports:
                    v = e.get(name)
                    if v is not None:
                        break
            return v
        return resolve

    def _exports_of(self, lm: LoadedModule) -> dict[str, int]:
        """``lm.exports()``, once per laid-out module (a module many others depend on stays
        laid out, and its exports are asked for each of them)."""
        key = id(lm)
        hit = self._exports.get(key)
        if hit is None or hit[0] is not lm:
            hit = self._exports[key] = (lm, lm.exports())
        return hit[1]

    def loaded(self, name: str, _seen: frozenset[str] = frozenset()) -> LoadedModule | None:
        """``name`` laid out and relocated (its dependencies first), or None when not given."""
        n = name.replace("-", "_")
        if n in self._loaded:
            return self._loaded[n]
        ko = self.ko(n)
        if ko is None:
            return None
        deps = []
        for d in ko.depends:
            if d not in _seen and self.has(d):
                dl = self.loaded(d, _seen | {n})
                if dl is not None:
                    deps.append(dl)
        lm = load(ko, self.kernel, self._next, self._resolver(deps))
        self._next = _align(lm.layout.end, self.arch.PAGE_SIZE) + self.arch.PAGE_SIZE
        self._loaded[n] = lm
        return lm

    def unload_all(self) -> None:
        """Start the module area again (one module at a time, as the full analysis takes
        them): views are dropped; modules others depend on stay laid out (their exports
        resolve the next ones; where they sit does not change another module's verdicts)."""
        self._views.clear()
        for lm in self._loaded.values():
            self._deps_seen.update(lm.ko.depends)
        for n in [n for n in self._loaded if n not in self._deps_seen]:
            self._exports.pop(id(self._loaded[n]), None)
            del self._loaded[n]
            if n in self.index:  # opened from the tree: read again if asked again
                self.given.pop(n, None)
        self._next = int(self.arch.module_base(self._kernel_text, 0))

    def view(self, name: str) -> ModuleImage | None:
        """The live module ``name`` as an Image (None when it was not given)."""
        n = name.replace("-", "_")
        if n in self._views:
            return self._views[n]
        lm = self.loaded(n)
        if lm is None:
            return None
        v = ModuleImage.for_module(lm, self.kernel)
        self._views[n] = v
        return v

    def view_at(self, addr: int) -> ModuleImage | None:
        """The live module whose memory holds ``addr`` (a ``0xADDR`` target): every
        ``--module`` file is laid out (in the order given, as ``func --module`` prints their
        addresses), a tree's modules only once a ``MOD:SYM`` target or ``func`` loaded them."""
        for n in list(self.given):
            if n not in self._loaded:
                self.loaded(n)
        for n, lm in self._loaded.items():
            if any(lo <= addr < hi for lo, hi in lm.layout.regions.values()):
                return self.view(n)
        return None

    def missing(self, name: str) -> str:
        """Why module ``name`` is not checked (the deferred verdict's detail)."""
        where = f"not in {self.tree}" if self.tree else "not given (--module PATH.ko or --modules DIR)"
        return f"module {name} {where}"


def _machine_number(image: Image) -> int:
    import struct
    return int(struct.unpack_from("<H" if image.little_endian else ">H", image.data, 18)[0])


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a
