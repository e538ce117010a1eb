"""The Backend protocol: what the core asks an architecture, with the kernel's ``__weak`` defaults.

A backend is a class whose attributes are the architecture's facts (breakpoint bytes, pt_regs
layout, kprobe_events register names, argument registers) and whose methods mirror the kernel's
arch hooks (``arch_adjust_kprobe_addr``, ``arch_within_kprobe_blacklist``,
``arch_prepare_kprobe``, ``ftrace_call_adjust``...).  Register a subclass in the
``kpatch_core.backends`` entry-point group; the core finds it by ELF machine and endianness.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

import attrs

from kpatch_core.verdict import Execution, Reason, Refusal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import numpy as np

    from kpatch_core.executor import Machine
    from kpatch_core.slot import CpuFacts, Effect, Slot

    from kpatch_core.features import FeatureSet
    from kpatch_core.image import Image, KernelVersion
    from kpatch_core.symbols import KSym


_T = TypeVar("_T")


def per_image(method: "Callable[[Any, Image], _T]") -> "Callable[[Any, Image], _T]":
    """``functools.cache`` for a backend method of one image, kept in the image's own
    ``__dict__``: the cache dies with the image (a module's view, dropped after its analysis,
    is not kept alive by a cache on the backend)."""
    key = f"_per_image_{method.__qualname__}"

    @functools.wraps(method)
    def cached(self: Any, image: "Image") -> _T:
        d = image.__dict__
        if key not in d:
            d[key] = method(self, image)
        return d[key]  # type: ignore[no-any-return]
    return cached


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
    # padding encodings as stored in memory (int3, nops, zeros): kpatch_core.fill counts the
    # trailing runs of them as fill, not code
    fill_encodings: ClassVar[tuple[bytes, ...]] = ()
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
    # bpf_arch_text_poke on a kernel function without an ftrace location (register_fentry's
    # fallback): the weak/arm64 answer is -ENOTSUPP (only BPF text is poked)
    bpf_text_poke_errno: ClassVar[str] = "ENOTSUPP"
    bpf_text_poke_checks_text: ClassVar[bool] = False  # -EINVAL outside core kernel text first
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

    def syscall_entry_prefixes(self) -> tuple[str, ...]:
        """Every prefix this architecture's syscall entry points carry on any kernel (the
        report's subsystem table); weak: :attr:`syscall_prefix`."""
        return (self.syscall_prefix,) if self.syscall_prefix else ()

    def syscall_prefix_for(self, features: "FeatureSet") -> str:
        """The syscall entry prefix of a kernel with ``features`` (weak: :attr:`syscall_prefix`)."""
        return self.syscall_prefix

    def default_facts(self, image: "Image") -> dict[str, bool]:
        """Runtime facts the image cannot show (CPU features that boot-time patching depends on)
        that matter for ``image``, with the value assumed; ``--set NAME=y|n`` or a config file
        overrides them."""
        return {}

    def cpu_facts(self, cpuinfo: "dict[str, str]", vulnerabilities: "dict[str, str]"
                  ) -> dict[str, bool]:
        """The runtime facts the boot CPU decides (:meth:`default_facts`, ``RUNTIME_RETHUNK``) as
        a kernel on this CPU set them: ``cpuinfo`` is /proc/cpuinfo's first CPU (field -> value:
        ``vendor_id``, ``cpu family``, ``model``...), ``vulnerabilities`` the files of
        /sys/devices/system/cpu/vulnerabilities (name -> text); {} when no fact depends on
        them.  Used to replay answers a real kernel gave on a known CPU."""
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

    def ftrace_call_adjust_many(self, image: "Image", records: "np.ndarray") -> "np.ndarray":
        """:meth:`ftrace_call_adjust` for every ``__mcount_loc`` record at once (uint64).  Weak:
        the per-record hook, or the records themselves when that one is the weak identity."""
        import numpy as np
        records = np.asarray(records, np.uint64)
        if type(self).ftrace_call_adjust is Backend.ftrace_call_adjust:
            return records
        return np.array([self.ftrace_call_adjust(image, int(r)) for r in records.tolist()],
                        np.uint64)

    def lookup_name(self, image: "Image", name: str, offset: int = 0) -> int | None:
        """``kprobe_lookup_name(name, offset)`` (weak: ``kallsyms_lookup_name``, offset unused)."""
        return image.kallsyms.lookup(name)

    def adjust_kprobe_addr(self, image: "Image", sym_addr: int, offset: int) -> tuple[int, bool]:
        """``arch_adjust_kprobe_addr``: (probed address, on_func_entry)."""
        return sym_addr + offset, offset == 0

    def jump_label_size(self, image: "Image", code: int) -> int:
        """Bytes a ``__jump_table`` site reserves (``JUMP_LABEL_NOP_SIZE``)."""
        return 4

    def jump_label_sizes(self, image: "Image", codes: np.ndarray) -> np.ndarray:
        """:meth:`jump_label_size` of every site in ``codes`` (uint64): one call per site unless
        a backend answers them all at once."""
        import numpy
        return numpy.array([self.jump_label_size(image, int(c)) for c in codes.tolist()],
                           numpy.uint64)

    def bpf_poke_nop_feature(self, image: "Image", addr: int) -> int | None:
        """The CPU feature bit with which boot patching (apply_alternatives) leaves at ``addr``
        the NOP ``bpf_arch_text_poke`` expects, so an entry without an ftrace location can be
        patched; None when none does (the weak default: nothing is poked)."""
        return None

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

    def slot_support(self) -> "SlotSupport | None":
        """The backend's out-of-line execution (:class:`SlotSupport`): slot building,
        simulation and the executor's CPU facts; None when the architecture has none yet."""
        return None

    def uprobe_support(self) -> "UprobeSupport | None":
        """The backend's uprobes (:class:`UprobeSupport`, arch/<arch>/uprobe.py); None when the
        architecture has none."""
        return None

    # -- bulk analysis (kpatch_core.analyze; defaults are slow but correct) --------------------
    # arch_adjust_kprobe_addr returns (sym + offset, False) for every offset >= this window
    adjust_window: ClassVar[int] = 16

    def bulk_classifier(self, image: "Image") -> "BulkClassifier":
        """The whole-image classifier of the full analysis.  Weak default: a plain
        :class:`BulkClassifier` (capstone decodes, :meth:`prepare` decides every address); a
        backend returns its subclass (arch/x86_64/bulk.py...)."""
        return BulkClassifier(self, image)

    # -- derived facts ------------------------------------------------------------------------
    def register(self, name: str) -> PtRegsField | None:
        """The pt_regs field a kprobe_events ``%name`` reads, or None."""
        for f in self.pt_regs:
            if f.name == name:
                return f
        return None


class BulkClassifier:
    """What the full analysis (kpatch_core.rules) asks a backend about every instruction at once.

    Every hook has a default that is slow but right, as the kernel's ``__weak`` functions: the
    base class makes capstone find the boundaries and :meth:`Backend.prepare` decide each
    address.  A backend overrides what it can do vectorised; arrays are numpy, addresses uint64,
    offsets int64, outcome codes uint16 (kpatch_core.bulk).
    """

    def __init__(self, backend: Backend, image: "Image") -> None:
        self.backend = backend
        self.image = image

    def classify(self, code: "np.ndarray", base: int, addrs: "np.ndarray", rel: "np.ndarray",
                 lens: "np.ndarray") -> "np.ndarray":
        """``arch_prepare_kprobe`` as outcome codes for sorted ``addrs`` (``code``: runtime bytes
        from ``base``; ``rel``: offsets into it; ``lens``: instruction lengths or -1).  Where the
        table cannot decide, ``SLOW`` sends the address to :meth:`prepare_at`.  Default: all SLOW."""
        import numpy as np

        from kpatch_core.bulk import SLOW
        return np.full(len(addrs), SLOW, np.uint16)

    def walk(self, code: "np.ndarray", starts: "np.ndarray", ends: "np.ndarray"
             ) -> "tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None":
        """The kernel's boundary walk from each function start ``[starts[i], ends[i])`` of
        ``code``: (offsets from the start, lengths, instructions per function, where each walk
        stopped or -1).  Default None: capstone's linear decode."""
        return None

    def fallback_length(self, code: bytes) -> int | None:
        """The length the kernel's decoder gives where capstone stops (0: the kernel's walk
        stops there too).  Default None: no opinion, the walk steps ``insn_align`` bytes on."""
        return None

    def length_fixup(self, code: "np.ndarray", offs: "np.ndarray", sizes: "np.ndarray"
                     ) -> tuple[int, int] | None:
        """The first decoded instruction whose length the kernel sees differently (x86 UD1),
        as (index, length); default None: capstone's lengths are the kernel's."""
        return None

    def adjust(self, fstart: "np.ndarray", offs: "np.ndarray", aa: "np.ndarray") -> "np.ndarray":
        """``arch_adjust_kprobe_addr`` for every address ``aa`` (function start ``fstart`` +
        ``offs``).  Default: :meth:`Backend.adjust_kprobe_addr` per address inside
        :attr:`Backend.adjust_window` when the backend overrides it."""
        backend = self.backend
        if type(backend).adjust_kprobe_addr is Backend.adjust_kprobe_addr:
            return aa
        out = aa.copy()
        for j in (offs < backend.adjust_window).nonzero()[0].tolist():
            out[j] = backend.adjust_kprobe_addr(self.image, int(fstart[j]), int(offs[j]))[0]
        return out

    def prepare_at(self, addr: int, func: "KSym") -> Execution | Refusal:
        """:meth:`Backend.prepare` for an address known to be an instruction boundary (a
        backend may skip its walk from the function start).  Default: ``prepare``."""
        return self.backend.prepare(PrepareContext(self.image, addr, func))

    def optimized(self, code: "np.ndarray", base: int, addrs: "np.ndarray", lens: "np.ndarray",
                  func_of: "np.ndarray", fstarts: "np.ndarray", fends: "np.ndarray",
                  cand: "np.ndarray", aa: "np.ndarray") -> "tuple[np.ndarray, np.ndarray]":
        """``[OPTIMIZED]`` for the accepted instructions ``cand`` (indexes into ``addrs``):
        (optimized, undecided) boolean arrays over ``cand``; undecided ones go through
        :meth:`Backend.optimizable` one by one.  Default: every one undecided."""
        import numpy as np
        return np.zeros(len(cand), bool), np.ones(len(cand), bool)

    def arch_blacklist_ranges(self) -> list[tuple[int, int]] | None:
        """Where :meth:`Backend.within_arch_blacklist` holds, as ``[start, end)`` ranges, so the
        blacklist is decided per function; default None: asked per address."""
        return None

    def uniform_inputs(self) -> "tuple[int, int, np.ndarray] | None":
        """What :meth:`classify` reads of an address besides the per-image facts: (bytes read
        before it, bytes read from it, sorted addresses where an address table it consults
        changes membership).  With it the full analysis classifies one instruction of a run of
        equal instructions for the run (kpatch_core.rules.uniform_representatives); default
        None: every instruction is classified."""
        return None


class SlotSupport:
    """Out-of-line execution of one architecture: the slot ``arch_prepare_kprobe`` fills, the
    kernel's emulation/simulation of an instruction, and how the executor (kpatch_core.executor)
    runs the CPU.  Hooks have weak defaults; what an architecture lacks it leaves to them.

    The upper-case attributes are facts: ``CPU`` (a ``kpatch_core.slot.CpuFacts``),
    ``SLOT_SIZE`` (``kprobe_insn_slots.insn_size``), ``FLAGS_FIXED`` (flag bits the kernel context
    holds fixed), ``BREAKPOINTS`` (every encoding that must trap; empty: the backend's
    breakpoint), ``TEST_KERNEL`` (the kernel version property tests decide with),
    ``COPIES_PC_RELATIVE`` (PC-relative forms are copied and relocated, not simulated) and
    ``FAULT_CLASSES`` (the engine's exception numbers as fault classes).
    """

    CPU: ClassVar["CpuFacts"]
    EXECUTABLE: ClassVar[bool] = False  # the executor (unicorn) runs this architecture's code
    TEXT_RANGE: ClassVar[tuple[int, int]] = (0, 0)  # (start, size) of typical kernel text
    MODULE_RANGE: ClassVar[tuple[int, int]] = (0, 0)  # (start, size) of the module area
    SLOT_SIZE: ClassVar[int] = 16
    FLAGS_FIXED: ClassVar[dict[str, int]] = {}
    BREAKPOINTS: ClassVar[tuple[bytes, ...]] = ()
    TEST_KERNEL: ClassVar[tuple[int, int]] = (6, 1)
    COPIES_PC_RELATIVE: ClassVar[bool] = False
    # the executor's fault text -> its class, for the engine's exception numbers (property (a)
    # counts an instruction that faulted in the plain run apart: it never executed)
    FAULT_CLASSES: ClassVar[dict[str, str]] = {}

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- the slot (required) -------------------------------------------------------------------
    def default_slot_addr(self, image: "Image | None" = None) -> int:
        """Where ``get_insn_slot`` would put the first slot (the module area)."""
        raise NotImplementedError(f"{self.backend.name}: default_slot_addr")

    # the backend is typed Any: an architecture's hooks take its own Backend subclass
    def build_slot(self, backend: Any, execution: Execution, addr: int,
                   slot_addr: int) -> "Slot | Refusal":
        """The slot bytes, byte for byte as ``arch_prepare_kprobe`` writes them, or a refusal."""
        raise NotImplementedError(f"{self.backend.name}: build_slot")

    def simulate(self, backend: Any, insn: bytes, addr: int, regs: "Mapping[str, int]",
                 read: "Callable[[int, int], bytes]") -> "Effect":
        """The kernel's emulate/simulate function for one instruction, as an ``Effect``."""
        raise NotImplementedError(f"{self.backend.name}: simulate")

    # -- the executor's hooks (weak defaults) -----------------------------------------------------
    def setup_cpu(self, uc: Any) -> None:
        """Prepare a fresh engine (s390x: 64-bit PSW mode); default nothing."""

    def trap_site(self, machine: "Machine", intno: int, pc: int) -> int | None:
        """The breakpoint site of an engine interrupt; None: not a breakpoint (another
        exception); negative: spurious, run again.  Default: the PC (less the breakpoint when
        the PC has moved past it, ``CPU.breakpoint_pc_advance``)."""
        return pc - len(self.backend.breakpoint) if self.CPU.breakpoint_pc_advance else pc

    def on_insn_invalid(self, machine: "Machine") -> int | None:
        """The breakpoint site when the engine reports an invalid instruction (riscv ebreak);
        default None: an invalid instruction is a fault."""
        return None

    def before_slot(self, machine: "Machine", slot: "Slot") -> None:
        """Before the slot runs (hardware single-step set-up); default nothing."""

    def after_step(self, machine: "Machine", slot: "Slot", pc: int) -> None:
        """After a hardware-stepped slot (s390 ``resume_execution``); default nothing."""

    def after_slot(self, slot: "Slot", trap_site: int) -> int:
        """The PC after the slot's trailing breakpoint trapped; default the resume address."""
        return slot.resume

    def breakpoint_for(self, insn: bytes) -> bytes:
        """The breakpoint written over ``insn`` (riscv: c.ebreak over a 2-byte instruction)."""
        return self.backend.breakpoint

    # -- what property tests need to know (weak defaults) ------------------------------------------
    def kernel_divergent(self, code: bytes) -> str | None:
        """Why the kernel's handling of ``code`` differs from the CPU's, or None."""
        return None

    def kernel_divergent_state(self, code: bytes, regs: "Mapping[str, int]") -> str | None:
        """Why the kernel's emulation of ``code`` differs from the CPU's for these register
        values only (a divergence no encoding test can see), or None."""
        return None

    def oracle_defect(self, code: bytes) -> str | None:
        """Why the execution engine mis-executes ``code`` (no run can be trusted), or None."""
        return None

    def not_comparable(self, code: bytes) -> str | None:
        """Why no two runs of ``code`` can be compared at all (its result is not a function of
        registers and memory: time, randomness, privileged, I/O or hypervisor state), or None."""
        return None

    def pc_relative_target(self, backend: Any, code: bytes, addr: int) -> int | None:
        """The address a copied PC-relative instruction names (when ``COPIES_PC_RELATIVE``)."""
        return None

    def reachable(self, target: int, slot_addr: int, length: int) -> bool:
        """Can a relocated copy at ``slot_addr`` still name ``target``?  Default yes."""
        return True


class UprobeSupport:
    """Uprobes of one architecture: ``arch_uprobe_analyze_insn``, the XOL slot and the kernel's
    emulation of a probed user instruction (kernel/events/uprobes.c and arch/*/kernel/uprobes.c).
    Facts: ``SWBP_INSN`` (UPROBE_SWBP_INSN), ``SWBP_INSN_SIZE``, ``MAX_UINSN_BYTES``,
    ``PAGE_SIZE``, ``XOL_STEP`` (how the XOL copy is stepped: "single" (single-step) or "trap"
    (runs to a trailing breakpoint)).  The first six hooks are required;
    the rest have weak defaults (engine defects and kernel divergences are the kprobe slot
    support's, the same CPU running the same instruction)."""

    SWBP_INSN: ClassVar[bytes]
    SWBP_INSN_SIZE: ClassVar[int]
    MAX_UINSN_BYTES: ClassVar[int]
    PAGE_SIZE: ClassVar[int] = 4096
    XOL_STEP: ClassVar[str]
    COPIES_PC_RELATIVE: ClassVar[bool] = False  # PC-relative forms are copied and retargeted
    ENGINE: ClassVar[str] = "unicorn"  # the execution oracle: "unicorn" or "qemu-user"
    USER_TOP: ClassVar[int | None] = None  # TASK_SIZE_MAX: no user page at or above it

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- required ------------------------------------------------------------------------------
    def is_trap_insn(self, insn: bytes, features: Any) -> bool:
        """``is_trap_insn``: the kernel refuses to probe a trap it did not place."""
        raise NotImplementedError(f"{self.backend.name}: is_trap_insn")

    def analyze_insn(self, backend: Any, insn: bytes, vaddr: int, features: Any) -> Any:
        """``arch_uprobe_analyze_insn``: how the instruction runs, or why it is refused."""
        raise NotImplementedError(f"{self.backend.name}: arch_uprobe_analyze_insn")

    def xol_slot(self, *args: Any) -> bytes:
        """``arch_uprobe_copy_ixol``: the XOL slot bytes."""
        raise NotImplementedError(f"{self.backend.name}: arch_uprobe_copy_ixol")

    def pre_xol(self, *args: Any) -> Any:
        """``arch_uprobe_pre_xol``."""
        raise NotImplementedError(f"{self.backend.name}: arch_uprobe_pre_xol")

    def post_xol(self, *args: Any) -> Any:
        """``arch_uprobe_post_xol``."""
        raise NotImplementedError(f"{self.backend.name}: arch_uprobe_post_xol")

    def insn_length(self, *args: Any) -> int:
        """The length of the instruction at the start of the bytes given."""
        raise NotImplementedError(f"{self.backend.name}: insn_length")

    # -- weak defaults -------------------------------------------------------------------------
    def emulate(self, backend: Any, analysis: Any, insn: bytes, vaddr: int,
                regs: "Mapping[str, int]", read: Any) -> Any:
        """``arch_uprobe_skip_sstep``: the kernel's emulation/simulation as an Effect, or None
        when the instruction is single-stepped in its XOL slot (default)."""
        return None

    def kernel_divergent(self, code: bytes) -> str | None:
        """Why the kernel runs ``code`` differently from the CPU; default: the kprobe slot's."""
        slots = self.backend.slot_support()
        return slots.kernel_divergent(code) if slots is not None else None

    def oracle_defect(self, code: bytes) -> str | None:
        """Why the execution engine mis-executes ``code``; default: the kprobe slot's."""
        slots = self.backend.slot_support()
        return slots.oracle_defect(code) if slots is not None else None

    def oracle_defect_at(self, code: bytes, vaddr: int) -> str | None:
        """An engine defect that depends on the address; default none."""
        return None

    def kernel_divergent_state(self, code: bytes, regs: "Mapping[str, int]") -> str | None:
        """A kernel divergence that depends on the registers; default none (the kprobe slot's
        are about kprobe emulation, which uprobes do not share unless an arch says so)."""
        return None

    def not_comparable(self, code: bytes) -> str | None:
        """Why two runs of ``code`` cannot be compared (privileged, clock, I/O); default: the
        kprobe slot's (the same CPU runs it)."""
        slots = self.backend.slot_support()
        return slots.not_comparable(code) if slots is not None else None

    def pc_relative_target(self, backend: Any, code: bytes, addr: int) -> int | None:
        """The address a copied PC-relative instruction names; None when none is copied."""
        return None


class Reloc(NamedTuple):
    """One module relocation type of a backend's ``apply_relocate_add`` table: its name, field
    width in bytes, and how the field is computed (numpy arrays in, field values and an
    overflow mask out)."""

    name: str
    width: int
    compute: Callable[[Any, Any, Any, Any], tuple[Any, Any]]
