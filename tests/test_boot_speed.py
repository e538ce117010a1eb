"""The cold-check speed path of boot images (kpatch_core/boot_decode.py, bootimage/stream.py):
the payload decoded in pieces in a thread, written out as it comes, kallsyms read from the
decoded part, must give the very bytes of the one-shot path: the same payload, the same
errors, the same synthetic ELF (on the shipped images and, when cached, the Debian xz bzImages).
How fast it is is measured by benchmarks/bench_boot.py, not here."""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kpatch_core.bootimage as bi
from kpatch_core import boot_decode
from kpatch_core.bootimage import stream
from kpatch_core.bootimage.bzimage import bzimage_compressed
from kpatch_core.bootimage.decompress import decompress, decompress_chunks
from kpatch_core.bootimage.kallsyms import find_kallsyms
from kpatch_core.bootimage.symbol_types import symbol_info, symbol_infos
from kpatch_core.bootimage.system_map import read_system_map
from kpatch_core.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
BOOT_X86 = ROOT / "testdata" / "boot" / "x86_64"
KERNELS = Path(os.environ.get("KPATCH_KERNELS", Path.home() / ".cache" / "kpatch-kernels"))
FORMATS = ["gzip", "xz", "lzma", "bzip2", "lz4", "zstd"] + (
    ["lzo"] if importlib.util.find_spec("lzo") else [])
# Debian xz bzImages (5.10, 6.1): the images the streaming path is for
XZ_KERNELS = [("5.10.0-46-amd64", "vmlinuz-5.10.0-46-amd64"), ("x86_64", "vmlinuz-6.1.0-50-amd64")]


@pytest.fixture(autouse=True)
def boot_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "boot-cache"
    monkeypatch.setenv("KPATCH_BOOT_CACHE", str(d))
    return d


def _compressed(fmt: str) -> bytes:
    return bzimage_compressed((BOOT_X86 / f"vmlinuz-{fmt}").read_bytes())[1]


def _outcome(f: Any) -> bytes | str:
    """The bytes ``f()`` returns, or the message of the InputError it raises."""
    try:
        return bytes(f())
    except InputError as e:
        return f"InputError: {e}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_pieces_join_to_the_one_shot_payload(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot_decode, "ZSTD_INPUT", 256)  # zstd: pieces by input fed
    comp = _compressed(fmt)
    got = list(decompress_chunks(comp, "img", chunk=1000))
    assert b"".join(got) == decompress(comp, "img")
    if fmt == "zstd":  # the shipped payload is one zstd block: one piece (see below)
        pass
    elif fmt in boot_decode.PIECEWISE:  # decoded in pieces of at most `chunk` bytes
        assert len(got) > 1 and max(map(len, got)) <= 1000
    else:
        assert len(got) == 1


def test_zstd_in_pieces_as_its_input_is_fed(monkeypatch: pytest.MonkeyPatch) -> None:
    import zstandard
    data = bytes(range(256)) * 2048 + os.urandom(300_000) + bytes(500_000)  # several blocks
    comp = zstandard.ZstdCompressor().compress(data) + b"\x01\x02\x03\x04"  # + the size word
    monkeypatch.setattr(boot_decode, "ZSTD_INPUT", 4096)
    got = list(decompress_chunks(comp, "img"))
    assert len(got) > 3 and b"".join(got) == data == decompress(comp, "img")


@pytest.mark.parametrize("fmt", boot_decode.PIECEWISE)
def test_truncated_and_corrupt_streams_end_as_the_one_shot_does(fmt: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot_decode, "ZSTD_INPUT", 256)
    comp = _compressed(fmt)
    bad = bytearray(comp)
    bad[len(bad) // 2:len(bad) // 2 + 16] = bytes(16)
    for data in (comp[:len(comp) // 2], comp[:len(comp) // 8], bytes(bad), comp[:12]):
        one = _outcome(lambda: decompress(data, "img"))
        pieces = _outcome(lambda: b"".join(decompress_chunks(data, "img", chunk=512)))
        assert pieces == one


def _one_shot(path: str, data: bytes, out: str, want_kallsyms: bool) -> tuple[Any, ...]:
    """unpack_bzimage as it was before streaming: decode all, no early kallsyms."""
    kind, payload, _arch = bi._unpack(path, data)
    return kind, payload, None, None, stream.EarlyKallsyms()


def _synthetic_elf(image: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("KPATCH_BOOT_CACHE", str(cache))
    return Path(bi.boot_elf(str(image)).elf_path).read_bytes()


@pytest.mark.parametrize("looked_before_the_end", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
def test_streamed_synthetic_elf_equals_the_one_shot(fmt: str, looked_before_the_end: bool, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # small pieces and margins (the shipped payload is 24 KiB): kallsyms may be read early;
    # the payload grown piece by piece, or (decoded before the first look) joined at once
    if looked_before_the_end:
        monkeypatch.setattr(boot_decode.PayloadStream, "complete", property(lambda self: False))
    monkeypatch.setattr(stream, "decompress_chunks", functools.partial(decompress_chunks, chunk=256))
    monkeypatch.setattr(stream, "EARLY_MARGIN", 1024)
    monkeypatch.setattr(stream, "_TOKEN_SPAN", 1536)  # table + index: 1232 bytes
    image = BOOT_X86 / f"vmlinuz-{fmt}"
    streamed = _synthetic_elf(image, tmp_path / "a", monkeypatch)
    monkeypatch.setattr(bi, "unpack_bzimage", _one_shot)
    assert streamed == _synthetic_elf(image, tmp_path / "b", monkeypatch)


def test_early_kallsyms_from_the_decoded_beginning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fed piece by piece, the table is read before the end and equals the whole payload's."""
    monkeypatch.setattr(stream, "EARLY_MARGIN", 1024)
    monkeypatch.setattr(stream, "_TOKEN_SPAN", 1536)  # table + index: 1232 bytes
    payload = decompress(_compressed("xz"))
    e = stream.EarlyKallsyms()
    grown = bytearray()
    for i in range(0, len(payload), 256):  # the buffer grows by a piece between calls
        grown += payload[i:i + 256]
        e.feed(grown)
    assert e.table is not None and 0 < e.found_at < len(payload)
    assert e.agrees(bi._vaddr_of(payload, None))
    full = find_kallsyms(payload, "<", vaddr_of=bi._vaddr_of(payload, None))
    assert (e.table.names, e.table.types, e.table.offset) == (full.names, full.types, full.offset)
    assert (e.table.addrs == full.addrs).all()


def test_early_kallsyms_kept_only_when_the_sections_agree() -> None:
    e = stream.EarlyKallsyms()
    assert e.agrees(None) and e.agrees(lambda o: 1)
    e.asked = {0x100: 0xFFFF0100, 0: None}
    assert e.agrees(lambda o: 0xFFFF0000 + o if o else None)
    assert not e.agrees(lambda o: 0xFFFF1000 + o if o else None)
    assert not e.agrees(None)


def test_started_decoding_is_taken_only_for_the_same_bytes(tmp_path: Path) -> None:
    img = tmp_path / "vmlinuz-xz"
    data = (BOOT_X86 / "vmlinuz-xz").read_bytes()
    img.write_bytes(data)
    boot_decode.start(str(img))
    s = boot_decode.take(str(img), data)
    assert s is not None
    n = 0
    while not s.wait(n):
        n = len(s.pieces)
    assert b"".join(s.pieces) == decompress(bzimage_compressed(data)[1])
    assert boot_decode.take(str(img), data) is None  # taken once
    boot_decode.start(str(img))
    assert boot_decode.take(str(img), data[:-1] + b"\0") is None  # other bytes: not these
    boot_decode.start(str(img))
    boot_decode.discard(str(img))
    assert boot_decode.take(str(img), data) is None


def test_start_leaves_everything_but_a_bzimage_decoded_in_pieces(tmp_path: Path) -> None:
    elf = tmp_path / "vmlinux"
    elf.write_bytes(b"\x7fELF" + bytes(4096))
    lz4 = tmp_path / "vmlinuz-lz4"
    lz4.write_bytes((BOOT_X86 / "vmlinuz-lz4").read_bytes())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for p in (elf, lz4, fifo, tmp_path / "missing", tmp_path):
        boot_decode.start(str(p))  # a FIFO is never opened (it would block)
        assert boot_decode.take(str(p), b"") is None


def _real(name: str, image: str) -> Path:
    p = KERNELS / name / "boot" / image
    if not p.is_file():
        pytest.skip(f"{p} not cached (tests/data/oracle/fetch.sh {name})")
    return p


@pytest.mark.parametrize("name,image", XZ_KERNELS)
def test_debian_xz_bzimage_streamed_equals_one_shot(name: str, image: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = _real(name, image)
    seen: list[stream.EarlyKallsyms] = []
    real = stream.unpack_bzimage

    def spy(*a: Any) -> tuple[Any, ...]:
        r = real(*a)
        seen.append(r[4])
        return r
    monkeypatch.setattr(bi, "unpack_bzimage", spy)
    streamed = _synthetic_elf(path, tmp_path / "a", monkeypatch)
    # kallsyms (.rodata, a third of the way in) was read while the rest decoded
    assert seen[0].table is not None and seen[0].found_at < len(streamed) // 2
    monkeypatch.setattr(bi, "unpack_bzimage", _one_shot)
    assert streamed == _synthetic_elf(path, tmp_path / "b", monkeypatch)


# names whose shape symbol_info reads: linker bounds, aliases of them, prefixes, suffixes, edge cases
TRICKY = ["", "_", ".", "__", "_end", "_end.", "_etext", "_sinittext", "_edata", "x_end", "__start_",
          "__start_x.isra.0", "__stop___jump_table", "__end_x", "__sched_text_start", "__x_text_end",
          "__pi__stext", "__pi___start_x", "__kvm_nvhe___start___kvm_ex_table", "__pi___kvm_nvhe__end",
          "__kvm_nvhe___pi__end", "__pfx___start_x", "__cfi_f", "__SCT__x_end", "f.isra.0", "f.cold",
          "f.llvm.123", "f.part.1.constprop.0", "f.5", "_f.isra", "__bpf_trace_tp_map_foo_start",
          "__traceiter_foo_end", "é_start", "__é_end", "__x_startx", "__start_\xff"]


def _random_flags(n: int) -> np.ndarray:
    return np.random.default_rng(7).random((4, n)) < 0.5


def test_symbol_infos_equal_symbol_info_on_tricky_names() -> None:
    names = TRICKY * 3
    letters = "".join("tTdDrRbBwWvVaA"[i % 14] for i in range(len(names)))
    f = _random_flags(len(names))
    got = symbol_infos(letters, names, *f)
    assert got.tolist() == [symbol_info(t, n, *map(bool, x)) for t, n, x in zip(letters, names, f.T)]


@pytest.mark.parametrize("name", ["7.2.13+deb14-amd64", "7.2.13+deb14-arm64", "7.2.13+deb14-riscv64"])
def test_symbol_infos_equal_symbol_info_on_debian_names(name: str) -> None:
    """Every name of a Debian System.map (arm64: __pi_/__kvm_nvhe_ aliases), random evidence."""
    maps = sorted((KERNELS / name / "boot").glob("System.map-*")) if (KERNELS / name).is_dir() else []
    sm = read_system_map(str(maps[0])) if maps else None
    if sm is None:
        pytest.skip(f"{KERNELS / name}/boot/System.map-* not cached (tests/data/oracle/fetch.sh {name})")
    f = _random_flags(len(sm.names))
    got = symbol_infos(sm.types, sm.names, *f)
    assert got.tolist() == [symbol_info(t, n, *map(bool, x)) for t, n, x in zip(sm.types, sm.names, f.T)]


def test_start_leaves_an_image_whose_synthetic_elf_is_cached(tmp_path: Path) -> None:
    img = tmp_path / "vmlinuz-xz"
    img.write_bytes((BOOT_X86 / "vmlinuz-xz").read_bytes())
    bi.boot_elf(str(img))  # the synthetic ELF is made and cached (no System.map beside it)
    assert not boot_decode.start(str(img))  # nothing to decode: no CPU spent on it
    assert boot_decode.take(str(img), img.read_bytes()) is None
    other = tmp_path / "vmlinuz-gzip"
    other.write_bytes((BOOT_X86 / "vmlinuz-gzip").read_bytes())
    assert boot_decode.start(str(other))
    boot_decode.discard(str(other))


def _forked(fmt: str, comp: bytes, monkeypatch: pytest.MonkeyPatch) -> Any:
    """boot_decode's forked decoder of ``comp`` (fork is allowed: no other thread pretended)."""
    monkeypatch.setattr(boot_decode.threading, "active_count", lambda: 1)
    got = boot_decode._fork_decoder(fmt, comp, "img")
    assert got is not None, "os.fork is there on Linux"
    return got


@pytest.mark.parametrize("fmt", boot_decode.PIECEWISE)
def test_forked_decoder_gives_the_one_shot_payload_or_error(fmt: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded in a child process (the CLI's early start): the same bytes, the same error."""
    monkeypatch.setattr(boot_decode, "ZSTD_INPUT", 256)
    monkeypatch.setattr(boot_decode, "CHUNK", 700)  # many frames through the pipe
    comp = _compressed(fmt)
    bad = bytearray(comp)
    bad[len(bad) // 2:len(bad) // 2 + 16] = bytes(16)
    for data in (comp, comp[:len(comp) // 2], bytes(bad)):
        one = _outcome(lambda: decompress(data, "img"))
        source, _stop = _forked(fmt, data, monkeypatch)
        assert _outcome(lambda: b"".join(source)) == one


def _child_sends_one_frame_then(then: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forked child (it runs this process's code as patched here) sends its first frame,
    then calls ``then``."""
    real, sent = boot_decode._send, []

    def send(fd: int, kind: bytes, body: bytes) -> None:
        if sent:
            then()
        sent.append(kind)
        real(fd, kind, body)
    monkeypatch.setattr(boot_decode, "_send", send)


def test_forked_decoder_child_dies_midway_the_rest_decoded_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boot_decode, "CHUNK", 1000)
    _child_sends_one_frame_then(lambda: os._exit(3), monkeypatch)  # as a crash would
    comp = _compressed("xz")
    source, _stop = _forked("xz", comp, monkeypatch)
    got = list(source)
    assert b"".join(got) == decompress(comp, "img") and len(got) > 2


def test_forked_decoder_stopped_decodes_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    monkeypatch.setattr(boot_decode, "CHUNK", 1000)
    _child_sends_one_frame_then(lambda: time.sleep(60), monkeypatch)
    comp = _compressed("xz")
    source, stop = _forked("xz", comp, monkeypatch)
    first = next(source)
    stop()  # the result is not wanted: the child is killed, nothing decoded in this process
    monkeypatch.setattr(boot_decode, "pieces", lambda *a, **k: pytest.fail("decoded here"))
    t0 = time.monotonic()
    assert list(source) == [] and len(first) == 1000 and time.monotonic() - t0 < 30
