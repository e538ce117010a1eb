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

import hashlib
import json
import os
import sqlite3
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .analyze import Analysis
    from .image import Image

SCHEMA = 1
_BLOBS = (("offs", np.uint32), ("lens", np.uint8), ("codes", np.uint16))


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


def image_key(image: "Image") -> str:
    """The cache key of ``image`` with its current configuration facts."""
    from .analyze import ANALYZER_VERSION
    ident = image.build_id
    if not ident:
        st = os.stat(image.path)
        ident = "file:" + hashlib.sha1(f"{os.path.realpath(image.path)}:{st.st_size}:"
                                       f"{st.st_mtime_ns}".encode()).hexdigest()
    facts = ",".join(f"{f.name}={int(f.value)}" for f in sorted(image.config.facts.values(),
                                                                   key=lambda f: f.name))
    fh = hashlib.sha1(facts.encode()).hexdigest()[:16]
    return f"{image.backend.name}:{ident}:{fh}:v{ANALYZER_VERSION}.{SCHEMA}"


def _connect(create: bool) -> sqlite3.Connection | None:
    path = db_path()
    if not create and not os.path.exists(path):
        return None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        con = sqlite3.connect(path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript("""
            CREATE TABLE IF NOT EXISTS image (key TEXT PRIMARY KEY, meta TEXT, created REAL,
                addrs BLOB, sizes BLOB, types BLOB, names TEXT, lo BLOB, counts BLOB,
                offs BLOB, lens BLOB, codes BLOB, facts TEXT);
            CREATE TABLE IF NOT EXISTS func (key TEXT, idx INTEGER, name TEXT, facts TEXT,
                PRIMARY KEY (key, idx));
            CREATE INDEX IF NOT EXISTS func_name ON func (key, name);
        """)
        return con
    except (sqlite3.Error, OSError):
        return None  # an unusable cache is no cache


def store(key: str, a: "Analysis") -> bool:
    """Save analysis ``a`` under ``key``; False when the cache cannot be written."""
    con = _connect(True)
    if con is None:
        return False
    try:
        with con:
            con.execute("DELETE FROM image WHERE key = ?", (key,))
            con.execute("DELETE FROM func WHERE key = ?", (key,))
            con.execute("INSERT INTO image VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                key, json.dumps(a.meta), time.time(), a.syms.addrs.astype(np.uint64).tobytes(),
                a.syms.sizes.astype(np.uint64).tobytes(), a.syms.types.astype(np.uint8).tobytes(),
                "\n".join(a.syms.names), a.lo.astype(np.int64).tobytes(),
                a.counts.astype(np.int64).tobytes(), a.offs.astype(np.uint32).tobytes(),
                a.lens.astype(np.uint8).tobytes(), a.codes.astype(np.uint16).tobytes(),
                json.dumps(a.facts, separators=(",", ":"))))
            con.executemany("INSERT INTO func VALUES (?,?,?,?)", (
                (key, i, f["name"], json.dumps(f, separators=(",", ":")))
                for i, f in enumerate(a.facts)))
        return True
    except sqlite3.Error:
        return False
    finally:
        con.close()


def load(key: str) -> "Analysis | None":
    """The whole analysis stored under ``key``, or None."""
    from .analyze import Analysis, TextSymbols
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
    """Only the symbols called ``name`` (reads one row each and slices of the blobs), or None
    when the image is not cached.  An image that is cached but has no such symbol gives an
    Analysis with no symbols."""
    from .analyze import Analysis, TextSymbols
    con = _connect(False)
    if con is None:
        return None
    try:
        img = con.execute("SELECT rowid, meta FROM image WHERE key = ?", (key,)).fetchone()
        if img is None:
            return None
        rowid, meta = img
        rows = con.execute("SELECT idx, facts FROM func WHERE key = ? AND name = ? ORDER BY idx",
                           (key, name)).fetchall()
        facts = [json.loads(r[1]) for r in rows]
        idxs = [r[0] for r in rows]
        lo_list, cnt_list, parts = [], [], {n: [] for n, _ in _BLOBS}
        addrs, sizes, types = [], [], []
        for i in idxs:
            vals = {}
            for col, dt, width in (("lo", np.int64, 8), ("counts", np.int64, 8),
                                   ("addrs", np.uint64, 8), ("sizes", np.uint64, 8),
                                   ("types", np.uint8, 1)):
                with con.blobopen("image", col, rowid, readonly=True) as b:
                    b.seek(i * width)
                    vals[col] = np.frombuffer(b.read(width), dt)[0]
            lo, cnt = int(vals["lo"]), int(vals["counts"])
            for col, dt in _BLOBS:
                w = np.dtype(dt).itemsize
                with con.blobopen("image", col, rowid, readonly=True) as b:
                    b.seek(lo * w)
                    parts[col].append(np.frombuffer(b.read(cnt * w), dt))
            lo_list.append(sum(cnt_list))
            cnt_list.append(cnt)
            addrs.append(vals["addrs"])
            sizes.append(vals["sizes"])
            types.append(vals["types"])
    except sqlite3.Error:
        return None
    finally:
        con.close()
    syms = TextSymbols(np.array(addrs, np.uint64), np.array(sizes, np.uint64), [name] * len(idxs),
                       np.array(types, np.uint8))
    cat = {c: (np.concatenate(parts[c]) if parts[c] else np.zeros(0, dt)) for c, dt in _BLOBS}
    return Analysis(json.loads(meta), syms, np.array(lo_list, np.int64), np.array(cnt_list, np.int64),
                    cat["offs"], cat["lens"], cat["codes"], facts, from_cache=True)


def clear() -> None:
    """Remove the cache database."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(db_path() + suffix)
        except FileNotFoundError:
            pass
