"""The Backend protocol: what the core asks an architecture, with the kernel's ``__weak`` defaults.

A backend is a class whose attributes are the architecture's facts (breakpoint bytes, pt_regs
layout, kprobe_events register names, argument registers) and whose methods mirror the kernel's
arch hooks (``arch_adjust_kprobe_addr``, ``arch_within_kprobe_blacklist``,
``arch_prepare_kprobe``, ``ftrace_call_adjust``...).  Register a subclass in the
``kpatch_core.backends`` entry-point group; the core finds it by ELF machine and endianness.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

import attrs

from kpatch_core.verdict import Execution, Reason, Refusal

if TYPE_CHECKING:
    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image, KernelVersion
    from kpatch_core.symbols import KSym


@attrs.frozen
class PrepareContext:
    """What ``arch_prepare_kprobe`` may look at: the image, the address and its function."""

    image: "Image"
    addr: int
    func: "KSym"  # kallsyms symbol containing addr (first alias, kernel size)

    @property
    def version(self) -> "KernelVersion":
        return self.image.version

    @property
    def features(self) -> "FeatureSet":
        """The kernel behaviours of the image (``image.features``)."""
        return self.image.features


@attrs.frozen
class PtRegsField:
    """One ``struct pt_regs`` member: kprobe_events name, byte offset, size."""

    name: str
    offset: int
    size: int = 8


class Backend:
    """Base class of every architecture backend; override what the architecture overrides."""

    # -- identity ---------------------------------------------------------------------------
    name: ClassVar[str] = ""
    elf_machine: ClassVar[str] = ""  # pyelftools e_machine name, e.g. "EM_X86_64"
    little_endian: ClassVar[bool] = True
    capstone_arch: ClassVar[int] = 0
    capstone_mode: ClassVar[int] = 0
    relative_reloc_type: ClassVar[int | None] = None  # R_*_RELATIVE in .rela.dyn, if any
    absolute_reloc_type: ClassVar[int | None] = None  # R_*_64 against a .dynsym symbol, if any

    # -- encodings --------------------------------------------------------------------------
    breakpoint: ClassVar[bytes] = b""  # BREAKPOINT_INSTRUCTION as stored in memory
    insn_align: ClassVar[int] = 1
    misaligned_reason: ClassVar[Reason] = Reason.MISALIGNED  # arch_prepare_kprobe's `addr & (align-1)`

    # -- kernel tables ----------------------------------------------------------------------
    extable_entry_size: ClassVar[int] = 12  # struct exception_table_entry, insn is s32 at +0
    static_call_inline: ClassVar[bool] = False  # HAVE_STATIC_CALL_INLINE
    kretprobe_blacklist: ClassVar[tuple[str, ...]] = ()  # kretprobe_blacklist[]
    have_kprobes_on_ftrace: ClassVar[bool] = True  # HAVE_KPROBES_ON_FTRACE (6.1)
    have_optprobes: ClassVar[bool] = False

    # -- registers and calling convention -----------------------------------------------------
    pt_regs_size: ClassVar[int] = 0
    pt_regs: ClassVar[tuple[PtRegsField, ...]] = ()
    arg_regs: ClassVar[tuple[str, ...]] = ()  # $arg1.. in pt_regs names
    retval_reg: ClassVar[str] = ""
    stack_reg: ClassVar[str] = ""
    syscall_prefix: ClassVar[str] = ""  # ARCH_HAS_SYSCALL_WRAPPER entry prefix
    # regs_get_kernel_argument: argument n >= len(arg_regs) is $stack(arg_stack_base + n -
    # len(arg_regs)) (x86_64: 1, s390x: 20); None: the arch reads 0 past its registers
    arg_stack_base: ClassVar[int | None] = None
    thread_size: ClassVar[int] = 16384  # THREAD_SIZE (PARAM_MAX_STACK = THREAD_SIZE / 8)

    # -- hooks (weak defaults) ----------------------------------------------------------------
    def kprobes_on_ftrace(self, features: "FeatureSet") -> bool:
        """``CONFIG_KPROBES_ON_FTRACE`` when the image gives no evidence either way."""
        return self.have_kprobes_on_ftrace

    def fetch_args_supported(self, features: "FeatureSet") -> bool:
        """``CONFIG_HAVE_FUNCTION_ARG_ACCESS_API`` ($argN in kprobe_events); weak: yes when the
        backend lists argument registers."""
        return bool(self.arg_regs)

    def syscall_prefix_for(self, features: "FeatureSet") -> str:
        """The syscall entry prefix of a kernel with ``features`` (weak: :attr:`syscall_prefix`)."""
        return self.syscall_prefix

    def default_facts(self) -> dict[str, bool]:
        """Runtime facts the image cannot show (CPU features that boot-time patching depends on),
        with the value assumed; ``--set NAME=y|n`` or a config file overrides them."""
        return {}

    def blacklist_areas(self, features: "FeatureSet") -> tuple[tuple[str, str], ...]:
        """``arch_populate_kprobe_blacklist``: (start, end) linker symbols of blacklisted areas."""
        return ()

    def within_arch_blacklist(self, image: "Image", addr: int) -> bool:
        """Extra ``arch_within_kprobe_blacklist`` ranges beyond ``.kprobes.text``."""
        return False

    def ftrace_call_adjust(self, image: "Image", record: int) -> int:
        """``ftrace_call_adjust``: the ftrace site address for one ``__mcount_loc`` record."""
        return record

    def lookup_name(self, image: "Image", name: str, offset: int = 0) -> int | None:
        """``kprobe_lookup_name(name, offset)`` (weak: ``kallsyms_lookup_name``, offset unused)."""
        return image.kallsyms.lookup(name)

    def adjust_kprobe_addr(self, image: "Image", sym_addr: int, offset: int) -> tuple[int, bool]:
        """``arch_adjust_kprobe_addr``: (probed address, on_func_entry)."""
        return sym_addr + offset, offset == 0

    def jump_label_size(self, image: "Image", code: int) -> int:
        """Bytes a ``__jump_table`` site reserves (``JUMP_LABEL_NOP_SIZE``)."""
        return 4

    def runtime_bytes(self, image: "Image", start: int, end: int) -> bytes:
        """Text ``[start, end)`` as the running kernel holds it (boot-time patching applied)."""
        return image.read(start, end - start)

    def prepare(self, ctx: PrepareContext) -> Execution | Refusal:
        """``arch_prepare_kprobe``: how the instruction at ``ctx.addr`` runs, or why not."""
        raise NotImplementedError(f"{self.name}: arch_prepare_kprobe not implemented")

    def optimizable(self, ctx: PrepareContext) -> bool:
        """``can_optimize`` + ``arch_prepare_optimized_kprobe``: would the probe be [OPTIMIZED]?"""
        return False

    def load_offset(self, image: "Image") -> int:
        """Where the running kernel (booted ``nokaslr``) has the image: vmlinux address + this.
        Asked while the Image is built: only ``image.data``, ``image.sections`` and
        ``image.link_range`` (link-time addresses) and ``image.banner_version()`` may be used."""
        return 0

    def optimized_capacity(self, image: "Image") -> int | None:
        """How many probes can be [OPTIMIZED] at once (detour buffers ``get_optinsn_slot`` can
        hand out); None: no limit (the insn cache allocates more pages)."""
        return None

    def slot_support(self) -> ModuleType | None:
        """The backend's out-of-line execution module (``<backend package>.slot``): slot building,
        simulation and the executor's CPU facts; None when the architecture has none yet."""
        name = f"{type(self).__module__}.slot"
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                return None
            raise

    # -- bulk analysis (kpatch_core.analyze; defaults are slow but correct) --------------------
    # arch_adjust_kprobe_addr returns (sym + offset, False) for every offset >= this window
    adjust_window: ClassVar[int] = 16

    def bulk_classifier(self, image: "Image") -> object | None:
        """A fast whole-image classifier, or None: the core then decodes with capstone and calls
        :meth:`prepare` per address.  Default: ``classifier(backend, image)`` from a ``bulk``
        module beside the backend's module, when there is one (see arch/x86_64/bulk.py)."""
        import importlib
        name = f"{type(self).__module__}.bulk"
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                return None
            raise
        return mod.classifier(self, image)

    # -- derived facts ------------------------------------------------------------------------
    def register(self, name: str) -> PtRegsField | None:
        """The pt_regs field a kprobe_events ``%name`` reads, or None."""
        for f in self.pt_regs:
            if f.name == name:
                return f
        return None
