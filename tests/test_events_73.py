"""The 7.3 rework of kernel/trace/trace_probe.c as the real kernels answered it.

``tests/data/oracle/<NAME>/events-7.3.jsonl.gz``: the lines of tests/data/oracle/events73.py
(nesting depth 7-14, argument lengths 63-300, FILE_ON_KPROBE, ``$current``, ``this_cpu_ptr()`` /
``this_cpu_read()``, typecasts on kprobes, deleting by long places, and their neighbours) written to kprobe_events by
kernel-oracle ``--events`` on Debian 7.3.4 (amd64, arm64) and, to pin each feature from the other
side, 7.2.13 and 6.12.117.  Each set is replayed through EventSet in the oracle's protocol: ok,
errno, error_log message and caret of every line, and the read-back of every accepted line.
Skipped per kernel when its vmlinux is not cached.  The stand-in tests below need no kernel.
"""
from __future__ import annotations

import gzip
import json
import re

import pytest

from conftest import ORACLE_DATA, real_vmlinux
from kpatch_core.events import EventSet, ImageEnv, error_messages
from kpatch_core.events.error_log import max_argstr_len
from kpatch_core.features import FeatureSet
from kpatch_core.image import Image
from kpatch_core.registry import backend_named
from kpatch_core.testing import replay_event_answers
from test_events import FakeEnv

SETS = sorted(p.parent.name for p in ORACLE_DATA.glob("*/events-7.3.jsonl.gz"))
# benchmarks/events_oracle.py generate VMLINUX -n 300 --seed 11 (amd64) / 12 (arm64) on 7.3.4:
# every argument form of the older kernels, through the 7.3 parser
GENERATED = sorted(p.parent.name for p in ORACLE_DATA.glob("*/events-7.3-gen.jsonl.gz"))
NEW_73 = ("EVENTS_ARGSTR_LEN_255", "ERRORS_FILE_ON_KPROBE_KERNEL_PROBES",
          "EVENTS_NESTED_PARSE_STATES", "EVENTS_CURRENT_VAR", "EVENTS_THIS_CPU",
          "EVENTS_KPROBE_TYPECAST", "EVENTS_MATCH_HEAD_FULL_PLACE")


def _rows(name: str, file: str = "events-7.3.jsonl.gz") -> list[dict]:
    with gzip.open(ORACLE_DATA / name / file, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def _replay(events: EventSet, rows: list[dict]) -> tuple[int, list]:
    """(lines judged, disagreements) of ``rows`` replayed in the oracle's protocol."""
    return replay_event_answers(events, rows, readback=True)


def test_answer_sets_present() -> None:
    """Both sides of the 7.3 features are answered: 7.3.4 amd64/arm64 and 7.2.13 amd64."""
    assert {"7.3.4+deb13-amd64", "7.3.4+deb13-arm64", "7.2.13+deb14-amd64"} <= set(SETS), SETS
    assert {"7.3.4+deb13-amd64", "7.3.4+deb13-arm64"} <= set(GENERATED), GENERATED


@pytest.mark.realkernel
@pytest.mark.parametrize("name", SETS)
def test_events_73_real_kernel(name: str) -> None:
    """Every line of the 7.3 vectors as the real kernel answered it."""
    image = Image.open(str(real_vmlinux(name)))
    n, wrong = _replay(EventSet(ImageEnv(image)), _rows(name))
    assert n >= 160 and not wrong, (len(wrong), wrong[:10])


@pytest.mark.realkernel
@pytest.mark.parametrize("name", GENERATED)
def test_generated_lines_real_kernel(name: str) -> None:
    """300 generated lines (valid and not, multi-probe and deletes) as 7.3.4 answered them."""
    image = Image.open(str(real_vmlinux(name)))
    n, wrong = _replay(EventSet(ImageEnv(image)), _rows(name, "events-7.3-gen.jsonl.gz"))
    assert n >= 290 and not wrong, (len(wrong), wrong[:10])


def test_answers_show_the_features() -> None:
    """The committed answers themselves differ where the feature rows say 7.2 and 7.3 differ."""
    def by_line(name: str) -> dict[str, dict]:
        return {r["line"]: r for r in _rows(name) if r.get("op") == "event"}
    new, old = by_line("7.3.4+deb13-amd64"), by_line("7.2.13+deb14-amd64")
    nest9 = "p vfs_read " + "+0(" * 9 + "@0" + ")" * 9
    assert (new[nest9]["error"], new[nest9]["caret"]) == ("E2BIG", 35) and old[nest9]["ok"]
    long255 = next(k for k in new if re.fullmatch(r"p vfs_read \+0+1\(%di\)", k) and len(k) == 266)
    assert new[long255]["ok"] and old[long255]["error_message"] == "Argument expression is too long"
    for line in ("p vfs_read $current->pid", "p vfs_read this_cpu_read(@irq_stat)",
                 "p vfs_read (file)file->f_mode"):
        assert new[line]["ok"] and not old[line]["ok"], line
    assert old["p vfs_read (file)file->f_mode"]["error_message"] == \
        "Typecasts are only for eprobe fields"
    delete64 = next(k for k in new if k.startswith("-:grp/s64 "))
    assert new[delete64]["ok"] and old[delete64]["error"] == "ENOENT"


def test_feature_rows_73() -> None:
    """The 7.3 rows hold from 7.3 on and not on 7.2; the eprobe typecast id from 7.2."""
    f73, f72, f612 = (FeatureSet.decide(v, "x86_64") for v in ((7, 3), (7, 2), (6, 12)))
    for name in NEW_73:
        assert f73.has(name) and not f72.has(name), name
    assert f72.has("EVENTS_EPROBE_TYPECAST") and not f612.has("EVENTS_EPROBE_TYPECAST")
    assert (max_argstr_len(f72), max_argstr_len(f73)) == (63, 255)
    assert error_messages(f72)["FILE_ON_KPROBE"] == "File offset is not available with kprobe"
    assert error_messages(f73)["FILE_ON_KPROBE"] == \
        "File offset is not available for kernel probes"
    assert "TOO_MANY_NESTED" in error_messages(f73) and "TOO_MANY_NESTED" not in error_messages(f72)


@pytest.mark.parametrize("line, want72, want73", [
    # depth 8 is the limit from 7.3; 7.2 runs out of fetch_insn slots at 14
    ("p vfs_read " + "+0(" * 8 + "@0" + ")" * 8, (True, None, None), (True, None, None)),
    ("p vfs_read " + "+0(" * 9 + "@0" + ")" * 9, (True, None, None), (False, "TOO_MANY_NESTED", 35)),
    ("p vfs_read " + "+0(" * 14 + "@0" + ")" * 14, (False, "TOO_MANY_OPS", 14),
     (False, "TOO_MANY_NESTED", 35)),
    ("p vfs_read x=" + "-8(" * 9 + "@0" + ")" * 9, (True, None, None), (False, "TOO_MANY_NESTED", 37)),
    ("p vfs_read @+10", (False, "FILE_ON_KPROBE", 11), (False, "FILE_ON_KPROBE", 11)),
    ("p vfs_read +" + "0" * 248 + "1(%di)", (False, "ARG_TOO_LONG", 11), (True, None, None)),
    ("p vfs_read +" + "0" * 249 + "1(%di)", (False, "ARG_TOO_LONG", 11), (False, "ARG_TOO_LONG", 11)),
    ("p vfs_read (file)file->f_flags", (False, "TYPECAST_NOT_EVENT", 11), (True, None, None)),
    ("p vfs_read (file,f_path)%di->f_flags", (False, "TYPECAST_NOT_EVENT", 11), (True, None, None)),
    ("p vfs_read (file,f_bits)%di->f_flags", (False, "TYPECAST_NOT_EVENT", 11),
     (False, "TYPECAST_NOT_ALIGNED", 17)),
    ("p vfs_read (file,f_path.dentry->d_seq)%di->f_flags", (False, "TYPECAST_NOT_EVENT", 11),
     (False, "TYPECAST_BAD_ARROW", 30)),  # the '->' in the option
    ("p vfs_read (file)@linux_proc_banner+8->f_flags", (False, "TYPECAST_NOT_EVENT", 11),
     (False, "TYPECAST_SYM_OFFSET", 17)),
    ("p vfs_read (file)(%di)", (False, "TYPECAST_NOT_EVENT", 11), (False, "TYPECAST_REQ_FIELD", 22)),
    ("p vfs_read (nosuch)%di->x", (False, "TYPECAST_NOT_EVENT", 11), (False, "NO_PTR_STRCT", 12)),
    ("p vfs_read+4 (file)%di->f_flags", (False, "TYPECAST_NOT_EVENT", 13),
     (False, "NOSUP_BTFARG", 13)),
    ("p vfs_read this_cpu_read(@linux_proc_banner)", (False, "NO_BTFARG", 11), (True, None, None)),
    ("p vfs_read this_cpu_read(@linux_proc_banner", (False, "NO_BTFARG", 11),
     (False, "DEREF_OPEN_BRACE", 43)),
    ("p vfs_read $current", (False, "BAD_VAR", 11), (True, None, None)),
    ("p vfs_read $currentx", (False, "BAD_VAR", 11), (False, "BAD_VAR", 11)),
])
def test_stand_in_72_73(line: str, want72: tuple, want73: tuple) -> None:
    """The same lines on a stand-in 7.2 and 7.3 kernel (tests/data/events/btf/funcs.c BTF)."""
    for rules, want in (("7.2", want72), ("7.3", want73)):
        r = EventSet(FakeEnv(rules, backend_named("x86_64"))).write(line, keep=False)
        e = r.error
        assert (r.ok, e.log_id if e else None, e.caret if e else None) == want, (rules, e)


@pytest.mark.parametrize("rules, deleted", [("7.2", (True, False, True)), ("7.3", (True, True, False))])
def test_delete_by_long_place(rules: str, deleted: tuple[bool, bool, bool]) -> None:
    """'-:EVENT PLACE': before 7.3 the kernel compares the first 63 characters of the place."""
    mod = "kpatch_long_module_name_for_delete_matching"
    for place, delete, want in ((f"{mod}:" + "f" * 19, None, deleted[0]),  # 63 characters
                                (f"{mod}:" + "f" * 20, None, deleted[1]),  # 64
                                (f"{mod}:" + "f" * 26, f"{mod}:" + "f" * 19, deleted[2])):
        s = EventSet(FakeEnv(rules, backend_named("x86_64")))
        assert s.write(f"p:grp/ev {place}").ok
        r = s.write(f"-:grp/ev {delete or place}")
        assert r.ok == want and (want or (r.error is not None and r.error.errno == "ENOENT"))


def test_typecast_fetch_program() -> None:
    """A typecast's ',FIELD' option moves the first field's offset back by the field's offset,
    and this_cpu_read(@SYM) loads the per-cpu address in @SYM's dereference slot, then reads it."""
    s = EventSet(FakeEnv("7.3", backend_named("x86_64")))
    btf = s.env.btf
    assert btf is not None
    flags, path = btf.member_offset("file", "f_flags"), btf.member_offset("file", "f_path")
    assert flags is not None and path is not None
    r = s.write("p vfs_read a=(file,f_path)%di->f_flags b=this_cpu_read(@linux_proc_banner)")
    assert r.ok and r.event is not None
    a, b = r.event.args
    assert a.ops == ("REG", "ST_MEM") and a.type == "u32"
    assert b.ops == ("NOP_SYMBOL", "IMM", "CPU_PTR", "ST_MEM")
    assert s.write("p:x vfs_read c=(file,f_path)%di->f_path").ok
