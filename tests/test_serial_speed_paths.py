"""The fast paths of the full analysis's serial and per-symbol work (issue 15) give exactly what
the plain paths give: ``function_checks`` (clone base names looked up once, the blacklist asked
per address only where it may answer) against the per-function walk through
``KernelTables.blacklist_hit``; ``Kallsyms.prefetch`` lookups against the whole-table name
dicts; ``text_areas`` against the walk over every symbol name; the summary's per-symbol counts
(``segment_sums``) against a running count, its per-code counts against counting each code."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpatch_arch.base import Backend
from kpatch_core import rules
from kpatch_core.analysis import TextSymbols, segment_sums
from kpatch_core.facts import text_areas
from kpatch_core.image import Image
from kpatch_core.symbols import Kallsyms, base_name
from kpatch_core.verdict import Reason

from conftest import real_vmlinux

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
IMAGES = ["x86_64/vmlinux", "x86_64/vmlinux-6.12", "arm64/vmlinux-6.12", "riscv64/vmlinux-6.12",
          "s390x/vmlinux", "ppc64le/vmlinux", "ppc64le/vmlinux-6.12"]
REAL = ["x86_64-6.12", "ppc64le-6.12", "s390x"]


def plain_function_checks(image: Image, syms: TextSymbols) -> dict[str, np.ndarray]:
    """``function_checks`` as a walk over every function (the code before issue 15's session 8):
    notrace deferral and ``blacklist_hit`` asked per function."""
    t = image.tables
    n = len(syms)
    fs = t.ftrace_sites
    lo = np.searchsorted(fs, syms.addrs)
    hi = np.searchsorted(fs, syms.addrs + np.maximum(syms.sizes, np.uint64(1)))
    nrec = (hi - lo).astype(np.int64)
    notrace = nrec == 0
    for i in np.nonzero(notrace)[0].tolist():
        name = syms.names[i]
        if "." in name:
            base = image.backend.lookup_name(image, base_name(name))
            if base:
                s = image.kallsyms.containing(base)
                notrace[i] = s is not None and not t.has_ftrace_record(s.addr, s.size)
                if s is None:
                    notrace[i] = False
    bl_code = np.zeros(n, np.uint16)
    bl_uniform = np.ones(n, bool)
    starts, ends, maxend = t._blacklist_arrays
    kt = t._range("__kprobes_text_start", "__kprobes_text_end")
    arch_hook = type(image.backend).within_arch_blacklist is not Backend.within_arch_blacklist
    clf = rules.STATE.get("classifier")
    arch_ranges = clf.arch_blacklist_ranges() if arch_hook and clf is not None else None
    fa, fe = syms.addrs, syms.addrs + np.maximum(syms.sizes, np.uint64(1))
    i_lo = np.searchsorted(starts, fa, side="right")
    i_hi = np.searchsorted(starts, fe, side="left")
    inner = i_hi > i_lo
    straddle = np.zeros(n, bool)
    for rs, re_ in arch_ranges or ():
        touch = (fa < np.uint64(re_)) & (fe > np.uint64(rs))
        straddle |= touch & ((fa < np.uint64(rs)) | (fe > np.uint64(re_)))
    bl_detail = np.full(n, None, object)
    for i in range(n):  # every function, candidate or not
        a, e = int(fa[i]), int(fe[i])
        uniform, hit = rules.blacklist_answer(t, a, e, bool(inner[i]), kt, int(i_lo[i]) - 1,
                                              maxend, arch_hook and (arch_ranges is None
                                                                     or bool(straddle[i])))
        bl_uniform[i] = uniform
        if hit is not None:
            bl_code[i] = rules.refused_code(hit[0])
            bl_detail[i] = hit[1]
    cfi = np.array([s.startswith(("__cfi_", "__pfx_")) for s in syms.names], bool)
    return {"nrec": nrec, "notrace": notrace, "bl_code": bl_code, "bl_uniform": bl_uniform,
            "bl_detail": bl_detail, "cfi": cfi}


def _check_equal(image: Image, syms: TextSymbols, plain: dict[str, np.ndarray]) -> None:
    fast = rules.function_checks(image, syms)
    assert set(fast) == set(plain)
    for k in plain:
        assert fast[k].tolist() == plain[k].tolist(), k


def _prepared(image: Image) -> TextSymbols:
    syms = TextSymbols.build(image, types=False)
    rules.prepare_state(image, syms, func_facts=False)
    return syms


@pytest.mark.parametrize("rel", IMAGES)
def test_function_checks_equal_the_per_function_walk(rel):
    image = Image.open(str(TESTDATA / rel))
    syms = _prepared(image)
    try:
        _check_equal(image, syms, plain_function_checks(image, syms))
    finally:
        rules.STATE.clear()


@pytest.mark.realkernel
@pytest.mark.parametrize("arch", REAL)
def test_function_checks_equal_the_per_function_walk_on_a_real_kernel(arch):
    image = Image.open(str(real_vmlinux(arch)))
    syms = _prepared(image)
    try:
        plain = plain_function_checks(image, syms)
        _check_equal(image, syms, plain)
        # per range, as the workers ask (a range's clones looked up in that range alone)
        n = len(syms)
        for lo, hi in [(0, n // 3), (n // 3, n // 3 + 7), (n - 500, n)]:
            sub = TextSymbols(syms.addrs[lo:hi], syms.sizes[lo:hi], syms.names[lo:hi],
                              syms.types[lo:hi])
            fast = rules.function_checks(image, sub)
            for k in plain:
                assert fast[k].tolist() == plain[k][lo:hi].tolist(), (k, lo, hi)
        # the case the fast path exists for: clones of blacklisted functions were found
        assert (plain["bl_code"] == rules.refused_code(Reason.BLACKLIST_SUFFIX)).any() \
            or arch == "s390x"
    finally:
        rules.STATE.clear()


def _fresh_kallsyms(image: Image) -> Kallsyms:
    k = image.kallsyms
    return Kallsyms(k.addrs, k.names, k.sym_index, k.symtab)


@pytest.mark.parametrize("rel", ["x86_64/vmlinux-6.12", "arm64/vmlinux-6.12"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_prefetched_lookups_equal_the_name_dicts(rel, data):
    image = Image.open(str(TESTDATA / rel))
    names = image.kallsyms.names
    picked = data.draw(st.lists(st.one_of(st.sampled_from(names), st.text(max_size=12),
                                          st.sampled_from(names).map(lambda s: s + ".isra.0")),
                                max_size=20))
    fast = _fresh_kallsyms(image)
    fast.prefetch(picked[: len(picked) // 2])
    fast.prefetch(picked)  # a second prefetch adds to the first
    plain = _fresh_kallsyms(image)
    plain._ends()
    for n in picked:
        assert fast._first_last is None  # answered without the whole-table dicts
        assert fast.lookup(n) == plain.lookup(n), n
    for n in names[:50] + ["no_such_symbol_here"]:  # names not prefetched: the dicts are built
        assert fast.lookup(n) == plain.lookup(n), n


def test_prefetch_keeps_the_first_of_duplicate_names():
    image = Image.open(str(TESTDATA / "x86_64/vmlinux"))
    k = image.kallsyms
    dup = next(n for n in k.names if k.count(n) > 1)
    fast = _fresh_kallsyms(image)
    fast.prefetch([dup])
    assert fast.lookup(dup) == k.addresses_of(dup)[0] == k.lookup(dup)


def plain_text_areas(image: Image) -> list[tuple[int, int, str]]:
    """``text_areas`` as a walk over every symbol name, membership in the whole-table dict."""
    out = []
    st_ = image.symtab
    shown = image.kallsyms._ends()[0]
    seen = set()
    pat = re.compile(r"^__(\w+?)_start$")
    for n in st_.names:
        if not n.endswith("_start") or not n.startswith("__"):
            continue
        m = pat.match(n)
        if not m or n in seen:
            continue
        seen.add(n)
        stem = m.group(1)
        end_name = n[:-len("_start")] + "_end"
        if n not in shown or end_name not in shown:
            continue
        s, e = st_.value(n), st_.value(end_name)
        if s is None or e is None or not (e > s) or not image.tables.is_core_text(s):
            continue
        i, j = st_.index(n), st_.index(end_name)
        if i is None or j is None or int(st_.info[i]) & 0xF != 0 or int(st_.info[j]) & 0xF != 0:
            continue
        label = "." + stem.replace("_text", "") + ".text" if n.endswith("_text_start") else "." + stem
        out.append((s, e, label))
    out.sort()
    return out


@pytest.mark.parametrize("rel", IMAGES)
def test_text_areas_equal_the_walk_over_every_name(rel):
    fast = text_areas(Image.open(str(TESTDATA / rel)))
    assert fast == plain_text_areas(Image.open(str(TESTDATA / rel)))


@pytest.mark.realkernel
@pytest.mark.parametrize("arch", ["x86_64-6.12", "arm64"])
def test_text_areas_equal_the_walk_on_a_real_kernel(arch):
    path = str(real_vmlinux(arch))
    fast = text_areas(Image.open(path))
    assert fast and fast == plain_text_areas(Image.open(path))


@st.composite
def _segments(draw):
    """A flat mask cut into consecutive symbols, each a real run then a fill tail."""
    counts = draw(st.lists(st.integers(0, 9), min_size=0, max_size=40))
    fill = [draw(st.integers(0, c)) for c in counts]
    mask = draw(st.lists(st.booleans(), min_size=sum(counts), max_size=sum(counts)))
    return np.array(mask, bool), np.array(counts, np.int64), np.array(fill, np.int64)


@settings(max_examples=300, deadline=None)
@given(_segments(), st.sampled_from([1, 2, 5, 16, 1 << 18]))
def test_segment_sums_equal_the_running_count(seg, block):
    import kpatch_core.analysis as an
    mask, counts, fill = seg
    lo = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64) if len(counts) else counts
    n = counts - fill
    before = np.zeros(len(mask) + 1, np.int64)  # the plain path: a running count over all
    np.cumsum(mask, out=before[1:])
    saved, an.COUNT_BLOCK = an.COUNT_BLOCK, block  # several blocks of segments, or one
    try:
        got = segment_sums(mask, lo, n)
    finally:
        an.COUNT_BLOCK = saved
    assert got.tolist() == (before[lo + n] - before[lo]).tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 7, 300, 0x7FFF, 0x8001, 0xFFFF]), st.booleans()),
                max_size=3000),
       st.sampled_from([1, 3, 64, 1 << 18]))
def test_split_counts_equal_a_count_per_code(pairs, block):
    import kpatch_core.analysis as an
    codes = np.array([c for c, _ in pairs], np.uint16)
    mask = np.array([m for _, m in pairs], bool)
    saved, an.COUNT_BLOCK = an.COUNT_BLOCK, block
    try:
        inside, outside = an._split_counts(codes, mask)
    finally:
        an.COUNT_BLOCK = saved
    for c in set(codes.tolist()):
        assert inside[c] == int(((codes == c) & mask).sum())
        assert outside[c] == int(((codes == c) & ~mask).sum())
    assert inside.sum() == mask.sum() and outside.sum() == (~mask).sum()


@pytest.mark.parametrize("rel", ["x86_64/vmlinux-6.12", "s390x/vmlinux", "ppc64le/vmlinux"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_symbol_values_found_by_their_keys_equal_the_name_dict(rel, data):
    image = Image.open(str(TESTDATA / rel))
    names = image.symtab.names
    undefined = [n for n, x in zip(names, image.symtab.shndx.tolist()) if x == 0]
    picked = data.draw(st.lists(st.one_of(st.sampled_from(names), st.sampled_from(undefined),
                                          st.text(max_size=10), st.just("")), max_size=30))
    fast = Image.open(str(TESTDATA / rel)).symtab
    plain = Image.open(str(TESTDATA / rel)).symtab
    plain._dict()  # the whole-table dict from the start
    for n in picked:
        assert fast.value(n) == plain.value(n) and fast.index(n) == plain.index(n), n
    assert fast._first is None or len(set(picked)) > fast.SEARCHES


@pytest.mark.realkernel
def test_symbol_values_found_by_their_keys_on_a_real_kernel():
    path = str(real_vmlinux("x86_64-6.12"))
    fast, plain = Image.open(path).symtab, Image.open(path).symtab
    first = plain._dict()
    sample = plain.names[::997] + ["_stext", "_etext", "__start_mcount_loc", "no_such_name"]
    for n in sample[: fast.SEARCHES]:
        assert fast.index(n) == first.get(n), n
    assert fast._first is None  # answered without the dict
    for n in sample[fast.SEARCHES:]:  # past the searches: the dict
        assert fast.index(n) == first.get(n), n


@pytest.mark.parametrize("rel", ["x86_64/vmlinux-6.12", "riscv64/vmlinux-6.12"])
@settings(max_examples=40, deadline=None)
@given(suffix=st.one_of(st.sampled_from(["_start", "_end", "t", "_text_end", "xx_yy_zz"]),
                        st.text(st.sampled_from("_abcdestx0.9"), min_size=1, max_size=9)))
def test_names_ending_with_a_suffix_equal_str_endswith(rel, suffix):
    stab = Image.open(str(TESTDATA / rel)).symtab
    assert stab._keys is not None  # an ASCII table: the fast path runs
    assert stab.ending_with(suffix) == [i for i, n in enumerate(stab.names) if n.endswith(suffix)]


def plain_entry_facts(image: Image, a, static) -> list[dict]:
    """``entry_facts``'s per-symbol answers as one branch per symbol (the code before issue 15's
    session 8), on copies of the static facts."""
    import copy

    from kpatch_core.facts import _verdict_dict
    from kpatch_core.outcome import OPTIMIZED, decode_code, refused_code
    from kpatch_core.probe import check
    from kpatch_core.target import Target
    out = copy.deepcopy(static.facts)
    kret_bl = set(image.backend.kretprobe_blacklist)
    on_notrace = image.config.enabled("KPROBE_EVENTS_ON_NOTRACE")
    f = image.features
    non_unique_code = refused_code(Reason.NON_UNIQUE_SYMBOL, "EINVAL" if
                                   f.has("EVENTS_NONUNIQUE_EINVAL") else "EADDRNOTAVAIL")

    def outcome(c: int, addr: str | None) -> dict:
        o = decode_code(c)
        return {"address": addr, "ok": o.ok, "method": o.method.value if o.method else None,
                "reason": o.reason.value if o.reason else None, "errno": o.errno}
    for i, d in enumerate(out):
        o, _, c = a.insns(i)
        shift = int(static.lookup_shift[i])
        k = np.flatnonzero(o == shift) if len(o) else []
        ec = int(c[k[0]]) & ~OPTIMIZED if len(k) else -1
        adj, flag, name = int(static.entry_addr[i]), bool(static.entry_flag[i]), d["name"]
        if d["same_name"] > 1 and f.has("EVENTS_UNIQUE_SYMBOL"):
            entry = outcome(non_unique_code, None)
            kret = outcome(refused_code(Reason.RETPROBE_NOT_ENTRY), None) \
                if not f.has("EVENTS_VALIDATE_SYMBOL_FIRST") and not flag else dict(entry)
        elif ec < 0:
            entry = _verdict_dict(check(image, Target(name, "p", symbol=name)))
            kret = _verdict_dict(check(image, Target(name, "r", symbol=name)))
        else:
            entry = outcome(ec, hex(adj))
            if not flag:
                kret = outcome(refused_code(Reason.RETPROBE_NOT_ENTRY), hex(adj))
            elif ec == refused_code(Reason.NOTRACE) and not on_notrace:
                kret = dict(entry)
            elif name in kret_bl:
                kret = outcome(refused_code(Reason.KRETPROBE_BLACKLIST), hex(adj))
            else:
                kret = dict(entry)
        d["entry"], d["kretprobe"] = entry, kret
    return out


@pytest.mark.parametrize("rel", IMAGES)
def test_entry_facts_equal_one_branch_per_symbol(rel):
    from kpatch_core import analyze as A
    from kpatch_core.facts import entry_facts, static_facts
    image = Image.open(str(TESTDATA / rel))
    a = A.analyze(image, jobs=1)
    clf = image.backend.bulk_classifier(image)
    static = static_facts(image, a.syms, None, clf)
    plain = plain_entry_facts(image, a, static)
    fail = np.full(len(a), -1, np.int64)
    fast = entry_facts(image, a.syms, static, a.lo, a.counts, a.offs, a.codes, fail)
    assert [(d["entry"], d["kretprobe"]) for d in fast] == \
        [(d["entry"], d["kretprobe"]) for d in plain]
    assert all(d["undecodable_at"] is None for d in fast)
    assert [list(d) for d in fast] == [list(d) + ["undecodable_at"] for d in plain]


_FRAGMENTS = ["$", ".L", "__crc_", "__kstrtab_", "__efistub_", "__kvm_nvhe_", "__kvm_nvhe_$",
              "__pi_", "__kcfi_typeid_", "__AArch64ADRPThunk_", "_from_arm", "_from_thumb",
              "_veneer", ".long_branch.", ".plt_branch.", "_branch.", "L0", "_SDA_BASE_",
              "kallsyms_names", "kallsyms_offsets", "kallsyms_num_syms", "foo", "x", "_", ".",
              "é", "\x7f"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_FRAGMENTS), max_size=4).map("".join), max_size=60))
def test_vectorised_kallsyms_filter_equals_kallsyms_keeps(names):
    from kpatch_core.symbols import kallsyms_keep_mask, kallsyms_keeps
    assert kallsyms_keep_mask(names).tolist() == [kallsyms_keeps(n) for n in names]


@pytest.mark.parametrize("rel", IMAGES)
def test_symtab_filter_equals_kallsyms_keeps(rel):
    from kpatch_core.symbols import kallsyms_keeps
    stab = Image.open(str(TESTDATA / rel)).symtab
    assert stab.kallsyms_kept().tolist() == [kallsyms_keeps(n) for n in stab.names]


@pytest.mark.realkernel
@pytest.mark.parametrize("arch", ["x86_64-6.12", "arm64-6.12", "ppc64le-6.12"])
def test_symtab_filter_equals_kallsyms_keeps_on_a_real_kernel(arch):
    from kpatch_core.symbols import kallsyms_keeps
    stab = Image.open(str(real_vmlinux(arch))).symtab
    assert stab.kallsyms_kept().tolist() == [kallsyms_keeps(n) for n in stab.names]


def test_opening_an_image_loads_only_the_backends_up_to_its_own():
    import subprocess
    import sys
    from kpatch_core import registry
    first = registry.backends()[0]  # first in entry-point name order
    prog = ("import sys; from kpatch_core.registry import backend_for, backends; "
            f"b = backend_for({first.elf_machine!r}, {first.little_endian!r}); "
            "loaded = sorted(m for m in sys.modules if m.startswith('kpatch_arch.') "
            "and m.count('.') == 1); "
            "print(b.name, ','.join(loaded), b is backends()[0], len(backends()))")
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == first.name
    own = f"kpatch_arch.{type(first).__module__.split('.')[1]}"
    assert set(out[1].split(",")) == {own, "kpatch_arch.base"}  # no other backend package
    assert out[2] == "True" and int(out[3]) == len(registry.backends())  # one instance each


@pytest.mark.parametrize("rel", IMAGES)
def test_jump_label_sizes_equal_one_call_per_site(rel):
    image = Image.open(str(TESTDATA / rel))
    sites = image.tables.jump_labels[0]
    # every site of the table, and addresses where the word cannot be read whole
    probe = np.concatenate([sites, np.array([image.tables.etext - 1, image.tables.etext - 3,
                                             image.tables.stext], np.uint64)])
    b = image.backend
    assert b.jump_label_sizes(image, probe).tolist() == \
        [b.jump_label_size(image, int(c)) for c in probe.tolist()]


@pytest.mark.realkernel
def test_jump_label_sizes_equal_one_call_per_site_on_a_real_kernel():
    image = Image.open(str(real_vmlinux("x86_64-6.12")))
    sites = image.tables.jump_labels[0]
    assert len(sites) > 1000
    b = image.backend
    assert b.jump_label_sizes(image, sites).tolist() == \
        [b.jump_label_size(image, int(c)) for c in sites.tolist()]
    assert set(b.jump_label_sizes(image, sites).tolist()) == {2, 5}


def plain_evidence_types(image: Image, lo: int, hi: int) -> np.ndarray:
    """``evidence_types`` with every name looked up in the set of every BTF string and the
    ``__mcount_loc`` records sorted by each reader (the code before issue 15's session 8)."""
    from kpatch_core.bootimage.symbol_types import (FUNCTION_ENTRY_WORDS, btf_string_names,
                                                    near_mcount, own_records, symbol_infos)
    ks = image.kallsyms
    names = ks.names[lo:hi]
    addrs = np.asarray(ks.addrs[lo:hi], np.uint64)
    s = image.section(".BTF")
    btf = btf_string_names(image.data[s.offset:s.offset + s.size]) if s is not None else frozenset()
    mcount = image.tables.mcount_records
    evidence = near_mcount(addrs, mcount[mcount != 0]) if len(mcount) else np.zeros(len(addrs), bool)
    machine = int.from_bytes(image.data[18:20], "little" if image.little_endian else "big")
    words = FUNCTION_ENTRY_WORDS.get(machine)
    if words:
        evidence |= np.isin(image.read_u32_at(addrs), np.array(words, np.uint32))
    in_btf = np.array([n in btf for n in names], bool)
    info = symbol_infos("t" * len(names), names, np.ones(len(names), bool), in_btf, evidence,
                        own_records(addrs, mcount[mcount != 0]))
    return info & np.uint8(0xF)


def _text_span(image: Image) -> tuple[int, int]:
    ks, t = image.kallsyms, image.tables
    lo, hi = np.searchsorted(ks.addrs, np.array([t.stext, t.etext], np.uint64), side="left")
    return int(lo), int(hi)


@pytest.mark.parametrize("rel", IMAGES)
def test_evidence_types_equal_every_name_looked_up(rel):
    from kpatch_core.bootimage.symbol_types import evidence_types
    image = Image.open(str(TESTDATA / rel))
    lo, hi = _text_span(image)
    assert evidence_types(image, lo, hi).tolist() == plain_evidence_types(image, lo, hi).tolist()


@pytest.mark.realkernel
@pytest.mark.parametrize("arch", ["x86_64-6.12", "arm64-6.12"])
def test_evidence_types_equal_every_name_looked_up_on_a_real_kernel(arch):
    from kpatch_core.bootimage.symbol_types import evidence_types
    image = Image.open(str(real_vmlinux(arch)))
    lo, hi = _text_span(image)
    fast = evidence_types(image, lo, hi)
    assert fast.tolist() == plain_evidence_types(image, lo, hi).tolist()
    assert len(set(fast.tolist())) > 1


def plain_alias_order(st_, text_ranges=None):
    """Kallsyms.build's order with each alias group sorted by Python (the code before issue
    15's session 8): (weak, linker-provided, leading underscores, name bytes), stable."""
    from kpatch_core.symbols import (SHN_ABS, SHN_UNDEF, STB_LOCAL, STB_WEAK, STT_FILE,
                                     STT_SECTION, _is_linker_provided)
    typ, bind = st_.info & 0xF, st_.info >> 4
    keep = (st_.shndx != SHN_UNDEF) & (typ != STT_SECTION) & (typ != STT_FILE)
    keep &= ~((st_.shndx == SHN_ABS) & (bind == STB_LOCAL))
    keep &= st_.kallsyms_kept()
    idx = np.nonzero(keep)[0].tolist()
    names = [st_.names[i] for i in idx]
    idx_arr = np.array(idx, dtype=np.int64)
    addrs = st_.values[idx_arr]
    order_l = np.argsort(addrs, kind="stable").tolist()
    weak = bind[idx_arr] == STB_WEAK
    groups: dict[int, list[int]] = {}
    for p, i in enumerate(order_l):
        groups.setdefault(int(addrs[i]), []).append(p)
    for ps in groups.values():
        if len(ps) > 1:
            g = sorted((order_l[p] for p in ps), key=lambda i: (
                bool(weak[i]), _is_linker_provided(names[i]),
                len(names[i]) - len(names[i].lstrip("_")), names[i].encode()))
            for p, i in zip(ps, g):
                order_l[p] = i
    return [names[i] for i in order_l], idx_arr[order_l].tolist()


_ALIAS_NAMES = st.lists(st.sampled_from(["_", "__", "start_", "stop_", "end_", "foo", "bar", "x",
                                         "_start", "_end", ".isra.0", "é"]),
                        min_size=1, max_size=4).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_ALIAS_NAMES, st.integers(0, 5), st.sampled_from([0, 1, 2])),
                min_size=1, max_size=40))
def test_alias_groups_sorted_at_once_equal_python_sorts(rows):
    from kpatch_core.symbols import STT_FUNC, SymbolTable
    n = len(rows) + 1  # index 0: the undefined null symbol, as in every ELF
    names = [""] + [r[0] for r in rows]
    values = np.array([0] + [0x1000 + 16 * r[1] for r in rows], np.uint64)
    info = np.array([0] + [(r[2] << 4) | STT_FUNC for r in rows], np.uint8)
    shndx = np.array([0] + [1] * len(rows), np.uint16)
    stab = SymbolTable(values, np.zeros(n, np.uint64), info, np.zeros(n, np.uint8), shndx, names)
    ks = Kallsyms.build(stab)
    plain_names, plain_idx = plain_alias_order(stab)
    assert ks.names == plain_names and ks.sym_index.tolist() == plain_idx
