"""Instruction boundaries at C speed: capstone's linear decode, read without a Python object per
instruction, and the walk from a function's first byte the way the kernel's ``can_probe`` walks.
"""
from __future__ import annotations

import ctypes
from typing import Callable

import numpy as np

from .bulk import span_indexes

MIN_WINDOW = 512  # smallest decode window (bytes) after a length fixup


# bytes the quiet decoder is checked on: common x86 code, prefixes, VEX, invalid encodings and
# pseudo-random bytes (any arch decodes something from them)
CALIBRATION = bytes.fromhex(
    "f30f1efa554889e54883ec20488b4508c745fc00000000e8000000000f1f440000c3cc"
    "66900f0b0fb9400066662e0f1f8400000000004c8d1d00000000ff2425000000006548"
    "8b04250000000f05c4e27bf7c0c4e2f9f7c1f3480fb8c0f00fb10a2e3e26643665f2f3"
    "0f01fe0f01ca0f01cb62f17c48100090909090cccccccc48b8efcdab8967452301c3") + \
    np.random.default_rng(15).integers(0, 256, 384, dtype=np.uint8).tobytes()


class LinearDecoder:
    """Instruction sizes of a byte range, decoded linearly by capstone's ``cs_disasm`` (no details,
    no Python object per instruction: the sizes are read from the returned ``cs_insn`` array)."""

    WINDOW = 1 << 16

    def __init__(self, arch: int, mode: int, big_endian: bool = False, quiet: bool = False
                 ) -> None:
        import capstone
        from capstone import _cs, _cs_insn
        self._capstone = capstone
        self._cs_mod = _cs
        self.cs = capstone.Cs(arch, mode | (capstone.CS_MODE_BIG_ENDIAN if big_endian else 0))
        self._insn = ctypes.POINTER(_cs_insn)()
        self._stride = ctypes.sizeof(_cs_insn)
        self._size_off = _cs_insn.size.offset
        self.quiet = quiet and self._silence_printer(arch, mode, big_endian)

    def _silence_printer(self, arch: int, mode: int, big_endian: bool) -> bool:
        """Switch off the text printer of this handle (the sizes need no text; formatting is
        about 45% of capstone's time on x86): capstone 5 keeps it in the handle's
        ``struct cs_struct`` right after ``arch`` and ``mode`` (cs_priv.h); it becomes libc's
        ``abs``, a C function that reads no memory.  Done only when the handle starts with the
        expected arch and mode, and kept only when the sizes of :data:`CALIBRATION` decoded
        from every offset equal a printing handle's; else the handle stays as it was."""
        capstone = self._capstone
        if capstone.cs_version()[0] != 5:
            return False
        try:
            noop = ctypes.cast(ctypes.CDLL(None).abs, ctypes.c_void_p).value
        except (OSError, AttributeError):
            return False
        h = int(self.cs.csh.value)
        cs_mode = mode | (capstone.CS_MODE_BIG_ENDIAN if big_endian else 0)
        if ctypes.c_int.from_address(h).value != arch or \
                ctypes.c_int.from_address(h + 4).value != cs_mode:
            return False
        slot = ctypes.c_void_p.from_address(h + 8)  # Printer_t printer, pointer-aligned
        kept = slot.value
        slot.value = noop
        ref = LinearDecoder(arch, mode, big_endian)
        buf = ctypes.create_string_buffer(CALIBRATION, len(CALIBRATION))
        base = ctypes.addressof(buf)
        for off in range(0, len(CALIBRATION) - 16, 5):
            n = len(CALIBRATION) - off
            if not np.array_equal(self.sizes(base + off, n, off), ref.sizes(base + off, n, off)):
                slot.value = kept
                return False
        return True

    def sizes(self, ptr: int, n: int, addr: int) -> np.ndarray:
        """Sizes of the instructions decoded from ``ptr`` (``n`` bytes, at virtual ``addr``) up to
        the first one capstone cannot decode."""
        cnt = self._cs_mod.cs_disasm(self.cs.csh, ctypes.cast(ptr, ctypes.POINTER(ctypes.c_char)),
                                     n, addr, 0, ctypes.byref(self._insn))
        if cnt <= 0:
            return np.zeros(0, np.int64)
        raw = np.ctypeslib.as_array(ctypes.cast(self._insn, ctypes.POINTER(ctypes.c_uint8)),
                                    shape=(cnt * self._stride,))
        # the size field of each cs_insn, read in place (strided), copied out as int64
        out = np.ndarray((cnt,), np.uint16, raw, self._size_off, (self._stride,)).astype(np.int64)
        self._cs_mod.cs_free(self._insn, cnt)
        return out


class Runs:
    """Long runs of one byte value (alignment padding: 00, int3, nops) in a buffer, with the
    size of the instruction that value repeats as (found by decoding 32 copies once)."""

    MIN = 256

    def __init__(self, code: np.ndarray, dec: "LinearDecoder") -> None:
        st, en = self.find(code, self.MIN)
        period = []
        cache: dict[int, int] = {}
        for s in st.tolist():
            b = int(code[s])
            if b not in cache:
                buf = ctypes.create_string_buffer(bytes([b]) * 32, 32)
                sz = dec.sizes(ctypes.addressof(buf), 32, 0)
                ok = len(sz) and (sz == sz[0]).all() and int(sz[0]) <= 8 and 32 % int(sz[0]) == 0
                cache[b] = int(sz[0]) if ok and int(sz.sum()) == 32 else 0
            period.append(cache[b])
        keep = np.array(period, np.int64) > 0 if period else np.zeros(0, bool)
        self.starts, self.ends = st[keep], en[keep]
        self.period = np.array(period, np.int64)[keep] if period else np.zeros(0, np.int64)

    @staticmethod
    def find(code: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the runs of one byte value at least ``minimum`` long.  A run that
        long covers a whole aligned block of ``minimum // 2`` bytes: uniform blocks are found
        with one pass over the buffer, consecutive uniform blocks of one value are joined, and
        each such group is widened byte-exactly into the blocks beside it (which are not
        uniform of that value, so the run ends inside them)."""
        blk = max(minimum // 2, 1)
        n = len(code)
        if n < minimum:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        m = n // blk
        grid = code[:m * blk].reshape(m, blk)
        uniform = np.flatnonzero((grid == grid[:, :1]).all(axis=1))
        if not len(uniform):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        vals = grid[uniform, 0]
        new = np.ones(len(uniform), bool)
        new[1:] = (uniform[1:] != uniform[:-1] + 1) | (vals[1:] != vals[:-1])
        heads = np.flatnonzero(new)
        tails = np.append(heads[1:], len(uniform)) - 1
        starts: list[int] = []
        ends: list[int] = []
        for b0, b1, v in zip(uniform[heads].tolist(), uniform[tails].tolist(),
                             vals[heads].tolist()):
            s = b0 * blk
            if s > 0:  # the block before is not all v: the run starts inside it
                w = code[s - blk:s]
                d = np.flatnonzero(w != v)
                s = s - blk + int(d[-1]) + 1 if len(d) else s - blk
            e = (b1 + 1) * blk
            if e < n:  # the next block (or the short tail of the buffer)
                w = code[e:e + blk]
                d = np.flatnonzero(w != v)
                e = e + int(d[0]) if len(d) else e + len(w)
            if e - s >= minimum:
                starts.append(s)
                ends.append(e)
        return np.array(starts, np.int64), np.array(ends, np.int64)

    def at(self, rel: int) -> tuple[int, int, int] | None:
        """The run containing ``rel`` or the next one after it: (start, end, instruction size)."""
        i = int(np.searchsorted(self.ends, rel, side="right"))
        if i >= len(self.starts):
            return None
        return int(self.starts[i]), int(self.ends[i]), int(self.period[i])


def apply_fixups(o: np.ndarray, s: np.ndarray, ks: np.ndarray, news: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """A decoded batch (offsets ``o`` ascending, sizes ``s``) with the kernel's lengths ``news``
    at the instructions ``ks`` (ascending) applied without decoding again, where the
    instruction after the fixed-up one is a boundary of the batch's own stream (x86 UD1 with its
    ModRM byte, then capstone's one-byte int3 on that byte: the streams meet at once; a linear
    decode from a common boundary is the same stream).  Returns the batch with the fixups
    applied up to the first one whose stream does not meet the batch's, and that one as
    (index in the returned batch, length), or None."""
    if len(ks):
        fast = _apply_fixups_disjoint(o, s, ks, news)
        if fast is not None:
            return fast
    return _apply_fixups_loop(o, s, ks, news)


def _apply_fixups_loop(o: np.ndarray, s: np.ndarray, ks: np.ndarray, news: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """:func:`apply_fixups` one fixup at a time (fixed-up instructions may nest)."""
    keep = np.ones(len(o), bool)
    s = s.copy()
    ol = o.tolist()
    covered = -1  # bytes before this offset belong to a fixed-up instruction
    cut = None
    for k, new in zip(ks.tolist(), news.tolist()):
        at = ol[k]
        if at < covered:
            continue  # inside a fixed-up instruction: not an instruction of the kernel's walk
        p = at + new
        j = int(np.searchsorted(o, p))
        if j >= len(ol) or ol[j] != p:
            cut = (k, new)
            break
        keep[k + 1:j] = False
        s[k] = new
        covered = p
    if keep.all():
        return o, s, cut
    if cut is not None:
        cut = (int(np.count_nonzero(keep[:cut[0]])), cut[1])
    return o[keep], s[keep], cut


def _apply_fixups_disjoint(o: np.ndarray, s: np.ndarray, ks: np.ndarray, news: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None] | None:
    """:func:`apply_fixups` at once when no fixed-up instruction starts inside another one
    (None otherwise: the caller's loop decides)."""
    at = o[ks]
    ends = at + news
    if len(ks) > 1 and bool((at[1:] < ends[:-1]).any()):
        return None
    j = np.searchsorted(o, ends)
    meet = j < len(o)
    meet[meet] = o[j[meet]] == ends[meet]
    bad = np.flatnonzero(~meet)
    cut = None
    if len(bad):
        q = int(bad[0])
        cut = (int(ks[q]), int(news[q]))
        ks, news, j = ks[:q], news[:q], j[:q]
    s = s.copy()
    s[ks] = news
    drop = j - ks - 1  # instructions inside each fixed-up one
    if not int(drop.sum()):
        return o, s, cut
    keep = np.ones(len(o), bool)
    keep[span_indexes(ks + 1, drop)] = False
    if cut is not None:
        cut = (int(np.count_nonzero(keep[:cut[0]])), cut[1])
    return o[keep], s[keep], cut


def decode_function(dec: LinearDecoder, ptr: int, start: int, size: int, avail: int, addr: int,
                    fallback: Callable[[int], int | None], step: int,
                    fixup: Callable[[np.ndarray, np.ndarray], tuple[int, int] | None] | None = None,
                    runs: "Runs | None" = None,
                    fixups: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
                    | None = None) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Instruction (offsets, sizes) of one function decoded from its first byte, the way the
    kernel walks it (``can_probe``: from the symbol start).

    ``ptr`` points at byte ``start`` of a buffer holding ``avail`` bytes from there; instructions
    starting before ``size`` are kept (the last may run past it).  Where capstone stops,
    ``fallback(offset)`` gives the kernel's length there: 0 ends the walk (the offset is
    returned as the failure point), None (no opinion) moves on by ``step`` bytes.
    ``fixup(offsets, sizes)`` (offsets relative to ``ptr``) names the first instruction whose
    length the kernel's decoder sees differently, and that length; the walk resumes after it.
    ``runs`` (long runs of one byte value: padding) are stepped through without decoding.
    ``fixups(offsets, sizes)``, when given, names all such instructions of a batch at once
    (indexes, lengths): those after which the two streams meet are applied in place
    (:func:`apply_fixups`), the walk cuts the batch at the first other one.
    """
    offs: list[np.ndarray] = []
    lens: list[np.ndarray] = []
    pos = 0
    fail = None
    # decode window: shrinks to twice the distance of a length fixup and grows back, so text
    # where fixups are frequent (6.12 x86: UD1 every few KiB) is not decoded 64 KiB per fixup
    window = LinearDecoder.WINDOW
    while pos < size:
        want = size - pos + 15
        n = min(avail - pos, want, window)
        if n <= 0:
            break
        if runs is not None:
            r = runs.at(start + pos)
            if r is not None:
                r_start, r_end, k = r
                if r_start <= start + pos:  # inside a run: k-byte instructions up to its tail
                    m = min(r_end - 16 - (start + pos), size - pos + k - 1) // k
                    if m > 0:
                        offs.append(pos + k * np.arange(m, dtype=np.int64))
                        lens.append(np.full(m, k, np.int64))
                        pos += m * k
                        continue
                elif r_start - (start + pos) < n:  # decode up to the run, then step through it
                    n = r_start - (start + pos) + 15
                    want = n + 1  # so the batch end counts as a window end
        s = dec.sizes(ptr + pos, n, addr + pos)
        begin = pos
        if len(s):
            o = pos + np.concatenate(([0], np.cumsum(s[:-1])))
            if fixups is not None:
                ks, news = fixups(o, s)
                o, s, fx = apply_fixups(o, s, ks, news) if len(ks) else (o, s, None)
            else:
                fx = fixup(o, s) if fixup is not None else None
            if fx is not None:  # the kernel's length differs: cut the batch there
                k, new = fx
                o, s = o[:k + 1], s[:k + 1].copy()
                s[k] = new
                n = want + LinearDecoder.WINDOW  # never "window ended": resume right after
                window = max(MIN_WINDOW, 2 * int(o[k] - pos))
            else:
                window = min(LinearDecoder.WINDOW, 2 * window)
            stop_at = int(o[-1] + s[-1])
            keep = o < size
            offs.append(o[keep])
            lens.append(s[keep])
            pos = stop_at
            if pos >= size:
                break
            if fx is not None or (n < want and n < avail - begin and stop_at > begin + n - 15):
                continue  # the window ended (or a length was fixed), not the decoding
        # capstone cannot decode at pos
        kl = fallback(pos)
        if kl is not None and kl > 0:
            offs.append(np.array([pos], np.int64))
            lens.append(np.array([kl], np.int64))
            pos += kl
            continue
        if kl is not None:  # the kernel's decoder fails here too: its walk ends
            fail = pos
            break
        offs.append(np.array([pos], np.int64))
        lens.append(np.array([step], np.int64))
        pos += step
    if not offs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), fail
    return np.concatenate(offs), np.concatenate(lens), fail
