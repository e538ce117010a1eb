"""The core engine on the x86_64 test image: Image, symbols/kallsyms, kernel tables, config facts.

Expected values come from the image's sources (testdata/x86_64/*.c, insns.S, kernel.lds) and,
where a second reading is cheap, from the raw bytes decoded independently here.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from conftest import X86_VMLINUX, X86_VMLINUX_612, open_image
from kpatch_core.config import KernelConfig, read_config_file
from kpatch_core.errors import InputError
from kpatch_core.image import Image, KernelVersion
from kpatch_core.symbols import STB_WEAK, base_name, kallsyms_keeps
from kpatch_core.tables import relative_targets

TEXT_BASE = 0xFFFFFFFF81000000


# --- Image ----------------------------------------------------------------------------------

def test_image_headers(x86):
    assert x86.backend.name == "x86_64" and x86.little_endian and x86.endian == "<"
    text = x86.section(".text")
    assert text.addr == TEXT_BASE and text.size > 0
    assert x86.section_at(TEXT_BASE + 5) == text
    assert x86.section_at(0x1000) is None
    assert x86.section(".no_such") is None


def test_read_by_address(x86):
    start = x86.symtab.value("plain_func")
    assert x86.read(start, 4) == bytes.fromhex("f30f1efa")  # ENDBR64 (-fcf-protection)
    assert x86.read(start + 4, 1) == b"\xe8"  # call __fentry__ in the file
    text = x86.section(".text")
    assert len(x86.read(text.end - 2, 16)) == 2  # clipped at the section end
    assert x86.read(0x1000, 4) == b""
    assert x86.read(x86.symtab.value("__bss_start"), 4) == b""  # NOBITS has no file bytes


def test_read_pointers_match_struct(x86):
    s, e = x86.symtab.value("__start_mcount_loc"), x86.symtab.value("__stop_mcount_loc")
    raw = x86.read(s, e - s)
    want = list(struct.unpack(f"<{len(raw) // 8}Q", raw))
    assert x86.read_pointers(s, e).tolist() == want
    assert x86.read_words(s, s + 8, "u4").tolist() == list(struct.unpack("<2I", raw[:8]))


def test_version_and_rules(x86, x86_612):
    assert x86.banner.startswith("Linux version 6.1.0-kpatch-test ")
    assert x86.version == KernelVersion(6, 1, 0) and x86.version.rules == "6.1"
    assert x86_612.version == KernelVersion(6, 12, 0) and x86_612.version.rules == "6.12"
    assert str(KernelVersion(6, 1, 176)) == "6.1.176"
    assert KernelVersion(6, 5).rules == "6.1" and KernelVersion(6, 6).rules == "6.12"
    assert KernelVersion(7, 0).at_least(6, 12) and not KernelVersion(6, 1).at_least(6, 12)


def test_build_id_from_notes(x86):
    notes = x86.section(".notes")
    raw = x86.data[notes.offset:notes.offset + notes.size]
    namesz, descsz, ntype = struct.unpack("<3I", raw[:12])
    assert (ntype, raw[12:16]) == (3, b"GNU\0")
    assert x86.build_id == raw[16:16 + descsz].hex() and len(x86.build_id) == 40


# --- symbols and the kallsyms view ---------------------------------------------------------------

def test_symtab(x86):
    st = x86.symtab
    assert st.value("_stext") == TEXT_BASE
    assert st.value("startup_64") == TEXT_BASE
    assert st.value("no_such_symbol") is None
    assert st.value(".Lx_cli") is not None  # local labels are in .symtab (--discard-none)
    i = st.index("alias_a_weak")
    assert st.info[i] >> 4 == STB_WEAK


@pytest.mark.parametrize("name,kept", [
    ("vfs_read", True), ("foo.isra.0", True), ("$x", False), ("$d.1", False), (".Lfoo", False),
    ("__crc_vfs_read", False), ("__kstrtab_vfs_read", False), ("__efistub_x", False),
    ("foo_veneer", False), ("a.long_branch.b", False), ("kallsyms_names", False), ("", False),
])
def test_kallsyms_keeps(name, kept):
    assert kallsyms_keeps(name) is kept


def test_kallsyms_drops_mapping_and_local_symbols(x86):
    raw = set(x86.symtab.names)
    assert {"$x", ".Lalias_local", ".Lr_int3"} <= raw
    names = set(x86.kallsyms.names)
    assert not any(n.startswith(("$", ".L")) for n in names)
    # so they do not split the function they sit in
    f = x86.symtab.value("alias_c")
    for label in ("$x", ".Lalias_local"):
        assert x86.kallsyms.containing(x86.symtab.value(label)).name == "alias_c"
    assert x86.kallsyms.containing(x86.symtab.value(".Lr_int3")).name == "insn_refused"
    assert x86.kallsyms.containing(f).addr == f


def test_kallsyms_sizes_are_distance_to_next_symbol(x86):
    ks = x86.kallsyms
    sizes = ks.usizes[:-1].astype(np.int64)
    assert (sizes == np.diff(ks.uaddrs.astype(np.int64))).all() and (sizes > 0).all()
    # padded_func: ELF st_size covers its 10 bytes, kallsyms runs to the next symbol
    i = x86.symtab.index("padded_func")
    f = ks.containing(x86.symtab.value("padded_func"))
    assert int(x86.symtab.sizes[i]) < f.size == x86.symtab.value("__pfx_prefixed_func") - f.addr
    # a function followed by linker int3 fill owns the fill
    g = ks.containing(x86.symtab.value("dup_a_caller"))
    assert x86.read(g.end - 1, 1) == b"\xcc"


def test_kallsyms_first_alias_order(x86):
    ks = x86.kallsyms
    # non-weak first, then fewer leading underscores, then name (scripts/kallsyms.c)
    assert ks.aliases_at(x86.symtab.value("alias_c")) == ["alias_c", "alias_d", "_alias_b", "alias_a_weak"]
    assert ks.containing(x86.symtab.value("alias_a_weak") + 5).name == "alias_c"
    # linker-provided symbols sort after the function at the same address
    assert ks.aliases_at(x86.symtab.value("kprobes_text_func")) == ["kprobes_text_func",
                                                                    "__kprobes_text_start"]
    assert ks.aliases_at(TEXT_BASE)[0] == "startup_64"
    assert ks.containing(x86.symtab.value("noinstr_func")).name == "noinstr_func"


def test_kallsyms_lookups(x86):
    ks = x86.kallsyms
    dups = ks.addresses_of("dup_static")
    assert len(dups) == 2 and ks.count("dup_static") == 2 and ks.lookup("dup_static") == min(dups)
    assert ks.count("plain_func") == 1 and ks.count("nope") == 0 and ks.lookup("nope") is None
    assert ks.lookup("asm_nokprobe_func.isra.0") is not None
    assert ks.containing(TEXT_BASE - 1) is None
    names = [s.name for s in ks.in_range(TEXT_BASE, x86.symtab.value("plain_loop") + 1)]
    assert names == ["startup_64", "nokprobe_func", "plain_func", "plain_loop"]


def test_base_name():
    assert base_name("foo.isra.0") == "foo"
    assert base_name("foo.constprop.0.isra.0") == "foo"
    assert base_name("foo") == "foo"


# --- kernel tables --------------------------------------------------------------------------------

def _fentry_calls(image) -> set[int]:
    """`call __fentry__` sites found by decoding every text function (independent of __mcount_loc)."""
    fentry = image.symtab.value("__fentry__")
    t = image.tables
    out = set()
    for f in image.kallsyms.in_range(t.stext, t.etext):
        for a in image.backend.boundaries(image.read(f.addr, f.size), f.addr):
            b = image.read(a, 5)
            if b[:1] == b"\xe8" and a + 5 + int.from_bytes(b[1:], "little", signed=True) == fentry:
                out.add(a)
    return out


def test_ftrace_sites_are_the_fentry_calls(x86):
    sites = set(x86.tables.ftrace_sites.tolist())
    assert sites == _fentry_calls(x86) and len(sites) > 25
    assert x86.tables.is_ftrace_site(x86.symtab.value("plain_func") + 4)
    assert not x86.tables.is_ftrace_site(x86.symtab.value("plain_func"))


def test_init_text_ftrace_records_are_dropped(x86):
    s, e = x86.symtab.value("__start_mcount_loc"), x86.symtab.value("__stop_mcount_loc")
    raw = set(x86.read_pointers(s, e).tolist())
    init_site = x86.symtab.value("init_func") + 4
    assert init_site in raw and not x86.tables.is_ftrace_site(init_site)
    assert len(raw) == len(x86.tables.ftrace_sites) + 1


def test_has_ftrace_record(x86):
    ks, t = x86.kallsyms, x86.tables
    f = ks.containing(x86.symtab.value("plain_func"))
    assert t.has_ftrace_record(f.addr, f.size)
    g = ks.containing(x86.symtab.value("notrace_func"))
    assert not t.has_ftrace_record(g.addr, g.size)
    assert t.ftrace_sites_in(f.addr, f.end) == [f.addr + 4]


def test_text_ranges(x86):
    t = x86.tables
    assert t.stext == TEXT_BASE and t.etext == x86.symtab.value("_etext")
    assert t.is_core_text(x86.symtab.value("plain_func")) and not t.is_core_text(t.etext)
    init = x86.symtab.value("init_func")
    assert t.is_init_text(init) and not t.is_core_text(init)


def test_nokprobe_list(x86):
    want = {x86.symtab.value("nokprobe_func"), x86.symtab.value("asm_nokprobe_func")}
    assert set(x86.tables.nokprobe_list.tolist()) == want


def test_blacklist_as_populate_kprobe_blacklist_builds_it(x86):
    ks = x86.kallsyms
    got = {(b.symbol, b.source, b.start, b.end) for b in x86.tables.blacklist}
    want = set()
    for name, source in [("nokprobe_func", "NOKPROBE_SYMBOL"), ("asm_nokprobe_func", "NOKPROBE_SYMBOL"),
                         ("kprobes_text_func", ".kprobes.text"), ("noinstr_func", ".noinstr.text"),
                         ("entry_SYSCALL_64", "entry_text"), ("entry_INT80_compat", "entry_text")]:
        s = ks.containing(x86.symtab.value(name))
        want.add((name, source, s.addr, s.end))
    assert got == want


def test_blacklist_hit(x86):
    from kpatch_core.verdict import Reason
    t, v = x86.tables, x86.symtab.value
    assert t.blacklist_hit(v("nokprobe_func") + 9)[0] == Reason.BLACKLIST_NOKPROBE
    assert t.blacklist_hit(v("kprobes_text_func"))[0] == Reason.BLACKLIST_AREA
    assert t.blacklist_hit(v("noinstr_func") + 4)[0] == Reason.BLACKLIST_AREA
    assert t.blacklist_hit(v("entry_INT80_compat"))[0] == Reason.BLACKLIST_AREA
    assert t.blacklist_hit(v("asm_nokprobe_func.isra.0") + 9)[0] == Reason.BLACKLIST_SUFFIX
    for name in ("plain_func", "insn_helper.constprop.0", "jump_label_func", "startup_64"):
        assert t.blacklist_hit(v(name)) is None, name


def test_jump_labels(x86):
    starts, ends = x86.tables.jump_labels
    v = x86.symtab.value
    assert starts.tolist() == [v("jump_label_func") + 9, v("jump_label_jmp_func") + 9]
    assert (ends - starts).tolist() == [5, 2]  # NOP5 / jmp8 (arch_jump_entry_size)
    assert x86.tables.jump_label_hit(v("jump_label_func") + 13) == v("jump_label_func") + 9
    assert x86.tables.jump_label_hit(v("jump_label_func") + 14) is None


def test_static_call_sites(x86):
    site = x86.symtab.value(".Lsc_site")
    assert x86.tables.static_call_sites.tolist() == [site]
    assert x86.tables.static_call_hit(site + 4) == site and x86.tables.static_call_hit(site + 5) is None


def test_bug_table(x86):
    assert x86.config.bug_entry_size == 12
    sites = x86.tables.bug_sites.tolist()
    assert len(sites) == 2 and x86.symtab.value(".Lbug_site") in sites
    assert all(x86.read(s, 2) == b"\x0f\x0b" for s in sites)
    assert not x86.tables.is_bug_site(x86.symtab.value(".Lr_ud2"))


def test_exception_table(x86):
    ex = x86.tables.extable.tolist()
    assert x86.symtab.value(".Lb_ex") in ex and len(ex) == 2
    f = x86.symtab.value("extable_func")
    assert list(x86.tables.extable_in(f, f + 32)) == [f + 9]
    assert x86.tables.has_extable(f + 9) and not x86.tables.has_extable(f + 10)


def test_relative_targets_wrap_modulo_2_64():
    rel = np.array([-8, 16], dtype=np.int32)
    got = relative_targets(rel, 0xFFFFFFFFFFFFFFF0, 8)
    assert got.tolist() == [0xFFFFFFFFFFFFFFE8, 0x0000000000000008]


# --- configuration facts --------------------------------------------------------------------------

def test_inferred_facts(x86):
    c = x86.config
    for name in ("KPROBES_ON_FTRACE", "PREEMPTION", "X86_KERNEL_IBT", "KPROBE_EVENTS", "DYNAMIC_FTRACE"):
        assert c.enabled(name) and c.facts[name].source.startswith("inferred: symbol"), name
    assert not c.enabled("CFI_CLANG") and not c.enabled("KPROBE_EVENTS_ON_NOTRACE")
    assert not c.enabled("NO_SUCH_FACT")


def test_overrides_and_config_file(tmp_path):
    cfg = tmp_path / "config-6.1.0"
    cfg.write_text("CONFIG_KPROBES=y\nCONFIG_PREEMPT_DYNAMIC=y\n# CONFIG_PREEMPTION is not set\n"
                   "CONFIG_KPROBE_EVENTS_ON_NOTRACE=y\nCONFIG_MODULES=m\nCONFIG_LOCALVERSION=\"-x\"\n")
    assert read_config_file(str(cfg))["PREEMPTION"] is False
    assert read_config_file(str(cfg))["MODULES"] is True
    image = Image.open(str(X86_VMLINUX), str(cfg))
    assert not image.config.enabled("PREEMPTION")
    assert image.config.facts["PREEMPTION"].source == f"config file {cfg}"
    assert image.config.enabled("KPROBE_EVENTS_ON_NOTRACE")
    over = KernelConfig.for_image(image, str(cfg), {"PREEMPTION": True})
    assert over.enabled("PREEMPTION") and over.facts["PREEMPTION"].source == "--set"


def test_config_file_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read config file"):
        read_config_file(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("# nothing here\n")
    with pytest.raises(InputError, match="no CONFIG_ lines"):
        read_config_file(str(empty))


def test_open_image_helper_sets_facts():
    image = open_image(X86_VMLINUX_612, PREEMPTION=False)
    assert not image.config.enabled("PREEMPTION") and image.version.rules == "6.12"


# --- bad images through the library ------------------------------------------------------------------

def test_image_without_stext(tmp_path):
    data = X86_VMLINUX.read_bytes().replace(b"\0_stext\0", b"\0_stexX\0")
    p = tmp_path / "vmlinux"
    p.write_bytes(data)
    image = Image.open(str(p))
    with pytest.raises(InputError, match="_stext"):
        image.tables.stext


def test_read_u32_at_matches_read(x86) -> None:
    import numpy as np
    s = x86.section(".text")
    addrs = np.array([s.addr, s.addr + 1, s.addr + s.size - 4, s.addr + s.size - 3, 0, 2**63],
                     np.uint64)
    got = x86.read_u32_at(addrs).tolist()
    want = [int.from_bytes(b, "little") if len(b) == 4 else 0
            for b in (x86.read(int(a), 4) for a in addrs.tolist())]
    assert got == want and got[0] != 0 and got[-1] == 0
