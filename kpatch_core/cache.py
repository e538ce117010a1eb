"""Results cache: one embedded SQLite database, analyses keyed by image build-id.

The database lives in ``$KPATCH_CACHE`` (a directory) or ``~/.cache/kpatch-core/``;
``KPATCH_CACHE=off`` disables it.  The key is the GNU build-id (or, for images without one, the
file's size, mtime and path), the configuration facts the verdicts depend on, the architecture and
the analyzer version, so ``--config``/``--set`` runs and newer code never read stale results.

Per image, the instruction arrays are stored as blobs and each symbol as a row (name, index,
instruction range, facts as JSON): a one-function query reads one row and a slice of each blob
(``blobopen``), a full report reads everything back in well under a second.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from .analysis import Analysis
    from .image import Image

SCHEMA = 2
_BLOBS = (("offs", np.uint32), ("lens", np.uint8), ("codes", np.uint16))


@functools.cache
def code_fingerprint() -> str:
    """A hash of the analyzer's own source files (kpatch_core and every backend: size, mtime):
    results computed by other code are never read back."""
    import kpatch_arch
    h = hashlib.sha1()
    for root in (os.path.dirname(__file__), os.path.dirname(kpatch_arch.__file__)):
        for d, _, files in sorted(os.walk(root)):
            for f in sorted(files):
                if f.endswith(".py"):
                    st = os.stat(os.path.join(d, f))
                    h.update(f"{os.path.relpath(os.path.join(d, f), root)}:{st.st_size}:"
                             f"{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def enabled() -> bool:
    """False when ``KPATCH_CACHE=off`` (or 0/no)."""
    return os.environ.get("KPATCH_CACHE", "").lower() not in ("off", "0", "no", "none")


def cache_dir() -> str:
    """The cache directory (created on demand)."""
    d = os.environ.get("KPATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                       "kpatch-core")
    return d


def db_path() -> str:
    return os.path.join(cache_dir(), "analysis.sqlite")


def image_key(image: "Image", optimized: bool = False) -> str:
    """The cache key of ``image`` with its current configuration facts (and whether the
    analysis predicts ``[OPTIMIZED]``)."""
    from .analysis import ANALYZER_VERSION
    ident = image.build_id
    if not ident:
        st = os.stat(image.path)
        ident = "file:" + hashlib.sha1(f"{os.path.realpath(image.path)}:{st.st_size}:"
                                       f"{st.st_mtime_ns}".encode()).hexdigest()
    facts = ",".join(f"{f.name}={int(f.value)}" for f in sorted(image.config.facts.values(),
                                                                   key=lambda f: f.name))
    fh = hashlib.sha1(facts.encode()).hexdigest()[:16]
    opt = ":opt" if optimized else ""
    return f"{image.backend.name}:{ident}:{fh}{opt}:v{ANALYZER_VERSION}.{SCHEMA}.{code_fingerprint()}"


def _connect(create: bool) -> sqlite3.Connection | None:
    path = db_path()
    if not create and not os.path.exists(path):
        return None
    try:
        if not create:
            return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        con = sqlite3.connect(path, timeout=30)
        con.execute("PRAGMA synchronous=OFF")  # a cache: a torn write only costs a re-analysis
        con.executescript("""
            CREATE TABLE IF NOT EXISTS image (key TEXT PRIMARY KEY, meta TEXT, created REAL,
                addrs BLOB, sizes BLOB, types BLOB, names TEXT, lo BLOB, counts BLOB,
                offs BLOB, lens BLOB, codes BLOB, facts TEXT);
            CREATE TABLE IF NOT EXISTS func (key TEXT, idx INTEGER, name TEXT, facts TEXT,
                code BLOB, insns BLOB, sym BLOB, PRIMARY KEY (key, idx));
            CREATE TABLE IF NOT EXISTS alias (pathkey TEXT PRIMARY KEY, key TEXT);
            CREATE INDEX IF NOT EXISTS func_name ON func (key, name);
        """)
        return con
    except (sqlite3.Error, OSError):
        return None  # an unusable cache is no cache


def path_key(path: str, config_path: str | None = None, sets: list[str] | tuple = ()) -> str | None:
    """A key for "this file with these options" that needs no ELF parsing (realpath, size,
    mtime, config file, --set values, analyzer version): the warm path of a one-function query."""
    from .analysis import ANALYZER_VERSION
    try:
        st = os.stat(path)
        cst = os.stat(config_path) if config_path else None
    except OSError:
        return None
    parts = [os.path.realpath(path), str(st.st_size), str(st.st_mtime_ns),
             os.path.realpath(config_path) if config_path else "", str(cst.st_mtime_ns) if cst else "",
             ",".join(sorted(sets)), ANALYZER_VERSION, str(SCHEMA), code_fingerprint()]
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def lookup_alias(pathkey: str | None) -> str | None:
    """The image key recorded for ``pathkey``, or None."""
    if not pathkey:
        return None
    con = _connect(False)
    if con is None:
        return None
    try:
        row = con.execute("SELECT key FROM alias WHERE pathkey = ?", (pathkey,)).fetchone()
        return row[0] if row else None
    except sqlite3.Error:
        return None
    finally:
        con.close()


def record_alias(pathkey: str | None, key: str) -> None:
    """Remember that ``pathkey`` (file + options) is the image ``key``."""
    if not pathkey:
        return
    con = _connect(True)
    if con is None:
        return
    try:
        with con:
            con.execute("INSERT OR REPLACE INTO alias VALUES (?, ?)", (pathkey, key))
    except sqlite3.Error:
        pass
    finally:
        con.close()


def store(key: str, a: "Analysis", code: list[bytes] | None = None,
          pathkey: str | None = None) -> bool:
    """Save analysis ``a`` under ``key`` (with each symbol's runtime bytes ``code``, and the
    alias ``pathkey``); False when the cache cannot be written."""
    con = _connect(True)
    if con is None:
        return False
    try:
        with con:
            # this key, and results of older analyzer versions for the same image and facts
            like = key.rsplit(":v", 1)[0].replace("%", "_") + ":v%"
            con.execute("DELETE FROM image WHERE key = ? OR key LIKE ?", (key, like))
            con.execute("DELETE FROM func WHERE key = ? OR key LIKE ?", (key, like))
            rows = [json.dumps(f, separators=(",", ":")) for f in a.facts]
            con.execute("INSERT INTO image VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                key, json.dumps(a.meta), time.time(), a.syms.addrs.astype(np.uint64).tobytes(),
                a.syms.sizes.astype(np.uint64).tobytes(), a.syms.types.astype(np.uint8).tobytes(),
                "\n".join(a.syms.names), a.lo.astype(np.int64).tobytes(),
                a.counts.astype(np.int64).tobytes(), a.offs.astype(np.uint32).tobytes(),
                a.lens.astype(np.uint8).tobytes(), a.codes.astype(np.uint16).tobytes(),
                "[" + ",".join(rows) + "]"))
            offs = a.offs.astype(np.uint32)
            lens = a.lens.astype(np.uint8)
            codes = a.codes.astype(np.uint16)
            lo, cnt = a.lo.tolist(), a.counts.tolist()
            sym = np.zeros(len(a.facts), np.dtype([("addr", "<u8"), ("size", "<u8"), ("type", "u1")]))
            sym["addr"], sym["size"], sym["type"] = a.syms.addrs, a.syms.sizes, a.syms.types

            def insns(i: int) -> bytes:  # offs | lens | codes of one symbol
                s = slice(lo[i], lo[i] + cnt[i])
                return offs[s].tobytes() + lens[s].tobytes() + codes[s].tobytes()

            con.executemany("INSERT INTO func VALUES (?,?,?,?,?,?,?)", (
                (key, i, f["name"], rows[i], code[i] if code else None, insns(i),
                 sym[i:i + 1].tobytes()) for i, f in enumerate(a.facts)))
            if pathkey:
                con.execute("INSERT OR REPLACE INTO alias VALUES (?, ?)", (pathkey, key))
        return True
    except sqlite3.Error:
        return False
    finally:
        con.close()


def load(key: str) -> "Analysis | None":
    """The whole analysis stored under ``key``, or None."""
    from .analysis import Analysis, TextSymbols
    con = _connect(False)
    if con is None:
        return None
    try:
        row = con.execute("SELECT meta, addrs, sizes, types, names, lo, counts, offs, lens, codes,"
                          " facts FROM image WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    if row is None:
        return None
    meta, addrs, sizes, types, names, lo, counts, offs, lens, codes, facts = row
    syms = TextSymbols(np.frombuffer(addrs, np.uint64), np.frombuffer(sizes, np.uint64),
                       names.split("\n") if names else [], np.frombuffer(types, np.uint8))
    return Analysis(json.loads(meta), syms, np.frombuffer(lo, np.int64),
                    np.frombuffer(counts, np.int64), np.frombuffer(offs, np.uint32),
                    np.frombuffer(lens, np.uint8), np.frombuffer(codes, np.uint16),
                    json.loads(facts))


def load_function(key: str, name: str) -> "Analysis | None":
    """Only the symbols called ``name`` (one small row each), or None when the image is not
    cached.  An image that is cached but has no such symbol gives an Analysis with no symbols."""
    from .analysis import Analysis, TextSymbols
    con = _connect(False)
    if con is None:
        return None
    try:
        img = con.execute("SELECT meta FROM image WHERE key = ?", (key,)).fetchone()
        if img is None:
            return None
        rows = con.execute("SELECT idx, facts, code, insns, sym FROM func INDEXED BY func_name "
                           "WHERE key = ? AND name = ?", (key, name)).fetchall()
        rows = [r[1:] for r in sorted(rows)]
    except sqlite3.Error:
        return None
    finally:
        con.close()
    sdt = np.dtype([("addr", "<u8"), ("size", "<u8"), ("type", "u1")])
    facts, runtime, offs, lens, codes, cnts, syms = [], [], [], [], [], [], []
    for f, code, ins, sym in rows:
        facts.append(json.loads(f))
        runtime.append(code)
        n = len(ins) // 7
        offs.append(np.frombuffer(ins, np.uint32, n, 0))
        lens.append(np.frombuffer(ins, np.uint8, n, 4 * n))
        codes.append(np.frombuffer(ins, np.uint16, n, 5 * n))
        cnts.append(n)
        syms.append(np.frombuffer(sym, sdt)[0])
    s = np.array(syms, sdt)
    ts = TextSymbols(s["addr"].copy(), s["size"].copy(), [name] * len(rows), s["type"].copy())
    cnt = np.array(cnts, np.int64)
    lo = np.concatenate(([0], np.cumsum(cnt)[:-1])).astype(np.int64) if len(cnt) else cnt

    def cat(parts: list, dt) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dt)

    return Analysis(json.loads(img[0]), ts, lo, cnt, cat(offs, np.uint32), cat(lens, np.uint8),
                    cat(codes, np.uint16), facts, from_cache=True, runtime=runtime)


def clear() -> None:
    """Remove the cache database."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(db_path() + suffix)
        except FileNotFoundError:
            pass


def cached_analysis(image: "Image", jobs: int | None = None,
                    progress: "Callable[[int, int], None] | None" = None,
                    pathkey: str | None = None, optimized: bool = False,
                    use: bool | None = None) -> "Analysis":
    """The full analysis of ``image``: read back when this image (build-id, configuration facts,
    analyzer) was analysed before, else computed by :func:`kpatch_core.analyze.analyze` and
    stored.  ``use``: False bypasses the cache (default: on unless ``KPATCH_CACHE=off``);
    ``pathkey``: the :func:`path_key` of the command line, recorded so a later one-function
    query finds the result without parsing the ELF."""
    import time

    from .analyze import analyze
    t0 = time.perf_counter()
    use = enabled() if use is None else use
    key = image_key(image, optimized) if use else None
    if key:
        hit = load(key)
        if hit is not None:
            hit.seconds = time.perf_counter() - t0
            hit.from_cache = True
            record_alias(pathkey, key)
            return hit
    a = analyze(image, jobs=jobs, progress=progress, optimized=optimized)
    if key:
        t1 = time.perf_counter()
        syms = a.syms
        st, et = image.tables.stext, image.tables.etext
        whole = image.backend.runtime_bytes(image, st, et + 16)
        code = [whole[int(syms.addrs[i]) - st:int(syms.addrs[i] + syms.sizes[i]) - st + 16]
                for i in range(len(syms))]
        store(key, a, code, pathkey)
        a.meta["timing"]["cache_store"] = round(time.perf_counter() - t1, 3)
    return a
