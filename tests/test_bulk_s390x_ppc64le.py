"""The vectorised s390x and ppc64le bulk classifiers (arch/s390x/bulk.py, arch/ppc64le/bulk.py)
against the backends' own ``prepare``: on every instruction of the committed test images (6.1
and 6.12 rules), on every primary/extended opcode, and on random encodings; plus the full
analysis (decode walk + classifier + core) against ``probe.check`` on every listed address."""
from __future__ import annotations

import random
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpatch_core.features import FeatureSet

from kpatch_arch.base import PrepareContext
from kpatch_arch.ppc64le import (
    NOT_STEPPABLE_XO19, NOT_STEPPABLE_XO31, Analysis, Ppc64leBackend, analyse_class, not_steppable)
from kpatch_arch.ppc64le import bulk as ppc_bulk
from kpatch_arch.s390x import PROHIBITED_FIRST_BYTE, S390xBackend, insn_length, opcode_table
from kpatch_arch.s390x import bulk as s390_bulk
from kpatch_core import analyze as A
from kpatch_core import rules
from kpatch_core.image import Image
from kpatch_core.probe import check
from kpatch_core.symbols import KSym
from kpatch_core.target import Target
from kpatch_core.verdict import Reason

ROOT = Path(__file__).resolve().parent.parent
IMAGES = {"s390x": [ROOT / "testdata" / "s390x" / n for n in ("vmlinux", "vmlinux-6.12")],
          "ppc64le": [ROOT / "testdata" / "ppc64le" / n for n in ("vmlinux", "vmlinux-6.12")]}
PARAMS = [(arch, p) for arch, ps in IMAGES.items() for p in ps]
IDS = [f"{arch}-{p.name}" for arch, p in PARAMS]


def _outcome(out) -> tuple:
    o = A.decode_code(A.outcome_code(out))
    return o.ok, o.method, o.reason, o.errno


def _code(c: int) -> tuple:
    o = A.decode_code(int(c))
    return o.ok, o.method, o.reason, o.errno


# --- a stand-in image: arbitrary bytes at an address, for random encodings -----------------------
@attrs.define
class _Symtab:
    values: dict[str, int] = attrs.field(factory=dict)

    def value(self, name: str) -> int | None:
        return self.values.get(name)


@attrs.define
class _Version:
    rules: str


@attrs.define
class FakeImage:
    """What ``prepare`` reads of an image: bytes at ``base``, the rules, a few symbols."""

    base: int
    data: bytes
    version: _Version
    symtab: _Symtab = attrs.field(factory=_Symtab)

    @property
    def features(self) -> FeatureSet:
        major, minor = self.version.rules.split(".")
        return FeatureSet.decide((int(major), int(minor)), "s390x")

    def read(self, addr: int, n: int) -> bytes:
        if not self.base <= addr < self.base + len(self.data):
            return b""
        return self.data[addr - self.base:addr - self.base + n]


def _kernel_walk(code: bytes, start: int, end: int) -> tuple[list[int], int | None]:
    """s390 ``can_probe``'s walk from ``start``: boundaries before ``end`` and where a 0x00xx
    halfword stopped it (None)."""
    out, pos = [], start
    while pos < end and pos < len(code):
        out.append(pos)
        if code[pos] == 0:
            return out, pos
        pos += insn_length(code[pos])
    return out, None


# --- every instruction of the test images ---------------------------------------------------------
@pytest.mark.parametrize("arch,path", PARAMS, ids=IDS)
def test_classifier_equals_prepare_on_every_instruction(arch: str, path: Path) -> None:
    image = Image.open(str(path))
    backend = image.backend
    clf = backend.bulk_classifier(image)
    assert clf is not None and type(clf).__module__.endswith(f"{arch}.bulk")
    syms = A.TextSymbols.build(image)
    addrs, lens, funcs, got, starts, ends = [], [], [], [], [], []
    for lo, hi in rules.section_runs(image, syms.addrs):  # one buffer per section, like the core
        base = int(syms.addrs[lo])
        code = backend.runtime_bytes(image, base, int(syms.addrs[hi - 1] + syms.sizes[hi - 1]) + 32)
        aa, ln = [], []
        for i in range(lo, hi):
            fa, size = int(syms.addrs[i]) - base, int(syms.sizes[i])
            if arch == "s390x":  # the kernel's walk from the symbol start
                offs, stop = _kernel_walk(code, fa, fa + size)
                ln += [0 if o == stop else insn_length(code[o]) for o in offs]
            else:  # every word is judged alone
                offs = list(range(fa, min(fa + size, len(code)), 4))
                ln += [4] * len(offs)
            aa += [base + o for o in offs]
            funcs += [i] * len(offs)
        a = np.array(aa, np.uint64)
        got += clf.classify(np.frombuffer(code, np.uint8), base, a,
                            (a - np.uint64(base)).astype(np.int64), np.array(ln, np.int64)).tolist()
        addrs += aa
        lens += ln
        starts += [base] * len(aa)
        ends += [base + len(code)] * len(aa)
    assert len(got) > 50
    slow = 0
    for j, a in enumerate(addrs):
        i = funcs[j]
        func = KSym(syms.names[i], int(syms.addrs[i]), int(syms.sizes[i]))
        want = _outcome(backend.prepare(PrepareContext(image, a, func)))
        if got[j] == A.SLOW:
            slow += 1
            # only the walk's stop point (s390x), an instruction running past its section or
            # a word whose predecessor is not in the buffer (ppc64le) is left to prepare
            assert lens[j] == 0 or a + lens[j] > ends[j] or (arch == "ppc64le" and
                                                             a - starts[j] < 4), f"{a:#x}: slow"
            if hasattr(clf, "prepare_at"):  # the walk reached it: no second walk needed
                assert _outcome(clf.prepare_at(a, func)) == want
            continue
        assert _code(got[j]) == want, f"{syms.names[i]}+{a - func.addr:#x}"
    assert slow <= sum(1 for x in lens if x == 0) + 2 * len(set(starts))


@pytest.mark.parametrize("arch,path", PARAMS, ids=IDS)
def test_full_analysis_equals_check_on_every_listed_address(arch: str, path: Path) -> None:
    image = Image.open(str(path))
    a = A.analyze(image, jobs=1, optimized=True)
    assert len(a.codes) > 50
    outcomes = set()
    for i in range(len(a.syms)):
        fa = int(a.syms.addrs[i])
        offs, lens, codes = a.insns(i)
        if arch == "s390x":  # listed = the kernel's walk (up to and including its stop point)
            size = int(a.syms.sizes[i])
            walk, stop = _kernel_walk(image.backend.runtime_bytes(image, fa, fa + size + 8), 0, size)
            assert offs.tolist() == walk, a.syms.names[i]
        for o, c in zip(offs.tolist(), codes.tolist()):
            addr = fa + o
            v = check(image, Target(hex(addr), "p", address=addr))
            want = (v.ok, v.method if v.ok else None, v.reason, v.errno if not v.ok else None)
            got = A.decode_code(c)
            assert (got.ok, got.method, got.reason, got.errno) == want, f"{a.syms.names[i]}+{o:#x}"
            assert got.optimized == ("OPTIMIZED" in v.flags), f"{a.syms.names[i]}+{o:#x}"
            outcomes.add(got.label + ("+opt" if got.optimized else ""))
    # the images exercise refusals and both execution classes where the arch has them
    assert "PROHIBITED_INSN" in outcomes and "ftrace" in outcomes
    if arch == "ppc64le":
        assert {"emulate", "emulate+opt", "singlestep", "PREFIX_SUFFIX", "BLACKLIST_AREA"} <= outcomes
    else:
        assert "singlestep" in outcomes and "NOT_BOUNDARY" not in outcomes


@pytest.mark.parametrize("path", IMAGES["ppc64le"], ids=lambda p: p.name)
def test_ppc64le_word_listing_is_what_capstone_would_list(path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The classifier's ``walk`` (every word) skips capstone; capstone's walk lists the same."""
    fast = A.analyze(Image.open(str(path)), jobs=1, optimized=True)
    monkeypatch.delattr(ppc_bulk.Ppc64leBulkClassifier, "walk")
    slow = A.analyze(Image.open(str(path)), jobs=1, optimized=True)
    for f in ("offs", "lens", "counts", "codes"):
        assert np.array_equal(getattr(fast, f), getattr(slow, f)), f


@pytest.mark.parametrize("path", IMAGES["s390x"], ids=lambda p: p.name)
def test_s390x_walk_lists_what_the_capstone_walk_lists(path: Path, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """The vectorised walk replaces capstone's: same instructions, lengths, stop points."""
    fast = A.analyze(Image.open(str(path)), jobs=1, optimized=True)
    monkeypatch.delattr(s390_bulk.S390xBulkClassifier, "walk")
    slow = A.analyze(Image.open(str(path)), jobs=1, optimized=True)
    for f in ("offs", "lens", "counts", "codes"):
        assert np.array_equal(getattr(fast, f), getattr(slow, f)), f
    assert [x.get("undecodable_at") for x in fast.facts] == \
        [x.get("undecodable_at") for x in slow.facts]


@st.composite
def s390_functions(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Random code (0x00xx halfwords included) cut into functions at random even offsets."""
    code = b""
    for _ in range(draw(st.integers(1, 40))):
        first = draw(st.one_of(st.sampled_from([0x00, 0x07, 0xA7, 0xC0, 0xE3, 0x47]),
                               st.integers(0, 255)))
        code += bytes([first]) + draw(st.binary(min_size=5, max_size=5))[:insn_length(first) - 1]
    code += draw(st.binary(max_size=5))  # a truncated last instruction, maybe
    cuts = draw(st.lists(st.integers(0, max(len(code) // 2, 0)), max_size=6))
    return code, sorted({2 * c for c in cuts} | {0})


@settings(max_examples=80, deadline=None)
@given(s390_functions(), st.integers(0, 3))
def test_s390x_walk_is_the_kernels_walk(fc: tuple[bytes, list[int]], tail: int) -> None:
    code, starts = fc
    ends = starts[1:] + [len(code) + tail]  # the last function may run past the bytes
    clf = s390_bulk.S390xBulkClassifier(S390xBackend(), FakeImage(0, b"", _Version("6.1")))
    offs, lens, counts, fail = clf.walk(np.frombuffer(code, np.uint8), np.array(starts, np.int64),
                                        np.array(ends, np.int64))
    k = 0
    for f, (s, e) in enumerate(zip(starts, ends)):
        want, stop, pos = [], -1, s  # can_probe's walk; the bytes end like a 0x00 halfword
        while pos < e and pos < len(code):
            n = insn_length(code[pos])
            if code[pos] == 0 or pos + n > len(code):
                want.append((pos - s, 0))
                stop = pos - s
                break
            want.append((pos - s, n))
            pos += n
        assert counts[f] == len(want)
        assert list(zip(offs[k:k + len(want)].tolist(), lens[k:k + len(want)].tolist())) == want
        assert fail[f] == stop
        k += len(want)
    assert k == len(offs)


def test_ppc64le_arch_blacklist_ranges_are_the_hook() -> None:
    image = Image.open(str(IMAGES["ppc64le"][0]))
    clf = image.backend.bulk_classifier(image)
    ranges = clf.arch_blacklist_ranges()
    assert ranges and all(e > s for s, e in ranges)
    for s, e in ranges:
        for addr in (s - 4, s, s + 4, e - 4, e, e + 4):
            inside = any(s2 <= addr < e2 for s2, e2 in ranges)
            assert image.backend.within_arch_blacklist(image, addr) == inside


def test_ppc64le_adjust_never_moves() -> None:
    image = Image.open(str(IMAGES["ppc64le"][0]))
    clf = image.backend.bulk_classifier(image)
    fstart = np.array([0x1000, 0x2000], np.uint64)
    offs = np.array([0, 8], np.int64)
    aa = fstart + offs.astype(np.uint64)
    assert np.array_equal(clf.adjust(fstart, offs, aa), aa)
    for f, o in zip(fstart.tolist(), offs.tolist()):
        assert image.backend.adjust_kprobe_addr(image, f, o)[0] == f + o


# --- exhaustive opcode tables -------------------------------------------------------------------
MFSPR, MTSPR = ppc_bulk.XO_MFSPR, ppc_bulk.XO_MTSPR
# register fields (rT, rA, rB) that hit each of analyse_instr's register-field rules: the
# canonical valid form, rA = 0, rA = rT, rT = rB, odd rT, rA > rT (lmw), rA & 3 = 3 (darn),
# SPR XER / LR / CTR, all zero, all equal odd
FIELD_PATTERNS = ((8, 4, 6), (8, 0, 6), (4, 4, 6), (6, 4, 6), (9, 4, 6), (4, 8, 6), (8, 3, 6),
                  (8, 1, 0), (8, 8, 0), (8, 9, 0), (0, 0, 0), (3, 3, 3))


def _assert_classes_equal_the_model(w: np.ndarray) -> None:
    nostep, regs, step = ppc_bulk.classes(w)
    for k, word in enumerate(w.tolist()):
        assert bool(nostep[k]) == (not_steppable(word) is not None), hex(word)
        if nostep[k]:  # refused by can_single_step: the method is moot (traps depend on regs)
            continue
        cls = analyse_class(word)
        assert (bool(regs[k]), bool(step[k])) == (cls is Analysis.REGS, cls is Analysis.STEP), \
            hex(word)


def test_ppc64le_step_class_on_every_opcode_and_xo() -> None:
    rng = np.random.default_rng(7)
    op = np.repeat(np.arange(64, dtype=np.uint32), 1024)
    xo = np.tile(np.arange(1024, dtype=np.uint32), 64)
    words = []
    for _ in range(2):  # the other bits random: rt/ra/rb, Rc, low bits, SPR numbers
        other = rng.integers(0, 1 << 32, len(op), dtype=np.uint64).astype(np.uint32)
        words.append((op << 26) | (xo << 1) | (other & np.uint32(0x03FFF801)))
    spr = np.array([1, 8, 9, 3, 256, 800, 0, 32, 288], np.uint32)  # XER LR CTR and others
    for x in (MFSPR, MTSPR):
        enc = ((spr & 0x1F) << 16) | ((spr >> 5) << 11)
        words.append((np.uint32(31) << 26) | (np.uint32(x) << 1) | enc)
    _assert_classes_equal_the_model(np.concatenate(words))


def test_ppc64le_classes_on_every_key_and_register_field_pattern() -> None:
    # every primary opcode with every value of bits 0-10, under register fields that hit each
    # invalid-form rule: the vectorised classes equal the model word by word
    # (the other primary opcodes' low bits are immediates: a sample of them)
    rng = np.random.default_rng(3)
    low = np.arange(2048, dtype=np.uint32)
    words = []
    for rt, ra, rb in FIELD_PATTERNS:
        fields = np.uint32((rt << 21) | (ra << 16) | (rb << 11))
        for op in range(64):
            lows = low if op in ppc_bulk.SUBOP_OPS else rng.choice(low, 24)
            words.append((np.uint32(op) << 26) | fields | lows)
    _assert_classes_equal_the_model(np.concatenate(words))


def test_ppc64le_classes_agree_with_the_kernel_on_the_disputed_forms() -> None:
    # sstep.c analyse_instr: isel (31, 32 minor opcodes) is emulated (compute_done); OE=1
    # arithmetic, bctar and invalid forms are declined (emulate_step 0: single-stepped)
    cases = {
        0x7C64279E: "regs",  # isel r3,r4,r4,30
        0x7C6422DE: "regs",  # isel r3,r4,r4,11 (another of the 32 minor opcodes)
        0x7C632614: "step",  # addo r3,r3,r4
        0x7C6320D0 | 0x400: "step",  # nego r3,r3
        0x7C632010 | 0x400: "step",  # subfco r3,r3,r4
        0x4E800460: "step",  # bctar
        0x4E800461: "step",  # bctarl
        0x84630004: "step",  # lwzu r3,4(r3): load with update and rA = rT
        0x84600004: "step",  # lwzu r3,4(0): update with rA = 0
        0x84640004: "mem",  # lwzu r3,4(r4): valid
        0xF8200001: "step",  # stdu r1,0(0)
        0xF821FF91: "mem",  # stdu r1,-112(r1): valid (the prologue)
        0xE8630001: "step",  # ldu r3,0(r3)
        0xF8640002: "step",  # stq r3,0(r4): odd register
        0xF8840002: "mem",  # stq r4,0(r4): even (emulated by do_stq)
        0x78000010 | 0xE: "step",  # op 30 rld* with (word>>1)&7 == 7: illegal form
        0xB8840000: "step",  # lmw r4,0(r4): rA in the loaded range
        0x7C6902A6: "regs",  # mfctr r3
        0x7C7F42A6: "step",  # mfpvr r3
    }
    w = np.array(list(cases), np.uint32)
    nostep, regs, step = ppc_bulk.classes(w)
    assert not nostep.any()
    got = ["regs" if r else "step" if s else "mem" for r, s in zip(regs, step)]
    assert dict(zip(cases, got)) == cases


def test_s390x_tables_on_every_first_byte_and_opcode_byte() -> None:
    from kpatch_arch.s390x import prohibited
    rng = random.Random(3)
    for rule_set in ("6.1", "6.12"):
        clf = s390_bulk.S390xBulkClassifier(S390xBackend(), FakeImage(0, b"", _Version(rule_set)))
        buf = bytearray()
        rels = []
        for first in range(256):
            for v in range(256):  # the second byte and the last byte both v: every group's opcode byte
                n = insn_length(first)
                insn = bytes([first, v]) + bytes(rng.randrange(256) for _ in range(n - 2))
                if n == 6:
                    insn = insn[:5] + bytes([v])
                rels.append(len(buf))
                buf += insn
        buf += bytes(8)
        code = np.frombuffer(bytes(buf), np.uint8)
        rel = np.array(rels, np.int64)
        got = clf.classify(code, 0, rel.astype(np.uint64), rel, clf.length[code[rel]])
        for k, r in enumerate(rels):
            insn = bytes(buf[r:r + insn_length(buf[r])])
            refused = prohibited(insn, rule_set) is not None
            assert _code(got[k])[2] == (Reason.PROHIBITED_INSN if refused else None), (rule_set, insn.hex())


# --- random encodings through the backends' prepare ---------------------------------------------
_S390_FIRST = sorted({*opcode_table("6.12")[0], *PROHIBITED_FIRST_BYTE, 0x05, 0x07, 0x47, 0xA7,
                      0xC0, 0xC4, 0xC6, 0xEC, 0xB2, 0xB9, 0x01})


@st.composite
def s390_stream(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(1, 24))):
        first = draw(st.one_of(st.sampled_from(_S390_FIRST), st.integers(1, 255)))
        rest = draw(st.binary(min_size=5, max_size=5))
        out += bytes([first]) + rest[:insn_length(first) - 1]
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s390_stream(), st.sampled_from(["6.1", "6.12"]))
def test_s390x_random_streams_equal_prepare(stream: bytes, rules: str) -> None:
    base = 0x100000
    data = stream + bytes(8)
    image = FakeImage(base, data, _Version(rules))
    backend = S390xBackend()
    clf = s390_bulk.S390xBulkClassifier(backend, image)
    offs, _ = _kernel_walk(data, 0, len(stream))
    rel = np.array(offs, np.int64)
    lens = np.array([insn_length(data[o]) for o in offs], np.int64)
    got = clf.classify(np.frombuffer(data, np.uint8), base, rel.astype(np.uint64) + np.uint64(base),
                       rel, lens)
    func = KSym("f", base, len(stream))
    for k, o in enumerate(offs):
        want = _outcome(backend.prepare(PrepareContext(image, base + o, func)))
        assert got[k] != A.SLOW and _code(got[k]) == want, data[o:o + 6].hex()


_PPC_XO = sorted({*NOT_STEPPABLE_XO19, *NOT_STEPPABLE_XO31, MFSPR, MTSPR, 83, 54, 86, 20, 150,
                  16, 528, 560, 0, 266, 266 | 0x200, 40 | 0x200, 104 | 0x200, 15, 47, 1007, 55,
                  181, 247, 276, 182, 755, 567, 533, 597, 21, 53, 149, 414, 21})


@st.composite
def ppc_word(draw: st.DrawFn) -> int:
    op = draw(st.one_of(st.sampled_from([1, 4, 16, 17, 18, 19, 31, 58, 62, 2, 3]),
                        st.integers(0, 63)))
    x = draw(st.one_of(st.sampled_from(_PPC_XO), st.integers(0, 1023)))
    other = draw(st.integers(0, (1 << 32) - 1)) & 0x03FFF801
    if draw(st.booleans()):  # small register fields: rA = 0, rA = rT, odd rT... (invalid forms)
        other &= ~0x03FFF800
        other |= sum(draw(st.integers(0, 4)) << s for s in (21, 16, 11))
    return (op << 26) | (x << 1) | other


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ppc_word(), min_size=1, max_size=24), st.integers(0, 24), st.booleans(),
       st.sampled_from([None, 0x1000, -0x2000000, 0x1FFFFFC, 0x2000000, -0x2000004]))
def test_ppc64le_random_words_equal_prepare(words: list[int], page_at: int, prefix_first: bool,
                                            slot_from: int | None) -> None:
    if prefix_first:  # a prefix word before the page start: its suffix starts the page
        words = [1 << 26] + words
    base = 0xC000000001000000 - 4 * min(page_at, len(words) - 1)  # some word starts a page
    data = b"".join(w.to_bytes(4, "little") for w in words)
    # optinsn_slot near the words, at the edges of the branch range, or absent
    syms = {} if slot_from is None else {"optinsn_slot": base + 4 + slot_from}
    image = FakeImage(base, data, _Version("6.1"), _Symtab(syms))
    backend = Ppc64leBackend()
    clf = ppc_bulk.Ppc64leBulkClassifier(backend, image)
    rel = np.arange(0, len(data), 4, dtype=np.int64)
    got = clf.classify(np.frombuffer(data, np.uint8), base, rel.astype(np.uint64) + np.uint64(base),
                       rel, np.full(len(rel), 4, np.int64))
    func = KSym("f", base, len(data))
    aa = rel.astype(np.uint64) + np.uint64(base)
    cand = np.arange(len(rel))
    opt, opt_slow = clf.optimized(np.frombuffer(data, np.uint8), base, aa, np.full(len(rel), 4),
                                  np.zeros(len(rel), np.int64), aa[:1], aa[:1] + np.uint64(len(data)),
                                  cand, aa)
    assert not opt_slow.any()
    for k, o in enumerate(rel.tolist()):
        ctx = PrepareContext(image, base + o, func)
        want = _outcome(backend.prepare(ctx))
        assert bool(opt[k]) == backend.optimizable(ctx), f"{words[k]:#010x} at {base + o:#x}"
        if o == 0:  # no word before in the buffer: prepare decides (it reads outside)
            assert got[k] == A.SLOW
            continue
        assert _code(got[k]) == want, f"{words[k]:#010x} at {base + o:#x}"


# --- the real Debian images (skipped when not cached) -------------------------------------------
@pytest.mark.realkernel
@pytest.mark.parametrize("arch", ["s390x", "ppc64le"])
def test_real_kernel_slices_equal_check(arch: str) -> None:
    """Functions at the start of text (ppc64le: the blacklisted exception vectors), around a
    section change (ppc64le: .head.text -> .text), in the middle and at the end, analysed in
    bulk, equal ``check`` (sampled addresses)."""
    path = Path.home() / ".cache" / "kpatch-kernels" / arch / "vmlinux"
    if not path.is_file():
        pytest.skip(f"no cached real kernel at {path}")
    image = Image.open(str(path))
    syms = A.TextSymbols.build(image)
    rules.prepare_state(image, syms, True)  # [OPTIMIZED] opted in
    try:
        n = len(syms)
        rng = random.Random(11)
        cuts = [b for _, b in rules.section_runs(image, syms.addrs)][:-1]  # section changes
        spans = [(max(0, b - 20), b + 20) for b in cuts[:2]]
        for lo, hi in [(0, 40), *spans, (n // 2, n // 2 + 60), (n - 40, n)]:
            ch = rules.register_kprobes(lo, hi)
            fidx = np.repeat(np.arange(lo, hi), ch.counts)
            picks = rng.sample(range(len(ch.codes)), min(400, len(ch.codes)))
            for j in picks:
                addr = int(syms.addrs[fidx[j]]) + int(ch.offs[j])
                v = check(image, Target(hex(addr), "p", address=addr))
                got = A.decode_code(int(ch.codes[j]))
                want = (v.ok, v.method if v.ok else None, v.reason, v.errno if not v.ok else None)
                assert (got.ok, got.method, got.reason, got.errno) == want, hex(addr)
                assert got.optimized == ("OPTIMIZED" in v.flags), hex(addr)
    finally:
        rules.STATE.clear()
