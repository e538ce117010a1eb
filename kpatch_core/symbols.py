"""The ELF symbol table, read fast, and the kallsyms view the kernel builds from it.

pyelftools parses a vmlinux .symtab at ~50 us/symbol (6 s for 130k symbols); numpy reads the same
table in well under 0.1 s, so only the section headers come from pyelftools.

The kallsyms view follows scripts/mksysmap + scripts/kallsyms.c: which symbols are kept, their
sort order (aliases: non-weak first, linker-provided last, fewer leading underscores first, then
``nm -n`` order), and the size the kernel computes (distance to the next higher address).

>>> ks = image.kallsyms                              # doctest: +SKIP
>>> ks.lookup("vfs_read"), ks.containing(addr + 5)   # doctest: +SKIP
"""
from __future__ import annotations

import re
from itertools import compress, repeat
from typing import TYPE_CHECKING, Iterable, Iterator

import attrs
import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .image import Image

STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 1, 2, 3, 4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF, SHN_ABS = 0, 0xFFF1

# Names scripts/mksysmap and scripts/kallsyms.c drop  [scripts/kallsyms.c: is_ignored_symbol]
_IGNORED_PREFIXES = ("$", ".L", "__crc_", "__kstrtab_", "__kstrtabns_", "__efistub_",
                     "__kvm_nvhe_$", "__kvm_nvhe_.L", "__pi_$", "__pi_.L", "__kcfi_typeid_",
                     "__AArch64ADRPThunk_", "__ARMV5PILongThunk_", "__ARMV7PILongThunk_",
                     "__ThumbV7PILongThunk_", "__LA25Thunk_", "__microLA25Thunk_")
_IGNORED_SUFFIXES = ("_from_arm", "_from_thumb", "_veneer")
_IGNORED_INFIXES = (".long_branch.", ".plt_branch.")
_IGNORED_NAMES = frozenset({"L0", "_SDA_BASE_", "_SDA2_BASE_", "kallsyms_addresses",
                            "kallsyms_offsets", "kallsyms_relative_base", "kallsyms_num_syms",
                            "kallsyms_names", "kallsyms_markers", "kallsyms_token_table",
                            "kallsyms_token_index", "kallsyms_seqs_of_names"})
_LINKER_PROVIDED = re.compile(r"^__(start_|stop_|end_).|^__.*(_start|_end)$")


def kallsyms_keeps(name: str) -> bool:
    """True when kallsyms keeps a symbol called ``name``; e.g. ``kallsyms_keeps('$x')`` is False."""
    return bool(name) and not (name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES)
                               or name in _IGNORED_NAMES
                               or ("_branch." in name and any(s in name for s in _IGNORED_INFIXES)))


def _names_and_keep(strs: bytes, offs: np.ndarray
                    ) -> tuple[list[str], np.ndarray, "tuple[np.ndarray, np.ndarray, np.ndarray] | None"]:
    """The names at string-table offsets ``offs``, per name :func:`kallsyms_keeps` -- computed
    on the raw bytes with numpy (no Python call per symbol) -- and, for an ASCII table, each
    name's (first eight bytes, last eight bytes, length): :class:`SymbolTable`'s search keys."""
    buf = np.frombuffer(strs, np.uint8)
    nul = np.flatnonzero(buf == 0)
    if not len(nul) or int(nul[-1]) != len(buf) - 1:
        nul = np.append(nul, len(buf))
    offs = np.minimum(offs, len(buf))
    ends = nul[np.minimum(np.searchsorted(nul, offs), len(nul) - 1)]
    keep, head, tail, lens = _keep_mask_words(buf, offs, ends)
    if strs.isascii():
        text = strs.decode("ascii")
        names = [text[a:b] for a, b in zip(offs.tolist(), ends.tolist())]
        return names, keep, (head, tail, np.maximum(lens, 0))
    names = [strs[a:b].decode("utf-8", "replace") for a, b in zip(offs.tolist(), ends.tolist())]
    return names, keep, None


def _keep_mask(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """:func:`kallsyms_keeps` for the names ``buf[starts[i]:ends[i]]`` (numpy, all at once):
    each name's first and last eight bytes as one integer, compared with each listed prefix,
    suffix and name under a mask; the rare longer words are then compared in full."""
    return _keep_mask_words(buf, starts, ends)[0]


def _keep_mask_words(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_keep_mask`, with each name's first and last eight bytes (as little-endian
    integers; bytes past the name's ends included) and its length."""
    n = len(starts)
    if not n:
        z = np.zeros(0, np.uint64)
        return np.zeros(0, bool), z, z, np.zeros(0, np.int64)
    pad = np.concatenate([np.zeros(8, np.uint8), buf, np.zeros(32, np.uint8)])
    lens = ends - starts
    # the little-endian word at every byte offset of pad (an unaligned view, no copy): each
    # name's first and last eight bytes are then one gather each
    words = np.ndarray((len(pad) - 7,), dtype="<u8", buffer=pad, strides=(1,))
    head = words[starts + 8]
    tail = words[ends]
    drop = lens == 0

    def full(pos: np.ndarray, word: bytes, where: np.ndarray) -> np.ndarray:
        """buf[pos:pos+len(word)] == word, compared only where ``where`` holds."""
        out = np.zeros(n, bool)
        idx = np.flatnonzero(where)
        if len(idx):
            w = np.frombuffer(word, np.uint8)
            out[idx] = (pad[(pos[idx] + 8)[:, None] + np.arange(len(w))] == w).all(axis=1)
        return out

    def prefix(word: bytes) -> np.ndarray:
        k = min(len(word), 8)
        mask = np.uint64((1 << (8 * k)) - 1)
        hit = (head & mask) == np.uint64(int.from_bytes(word[:k], "little"))
        return full(starts, word, hit) if len(word) > 8 else hit

    for p in _IGNORED_PREFIXES:
        drop |= prefix(p.encode())
    for name in _IGNORED_NAMES:
        drop |= (lens == len(name)) & prefix(name.encode())
    for sfx in _IGNORED_SUFFIXES:
        b = sfx.encode()
        k = min(len(b), 8)
        mask = np.uint64(((1 << (8 * k)) - 1) << (8 * (8 - k)))
        hit = (lens >= len(b)) & ((tail & mask) == np.uint64(int.from_bytes(b[-k:].rjust(8, b"\0"),
                                                                           "little")))
        drop |= full(ends - len(b), b, hit) if len(b) > 8 else hit
    raw = buf.tobytes()
    for inf in _IGNORED_INFIXES:
        occ = [m.start() for m in re.finditer(re.escape(inf.encode()), raw)]
        if occ:
            o = np.array(occ, np.int64)
            drop |= np.searchsorted(o, ends - len(inf), side="right") > np.searchsorted(o, starts)
    return ~drop, head, tail, lens


def kallsyms_keep_mask(names: list[str]) -> np.ndarray:
    """:func:`kallsyms_keeps` of every name in ``names``, vectorised."""
    raw = "\0".join(names).encode("utf-8", "surrogateescape") + b"\0"
    lens = np.fromiter(map(len, (n.encode("utf-8", "surrogateescape") for n in names)), np.int64,
                       count=len(names)) if not raw.isascii() else \
        np.fromiter(map(len, names), np.int64, count=len(names))
    starts = np.concatenate(([0], np.cumsum(lens + 1)[:-1])).astype(np.int64) if len(names) \
        else np.zeros(0, np.int64)
    return _keep_mask(np.frombuffer(raw, np.uint8), starts, starts + lens)


def base_name(name: str) -> str:
    """The name before the first '.' (``foo.isra.0`` -> ``foo``)  [within_kprobe_blacklist]."""
    return name.split(".", 1)[0]


class SymbolTable:
    """The raw ELF .symtab as numpy columns plus decoded names."""

    def __init__(self, values: np.ndarray, sizes: np.ndarray, info: np.ndarray,
                 other: np.ndarray, shndx: np.ndarray, names: list[str]) -> None:
        self.values, self.sizes, self.info, self.other, self.shndx = values, sizes, info, other, shndx
        self.names = names
        self._first: dict[str, int] | None = None
        self._kept: np.ndarray | None = None
        # before the whole-table dict: (first, last eight bytes, length) of each name, and the
        # answers found with them (SymbolTable.value)
        self._keys: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._found: dict[str, int | None] = {}

    @classmethod
    def read(cls, image: "Image") -> "SymbolTable":
        """Read ``image``'s .symtab; a stripped image raises :class:`InputError`."""
        sym = next((s for s in image.sections if s.type == 2), None)  # SHT_SYMTAB
        strtab = image.section(".strtab")
        if sym is None or strtab is None or sym.size == 0:
            raise InputError(f"{image.path}: stripped image (no .symtab); use the unstripped "
                             "debug vmlinux (Debian: linux-image-<version>-dbg)")
        e = image.endian
        dt = np.dtype([("name", e + "u4"), ("info", "u1"), ("other", "u1"), ("shndx", e + "u2"),
                       ("value", e + "u8"), ("size", e + "u8")])
        raw = image.data[sym.offset:sym.offset + sym.size]
        arr = np.frombuffer(raw[: len(raw) - len(raw) % 24], dtype=dt)
        strs = image.data[strtab.offset:strtab.offset + strtab.size]
        offs = arr["name"].astype(np.int64)
        names, keep, keys = _names_and_keep(strs, offs)
        values = arr["value"].astype(np.uint64)
        if image.load_offset:  # section-relative symbols move with the image (ABS ones do not)
            values[(arr["shndx"] != SHN_UNDEF) & (arr["shndx"] != SHN_ABS)] += \
                np.uint64(image.load_offset)
        out = cls(values, arr["size"].astype(np.uint64),
                  arr["info"].copy(), arr["other"].copy(), arr["shndx"].copy(), names)
        out._kept = keep
        out._keys = keys
        return out

    def kallsyms_kept(self) -> np.ndarray:
        """Per symbol: :func:`kallsyms_keeps` of its name (one vectorised pass, cached)."""
        if self._kept is None:
            self._kept = kallsyms_keep_mask(self.names)
        return self._kept

    SEARCHES = 64  # names found by their keys before the whole-table dict is built

    def value(self, name: str) -> int | None:
        """The value of the first defined symbol called ``name`` (linker symbols included)."""
        j = self.index(name)
        return None if j is None else int(self.values[j])

    def index(self, name: str) -> int | None:
        """Index of the first defined symbol called ``name``: found by the names' first bytes
        and lengths for the first :data:`SEARCHES` names asked (what opening an image and the
        full analysis ask: 0.05 s less than the dict of 250,000 names), then by that dict."""
        if self._first is None and self._keys is not None:
            if name in self._found:
                return self._found[name]
            if len(self._found) < self.SEARCHES:
                self._found[name] = j = self._search(name)
                return j
        return self._dict().get(name)

    def _search(self, name: str) -> int | None:
        """The first defined symbol called ``name``, among those of its length and first bytes."""
        if not name.isascii():  # an ASCII table has no such name
            return None
        assert self._keys is not None
        head, _, lens = self._keys
        b = name.encode("ascii")
        k = min(len(b), 8)
        same = np.flatnonzero(lens == len(b))
        if k:
            mask = np.uint64((1 << (8 * k)) - 1)
            same = same[(head[same] & mask) == np.uint64(int.from_bytes(b[:k], "little"))]
        for i in same.tolist():
            if self.names[i] == name and self.shndx[i] != SHN_UNDEF:
                return i
        return None

    def ending_with(self, suffix: str) -> list[int]:
        """Indexes of the symbols whose name ends with ``suffix`` (at most eight characters),
        in table order: one comparison of the names' last bytes when the table is ASCII."""
        if self._keys is None or len(suffix) > 8 or not suffix.isascii():
            return list(compress(range(len(self.names)),
                                 map(str.endswith, self.names, repeat(suffix))))
        _, tail, lens = self._keys
        k = len(suffix)
        mask = np.uint64(((1 << (8 * k)) - 1) << (8 * (8 - k)))
        want = np.uint64(int.from_bytes(suffix.encode("ascii").rjust(8, b"\0"), "little"))
        return np.flatnonzero((lens >= k) & ((tail & mask) == want)).tolist()

    def _dict(self) -> dict[str, int]:
        """Name -> index of the first defined symbol of that name, every name (built once)."""
        if self._first is None:
            names = self.names
            n = len(names)
            # reversed: the first symbol of a name is the one that stays in the dict
            first = dict(zip(reversed(names), range(n - 1, -1, -1)))
            for u in np.flatnonzero(self.shndx == SHN_UNDEF).tolist():  # few (index 0)
                if first.get(names[u]) == u:  # an undefined one came first: the next defined
                    i = u
                    while True:
                        try:
                            i = names.index(names[u], i + 1)
                        except ValueError:
                            del first[names[u]]
                            break
                        if self.shndx[i] != SHN_UNDEF:
                            first[names[u]] = i
                            break
            self._first = first
        return self._first


def _is_linker_provided(name: str) -> bool:
    """scripts/kallsyms.c ``may_be_linker_script_provide_symbol``."""
    return len(name) > 8 and bool(_LINKER_PROVIDED.match(name))


@attrs.frozen
class KSym:
    """One kallsyms entry: name, start, and the kernel's size (to the next higher symbol)."""

    name: str
    addr: int
    size: int

    @property
    def end(self) -> int:
        return self.addr + self.size


class Kallsyms:
    """The kallsyms table: sorted like the kernel's, with sizes and first aliases.

    ``containing(addr)`` answers what ``kallsyms_lookup_size_offset`` answers: the first alias
    of the highest symbol at or below ``addr`` and its size.
    """

    def __init__(self, addrs: np.ndarray, names: list[str], sym_index: np.ndarray,
                 symtab: SymbolTable) -> None:
        self.addrs = addrs  # sorted, one per kept symbol (aliases repeat the address)
        self.names = names
        self.sym_index = sym_index  # index into the SymbolTable
        self.symtab = symtab
        # One row per distinct address: first alias and its size.
        first = np.ones(len(addrs), dtype=bool)
        first[1:] = addrs[1:] != addrs[:-1]
        self.uaddrs = addrs[first]
        self.ufirst = np.nonzero(first)[0]
        usizes = np.zeros(len(self.uaddrs), dtype=np.uint64)
        usizes[:-1] = self.uaddrs[1:] - self.uaddrs[:-1]
        self.usizes = usizes
        self._by_name: dict[str, list[int]] | None = None
        self._first_last: tuple[dict[str, int], dict[str, int]] | None = None
        self._first_of: dict[str, int] = {}  # first index of names asked for before (-1: none)

    @classmethod
    def build(cls, st: SymbolTable, text_ranges: tuple[tuple[int, int], ...] | None = None,
              ignored: tuple[str, ...] = ()) -> "Kallsyms":
        """Apply the kernel's filter and sort to a raw symbol table.

        ``ignored``: further name prefixes this kernel's scripts/kallsyms.c drops (features
        such as KALLSYMS_IGNORES_KVM_NVHE).

        ``text_ranges`` (inclusive ``[start, end]`` pairs, e.g. ``_stext.._etext``) is given
        without CONFIG_KALLSYMS_ALL: scripts/kallsyms.c symbol_valid then keeps only symbols
        inside them, and drops those at an end address other than the end symbol itself.
        """
        typ = st.info & 0xF
        bind = st.info >> 4
        keep = (st.shndx != SHN_UNDEF) & (typ != STT_SECTION) & (typ != STT_FILE)
        keep &= ~((st.shndx == SHN_ABS) & (bind == STB_LOCAL))  # nm 'a': dropped by mksysmap
        if text_ranges is not None:
            inside = np.zeros(len(keep), dtype=bool)
            for lo, hi in text_ranges:
                inside |= (st.values >= np.uint64(lo)) & (st.values <= np.uint64(hi))
            keep &= inside
        all_names = st.names
        keep &= st.kallsyms_kept()
        idx_arr = np.flatnonzero(keep)
        idx = idx_arr.tolist()
        if ignored:
            idx = [i for i in idx if not all_names[i].startswith(ignored)]
        if text_ranges is not None:  # symbol_valid's corner case at _etext / _einittext
            ends = {hi for _, hi in text_ranges}
            idx = [i for i in idx if int(st.values[i]) not in ends
                   or all_names[i] in ("_etext", "_einittext")]
        if len(idx) != len(idx_arr):
            idx_arr = np.array(idx, dtype=np.int64)
        names = [all_names[i] for i in idx]
        addrs = st.values[idx_arr]
        order = np.argsort(addrs, kind="stable")
        addrs_sorted = addrs[order]
        # aliases (equal addresses): scripts/kallsyms.c compare_symbols -- non-weak first, then not
        # linker-provided, then fewer leading '_', then nm -n order (by name)
        same = np.nonzero(addrs_sorted[1:] == addrs_sorted[:-1])[0]
        if len(same):  # every alias group sorted at once: one lexsort of the members' keys
            member = np.zeros(len(order), bool)
            member[same] = True
            member[same + 1] = True
            pos = np.flatnonzero(member)  # sorted positions of the aliases, group by group
            group = np.cumsum(np.concatenate(([0], addrs_sorted[pos[1:]] != addrs_sorted[pos[:-1]])))
            sym = order[pos]
            mnames = [names[i] for i in sym.tolist()]
            keys = (np.array([n.encode() for n in mnames], dtype=bytes),  # nm -n: by name
                    np.array([len(n) - len(n.lstrip("_")) for n in mnames], np.int64),
                    np.array([_is_linker_provided(n) for n in mnames], bool),
                    bind[idx_arr[sym]] == STB_WEAK, group)
            order[pos] = sym[np.lexsort(keys)]  # (stable: equal keys keep their order)
        return cls(addrs[order], [names[i] for i in order.tolist()], idx_arr[order], st)

    def __len__(self) -> int:
        return len(self.names)

    def _name_index(self) -> dict[str, list[int]]:
        """Every index of every name (built on first use: the full analysis asks for it)."""
        if self._by_name is None:
            d: dict[str, list[int]] = {}
            for i, n in enumerate(self.names):
                d.setdefault(n, []).append(i)
            self._by_name = d
        return self._by_name

    def _ends(self) -> tuple[dict[str, int], dict[str, int]]:
        """(first index, last index) of each name: two C-speed dict builds, enough for
        ``lookup`` and for ``count`` of a unique name (most names) without a per-name list."""
        if self._first_last is None:
            names = self.names
            n = len(names)
            self._first_last = (dict(zip(reversed(names), range(n - 1, -1, -1))),
                                dict(zip(names, range(n))))
        return self._first_last

    def _indexes(self, name: str) -> list[int]:
        first, last = self._ends()
        i = first.get(name)
        if i is None:
            return []
        if last[name] == i:
            return [i]
        return self._name_index()[name]

    def prefetch(self, names: Iterable[str]) -> None:
        """Find the first index of each of ``names`` in one C-speed pass over the table, so that
        :meth:`lookup` answers them without the whole-table name dicts (:meth:`_ends`: 0.05-0.1 s
        on a 6.12+ x86_64 kernel), e.g. before the full analysis forks its workers."""
        if self._first_last is not None:
            return
        want = set(names).difference(self._first_of)
        if not want:
            return
        first = self._first_of
        for i in compress(range(len(self.names)), map(want.__contains__, self.names)):
            first.setdefault(self.names[i], i)
        for n in want.difference(first):
            first[n] = -1

    def lookup(self, name: str) -> int | None:
        """``kallsyms_lookup_name``: the address of the first symbol called ``name``."""
        if self._first_last is None:
            j = self._first_of.get(name)
            if j is not None:
                return None if j < 0 else int(self.addrs[j])
        i = self._ends()[0].get(name)
        return None if i is None else int(self.addrs[i])

    def count(self, name: str) -> int:
        """How many kallsyms symbols are called ``name`` (``number_of_same_symbols``)."""
        return len(self._indexes(name))

    def addresses_of(self, name: str) -> list[int]:
        """Every address of a symbol called ``name``, in kallsyms order."""
        return [int(self.addrs[i]) for i in self._indexes(name)]

    def containing(self, addr: int) -> KSym | None:
        """The kallsyms symbol whose range holds ``addr`` (first alias), or None below all."""
        j = int(np.searchsorted(self.uaddrs, np.uint64(addr), side="right")) - 1
        if j < 0:
            return None
        size = int(self.usizes[j])
        start = int(self.uaddrs[j])
        if size == 0 and addr != start:
            return None
        return KSym(self.names[int(self.ufirst[j])], start, size)

    def containing_starts(self, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`containing` for many addresses: per address the symbol start, and whether the
        lookup is ordinary (a symbol at or below the address whose range holds it, or a
        zero-size symbol exactly at it); where not, the start is meaningless."""
        addrs = np.asarray(addrs, np.uint64)
        if not len(self.uaddrs):
            return np.zeros(len(addrs), np.uint64), np.zeros(len(addrs), bool)
        j = np.searchsorted(self.uaddrs, addrs, side="right").astype(np.int64) - 1
        jj = np.maximum(j, 0)
        start = self.uaddrs[jj]
        return start, (j >= 0) & ((self.usizes[jj] != 0) | (start == addrs))

    def aliases_at(self, addr: int) -> list[str]:
        """Every kallsyms name at exactly ``addr``, first alias first."""
        lo = int(np.searchsorted(self.addrs, np.uint64(addr), side="left"))
        hi = int(np.searchsorted(self.addrs, np.uint64(addr), side="right"))
        return self.names[lo:hi]

    def symtab_type(self, i: int) -> int:
        """ELF symbol type (STT_*) of kallsyms entry ``i``."""
        return int(self.symtab.info[self.sym_index[i]] & 0xF)

    def in_range(self, start: int, end: int) -> Iterator[KSym]:
        """First-alias symbols whose start lies in ``[start, end)``, in address order."""
        lo = int(np.searchsorted(self.uaddrs, np.uint64(start), side="left"))
        hi = int(np.searchsorted(self.uaddrs, np.uint64(end), side="left"))
        for j in range(lo, hi):
            yield KSym(self.names[int(self.ufirst[j])], int(self.uaddrs[j]), int(self.usizes[j]))
