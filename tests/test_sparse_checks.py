"""The sparse forms of the full analysis' range tests (kpatch_core.bulk ``range_hits``,
``member_hits``, ``spans_hits``) against brute force, and the x86 classifier's opcode decision
table against the formulas it is built from."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kpatch_core.bulk import mark_ranges, member, member_hits, range_hits, spans_hits
from kpatch_core.image import Image
from kpatch_core.outcome import ok_code
from kpatch_core.verdict import Method

X86 = Path(__file__).resolve().parent.parent / "testdata" / "x86_64" / "vmlinux"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 400), max_size=120), st.lists(st.tuples(st.integers(0, 400),
                                                                       st.integers(0, 12)),
                                                             max_size=40),
       st.booleans())
def test_range_hits_is_mark_ranges_as_indexes(xs, ranges, shuffle):
    aa = np.array(sorted(xs), np.uint64)
    if shuffle:
        aa = aa[np.random.default_rng(len(xs)).permutation(len(aa))]
    rs = sorted(ranges)
    starts = np.array([s for s, _ in rs], np.uint64)
    ends = np.array([s + n for s, n in rs], np.uint64)
    want = np.flatnonzero(mark_ranges(aa, starts, ends)) if len(starts) else np.zeros(0, np.int64)
    brute = [i for i, x in enumerate(aa.tolist()) if any(s <= x < e for s, e in
                                                        zip(starts.tolist(), ends.tolist()))]
    assert want.tolist() == brute
    assert range_hits(aa, starts, ends).tolist() == brute
    sorted_now = len(aa) < 2 or not bool((aa[1:] < aa[:-1]).any())
    assert range_hits(aa, starts, ends, sorted_now).tolist() == brute
    sites = np.unique(starts)
    assert member_hits(sites, aa).tolist() == np.flatnonzero(member(sites, aa)).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=80), st.sets(st.integers(0, 35), max_size=12))
def test_spans_hits_selects_whole_groups(groups, chosen):
    group = np.array(sorted(groups), np.int64)
    pick = np.array(sorted(chosen), np.int64)
    want = [i for i, g in enumerate(group.tolist()) if g in chosen]
    assert spans_hits(group, pick).tolist() == want


def _formula_classify(clf, code, addrs, rel, lens):
    """The x86 bulk classification computed from ``_decide`` for each instruction directly
    (no table): what the opcode table must reproduce."""
    from kpatch_arch.x86_64.insn import JMP32_INSN_SIZE, MAX_INSN_SIZE
    from kpatch_arch.x86_64.opcode_fields import opcode_fields
    from kpatch_core.bulk import SLOW
    f = opcode_fields(code, rel, lens)
    refused, method, boost, slow = clf._decide(f.one, f.two, f.b, f.b1, f.reg, f.mod)
    has_ex = mark_ranges(addrs, clf.extable, clf.extable + np.uint64(1)) if len(clf.extable) \
        else np.zeros(len(addrs), bool)
    use = boost & ~(f.one & f.has_2e67) & ~has_ex & (not clf.preemption) & \
        (MAX_INSN_SIZE - lens >= JMP32_INSN_SIZE)
    method = np.where(use, ok_code(Method.BOOST), method)
    res = np.where(refused != 0, refused, method).astype(np.uint16)
    return np.where(f.slow | slow, SLOW, res).astype(np.uint16)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=64, max_size=600), st.integers(0, 2**32 - 1), st.booleans())
def test_x86_opcode_table_matches_its_formulas(blob, seed, preempt):
    image = Image.open(str(X86))
    clf = image.backend.bulk_classifier(image)
    clf.preemption = preempt
    rng = np.random.default_rng(seed)
    code = np.frombuffer(blob + bytes(32), np.uint8)
    n = max(len(blob) // 3, 1)
    rel = np.sort(rng.choice(len(blob), size=min(n, len(blob)), replace=False)).astype(np.int64)
    lens = rng.integers(-1, 16, len(rel)).astype(np.int64)
    base = int(image.tables.stext)
    addrs = np.uint64(base) + rel.astype(np.uint64)
    assert clf.classify(code, base, addrs, rel, lens).tolist() == \
        _formula_classify(clf, code, addrs, rel, lens).tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=60),
       st.lists(st.tuples(st.integers(0, 59), st.integers(1, 12)), max_size=8))
def test_fixups_at_once_equal_one_at_a_time(sizes, fixes):
    from kpatch_core.decode import _apply_fixups_loop, apply_fixups
    s = np.array(sizes, np.int64)
    o = np.cumsum(s) - s
    fx = sorted({k: n for k, n in fixes if k < len(s)}.items())
    ks = np.array([k for k, _ in fx], np.int64)
    news = np.array([n for _, n in fx], np.int64)
    got = apply_fixups(o, s, ks, news)
    want = _apply_fixups_loop(o, s, ks, news)
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    assert got[2] == want[2]


def _ud1_reference(clf, code, offs, sizes):
    """length_fixups' candidates by their definition: instructions whose last two bytes are
    ``0f b9`` (every instruction looked at)."""
    end = offs + sizes
    n = len(code)
    return [int(k) for k in np.flatnonzero((end >= 2) & (end <= n) & (code[np.clip(end - 2, 0, n - 1)]
                                                                      == 0x0F)
                                           & (code[np.clip(end - 1, 0, n - 1)] == 0xB9))]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\x0f\xb9", b"\x0f", b"\xb9", b"\x90", b"\x48\x89\xe5",
                                 b"\x0f\xb9\x40\x00", b"\xcc"]), min_size=1, max_size=80),
       st.integers(0, 2**32 - 1))
def test_ud1_candidates_are_the_instructions_ending_in_0f_b9(pieces, seed):
    from kpatch_arch.x86_64 import bulk as xb
    clf = xb.X86BulkClassifier.__new__(xb.X86BulkClassifier)
    code = np.frombuffer(b"".join(pieces), np.uint8)
    rng = np.random.default_rng(seed)
    cuts = np.unique(rng.integers(0, len(code) + 1, size=max(len(code) // 2, 2)))
    offs = cuts[:-1].astype(np.int64)
    sizes = np.diff(cuts).astype(np.int64)
    for lo, hi in ((0, len(offs)), (len(offs) // 3, len(offs))):  # batches of one buffer
        o, s = offs[lo:hi], sizes[lo:hi]
        assert clf._ud1_candidates(code, o, s).tolist() == _ud1_reference(clf, code, o, s)


_names = st.lists(st.sampled_from(list('ab{},:"\\\x7f\u00e9 ') + ['},{"name":']),
                  max_size=6).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({"name": _names, "size": st.integers(0, 2**70),
                                       "clone": st.none() | st.fixed_dictionaries(
                                           {"kind": _names, "base": _names})}), max_size=12))
def test_json_bodies_split_from_one_encoding_equal_json_dumps(facts):
    import json

    from kpatch_core.json_lines import _bodies, fast_encoder
    head, bodies = _bodies(facts, fast_encoder())
    assert len(bodies) == len(facts)
    for f, b in zip(facts, bodies):
        assert "{" + head + b + "}" == json.dumps(f, separators=(",", ":"))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.integers(0, 50))
def test_quiet_decoder_sizes_equal_the_printing_decoder(blob, start):
    """The decoder with capstone's printer switched off (LinearDecoder quiet) answers the same
    sizes as the printing one, on any bytes, from any offset."""
    import ctypes

    import capstone

    from kpatch_core.decode import LinearDecoder
    quiet = LinearDecoder(capstone.CS_ARCH_X86, capstone.CS_MODE_64, quiet=True)
    plain = LinearDecoder(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    assert quiet.quiet and not plain.quiet
    buf = ctypes.create_string_buffer(blob, len(blob))
    off = min(start, len(blob) - 1)
    p = ctypes.addressof(buf) + off
    n = len(blob) - off
    assert quiet.sizes(p, n, 0x1000).tolist() == plain.sizes(p, n, 0x1000).tolist()


def test_quiet_decoder_keeps_printing_when_the_handle_is_not_as_expected():
    import capstone

    from kpatch_core import decode
    d = decode.LinearDecoder(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    # the handle does not start with the arch asked about: left alone
    assert not d._silence_printer(capstone.CS_ARCH_ARM64, capstone.CS_MODE_64, False)
    assert list(d.cs.disasm_lite(b"\x48\x89\xe5", 0))[0][2] == "mov"  # still prints
    q = decode.LinearDecoder(capstone.CS_ARCH_X86, capstone.CS_MODE_64, quiet=True)
    assert q.quiet and list(q.cs.disasm_lite(b"\x48\x89\xe5", 0))[0][2] == ""  # no text
