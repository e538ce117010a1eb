"""``kpatch-analyze`` on good and bad input: one stderr line per error, exit 1 (input) / 2 (usage)."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import X86_VMLINUX, X86_VMLINUX_612
from kpatch_core.cli import main

VMLINUX = str(X86_VMLINUX)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str, code: int, want_code: int, *needles: str) -> str:
    """The single stderr line of a failed run, checked for the prefix, exit code and words."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kpatch-analyze: error: "), lines[0]
    assert code == want_code, (code, lines[0])
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# --- generated bad images ----------------------------------------------------------------------

def elf_header(ei_class: int, machine: int) -> bytes:
    """A minimal ELF header with no sections (64-bit layout padded for 32-bit too)."""
    ident = b"\x7fELF" + bytes([ei_class, 1, 1, 0]) + bytes(8)
    if ei_class == 2:
        return ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0)
    return (ident + struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, 0, 0, 0, 0, 52, 32, 0, 40, 0, 0)
            + bytes(12))


def stripped_copy(tmp_path) -> Path:
    """The test image with its .symtab section header turned into SHT_NULL (as if stripped)."""
    data = bytearray(X86_VMLINUX.read_bytes())
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    for i in range(shnum):
        off = shoff + i * shentsize
        if struct.unpack_from("<I", data, off + 4)[0] == 2:  # SHT_SYMTAB
            struct.pack_into("<I", data, off + 4, 0)
    p = tmp_path / "vmlinux-stripped"
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "tiny", "truncated", "elf32",
                                  "mips", "stripped", "no_stext"])
def test_bad_images(capsys, tmp_path, kind):
    p = tmp_path / "vmlinux"
    needle = {"missing": "no such file", "directory": "is a directory", "text": "not an ELF",
              "tiny": "not an ELF", "truncated": "truncated ELF", "elf32": "32-bit",
              "mips": "unsupported architecture EM_MIPS", "stripped": "stripped",
              "no_stext": "_stext"}[kind]
    data = X86_VMLINUX.read_bytes()
    if kind == "directory":
        p.mkdir()
    elif kind == "text":
        p.write_text("this is not a kernel image, just text that is long enough to be read\n" * 3)
    elif kind == "tiny":
        p.write_bytes(b"\x7fELF\x02\x01")
    elif kind == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif kind == "elf32":
        p.write_bytes(elf_header(1, 3))
    elif kind == "mips":
        p.write_bytes(elf_header(2, 8))
    elif kind == "stripped":
        p = stripped_copy(tmp_path)
    elif kind == "no_stext":
        p.write_bytes(data.replace(b"\0_stext\0", b"\0_stexX\0"))
    path = str(p)
    for argv in (["check", path, "plain_func"], [path]):
        code, out, err = run(capsys, *argv)
        one_error(err, code, 1, needle)
        assert out == ""


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="binutils objcopy not installed")
def test_objcopy_stripped_image(capsys, tmp_path):
    p = tmp_path / "vmlinux"
    subprocess.run(["objcopy", "--strip-all", VMLINUX, str(p)], check=True)
    code, _, err = run(capsys, "check", str(p), "plain_func")
    one_error(err, code, 1, "stripped", "unstripped")


# --- usage errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    ([], "give a vmlinux"),
    (["check", VMLINUX], "no targets"),
    (["check", VMLINUX, "vfs read"], "malformed target"),
    (["check", VMLINUX, "plain_func+0xzz"], "is not a number"),
    (["check", VMLINUX, "--bogus"], "unrecognized arguments"),
    (["check", "--set", "PREEMPTION", VMLINUX, "plain_func"], "expected FACT=y or FACT=n"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_usage_errors(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    one_error(err, code, 2, needle)
    assert out == ""


def test_malformed_targets_file_line(capsys, tmp_path):
    p = tmp_path / "probes.txt"
    p.write_text("plain_func\n# comment\nplain func\n")
    code, out, err = run(capsys, "check", VMLINUX, "--targets", str(p))
    one_error(err, code, 2, "probes.txt:3", "malformed target")
    assert out == ""


def test_missing_targets_file_and_config(capsys, tmp_path):
    code, _, err = run(capsys, "check", VMLINUX, "--targets", str(tmp_path / "none.txt"))
    one_error(err, code, 1, "cannot read targets file")
    code, _, err = run(capsys, "check", "--config", str(tmp_path / "config"), VMLINUX, "plain_func")
    one_error(err, code, 1, "cannot read config file")


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["check", "--help"])
    assert e.value.code == 0
    assert "--targets" in capsys.readouterr().out


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point, as a user runs it: missing file and a malformed target."""
    exe = shutil.which("kpatch-analyze")
    base = [exe] if exe else [sys.executable, "-m", "kpatch_core.cli"]
    p = subprocess.run(base + ["check", str(tmp_path / "nope"), "x"], capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("kpatch-analyze: error: ")
    p = subprocess.run(base + ["check", VMLINUX, "a b"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("kpatch-analyze: error: malformed target")
    assert "Traceback" not in p.stderr


# --- good input -----------------------------------------------------------------------------------

def test_unknown_symbol_is_a_verdict_and_an_input_error(capsys):
    # like `echo 'p nosuch' > kprobe_events`: the kernel's answer is ENOENT, printed as a verdict,
    # and the input error is one stderr line with exit code 1
    code, out, err = run(capsys, "check", VMLINUX, "no_such_function")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("kpatch-analyze: error: unknown symbol")
    assert "no_such_function" in err and "Traceback" not in err
    assert "ENOENT" in out and "Invalid probed address or symbol" in out


def test_check_text_output(capsys):
    code, out, err = run(capsys, "check", VMLINUX, "plain_func", "plain_func+1", "nokprobe_func")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    assert "ok" in lines[0] and "ftrace [FTRACE]" in lines[0] and "plain_func+0x4" in lines[0]
    assert "EILSEQ" in lines[1] and "[can_probe]" in lines[1]
    assert "EINVAL" in lines[2] and "NOKPROBE_SYMBOL" in lines[2]


def test_check_json_output(capsys, tmp_path):
    p = tmp_path / "probes.txt"
    p.write_text("plain_func\nr plain_func+9\ndup_static\n")
    code, out, err = run(capsys, "check", VMLINUX, "insn_refused+9", "--targets", str(p), "--json")
    assert code == 0 and err == ""
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["target"], r["kind"], r["ok"], r["errno"]) for r in rows] == [
        ("insn_refused+9", "p", False, "EOPNOTSUPP"),
        ("plain_func", "p", True, None),
        ("plain_func+9", "r", False, "EINVAL"),
        ("dup_static", "p", False, "EADDRNOTAVAIL"),
    ]
    assert rows[1]["method"] == "ftrace" and rows[2]["message"].startswith("Retprobe address")


def test_check_6_12_image(capsys):
    code, out, _ = run(capsys, "check", str(X86_VMLINUX_612), "--json", "dup_static")
    assert json.loads(out)["errno"] == "EINVAL" and json.loads(out)["rules"] == "6.12"


def test_set_before_the_image(capsys):
    code, out, err = run(capsys, "check", "--set", "PREEMPTION=n", VMLINUX, "--json", "insn_boost+9")
    assert code == 0 and json.loads(out)["method"] == "boost"
    code, out, err = run(capsys, "check", VMLINUX, "insn_boost+9", "--json", "--set", "CONFIG_PREEMPTION=n")
    assert code == 0 and json.loads(out)["method"] == "boost"


def test_targets_after_options(capsys):
    # argparse alone leaves positionals that follow an option unparsed; the CLI takes them
    code, out, err = run(capsys, "check", VMLINUX, "--set", "PREEMPTION=n", "--json", "insn_boost+9",
                         "plain_func")
    assert code == 0 and err == ""
    assert [json.loads(line)["method"] for line in out.splitlines()] == ["boost", "ftrace"]
    code, out, err = run(capsys, "check", VMLINUX, "--json", "plain_func", "--nope")
    one_error(err, code, 2, "unrecognized arguments: --nope")
    code, out, err = run(capsys, VMLINUX, "--json", "plain_func")
    one_error(err, code, 2, "unrecognized arguments: plain_func")


def test_config_file_option(capsys, tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("# CONFIG_PREEMPTION is not set\n")
    code, out, _ = run(capsys, "check", "--config", str(cfg), VMLINUX, "--json", "insn_boost+9")
    assert code == 0 and json.loads(out)["method"] == "boost"


def test_summary(capsys):
    code, out, err = run(capsys, VMLINUX)
    assert code == 0 and err == ""
    assert "arch         x86_64" in out and "rules 6.1" in out
    assert "KPROBES_ON_FTRACE          y   inferred: symbol arch_prepare_kprobe_ftrace" in out
    assert "BLACKLIST_NOKPROBE" in out and "NOTRACE" in out


def test_summary_json(capsys, tmp_path, monkeypatch):
    # --json is JSON Lines, one object per text symbol (docs/json-schema.md)
    monkeypatch.setenv("KPATCH_CACHE", str(tmp_path))
    code, out, _ = run(capsys, "summary", str(X86_VMLINUX_612), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) > 30
    funcs = [r for r in rows if r["type"] == "func"]
    assert sum(r["entry"]["ok"] for r in funcs) + sum(not r["entry"]["ok"] for r in funcs) == len(funcs)
    assert {r["name"] for r in rows if r["blacklist"]} >= {"nokprobe_func", "asm_nokprobe_func"}


# --- issue 13: CLI hygiene ------------------------------------------------------------------
def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    from kpatch_core import __version__
    assert capsys.readouterr().out.strip() == f"kpatch-analyze {__version__}"


def test_unknown_set_fact_is_a_usage_error_listing_the_known_ones(capsys):
    assert main(["check", str(X86_VMLINUX), "plain_func", "--set", "PREEMPTON=n"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PREEMPTON" in err and "PREEMPTION" in err \
        and "OPTPROBES" in err
    assert main(["check", str(X86_VMLINUX), "plain_func", "--set", "PREEMPTION=n"]) == 0


def test_event_exits_nonzero_when_a_line_is_refused(capsys):
    assert main(["event", str(X86_VMLINUX), "p:a plain_func"]) == 0
    capsys.readouterr()
    assert main(["event", str(X86_VMLINUX), "p:a plain_func", "p:b no_such_function"]) == 1
    cap = capsys.readouterr()
    assert "accepted" in cap.out and "refused" in cap.out
    assert cap.err.count("\n") == 1 and "refuses 1 of 2" in cap.err


def test_func_names_call_targets(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KPATCH_CACHE", str(tmp_path / "cache"))
    assert main(["func", str(X86_VMLINUX), "dup_a_caller"]) == 0
    out = capsys.readouterr().out
    call = next(ln for ln in out.splitlines() if " call 0x" in ln)
    assert "<dup_static+0x0>" in call


def test_offset_past_the_end_warns(capsys):
    assert main(["check", str(X86_VMLINUX), "plain_func+0x20", "plain_func+0x4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].lstrip().startswith("warning: +0x20 is past the end of plain_func")
    assert "plain_loop+0x0" in out[1]  # where the kernel puts it
    assert not any("warning" in ln for ln in out[2:])  # +4 is inside: no warning


def test_refused_symbol_target_reports_address_and_name(capsys):
    assert main(["check", str(X86_VMLINUX), "plain_func+1", "notrace_func"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "plain_func+0x1 0xffffffff8100" in lines[0] and "EILSEQ" in lines[0]
    assert "notrace_func+0x0 0xffffffff8100" in lines[1] and "EINVAL" in lines[1]


def test_columns_aligned_for_long_errnos_and_no_repetition(capsys):
    assert main(["check", str(X86_VMLINUX), "plain_func", "dup_static", "plain_func+1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ok, dup, eilseq = lines[0], next(ln for ln in lines if ln.startswith("dup_static")), \
        next(ln for ln in lines if ln.startswith("plain_func+1"))
    assert "EADDRNOTAVAIL" in dup
    col = ok.index("plain_func+0x4")  # the column after the verdict
    assert dup[col - 1] == " " and dup[col] != " " and eilseq[col] != " "
    assert dup.index("EADDRNOTAVAIL") == ok.index("ok") == eilseq.index("EILSEQ")
    assert eilseq.lower().count("not an instruction boundary") == 1


@pytest.mark.parametrize("image", ["x86_64/vmlinux", "arm64/vmlinux-6.12", "riscv64/vmlinux-6.12",
                                   "s390x/vmlinux", "ppc64le/vmlinux"])
def test_func_slots_lists_every_accepted_instruction_with_its_slot(capsys, image):
    """``func --slots --json``: every accepted instruction has its slot bytes (or the slot's
    refusal); a slot module that raises would print "unavailable" and fail here."""
    from kpatch_core.image import Image
    path = str(Path(__file__).resolve().parent.parent / "testdata" / image)
    img = Image.open(path)
    ks = img.kallsyms
    lo, hi = img.tables.stext, img.tables.etext
    names = list(dict.fromkeys(n for i, n in enumerate(ks.names)  # functions, first aliases
                               if ks.symtab_type(i) == 2 and lo <= int(ks.addrs[i]) < hi
                               and ks.aliases_at(int(ks.addrs[i]))[0] == n))[:400]
    checked = 0
    for name in names:
        if img.kallsyms.count(name) != 1:
            continue
        code, out, err = run(capsys, "func", path, name, "--slots", "--json")
        assert code == 0 and "Traceback" not in err, err
        for line in out.splitlines():
            d = json.loads(line)
            assert "unavailable" not in str(d.get("slot")), d
            if d["ok"]:
                assert d["slot"] is not None, d
                checked += 1
        if checked >= 40:
            break
    assert checked >= 40, f"only {checked} accepted instructions listed with slots"
