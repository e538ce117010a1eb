"""Full analysis (kpatch_core.analyze): the bulk path must say what probe.check says, address by
address; per-function facts; the SQLite cache and the one-function query; the CLI commands."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpatch_core import analyze as A
from kpatch_core import cache
from kpatch_core.analyze_cmd import query_function
from kpatch_core.cli import main
from kpatch_core.image import Image
from kpatch_core.probe import check
from kpatch_core.target import Target

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "testdata"
IMAGES = sorted(p for p in TESTDATA.glob("*/vmlinux*") if p.suffix != ".lds") + \
    sorted((ROOT / "tests" / "data" / "diff").glob("vmlinux-*"))
X86 = TESTDATA / "x86_64" / "vmlinux"
REAL_X86 = Path.home() / ".cache" / "kpatch-kernels" / "x86_64" / "vmlinux"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KPATCH_CACHE", str(tmp_path / "cache"))


def _key(o: A.Outcome) -> tuple:
    return (o.ok, o.method if o.ok else None, o.reason, o.errno)


def _check_key(v) -> tuple:
    return (v.ok, v.method if v.ok else None, v.reason, v.errno if not v.ok else None)


def _addr_of(a: A.Analysis) -> np.ndarray:
    func_of = np.repeat(np.arange(len(a.syms)), a.counts)
    return a.syms.addrs[func_of] + a.offs.astype(np.uint64)


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_instruction_equals_check(path):
    image = Image.open(str(path))
    a = A.analyze(image, jobs=1, optimized=True)
    assert len(a.codes) > 0 and int(a.counts.sum()) == len(a.codes)
    # [OPTIMIZED] too (bulk where the classifier has it, x86_64 and ppc64le; else per address)
    flag = True
    for addr, code in zip(_addr_of(a).tolist(), a.codes.tolist()):
        v = check(image, Target(hex(addr), "p", address=addr))
        o = A.decode_code(code)
        assert _key(o) == _check_key(v), hex(addr)
        if flag:
            assert o.optimized == ("OPTIMIZED" in v.flags), hex(addr)


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_entry_and_kretprobe_facts_equal_check(path):
    image = Image.open(str(path))
    a = A.analyze(image, jobs=1)
    for f in a.facts:
        for kind, field in (("p", "entry"), ("r", "kretprobe")):
            v = check(image, Target(f["name"], kind, symbol=f["name"]))
            e = f[field]
            assert (e["ok"], e["reason"], e["errno"] if not e["ok"] else None) == \
                (v.ok, v.reason.value if v.reason else None, v.errno if not v.ok else None), \
                (kind, f["name"])
            if v.ok:
                assert e["method"] == (v.method.value if v.method else None)


def test_parallel_equals_serial():
    image = Image.open(str(X86))
    one = A.analyze(image, jobs=1)
    two = A.analyze(Image.open(str(X86)), jobs=2)
    assert np.array_equal(one.codes, two.codes) and np.array_equal(one.offs, two.offs)
    assert np.array_equal(one.counts, two.counts) and one.facts == two.facts


def test_boundaries_are_the_kernel_walk():
    """Every listed instruction is a boundary (check never says NOT_BOUNDARY there) and the
    byte after each instruction start (inside it) is refused as not a boundary."""
    image = Image.open(str(X86))
    a = A.analyze(image, jobs=1)
    i = a.index("insn_boost")[0]
    o, ln, _ = a.insns(i)
    base = int(a.syms.addrs[i])
    for off, n in zip(o.tolist(), ln.tolist()):
        if n > 1:
            v = check(image, hex(base + off + 1))
            assert not v.ok and v.reason.value == "NOT_BOUNDARY"


def test_function_facts():
    a = A.analyze(Image.open(str(X86)), jobs=1)
    f = {d["name"]: d for d in a.facts}
    assert f["notrace_func"]["notrace"] and f["notrace_func"]["entry"]["reason"] == "NOTRACE"
    assert f["nokprobe_func"]["blacklist"]["source"] == "NOKPROBE_SYMBOL"
    bl = f["kprobes_text_func"]["blacklist"]
    assert (bl["reason"], bl["source"]) == ("BLACKLIST_AREA", ".kprobes.text")
    assert f["kprobes_text_func"]["area"] == ".kprobes.text"
    isra = f["asm_nokprobe_func.isra.0"]
    assert isra["clone"] == {"kind": "isra", "base": "asm_nokprobe_func", "base_exists": True}
    assert isra["blacklist"]["reason"] == "BLACKLIST_SUFFIX"
    assert f["insn_helper.constprop.0"]["clone"]["kind"] == "constprop"
    dups = [d for d in a.facts if d["name"] == "dup_static"]
    assert len(dups) == 2 and all(not d["unique"] and d["same_name"] == 2 for d in dups)
    assert dups[0]["entry"]["errno"] == "EADDRNOTAVAIL"  # 6.1 rules
    assert f["plain_func"]["entry_shift"] == 4  # IBT: SYM+0 moves past ENDBR
    assert f["plain_func"]["entry"]["method"] == "ftrace"
    assert f["__switch_to"]["entry"]["ok"] and f["__switch_to"]["kretprobe"]["reason"] == "KRETPROBE_BLACKLIST"
    assert f["entry_SYSCALL_64"]["area"] == ".entry.text"
    j = a.function_json(a.index("plain_loop")[0])
    assert j["insns"] == j["probeable"] + sum(j["refused"].values())
    assert sum(j["methods"].values()) == j["probeable"]


def test_totals_match_per_function_counts():
    a = A.analyze(Image.open(str(X86)), jobs=1)
    t = a.totals()
    rows = [a.function_json(i) for i in range(len(a))]
    # per-function counts include the symbol's fill; the totals leave it out (kpatch_core.fill)
    assert t["insns"] + t["fill"] == sum(r["insns"] for r in rows)
    assert t["probeable_insns"] + sum(v for k, v in t["fill_by_outcome"].items() if k in
                                      ("ftrace", "boost", "singlestep", "emulate", "simulate",
                                       "accepted")) == sum(r["probeable"] for r in rows)
    assert t["functions"] == t["probeable_entries"] + sum(c for _, _, c in t["rejected_entries"])
    assert sum(g["insns"] for g in a.groups("subsystem")) == t["insns"]


def test_mark_ranges_matches_brute_force():
    rng = random.Random(5)
    aa = np.array(sorted(rng.randrange(0, 500) for _ in range(300)), np.uint64)
    starts = np.array(sorted(rng.randrange(0, 500) for _ in range(40)), np.uint64)
    ends = starts + np.array([rng.randrange(0, 9) for _ in range(40)], np.uint64)
    want = [any(s <= x < e for s, e in zip(starts.tolist(), ends.tolist())) for x in aa.tolist()]
    assert A.mark_ranges(aa, starts, ends).tolist() == want
    shuffled = aa.copy()
    rng.shuffle(shuffled)
    want = [any(s <= x < e for s, e in zip(starts.tolist(), ends.tolist())) for x in shuffled.tolist()]
    assert A.mark_ranges(shuffled, starts, ends).tolist() == want


def test_cache_roundtrip_and_warm_query():
    path = str(X86)
    image = Image.open(path)
    fresh = A.analyze(image)
    first = cache.cached_analysis(Image.open(path), pathkey=cache.path_key(path))
    assert not first.from_cache
    again = cache.cached_analysis(Image.open(path))
    assert again.from_cache and np.array_equal(again.codes, fresh.codes) and again.facts == fresh.facts
    a, img = query_function(path, "insn_boost")
    assert img is None and a.from_cache  # answered without parsing the ELF
    i = fresh.index("insn_boost")[0]
    assert np.array_equal(a.insns(0)[2], fresh.insns(i)[2])
    insns = list(A.iter_insns(a, 0))
    assert insns[0]["mnemonic"].startswith("endbr64") and len(insns) == int(a.counts[0])
    # other facts: another key, not the cached answer
    b, img = query_function(path, "insn_boost", sets=["PREEMPTION=n"])
    assert img is not None
    assert {A.decode_code(c).label for c in b.insns(0)[2]} >= {"boost"}


def test_cli_func(capsys):
    assert main(["func", str(X86), "insn_refused"]) == 0
    out = capsys.readouterr().out
    assert "insn_refused 0x" in out and "EOPNOTSUPP" in out and "int3" in out
    assert main(["func", str(X86), "plain_func", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows[0]["offset"] == 0 and rows[1]["method"] == "ftrace"
    assert main(["func", str(X86), "no_such_function"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_function" in err


def test_cli_summary_and_json(capsys):
    assert main([str(X86), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "probeable function entries" in out and "rejected entries by reason" in out
    assert "config facts" in out and "instructions" in out
    assert main([str(X86), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    a = cache.cached_analysis(Image.open(str(X86)))
    assert len(rows) == len(a) and rows[0]["name"] == a.facts[0]["name"]
    assert {"name", "address", "insns", "probeable", "entry", "kretprobe", "blacklist",
            "clone", "notrace", "unique"} <= set(rows[0])


@pytest.mark.realkernel
@pytest.mark.skipif(not REAL_X86.exists(), reason="no cached real x86_64 vmlinux")
def test_real_kernel_sample():
    image = Image.open(str(REAL_X86))
    a = A.analyze(image)
    addrs = _addr_of(a)
    rng = random.Random(7)
    for j in rng.sample(range(len(a.codes)), 80):
        addr = int(addrs[j])
        v = check(image, Target(hex(addr), "p", address=addr))
        assert _key(A.decode_code(int(a.codes[j]))) == _check_key(v), hex(addr)


FACT_SETS = [dict(PREEMPTION=False), dict(KPROBES_ON_FTRACE=False),
             dict(KPROBE_EVENTS_ON_NOTRACE=True, X86_KERNEL_IBT=False),
             dict(PREEMPTION=False, RUNTIME_RETHUNK=True)]


CASES = [(X86 if k % 2 == 0 else X86.with_name("vmlinux-6.12"), f) for k, f in enumerate(FACT_SETS)]


@pytest.mark.parametrize("path,facts", CASES, ids=lambda x: x.name if isinstance(x, Path) else
                         ",".join(f"{k}={int(v)}" for k, v in x.items()))
def test_other_facts_equal_check(path, facts):
    """--set overrides change verdicts (boost, FTRACE_SITE, notrace probes, rethunk bytes): the
    bulk path follows them exactly."""
    from tests.conftest import open_image
    image = open_image(path, **facts)
    a = A.analyze(image, jobs=1)
    labels = set()
    for addr, code in zip(_addr_of(a).tolist(), a.codes.tolist()):
        v = check(image, Target(hex(addr), "p", address=addr))
        assert _key(A.decode_code(code)) == _check_key(v), (hex(addr), facts)
        labels.add(A.decode_code(code).label)
    if facts.get("PREEMPTION") is False:
        assert "boost" in labels
    if facts.get("KPROBES_ON_FTRACE") is False:
        assert "FTRACE_SITE" in labels


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 700)), max_size=12),
       st.sampled_from([4, 16, 256]))
def test_long_runs_are_found_exactly(pieces: list[tuple[int, int]], minimum: int) -> None:
    """Runs.find gives every maximal run of one byte value at least ``minimum`` long."""
    code = np.concatenate([np.full(n, v, np.uint8) for v, n in pieces]) if pieces \
        else np.zeros(0, np.uint8)
    expect = []
    i = 0
    while i < len(code):
        j = i
        while j < len(code) and code[j] == code[i]:
            j += 1
        if j - i >= minimum:
            expect.append((i, j))
        i = j
    s, e = A.Runs.find(code, minimum)
    assert list(zip(s.tolist(), e.tolist())) == expect


def test_func_optimized_matches_check(capsys) -> None:
    """``func --optimized`` marks exactly the instructions ``check`` flags [OPTIMIZED]."""
    from kpatch_core.image import Image
    from kpatch_core.probe import check
    from kpatch_core.target import Target
    path = str(Path(__file__).resolve().parent.parent / "testdata" / "x86_64" / "vmlinux")
    assert main(["func", path, "alias_c", "--json", "--optimized", "--no-cache"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    img = Image.open(path)
    marked = 0
    for r in rows:
        a = int(r["address"], 16)
        v = check(img, Target(r["address"], "p", address=a))
        assert r["optimized"] == ("OPTIMIZED" in v.flags), r
        marked += r["optimized"]
    assert 0 < marked < len(rows)
    assert main(["func", path, "alias_c", "--json", "--no-cache"]) == 0  # off by default
    assert not any(json.loads(x)["optimized"] for x in capsys.readouterr().out.splitlines())
    # the full analysis with --optimized: per-function counts, cached under its own key
    assert main(["summary", path, "--json", "--optimized", "--no-progress"]) == 0
    f = next(json.loads(x) for x in capsys.readouterr().out.splitlines()
             if json.loads(x)["name"] == "alias_c")
    assert f["optimized"] == marked
    assert main(["summary", path, "--json", "--no-progress"]) == 0
    f = next(json.loads(x) for x in capsys.readouterr().out.splitlines()
             if json.loads(x)["name"] == "alias_c")
    assert f["optimized"] is None


def test_optimized_respects_reserved_text_in_the_copied_bytes():
    """A jump-label site inside the 5 bytes an optimized probe would copy makes it a plain
    kprobe (jump_label_text_reserved in arch_prepare_optimized_kprobe), in both paths."""
    image = Image.open(str(X86))
    a = A.analyze(image, jobs=1, optimized=True)
    addrs = _addr_of(a)
    opt = np.nonzero((a.codes & A.OPTIMIZED) != 0)[0]
    j = int(opt[0])
    x = int(addrs[j])
    if int(a.lens[j]) >= 5:  # the site must sit after the first instruction: pick one
        j = next(int(k) for k in opt if int(a.lens[k]) < 5)
        x = int(addrs[j])
    site = x + int(a.lens[j])  # the second copied instruction
    js, je = image.tables.jump_labels
    k = int(np.searchsorted(js, np.uint64(site)))
    image.tables.__dict__["jump_labels"] = (np.insert(js, k, np.uint64(site)),
                                            np.insert(je, k, np.uint64(site + 2)))
    b = A.analyze(image, jobs=1, optimized=True)
    o = b.outcome_at(x)
    v = check(image, Target(hex(x), "p", address=x))
    assert o.ok and not o.optimized and v.ok and "OPTIMIZED" not in v.flags
