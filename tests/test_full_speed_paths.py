"""The fast paths of the full analysis (issue 15) give exactly what the plain paths give: JSON
Lines from the column arrays against ``json.dumps(function_json(i))``, the in-place x86 UD1
length fixups against the cut-and-decode-again walk, the integer match of fill encodings
against byte-by-byte comparison."""
from __future__ import annotations

import ctypes
import json
import random
from pathlib import Path

import numpy as np
import pytest

from kpatch_core import analyze as A
from kpatch_core.decode import LinearDecoder, decode_function
from kpatch_core.fill import fill_instructions
from kpatch_core.image import Image
from kpatch_core.json_lines import json_lines

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
IMAGES = ["x86_64/vmlinux", "x86_64/vmlinux-6.12", "arm64/vmlinux-6.12", "riscv64/vmlinux-6.12",
          "s390x/vmlinux", "ppc64le/vmlinux"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KPATCH_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("rel", IMAGES)
@pytest.mark.parametrize("optimized", [False, True])
def test_json_lines_are_the_bytes_of_function_json(rel, optimized):
    a = A.analyze(Image.open(str(TESTDATA / rel)), jobs=1, optimized=optimized)
    plain = "".join(json.dumps(a.function_json(i), separators=(",", ":")) + "\n"
                    for i in range(len(a)))
    assert "".join(json_lines(a, batch=7)) == plain
    tagged = "".join(json.dumps({"image": a.meta["path"], **a.function_json(i)},
                                separators=(",", ":")) + "\n" for i in range(len(a)))
    assert "".join(json_lines(a, image_key=True)) == tagged


def test_ud1_fixups_in_place_equal_the_decode_again_walk():
    import capstone

    import kpatch_arch.x86_64.bulk as xb
    from kpatch_arch.x86_64.backend import X86_64Backend
    backend = X86_64Backend()
    clf = xb.X86BulkClassifier.__new__(xb.X86BulkClassifier)
    clf.backend = backend
    rng = random.Random(7)
    pieces = [bytes.fromhex("e923a32eff0fb9cc"),  # static call trampoline: jmp; ud1 %esp,%ecx
              bytes.fromhex("0fb94001"), bytes.fromhex("0fb90c2400"),  # ud1 with disp8, SIB
              bytes.fromhex("0fb905"), bytes.fromhex("660fb9c0"),  # rip-relative, prefixed
              bytes.fromhex("4889e5"), bytes.fromhex("c3"), bytes.fromhex("90"),
              bytes.fromhex("b80fb90000"),  # mov $0xb90f: ends in 0f b9, not a UD1
              bytes.fromhex("e800000000")]
    for _ in range(40):
        code = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 400))) + b"\xcc" * 32
        arr = np.frombuffer(code, np.uint8)
        buf = ctypes.create_string_buffer(code, len(code))
        dec = LinearDecoder(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        size = len(code) - 32
        common = (dec, ctypes.addressof(buf), 0, size, len(code), 0x1000, lambda p: None, 1)
        one = decode_function(*common, lambda o, s: clf.length_fixup(arr, o, s))
        many = decode_function(*common, lambda o, s: clf.length_fixup(arr, o, s), None,
                               lambda o, s: clf.length_fixups(arr, o, s))
        assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])
        assert one[2] == many[2]


def test_fill_encodings_matched_as_integers_equal_byte_comparison():
    rng = np.random.default_rng(3)
    encodings = (b"\xcc", b"\x90", b"\x66\x90", b"\x0f\x1f\x00", b"\x00\x00",
                 b"\x0f\x1f\x84\x00\x00\x00\x00\x00", b"\x66\x2e\x0f\x1f\x84\x00\x00\x00\x00\x00",
                 b"\x13\x00\x00\x00")
    alphabet = np.array([0x00, 0x0F, 0x1F, 0x13, 0x2E, 0x66, 0x84, 0x90, 0xCC], np.uint8)
    code = alphabet[rng.integers(0, len(alphabet), 5000)]
    for e in encodings:  # plant every encoding a few times
        for at in rng.integers(0, 4980, 20).tolist():
            code[at:at + len(e)] = np.frombuffer(e, np.uint8)
    starts = rng.integers(0, 5000, 3000).astype(np.int64)
    lens = rng.integers(0, 12, 3000).astype(np.int64)
    got = fill_instructions(code, starts, lens, encodings, 2)
    want = [bytes(code[s:s + (n or 2)]) in encodings and s + (n or 2) <= len(code)
            for s, n in zip(starts.tolist(), lens.tolist())]
    assert got.tolist() == want


def test_json_lines_written_by_several_processes_are_the_same_bytes():
    import io

    from kpatch_core.json_lines import write_json_lines
    a = A.analyze(Image.open(str(TESTDATA / "x86_64/vmlinux-6.12")), jobs=1)
    one, three = io.StringIO(), io.StringIO()
    write_json_lines(a, one, jobs=1)
    write_json_lines(a, three, image_key=True, jobs=3, min_parallel=1)
    tagged = "".join(json.dumps({"image": a.meta["path"], **a.function_json(i)},
                                separators=(",", ":")) + "\n" for i in range(len(a)))
    assert one.getvalue() == "".join(json_lines(a)) and three.getvalue() == tagged
