"""Per-symbol facts of the full analysis report: compiler clones, subsystem (by name prefix),
text area, duplicate names, blacklist source, the entry shift, syscall entry points, and the
verdicts of ``p NAME`` / ``r NAME`` (``kretprobe``) read off the instruction outcomes.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import re
from collections import Counter
from typing import TYPE_CHECKING, Iterator

import attrs
import numpy as np

from kpatch_arch.base import Backend

from .analysis import TYPE_NAMES, TextSymbols
from .outcome import OPTIMIZED, Outcome, decode_code, refused_code
from .symbols import _LINKER_PROVIDED, base_name
from .verdict import Reason

if TYPE_CHECKING:
    from .image import Image
    from .verdict import Verdict

@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: building 100,000s of acyclic dicts and lists (facts,
    symbol tables) would otherwise trigger collections that rescan every one built so far
    (0.13 s of the entry facts on x86_64 6.12, 0.08 s of the work before the fork)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_CLONE = re.compile(r"\.(isra|constprop|part|cold|llvm|lto_priv|localalias|clone|str)\b")


def clone_kind(name: str) -> str | None:
    """The compiler-clone suffix kind of ``name`` (``foo.isra.0`` -> ``isra``), or None."""
    if "." not in name:
        return None
    m = _CLONE.search(name)
    if m:
        return m.group(1)
    return name.split(".", 2)[1] or "dot"  # another suffix: its first word


# subsystem from the name prefix (DWARF would be exact but costs minutes): prefix -> subsystem
SUBSYSTEM_PREFIXES: tuple[tuple[str, str], ...] = (
    ("sys_", "syscalls"),
    ("__se_sys_", "syscalls"), ("__do_sys_", "syscalls"),
    ("ext4_", "fs/ext4"), ("jbd2_", "fs/ext4"), ("xfs_", "fs/xfs"), ("btrfs_", "fs/btrfs"),
    ("nfs", "fs/nfs"), ("fat_", "fs/fat"), ("proc_", "fs/proc"), ("sysfs_", "fs/sysfs"),
    ("kernfs_", "fs/sysfs"), ("debugfs_", "fs/debugfs"), ("vfs_", "fs"), ("do_sys_", "fs"),
    ("file_", "fs"), ("inode_", "fs"), ("dentry_", "fs"), ("d_", "fs"), ("iomap_", "fs"),
    ("fsnotify", "fs"), ("seq_", "fs"), ("pipe_", "fs"), ("path_", "fs"), ("mnt_", "fs"),
    ("tcp_", "net/ipv4"), ("udp", "net/ipv4"), ("ip_", "net/ipv4"), ("inet", "net/ipv4"),
    ("ipv6_", "net/ipv6"), ("ip6", "net/ipv6"), ("tcp6", "net/ipv6"), ("nf_", "net/netfilter"),
    ("nft_", "net/netfilter"), ("xt_", "net/netfilter"), ("sock", "net"), ("sk_", "net"),
    ("skb_", "net"), ("__skb", "net"), ("netif_", "net"), ("dev_", "net"), ("net", "net"),
    ("neigh_", "net"), ("rtnl_", "net"), ("xdp_", "net"), ("unix_", "net"),
    ("bpf_", "bpf"), ("btf_", "bpf"), ("___bpf", "bpf"),
    ("kvm_", "kvm"), ("vmx_", "kvm"), ("svm_", "kvm"),
    ("sched_", "sched"), ("__schedule", "sched"), ("schedule", "sched"), ("update_", "sched"),
    ("enqueue_", "sched"), ("dequeue_", "sched"), ("pick_", "sched"), ("wake_up", "sched"),
    ("try_to_wake", "sched"), ("rcu_", "rcu"), ("srcu_", "rcu"),
    ("mutex_", "locking"), ("_raw_spin", "locking"), ("down_", "locking"), ("up_", "locking"),
    ("rwsem_", "locking"), ("queued_", "locking"), ("lock", "locking"),
    ("page_", "mm"), ("folio", "mm"), ("__folio", "mm"), ("kmem_", "mm"), ("kmalloc", "mm"),
    ("__kmalloc", "mm"), ("kfree", "mm"), ("vm_", "mm"), ("vma_", "mm"), ("mm_", "mm"),
    ("__mm", "mm"), ("alloc_", "mm"), ("__alloc", "mm"), ("free_", "mm"), ("__free", "mm"),
    ("pte_", "mm"), ("pmd_", "mm"), ("pud_", "mm"), ("slab_", "mm"), ("shmem_", "mm"),
    ("memcg", "mm"), ("mem_cgroup", "mm"), ("swap", "mm"), ("hugetlb", "mm"), ("zone_", "mm"),
    ("filemap_", "mm"), ("writeback", "mm"), ("balance_", "mm"), ("vmalloc", "mm"),
    ("cgroup", "cgroup"), ("css_", "cgroup"),
    ("trace", "trace"), ("ftrace", "trace"), ("perf_", "perf"), ("kprobe", "trace"),
    ("uprobe", "trace"), ("ring_buffer", "trace"), ("rb_", "trace"),
    ("irq", "irq"), ("__irq", "irq"), ("handle_", "irq"), ("softirq", "irq"),
    ("timer", "time"), ("hrtimer", "time"), ("tick_", "time"), ("clock", "time"),
    ("ktime_", "time"), ("timekeeping", "time"),
    ("crypto_", "crypto"), ("aes", "crypto"), ("sha", "crypto"), ("chacha", "crypto"),
    ("blk_", "block"), ("bio_", "block"), ("__blk", "block"), ("elv_", "block"),
    ("scsi_", "drivers/scsi"), ("ata_", "drivers/ata"), ("usb_", "drivers/usb"),
    ("pci_", "drivers/pci"), ("acpi_", "drivers/acpi"), ("drm_", "drivers/gpu"),
    ("tty_", "drivers/tty"), ("serial", "drivers/tty"), ("uart_", "drivers/tty"),
    ("input_", "drivers/input"), ("hid_", "drivers/hid"), ("virtio", "drivers/virtio"),
    ("nvme_", "drivers/nvme"), ("device_", "drivers/base"), ("driver_", "drivers/base"),
    ("bus_", "drivers/base"), ("platform_", "drivers/base"), ("of_", "drivers/of"),
    ("gpio", "drivers/gpio"), ("clk_", "drivers/clk"), ("regulator_", "drivers/regulator"),
    ("dma_", "dma"), ("iommu_", "drivers/iommu"), ("intel_", "arch"), ("amd_", "arch"),
    ("x86_", "arch"), ("native_", "arch"), ("xen_", "arch/xen"), ("entry_", "arch/entry"),
    ("audit", "audit"), ("security_", "security"), ("selinux", "security"), ("apparmor", "security"),
    ("key_", "security"), ("lsm_", "security"), ("kernel_", "kernel"), ("do_", "kernel"),
    ("__do_", "kernel"), ("signal", "kernel"), ("send_sig", "kernel"), ("copy_", "kernel"),
    ("kthread", "kernel"), ("workqueue", "kernel"), ("queue_work", "kernel"), ("printk", "printk"),
    ("_printk", "printk"), ("vprintk", "printk"), ("console_", "printk"), ("module", "module"),
    ("kallsyms", "kallsyms"), ("str", "lib"), ("mem", "lib"), ("bitmap_", "lib"), ("rb_", "lib"),
    ("radix_", "lib"), ("xa_", "lib"), ("idr_", "lib"), ("list_", "lib"), ("sort", "lib"),
    ("crc", "lib"), ("zstd", "lib"), ("lz4", "lib"), ("zlib", "lib"), ("xz_", "lib"),
    ("__cfi_", "cfi"), ("__pfx_", "cfi"),
)


@functools.cache
def _subsystem_table() -> tuple[dict[str, str], re.Pattern[str]]:
    """The prefix table with every registered backend's syscall entry prefixes, and one
    alternation of it, longest prefixes first (a match is the longest listed prefix)."""
    from .registry import backends
    table: dict[str, str] = {}
    arch_prefixes = [(p, "syscalls") for b in backends() for p in b.syscall_entry_prefixes()]
    for p, s in (*arch_prefixes, *SUBSYSTEM_PREFIXES):
        table.setdefault(p, s)
    return table, re.compile("|".join(re.escape(p) for p in sorted(table, key=len, reverse=True)))


def subsystem(name: str, area: str) -> str:
    """The subsystem a function most likely belongs to: the longest prefix of its name (or of
    the name without leading underscores) listed in SUBSYSTEM_PREFIXES or a backend's syscall entry prefix; else its text area when
    that is special (.entry.text...), else ``other``."""
    table, pattern = _subsystem_table()
    for n in (name, name.lstrip("_")):
        m = pattern.match(n)
        if m is not None:
            return table[m.group()]
    return area if area not in (".text",) else "other"


def text_areas(image: "Image") -> list[tuple[int, int, str]]:
    """Special text areas from ``__X_text_start``/``__X_text_end``-style linker symbols, sorted;
    only bounds kallsyms shows, which a /boot image holds too (5.10 arm64 kallsyms drops
    ``__kvm_nvhe_abort_guest_exit_start``, inside ``.hyp.text``: issue 17)."""
    out = []
    st = image.symtab
    names, shndx = st.names, st.shndx
    shown = np.zeros(len(names), bool)  # the symbol is a kallsyms entry
    shown[image.kallsyms.sym_index] = True

    def named(idx: list[int], prefix: str) -> tuple[dict[str, int], set[str]]:
        """Of the names at ``idx`` with ``prefix``: the first defined symbol of each
        (SymbolTable.index) and the names kallsyms shows."""
        first: dict[str, int] = {}
        seen: set[str] = set()
        for i in idx:
            n = names[i]
            if not n.startswith(prefix):
                continue
            if shndx[i] != 0 and n not in first:  # SHN_UNDEF
                first[n] = i
            if shown[i]:
                seen.add(n)
        return first, seen
    starts = st.ending_with("_start")  # one comparison of the names' last bytes
    start_first, start_shown = named(starts, "__")
    end_first, end_shown = named(st.ending_with("_end"), "__")
    pat = re.compile(r"^__(\w+?)_start$")
    for n in dict.fromkeys(names[i] for i in starts):
        if not n.startswith("__"):
            continue
        m = pat.match(n)
        if not m:
            continue
        stem = m.group(1)
        end_name = n[:-len("_start")] + "_end"
        if n not in start_shown or end_name not in end_shown:
            continue
        i, j = start_first.get(n), end_first.get(end_name)
        if i is None or j is None:
            continue
        s, e = int(st.values[i]), int(st.values[j])
        if not (e > s) or not image.tables.is_core_text(s):
            continue
        # linker symbols are NOTYPE, functions are not
        if int(st.info[i]) & 0xF != 0 or int(st.info[j]) & 0xF != 0:
            continue
        label = "." + stem.replace("_text", "") + ".text" if n.endswith("_text_start") else "." + stem
        out.append((s, e, label))
    out.sort()
    return out


@attrs.frozen
class StaticFacts:
    """The per-symbol facts that do not depend on instruction outcomes (``facts``: one dict per
    symbol, in the JSON field order), with the entry columns :func:`entry_facts` reads."""

    facts: list[dict]
    entry_addr: np.ndarray  # uint64: arch_adjust_kprobe_addr(SYM+lookup shift)
    entry_flag: np.ndarray  # bool: that address is on the function entry (kretprobes)
    lookup_shift: np.ndarray  # int64: kprobe_lookup_name's move of SYM+0


def symbol_areas(image: "Image", addrs: np.ndarray) -> list[str]:
    """The text area label of each address (:func:`text_areas`; the section name outside them):
    the last area starting at or before the address, when the address is below its end."""
    areas = text_areas(image)
    sec = image.section_at(image.tables.stext)
    sec_name = sec.name if sec else ".text"
    if not areas or not len(addrs):
        return [sec_name] * len(addrs)
    starts = np.array([x[0] for x in areas], np.uint64)
    ends = np.array([x[1] for x in areas], np.uint64)
    j = np.searchsorted(starts, addrs, side="right").astype(np.int64) - 1
    inside = (j >= 0) & (addrs < ends[np.maximum(j, 0)])
    labels = [x[2] for x in areas] + [sec_name]
    return [labels[k] for k in np.where(inside, j, len(areas)).tolist()]


def subsystems(names: list[str], areas: list[str], types: np.ndarray) -> list[str]:
    """:func:`subsystem` of every symbol, ``(linker symbol)`` for a non-function linker name."""
    table, pattern = _subsystem_table()
    match = pattern.match
    linker = _LINKER_PROVIDED.match
    out = []
    for name, area, ty in zip(names, areas, types.tolist()):
        if ty != 1 and linker(name):
            out.append("(linker symbol)")
            continue
        m = match(name)
        if m is None and name[:1] == "_":
            m = match(name.lstrip("_"))
        out.append(table[m.group()] if m is not None else area if area != ".text" else "other")
    return out


def entry_addresses(image: "Image", addrs: np.ndarray, shifts: np.ndarray, classifier: object
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``arch_adjust_kprobe_addr(SYM + shift)`` of every symbol: (address, on_func_entry), by
    the bulk classifier's ``entry_adjust`` when it has one, else per symbol (the backend's
    hook) unless the backend keeps the default (the address unmoved, entry at +0)."""
    backend = image.backend
    many = getattr(classifier, "entry_adjust", None)
    if many is not None:
        adj, flag = many(addrs, shifts)
        return np.asarray(adj, np.uint64), np.asarray(flag, bool)
    moved = addrs + shifts.astype(np.uint64)
    if type(backend).adjust_kprobe_addr is Backend.adjust_kprobe_addr:
        return moved, shifts == 0
    adj = np.zeros(len(addrs), np.uint64)
    flag = np.zeros(len(addrs), bool)
    for i, (a, sh) in enumerate(zip(addrs.tolist(), shifts.tolist())):
        x, f = backend.adjust_kprobe_addr(image, a, sh)
        adj[i], flag[i] = x, f
    return adj, flag


def static_facts(image: "Image", syms: TextSymbols, ff: dict | None,
                 classifier: object = None) -> StaticFacts:
    """Per-symbol facts that do not depend on instruction outcomes (computed while the workers
    decode); ``classifier``: the backend's bulk classifier (vectorised entry adjustment);
    ``ff``: the function_checks (kpatch_core.rules), else :func:`function_facts` adds their
    facts later (``notrace``, ``blacklist``, ``ftrace_sites`` hold their places)."""
    backend = image.backend
    names = syms.names
    addrs = np.asarray(syms.addrs, np.uint64)
    n = len(names)
    areas = symbol_areas(image, addrs)
    subs = subsystems(names, areas, syms.types)
    prefix = backend.syscall_prefix_for(image.features)
    name_count = Counter(image.kallsyms.names)  # kallsyms entries per name (C-speed count)
    addr_l = addrs.tolist()
    shifts = np.zeros(n, np.int64)
    many_lookup = getattr(classifier, "lookup_shifts", None)  # kprobe_lookup_name, vectorised
    if many_lookup is not None:
        shifts = np.asarray(many_lookup(names, addrs), np.int64)
    elif type(backend).lookup_name is not Backend.lookup_name:
        for i, (name, a) in enumerate(zip(names, addr_l)):
            la = backend.lookup_name(image, name, 0)
            shifts[i] = 0 if la is None else la - a
    adj, flag = entry_addresses(image, addrs, shifts, classifier)
    entry_shift = (adj - addrs).astype(np.int64).tolist()
    lookup_l = shifts.tolist()
    same = [name_count.get(name, 0) for name in names]
    tnames = [TYPE_NAMES[t] for t in syms.types.tolist()]
    plen = len(prefix) if prefix else 0
    with paused_gc():
        out = _fact_dicts(names, addr_l, syms, tnames, areas, subs, same, lookup_l, entry_shift,
                          prefix or "", plen, name_count)
    static = StaticFacts(out, adj, flag, shifts)
    if ff is not None:
        function_facts(image, static, ff)
    return static


def _fact_dicts(names: list[str], addr_l: list[int], syms: TextSymbols, tnames: list[str],
                areas: list[str], subs: list[str], same: list[int], lookup_l: list[int],
                entry_shift: list[int], prefix: str, plen: int, name_count: Counter[str]
                ) -> list[dict]:
    """The static facts dicts, in the JSON field order (``notrace``, ``blacklist``,
    ``ftrace_sites`` hold their places for :func:`function_facts`)."""
    out = [{"name": name, "address": hex(a), "size": size, "type": ty, "area": area,
            "subsystem": sub, "unique": k <= 1, "same_name": k, "clone": None,
            "notrace": None, "blacklist": None, "ftrace_sites": None, "lookup_shift": ls,
            "entry_shift": es,
            "syscall": name[plen:] if plen and name.startswith(prefix) else None}
           for name, a, size, ty, area, sub, k, ls, es in
           zip(names, addr_l, syms.sizes.tolist(), tnames, areas, subs, same, lookup_l,
               entry_shift)]
    for i, name in enumerate(names):
        if "." in name:
            b = base_name(name)
            out[i]["clone"] = {"kind": clone_kind(name), "base": b, "base_exists": b in name_count}
    return out


def function_facts(image: "Image", static: StaticFacts, ff: dict) -> None:
    """Fill in the facts the function checks (kpatch_core.rules.function_checks) decide:
    ``notrace``, ``blacklist`` (reason, source, detail), ``ftrace_sites``."""
    out = static.facts
    for d, nt, nrec in zip(out, ff["notrace"].tolist(), ff["nrec"].tolist()):
        d["notrace"] = nt
        d["ftrace_sites"] = nrec
    details = ff.get("bl_detail")
    t = image.tables
    for i in np.flatnonzero(ff["bl_code"]).tolist():
        o = decode_code(int(ff["bl_code"][i]))
        if details is not None and details[i] is not None:
            detail: str | None = details[i]
        else:
            hit = t.blacklist_hit(int(out[i]["address"], 16))
            detail = hit[1] if hit else None
        out[i]["blacklist"] = {"reason": o.reason.value if o.reason else None,
                               "source": _bl_source(detail) if detail is not None else None,
                               "detail": detail}


ENTRY_SCAN = 8  # instructions from a symbol's start entry_facts looks at for SYM + shift


def entry_facts(image: "Image", syms: TextSymbols, static: StaticFacts, lo: np.ndarray,
                counts: np.ndarray, offs: np.ndarray, codes: np.ndarray, fail: np.ndarray
                ) -> list[dict]:
    """Complete the per-symbol facts with the entry verdicts (``p NAME``, ``r NAME``)."""
    from .probe import check
    from .target import Target
    kret_bl = set(image.backend.kretprobe_blacklist)
    on_notrace = image.config.enabled("KPROBE_EVENTS_ON_NOTRACE")
    notrace_code = refused_code(Reason.NOTRACE)
    cells: dict[int, tuple] = {}

    def cell(c: int) -> tuple:  # (ok, method, reason, errno) of an outcome code
        v = cells.get(c)
        if v is None:
            o = decode_code(c)
            v = cells[c] = (o.ok, o.method.value if o.method else None,
                            o.reason.value if o.reason else None, o.errno)
        return v

    def outcome(c: int, addr: str | None) -> dict:
        ok, method, reason, errno = cell(c)
        return {"address": addr, "ok": ok, "method": method, "reason": reason, "errno": errno}

    features = image.features
    non_unique = "EINVAL" if features.has("EVENTS_NONUNIQUE_EINVAL") else "EADDRNOTAVAIL"
    unique_rule = features.has("EVENTS_UNIQUE_SYMBOL")
    validate_first = features.has("EVENTS_VALIDATE_SYMBOL_FIRST")
    non_unique_code = refused_code(Reason.NON_UNIQUE_SYMBOL, non_unique)
    not_entry_code = refused_code(Reason.RETPROBE_NOT_ENTRY)
    kret_bl_code = refused_code(Reason.KRETPROBE_BLACKLIST)
    # the outcome at SYM + lookup shift, -1 where that is no decoded boundary
    lo = np.asarray(lo, np.int64)
    counts = np.asarray(counts, np.int64)
    entry_code = np.full(len(counts), -1, np.int64)
    has = counts > 0
    at0 = np.zeros(len(counts), bool)
    at0[has] = offs[lo[has]] == 0
    sel = has & at0 & (static.lookup_shift == 0)
    entry_code[sel] = codes[lo[sel]].astype(np.int64) & ~OPTIMIZED
    # SYM + shift (a negative shift: SYM is another alias's address, not this symbol's): the
    # first instructions of all such symbols at once (offsets ascend within a symbol), the
    # few whose shift lies further in one by one
    moved = np.flatnonzero(has & (static.lookup_shift > 0))
    rel = static.lookup_shift[moved].astype(np.int64)
    pending = np.ones(len(moved), bool)
    for k in range(ENTRY_SCAN):
        inb = pending & (k < counts[moved])
        pos = np.where(inb, lo[moved] + k, 0)
        o = offs[pos].astype(np.int64) if len(offs) else np.zeros(len(moved), np.int64)
        hit = inb & (o == rel)
        entry_code[moved[hit]] = codes[pos[hit]].astype(np.int64) & ~OPTIMIZED
        pending &= inb & (o < rel)  # not found yet, and the shift is further in
    for i in moved[pending].tolist():
        c0, n0, r = int(lo[i]), int(counts[i]), int(static.lookup_shift[i])
        k = int(np.searchsorted(offs[c0:c0 + n0], np.uint32(r)))
        if k < n0 and int(offs[c0 + k]) == r:
            entry_code[i] = int(codes[c0 + k]) & ~OPTIMIZED
    # the kretprobe code where it follows from the entry's (the common case, vectorised):
    # not on the entry, notrace (kept as is), the kretprobe blacklist, else the entry's
    flags = np.asarray(static.entry_flag, bool)
    kret_code = entry_code.copy()
    if kret_bl:
        in_kret_bl = np.fromiter(map(kret_bl.__contains__, syms.names), bool, len(syms.names))
        kret_code[in_kret_bl & ((entry_code != notrace_code) | on_notrace)] = kret_bl_code
    kret_code[~flags] = not_entry_code
    unique = np.fromiter((d["same_name"] for d in static.facts), np.int64, len(static.facts)) <= 1
    special = (entry_code < 0) | (~unique & unique_rule)  # answered below, one by one
    where_l = list(map(hex, static.entry_addr.tolist()))
    fail = np.asarray(fail, np.int64)
    undecodable: list[str | None] = [None] * len(fail)
    for i in np.flatnonzero(fail >= 0).tolist():
        undecodable[i] = hex(int(syms.addrs[i]) + int(fail[i]))
    templates = {c: outcome(c, None) for c in  # outcome code -> its dict but the address
                 set(entry_code[~special].tolist()) | set(kret_code[~special].tolist())}
    with paused_gc():
        for d, ec, kc, sp, flag, where, und in zip(
                static.facts, entry_code.tolist(), kret_code.tolist(), special.tolist(),
                flags.tolist(), where_l, undecodable):
            if not sp:
                entry = templates[ec].copy()
                entry["address"] = where
                d["entry"] = entry
                kret = templates[kc].copy()
                kret["address"] = where
                d["kretprobe"] = kret
            elif d["same_name"] > 1 and unique_rule:
                # validate_probe_symbol / number_of_same_symbols (6.1: the retprobe check comes first)
                # (without it, 5.10.223: SYM is kallsyms_lookup_name's first match, each alias is
                # answered for its own address)
                entry = outcome(non_unique_code, None)
                d["entry"] = entry
                d["kretprobe"] = outcome(not_entry_code, None) if not validate_first and not flag \
                    else dict(entry)
            else:  # entry not on a decoded boundary: ask the pipeline
                name = d["name"]
                d["entry"] = _verdict_dict(check(image, Target(name, "p", symbol=name)))
                d["kretprobe"] = _verdict_dict(check(image, Target(name, "r", symbol=name)))
            d["undecodable_at"] = und
    return static.facts


def _bl_source(detail: str) -> str:
    """The blacklist source from a blacklist_hit detail (``foo: .noinstr.text (foo)`` ...)."""
    d = detail.split(": ", 1)[1] if ": " in detail else detail
    if d.startswith(("NOKPROBE_SYMBOL", "arch area", ".kprobes.text")):
        return d.split(" ", 1)[0] if not d.startswith("arch area") else "arch area"
    if " (" in d:
        return d.split(" (", 1)[0]
    return "NOKPROBE_SYMBOL"


def _outcome_dict(o: Outcome, addr: int | None) -> dict:
    return {"address": None if addr is None else hex(addr), "ok": o.ok, "method": o.method.value if o.method else None,
            "reason": o.reason.value if o.reason else None, "errno": o.errno}


def _verdict_dict(v: "Verdict") -> dict:
    return {"address": hex(v.address) if v.address is not None else None, "ok": v.ok,
            "method": v.method.value if v.method else None,
            "reason": v.reason.value if v.reason else None, "errno": v.errno if not v.ok else None}


def image_meta(image: "Image") -> dict:
    """What the summary prints about an image (arch, version, facts with their source...)."""
    facts = [[f.name, f.value, f.source] for f in sorted(image.config.facts.values(),
                                                         key=lambda f: f.name)]
    return {"path": image.path, "arch": image.backend.name, "version": str(image.version),
            "rules": image.features.rules, "rules_exact": image.features.exact,
            "banner": image.banner, "build_id": image.build_id,
            "facts": facts, "ftrace_sites": int(len(image.tables.ftrace_sites)),
            "blacklist_entries": len(image.tables.blacklist),
            "text_bytes": int(image.tables.etext - image.tables.stext),
            "capstone": [image.backend.capstone_arch, image.backend.capstone_mode,
                         image.backend.little_endian]}
