"""Kernel modules as the loader makes them live: open a ``.ko`` (:mod:`.kofile`), lay it out
(:mod:`.layout`, ``layout_sections``), relocate it against the kernel of the same build
(:mod:`.relocate` + ``kpatch_arch.<arch>.module``, ``apply_relocate_add``), keep its
``core_kallsyms`` (:mod:`.kallsyms`) and present it to the probe pipeline as an Image
(:mod:`.view`); :mod:`.source` finds modules by name in ``--module`` files or a module tree.

>>> ms = ModuleSet(Image.open("vmlinux"), tree="/lib/modules/6.12.117+deb13-amd64")  # doctest: +SKIP
>>> check(ms.view("ext4"), "ext4_file_open").ok                                      # doctest: +SKIP
True
"""
from .kofile import KoFile
from .source import ModuleSet, index_tree, module_file_name
from .view import LoadedModule, ModuleImage

__all__ = ["KoFile", "LoadedModule", "ModuleImage", "ModuleSet", "index_tree", "module_file_name"]
