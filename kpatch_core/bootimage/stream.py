"""Unpack a bzImage while its payload decodes: the synthetic ELF is written and the kallsyms
tables are read from the part already decoded.

The decoders release the GIL, so the payload decodes in a thread of its own
(:class:`kpatch_core.boot_decode.PayloadStream`, in pieces: :func:`.decompress.decompress_chunks`;
the CLI starts it before the engine's modules are imported) while the caller
writes each piece into the synthetic ELF (:class:`.synth_elf.ElfFile`) and, as soon as the
kallsyms tables are in the decoded part (in ``.rodata``: a third of the way into an x86
vmlinux), recovers the symbols from that part (:class:`EarlyKallsyms`). The x86 payload is a
stripped vmlinux whose section headers come last, so that part's addresses come from its program
headers (which come first); :meth:`EarlyKallsyms.agrees` checks them against the sections once
the whole payload is there, and the caller reads the whole payload instead when they differ.

>>> kind, payload, elf, table = unpack_bzimage(path, data, out, want_kallsyms=True)  # doctest: +SKIP
"""
from __future__ import annotations

import struct
from typing import Callable

from ..boot_decode import PayloadStream, take
from ..errors import InputError
from .bzimage import bzimage_compressed
from .decompress import decompress_chunks
from .kallsyms import _DIGITS, KallsymsTable, _token_table, find_kallsyms
from .layout import Payload
from .symbol_types import NameShapes
from .synth_elf import ElfFile

PT_LOAD = 1
# decoded bytes past the token table before a first try: the token table and index, and
# kallsyms_offsets (6.2+: after the index; 4 bytes a symbol) of up to 500,000 symbols
EARLY_MARGIN = 2 << 20
_TOKEN_SPAN = 64 << 10  # kallsyms_token_table + kallsyms_token_index: a few KiB, bounded generously


class EarlyKallsyms:
    """:func:`.kallsyms.find_kallsyms` on the decoded beginning of an ELF payload.

    The token table is looked for (as :func:`.kallsyms.find_kallsyms` does: the first
    ``"0\\0".."9\\0"`` run that reads as one) whenever a new such run is decoded with
    ``_TOKEN_SPAN`` bytes after it; once found, the recovery is tried with ``EARLY_MARGIN``
    bytes decoded past it, and its result is kept when every byte it reads lies in the decoded
    part (the token table, its index and ``kallsyms_offsets`` after them as the symbol count
    sizes it; everything else lies before the token table), else tried again with that much
    (after a failure: with ``EARLY_MARGIN`` more, three tries in all).
    The addresses of payload offsets (the newest layout's place-relative offsets need them) come
    from the program headers; every one asked is kept for :meth:`agrees`."""

    def __init__(self) -> None:
        self.table: KallsymsTable | None = None
        self.found_at = -1  # bytes decoded when the table was read
        self.asked: dict[int, int | None] = {}
        self._scanned = 0  # where the search for the next digit run starts
        self._table_at = 0  # where the token table starts, once found
        self._need = -1  # decoded bytes needed for the next try (-1: token table not found)
        self._given_up = False
        self._tries = 0  # failed tries
        self.shapes: NameShapes | None = None  # of table.names, made while the rest decodes

    def feed(self, data: Payload) -> None:
        """Look at the bytes decoded so far (``data``, which grows between calls; no view of
        it is kept)."""
        if self.table is not None or self._given_up:
            return
        size = len(data)
        if self._need < 0:
            if data[:4] != b"\x7fELF" or data[5] not in (1, 2):
                self._given_up = True
                return
            # each "0".."9" run in order, once _TOKEN_SPAN bytes are decoded on both sides of
            # it (the table starts before its "0" token by the tokens 0..47 and its index
            # follows it: both far less than _TOKEN_SPAN): the first that reads as a token
            # table is the one the whole payload gives
            while True:
                at = data.find(_DIGITS, self._scanned)
                if at < 0:
                    self._scanned = max(self._scanned, size - len(_DIGITS) + 1)
                    return
                if at + _TOKEN_SPAN > size:
                    self._scanned = at
                    return  # look at it with more decoded
                self._scanned = at + 1
                lo = max(0, at - _TOKEN_SPAN)
                try:
                    self._table_at = lo + _token_table(data[lo:at + _TOKEN_SPAN],
                                                       "<" if data[5] == 1 else ">")[0]
                except (InputError, ValueError, IndexError):
                    continue  # not a token table: the next run
                self._need = self._table_at + EARLY_MARGIN
                break
        if size < self._need:
            return
        e = "<" if data[5] == 1 else ">"
        self.asked = {}
        try:
            t = find_kallsyms(data, e, vaddr_of=self._vaddr_of(data, e), start=self._table_at)
        except (InputError, IndexError, ValueError, struct.error):
            # the tables may reach past the decoded part: try again with more, twice at most,
            # then read them from the whole payload
            self._tries += 1
            self._given_up = self._tries >= 3
            self._need = len(data) + EARLY_MARGIN
            return
        need = t.offset + _TOKEN_SPAN + 4 * len(t.names) + 16
        if need <= len(data):
            self.table, self.found_at = t, len(data)
        else:
            self._need = need

    def _vaddr_of(self, data: Payload, e: str) -> Callable[[int], int | None]:
        """Payload offset -> address by the PT_LOAD program headers (none with address 0, the
        x86 percpu segment, as the section map skips address-0 sections); answers recorded."""
        phoff, = struct.unpack_from(e + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 54)
        segs = []
        for i in range(phnum):
            p_type, _fl, off, vaddr, _pa, filesz = struct.unpack_from(e + "IIQQQQ", data,
                                                                     phoff + i * phentsize)
            if p_type == PT_LOAD and vaddr and filesz:
                segs.append((off, off + filesz, vaddr))

        def at(o: int) -> int | None:
            v = next((a + o - lo for lo, hi, a in segs if lo <= o < hi), None)
            self.asked[o] = v
            return v
        return at

    def agrees(self, vaddr_of: "Callable[[int], int | None] | None") -> bool:
        """Did every address asked equal the one the whole payload's sections give
        (``vaddr_of``, None when they do not parse)? Then :attr:`table` is what the whole payload
        gives too."""
        if vaddr_of is None:
            return not self.asked
        return all(vaddr_of(o) == v for o, v in self.asked.items())


def unpack_bzimage(path: str, data: bytes, out: str, want_kallsyms: bool
                   ) -> tuple[str, Payload, ElfFile, KallsymsTable | None, EarlyKallsyms]:
    """Decode the payload of bzImage ``data`` in a thread while writing it into the synthetic
    ELF ``out`` (unfinished: the caller adds the symbols, :meth:`.synth_elf.ElfFile.finish`,
    or aborts) and, with ``want_kallsyms``, recovering kallsyms from the decoded part:
    (kind, payload, ELF file, kallsyms table or None, the recovery to check with
    :meth:`EarlyKallsyms.agrees`)."""
    fmt, comp = bzimage_compressed(data, path)
    stream = take(path, data) or PayloadStream(decompress_chunks(comp, path))
    elf = ElfFile(out)
    early = EarlyKallsyms()
    # the payload grows in one buffer (a large bytearray grows by remapping, not copying), read
    # in place by the early kallsyms; each piece is dropped from the stream once taken
    grown = bytearray()
    whole: bytes | None = None
    try:
        written = 0
        while not stream.wait(written):
            if not written and stream.complete:  # all decoded before the first look: one join
                for p in stream.pieces:
                    elf.write_payload(p)
                whole = b"".join(stream.pieces)
                stream.pieces.clear()
                break
            for i in range(written, len(stream.pieces)):
                p = stream.pieces[i]
                stream.pieces[i] = b""  # (the decoding thread only appends)
                elf.write_payload(p)
                grown += p
                written += 1
            if want_kallsyms:
                early.feed(grown)
                if early.table is not None and early.shapes is None and not stream.complete:
                    early.shapes = NameShapes(early.table.names)  # (symbol types need them later)
        if whole is None:
            payload: Payload = grown  # (no copy: the readers after this take a bytearray too)
        else:
            payload = whole
            if want_kallsyms:
                early.feed(payload)
    except BaseException:
        elf.abort()
        raise
    return f"bzImage ({fmt})", payload, elf, early.table, early
