"""Decode a bzImage's payload from the moment the command line is parsed, before the engine's
modules (numpy, pyelftools...) are imported.

The decoding runs in a forked child process that sends the pieces through a pipe, read by a
thread of this process (:class:`PayloadStream`): a decoder thread here would wait for the GIL
after every piece while the command imports (an xz payload took three times as long); where
fork is not safe (another thread already runs) the decoders, which release the GIL, run in a
thread instead. This module imports nothing but the standard library (the decoders when they
are needed), so that it can start first (:func:`start`, called by the CLI);
:mod:`kpatch_core.bootimage` takes the stream over (:func:`take`) or stops it when the
synthetic ELF is cached already (:func:`discard`).

The bzImage header is arch/x86/boot/header.S (Documentation/arch/x86/boot.rst): ``setup_sects``
at 0x1f1, ``HdrS`` at 0x202, the protocol version at 0x206 and, from protocol 2.08,
``payload_offset``/``payload_length`` at 0x248/0x24c after the ``setup_sects`` sectors.

>>> start("/boot/vmlinuz-6.1.0-50-amd64")              # doctest: +SKIP
"""
from __future__ import annotations

import glob
import hashlib
import os
import signal
import stat
import struct
import threading
from typing import TYPE_CHECKING, Callable, Iterator

from .errors import InputError

if TYPE_CHECKING:
    import bz2
    import lzma

# magic -> format name, as scripts/Makefile.lib's cmd_gzip, cmd_xzkern, cmd_lzma, cmd_bzip2,
# cmd_lzo, cmd_lz4, cmd_zstd22 write them; "lzma" is the legacy .lzma header (properties 0x5d)
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b\x08", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\x89LZO\x00\r\n\x1a\n", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),   # lz4 legacy frame (lz4 -l), what the kernel uses
    (b"\x04\x22\x4d\x18", "lz4f"),  # lz4 frame format
    (b"\x5d\x00\x00", "lzma"),
)
PIECEWISE = ("xz", "lzma", "bzip2", "gzip", "zstd")  # decoders that release the GIL, in pieces
ZSTD_INPUT = 1 << 17  # zstd is fed this much input a call (its output has no max_length)
CHUNK = 1 << 20  # output piece: small enough to start early on the decoded part, few calls
HDRS_MAGIC_AT = 0x202


def detect(data: bytes, at: int = 0) -> str | None:
    """The compression format whose magic starts at ``data[at:]``, or None."""
    for magic, name in MAGICS:
        if data[at:at + len(magic)] == magic:
            return name
    return None


def is_bzimage(data: bytes) -> bool:
    """True when ``data`` starts with an x86 boot sector carrying the ``HdrS`` setup header."""
    return len(data) > 0x250 and data[HDRS_MAGIC_AT:HDRS_MAGIC_AT + 4] == b"HdrS"


def bzimage_span(data: bytes) -> tuple[int, int, int]:
    """(boot protocol version, payload start, payload length) of bzImage ``data``."""
    setup_sects = data[0x1F1] or 4  # 0 means 4 (boot protocol)
    (version,) = struct.unpack_from("<H", data, 0x206)
    off, length = struct.unpack_from("<II", data, 0x248)
    return version, (setup_sects + 1) * 512 + off, length


def pieces(fmt: str, d: bytes, what: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """The output of decoder ``fmt`` (one of PIECEWISE) in non-empty pieces of at most ``chunk``
    bytes (the decoders' ``max_length``; zstd: what ``ZSTD_INPUT`` input bytes give), ending
    where the one-shot decoder ends: at
    the end of the stream (trailing bytes, such as the size word the kernel's Makefile appends,
    ignored) or where the input runs out. A corrupt or empty stream raises :class:`InputError`
    naming ``what``."""
    import lzma  # here, not at the top: a vmlinux's check never loads the decoders
    import zlib
    total = 0
    try:
        for p in _pieces(fmt, d, chunk):
            if p:
                total += len(p)
                yield p
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as e:
        raise InputError(f"{what}: corrupt {fmt} stream ({e}); download the image again") from None
    except Exception as e:  # zstandard.ZstdError
        if type(e).__module__.split(".")[0] == "zstandard":
            raise InputError(f"{what}: corrupt {fmt} stream ({e}); download the image again") from None
        raise
    if not total:
        raise InputError(f"{what}: empty or corrupt {fmt} stream; download the image again")


def _pieces(fmt: str, d: bytes, chunk: int) -> Iterator[bytes]:
    import bz2
    import lzma
    import zlib
    if fmt == "zstd":  # zstandard, the field's library (a dependency); stops at the frame's end
        import zstandard
        zd = zstandard.ZstdDecompressor().decompressobj()
        for i in range(0, len(d), ZSTD_INPUT):
            yield zd.decompress(d[i:i + ZSTD_INPUT])
            if zd.eof:
                return
        return
    if fmt == "gzip":
        z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = z.decompress(d, chunk)
        while True:
            yield out
            if z.eof or (not out and not z.unconsumed_tail):
                return
            out = z.decompress(z.unconsumed_tail, chunk)
    dec: "lzma.LZMADecompressor | bz2.BZ2Decompressor" = (
        bz2.BZ2Decompressor() if fmt == "bzip2"
        else lzma.LZMADecompressor(lzma.FORMAT_XZ if fmt == "xz" else lzma.FORMAT_ALONE))
    out = dec.decompress(d, max_length=chunk)
    while True:
        yield out
        if dec.eof or dec.needs_input:  # the stream's end, or no input left (truncated)
            return
        out = dec.decompress(b"", max_length=chunk)


class PayloadStream:
    """A payload decoded in a thread of its own, read piece by piece as it grows."""

    def __init__(self, source: Iterator[bytes], on_stop: "Callable[[], None] | None" = None) -> None:
        self.pieces: list[bytes] = []
        self._on_stop = on_stop
        self._done = False
        self._stop = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        threading.Thread(target=self._run, args=(source,), name="kpatch-boot-decode",
                         daemon=True).start()

    def _run(self, source: Iterator[bytes]) -> None:
        try:
            for p in source:
                with self._cond:
                    if self._stop:
                        break
                    self.pieces.append(p)
                    self._cond.notify_all()
        except BaseException as e:  # noqa: BLE001 -- raised in the reader's thread by wait()
            self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def wait(self, count: int) -> bool:
        """Block until more than ``count`` pieces are decoded or the decoding ended; True when
        it ended with ``count`` pieces (and then raises its error, if any)."""
        with self._cond:
            while len(self.pieces) <= count and not self._done:
                self._cond.wait()
            done = self._done and len(self.pieces) <= count
        if done and self._error is not None:
            raise self._error
        return done

    @property
    def complete(self) -> bool:
        """Has the whole payload been decoded, without error?"""
        with self._cond:
            return self._done and self._error is None and not self._stop

    def stop(self) -> None:
        """Stop decoding after the current piece (its result is not wanted)."""
        with self._cond:
            self._stop = True
            self.pieces.clear()
        if self._on_stop is not None:
            self._on_stop()


_STARTED: dict[tuple[str, int, int], tuple[bytes, PayloadStream]] = {}


def cache_dir() -> str:
    """Where synthetic ELFs are kept (``$KPATCH_BOOT_CACHE``, ``$KPATCH_CACHE/boot`` or
    ``~/.cache/kpatch-core/boot``)."""
    d = os.environ.get("KPATCH_BOOT_CACHE")
    if d:
        return d
    c = os.environ.get("KPATCH_CACHE", "")
    if c and c.lower() not in ("off", "0", "no", "none"):
        return os.path.join(c, "boot")
    return os.path.join(os.path.expanduser("~"), ".cache", "kpatch-core", "boot")


def _cached(data: bytes) -> bool:
    """Is a synthetic ELF of these image bytes cached (keyed by their sha256 alone, as when no
    System.map is beside the image; of any format version: at worst the decoding then starts
    later, in :mod:`kpatch_core.bootimage`)?"""
    key = hashlib.sha256(data).hexdigest()
    return any(os.path.isfile(f + ".source")
               for f in glob.glob(os.path.join(glob.escape(cache_dir()), key + "-v*.elf")))


def _key(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


def start(path: str) -> bool:
    """Start decoding the payload of ``path`` when it is a bzImage compressed in one of the
    PIECEWISE formats (anything else, or any error, is left to :mod:`kpatch_core.bootimage`); True when
    it started."""
    key = _key(path)
    if key is None or key in _STARTED:
        return False
    try:
        with open(path, "rb") as f:
            data = f.read(0x400)
            if not is_bzimage(data):  # a vmlinux is not read here
                return False
            data += f.read()
    except OSError:
        return False
    version, at, length = bzimage_span(data)
    fmt = detect(data, at)
    if fmt is None or fmt not in PIECEWISE or version < 0x208 or at + length > len(data):
        return False
    if _cached(data):  # its synthetic ELF is there: nothing to decode
        return False
    comp = data[at:at + length]
    forked = _fork_decoder(fmt, comp, path)
    _STARTED[key] = data, (PayloadStream(forked[0], forked[1]) if forked is not None
                           else PayloadStream(pieces(fmt, comp, path)))
    return True


def _fork_decoder(fmt: str, comp: bytes, what: str
                  ) -> tuple[Iterator[bytes], Callable[[], None]] | None:
    """Decode ``comp`` in a child process (a fork: no interpreter to start) that sends the
    pieces through a pipe: a decoder thread in this process would wait for the GIL after every
    piece while the command imports its modules (the xz payloads then took three times as long
    to decode).  Only where fork is safe, in a process with no other thread; None otherwise.
    Returns (the pieces, as :func:`pieces` gives them, read in a thread; what stops the
    child)."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return None
    try:
        rfd, wfd = os.pipe()
    except OSError:
        return None
    try:  # a larger pipe: the child decodes on while this process is busy elsewhere
        import fcntl
        fcntl.fcntl(wfd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)  # (Linux's number)
    except (OSError, ImportError):
        pass
    try:
        pid = os.fork()
    except OSError:
        os.close(rfd)
        os.close(wfd)
        return None
    if pid == 0:  # the child: decode, send, leave without running the parent's exit handlers
        code = 1
        try:
            os.close(rfd)
            try:
                for p in pieces(fmt, comp, what, CHUNK):
                    _send(wfd, b"D", p)
                _send(wfd, b"Z", b"")
            except InputError as e:
                _send(wfd, b"E", str(e).encode("utf-8", "replace"))
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    state = {"stopped": False, "reaped": False}

    def stop() -> None:
        state["stopped"] = True
        if not state["reaped"]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return _received(rfd, pid, fmt, comp, what, state), stop


def _send(fd: int, kind: bytes, body: bytes) -> None:
    """One frame to the parent: kind (D data, E error, Z end), length, body."""
    view = memoryview(kind + struct.pack("<Q", len(body)) + body)
    while view:
        view = view[os.write(fd, view):]


def _read(fd: int, n: int) -> bytes | None:
    """Exactly ``n`` bytes from ``fd``, or None at an early end of file."""
    parts, got = [], 0
    while got < n:
        b = os.read(fd, n - got)
        if not b:
            return None
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _received(fd: int, pid: int, fmt: str, comp: bytes, what: str, state: dict[str, bool]
              ) -> Iterator[bytes]:
    """The pieces the child of :func:`_fork_decoder` sends; should it die without its end
    frame (and not because it was stopped), the rest is decoded here (the pieces already given
    skipped), so nothing is lost."""
    given = 0
    try:
        while True:
            head = _read(fd, 9)
            if head is None:
                break  # the child died (or was stopped): decode the rest here
            kind, n = head[:1], struct.unpack("<Q", head[1:])[0]
            body = _read(fd, n)
            if body is None:
                break
            if kind == b"Z":
                return
            if kind == b"E":
                raise InputError(body.decode("utf-8", "replace"))
            given += len(body)
            yield body
    finally:
        os.close(fd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        state["reaped"] = True
    if state["stopped"]:
        return
    skip = given
    for p in pieces(fmt, comp, what, CHUNK):
        if skip >= len(p):
            skip -= len(p)
            continue
        yield p[skip:]
        skip = 0


def take(path: str, data: bytes) -> PayloadStream | None:
    """The stream :func:`start` began for ``path`` if it decodes these very bytes, else None."""
    key = _key(path)
    got = _STARTED.pop(key, None) if key is not None else None
    if got is None:
        return None
    if got[0] != data:
        got[1].stop()
        return None
    return got[1]


def discard(path: str) -> None:
    """Stop the decoding :func:`start` began for ``path``: its result is not needed."""
    key = _key(path)
    got = _STARTED.pop(key, None) if key is not None else None
    if got is not None:
        got[1].stop()
