"""The ``--json`` JSON Lines of a full analysis, written from the column arrays: the per-symbol
outcome counts come from one ``bincount`` over (symbol, outcome) pairs instead of one
``np.unique`` per symbol, and each line is the facts object (one C-encoder call) followed by the
count fields as text.  The bytes are those of ``json.dumps(analysis.function_json(i),
separators=(",", ":"))`` for every symbol ``i`` (tests/test_analyze.py compares them).
"""
from __future__ import annotations

import json
import json.encoder
import os
from itertools import chain, repeat
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .outcome import OPTIMIZED, decode_code

if TYPE_CHECKING:
    from .analysis import Analysis

__all__ = ["compact_encoder", "fast_encoder", "outcome_counts", "json_lines", "write_json_lines"]


def compact_encoder() -> Callable[[object], str]:
    """``json.dumps(o, separators=(",", ":"))`` without building an encoder per call (the C
    encoder when the interpreter has it)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        enc = json.JSONEncoder(separators=(",", ":"))
        return enc.encode
    it = make({}, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ":", ",",
              False, False, True)
    return lambda o: "".join(it(o, 0))


def fast_encoder() -> Callable[[object], str]:
    """:func:`compact_encoder` through orjson where it gives the same text: an object whose
    orjson text is not printable ASCII (``json.dumps`` escapes non-ASCII and DEL, which orjson
    writes as they are) or that
    orjson refuses (integers past 64 bits) goes to the standard encoder."""
    enc = compact_encoder()
    try:
        import orjson
    except ImportError:  # optional speed-up: the standard encoder alone
        return enc
    dumps = orjson.dumps

    def encode(o: object) -> str:
        try:
            b = dumps(o)
        except TypeError:  # orjson.JSONEncodeError is one
            return enc(o)
        return b.decode("ascii") if b.isascii() and b"\x7f" not in b else enc(o)
    return encode


def outcome_counts(counts: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct outcome codes ascending, a symbols x codes matrix of instruction counts)."""
    nsym = len(counts)
    present = np.zeros(1 << 16, bool)
    present[codes] = True
    vals = np.flatnonzero(present)
    col = np.zeros(1 << 16, np.int64)
    col[vals] = np.arange(len(vals))
    k = max(len(vals), 1)
    counts = np.asarray(counts, np.int64)
    mat = np.zeros((nsym, k), np.int64)
    # blocks of symbols of about BLOCK instructions: cache-sized temporaries (one bincount over
    # every instruction at once costs more in page faults than in counting)
    ends = np.cumsum(counts)
    cuts = np.unique(np.searchsorted(ends, np.arange(1, int(ends[-1]) // BLOCK + 1) * BLOCK,
                                     side="right")) if nsym else np.zeros(0, np.int64)
    bounds = [0, *[int(c) for c in cuts if 0 < c < nsym], nsym]
    for a, b in zip(bounds[:-1], bounds[1:]):
        first = int(ends[a - 1]) if a else 0
        last = int(ends[b - 1])
        sym_of = np.repeat(np.arange(b - a, dtype=np.int64), counts[a:b])
        mat[a:b] = np.bincount(sym_of * k + col[codes[first:last]],
                               minlength=(b - a) * k).reshape(b - a, k)
    return vals, mat


BLOCK = 1 << 18  # instructions per block of outcome_counts


def json_lines(a: "Analysis", image_key: bool = False, batch: int = 2048,
               symbols: tuple[int, int] | None = None) -> Iterator[str]:
    """The JSON Lines of ``a`` (of its symbols ``[lo, hi)`` when ``symbols`` is given) in
    batches of ``batch`` lines (one string per batch); with ``image_key`` each object starts
    with ``"image"`` (several images in one run)."""
    enc = compact_encoder()
    fast = fast_encoder()
    s_lo, s_hi = symbols if symbols is not None else (0, len(a))
    n = max(s_hi - s_lo, 0)
    first = int(a.lo[s_lo]) if n else 0
    sym_counts = np.asarray(a.counts[s_lo:s_hi], np.int64)
    vals, mat = outcome_counts(sym_counts, a.codes[first:first + int(sym_counts.sum())])
    outs = [decode_code(int(v)) for v in vals.tolist()]
    ok_col = np.array([o.ok for o in outs], bool)
    label = [enc(o.label) for o in outs]
    is_ok = ok_col.tolist()
    probeable = (mat[:, ok_col].sum(axis=1) if len(vals) else np.zeros(n, np.int64)).tolist()
    opt_cols = (vals & OPTIMIZED) != 0
    optimized = (mat[:, opt_cols].sum(axis=1).tolist() if a.meta.get("optimized")
                 else None)
    rows, cols = np.nonzero(mat)
    cnt = mat[rows, cols]
    insns = sym_counts.tolist()
    facts = a.facts
    prefix = '{"image":' + enc(a.meta["path"]) + "," if image_key else "{"
    ok_labels = [lab for lab, ok in zip(label, is_ok) if ok]
    bad_labels = [lab for lab, ok in zip(label, is_ok) if not ok]
    if len(set(ok_labels)) == len(ok_labels) and len(set(bad_labels)) == len(bad_labels):
        # no two codes of one group share a label: each object is its (code, count) pairs
        # in code order (np.nonzero is row-major), no merging
        on = ok_col[cols]
        methods_txt = _joined_pairs(n, rows[on], cols[on], cnt[on], label)
        refused_txt = _joined_pairs(n, rows[~on], cols[~on], cnt[~on], label)
    else:
        methods_txt, refused_txt = _merged_pairs(n, rows, cols, cnt, label, is_ok)
    head, bodies = _bodies(facts[s_lo:s_hi], fast)
    head = prefix + head
    opts = ["null"] * n if optimized is None else [str(x) for x in optimized]
    tails = [f',"insns":{k},"probeable":{p},"methods":{{{m}}},"refused":{{{r}}},"optimized":{o}}}\n'
             for k, p, m, r, o in zip(insns, probeable, methods_txt, refused_txt, opts)]
    for b0 in range(0, n, batch):  # one copy per batch: the pieces joined flat
        yield "".join(chain.from_iterable(zip(repeat(head), bodies[b0:b0 + batch],
                                              tails[b0:b0 + batch])))


def _bodies(facts: list[dict], fast: Callable[[object], str]) -> tuple[str, list[str]]:
    """Each facts object's JSON text without its braces, as (a text common to all of them,
    what follows it in each).  One orjson call encodes them all when its text is printable
    ASCII (then it is ``json.dumps``'s), split at each object's first key (``},{"name":``
    cannot stand inside a JSON string: its quote would be escaped); else, or when the split
    does not give one piece per object, one object at a time."""
    try:
        import orjson
        blob = orjson.dumps(facts)
    except (ImportError, TypeError):  # orjson.JSONEncodeError is a TypeError
        blob = b""
    key = '"name":'
    if blob.startswith(b'[{"name":') and blob.isascii() and b"\x7f" not in blob:
        parts = blob.decode("ascii").split('},{"name":')
        if len(parts) == len(facts):
            parts[0] = parts[0][len('[{"name":'):]
            parts[-1] = parts[-1][:-2]
            return key, parts
    bodies = [fast(f)[1:-1] for f in facts]
    if all(b.startswith(key) for b in bodies):
        return key, [b[len(key):] for b in bodies]
    return "", bodies


def _joined_pairs(n: int, rows: np.ndarray, cols: np.ndarray, cnt: np.ndarray,
                  label: list[str]) -> list[str]:
    """Per row: its ``"LABEL":COUNT`` pairs (row-major order) joined by commas."""
    keys = [lab + ":" for lab in label]
    txt = list(map(str.__add__, map(keys.__getitem__, cols.tolist()), map(str, cnt.tolist())))
    b = np.searchsorted(rows, np.arange(n + 1)).tolist()
    return [",".join(txt[i:j]) if j - i != 1 else txt[i] for i, j in zip(b[:-1], b[1:])]


def _merged_pairs(n: int, rows: np.ndarray, cols: np.ndarray, cnt: np.ndarray, label: list[str],
                  is_ok: list[bool]) -> tuple[list[str], list[str]]:
    """:func:`_joined_pairs` for the accepted and the refused codes, where codes sharing a
    label add up (the first one's place)."""
    bounds = np.searchsorted(rows, np.arange(n + 1)).tolist()
    cols_l, cnt_l = cols.tolist(), cnt.tolist()
    ms, rs = [], []
    for i in range(n):
        methods: dict[str, int] = {}
        refused: dict[str, int] = {}
        for j in range(bounds[i], bounds[i + 1]):
            c = cols_l[j]
            d = methods if is_ok[c] else refused
            lab = label[c]
            d[lab] = d.get(lab, 0) + cnt_l[j]
        ms.append(",".join(f"{k}:{v}" for k, v in methods.items()))
        rs.append(",".join(f"{k}:{v}" for k, v in refused.items()))
    return ms, rs


def write_json_lines(a: "Analysis", out, image_key: bool = False, jobs: int | None = None,
                     min_parallel: int = 20_000) -> None:
    """Write the JSON Lines of ``a`` to ``out`` (same bytes however they are made): with
    several cores and at least ``min_parallel`` symbols, by several processes
    (:func:`_write_forked`), else by this one."""
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and len(a) >= min_parallel and hasattr(os, "fork"):
        _write_forked(a, out, image_key, jobs)
        return
    for text in json_lines(a, image_key):
        out.write(text)


def _fileno(out) -> int | None:
    """``out``'s file descriptor, or None (a string buffer, a closed stream)."""
    try:
        return int(out.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def _write_forked(a: "Analysis", out, image_key: bool, jobs: int) -> None:
    """:func:`write_json_lines` by ``jobs`` processes: block 0 here, block k by a forked child
    into a temporary file (shared memory where /dev/shm exists), copied after block k - 1 to
    ``out``'s file descriptor by the kernel (``os.sendfile``), or read back and written where
    ``out`` has none (a string buffer).  A child that fails leaves its block to this process."""
    import tempfile
    n = len(a)
    cuts = [n * k // jobs for k in range(jobs + 1)]
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    files = [tempfile.TemporaryFile(dir=shm) for _ in range(jobs - 1)]
    try:
        out.flush()
        kids = []
        for k, f in enumerate(files, start=1):
            pid = os.fork()
            if pid == 0:  # the child: its block into its file, then gone without cleanup
                code = 1
                try:
                    with os.fdopen(os.dup(f.fileno()), "w", encoding="utf-8") as w:
                        for text in json_lines(a, image_key, symbols=(cuts[k], cuts[k + 1])):
                            w.write(text)
                    code = 0
                finally:
                    os._exit(code)
            kids.append(pid)
        for text in json_lines(a, image_key, symbols=(0, cuts[1])):
            out.write(text)
        out.flush()
        fd = _fileno(out)
        for k, (pid, f) in enumerate(zip(kids, files), start=1):
            _, status = os.waitpid(pid, 0)
            size = os.fstat(f.fileno()).st_size
            if status != 0:  # the child failed: its block formatted here
                for text in json_lines(a, image_key, symbols=(cuts[k], cuts[k + 1])):
                    out.write(text)
                out.flush()
                continue
            if fd is None:
                f.seek(0)
                out.write(f.read().decode("utf-8"))
                continue
            done = 0
            while done < size:
                sent = os.sendfile(fd, f.fileno(), done, size - done)
                if sent <= 0:
                    raise OSError(f"writing the JSON Lines: {size - done} bytes not written")
                done += sent
    finally:
        for f in files:
            f.close()
