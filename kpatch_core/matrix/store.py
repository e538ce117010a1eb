"""Columns stored by build-id and probe-list digest, where every worker can read them.

The store is any fsspec URL: a local directory (the default, ``$KPATCH_MATRIX_STORE`` or
``~/.cache/kpatch-core/matrix``), ``file://``, a shared file system path, ``s3://``, ``gs://``
(with the fsspec backend installed).  Layout::

    STORE/columns/<build-id>/<probes digest>-<code fingerprint>.json   one kernel's column
    STORE/names/<KVER-FLAVOUR>                                         a Debian build's build-id

The code fingerprint (:func:`kpatch_core.cache.code_fingerprint`) keeps results of other code
versions from being read back.  Failed columns are never stored.

>>> s = ResultStore("/tmp/matrix-store")            # doctest: +SKIP
>>> s.get(build_id, digest) is None                  # doctest: +SKIP
True
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid

import fsspec

from ..cache import code_fingerprint
from ..errors import UsageError
from .worker import Column


def image_identity(path: str, build_id: str | None) -> str:
    """The store key of an image: its GNU build-id, or for an image without one a hash of its
    real path, size and modification time."""
    if build_id:
        return build_id
    st = os.stat(path)
    raw = f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()
    return "file-" + hashlib.sha1(raw).hexdigest()[:24]


def default_url() -> str:
    """``$KPATCH_MATRIX_STORE`` or ``~/.cache/kpatch-core/matrix``."""
    return os.environ.get("KPATCH_MATRIX_STORE") or os.path.join(
        os.path.expanduser("~"), ".cache", "kpatch-core", "matrix")


class ResultStore:
    """Columns by (build-id, probe digest) under an fsspec URL."""

    def __init__(self, url: str | None = None) -> None:
        self.url = (url or default_url()).rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as e:
            raise UsageError(f"--store {self.url!r}: {e}") from None

    def __reduce__(self) -> tuple:  # ship the URL to workers, not the open file system
        return (ResultStore, (self.url,))

    def _column_path(self, build_id: str, digest: str) -> str:
        return f"{self.root}/columns/{build_id}/{digest}-{code_fingerprint()}.json"

    def _write(self, path: str, text: str) -> None:
        """Write whole or not at all (a temporary name, then a move), so a reader on another
        worker never sees half a file."""
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with self.fs.open(tmp, "w") as f:
            f.write(text)
        self.fs.mv(tmp, path)

    def get(self, build_id: str | None, digest: str) -> Column | None:
        """The stored column of an image identity (:func:`image_identity`), or None."""
        if not build_id:
            return None
        path = self._column_path(build_id, digest)
        try:
            with self.fs.open(path, "r") as f:
                return Column.from_json(json.load(f))
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def put(self, column: Column, digest: str, ident: str | None = None) -> None:
        """Store a computed column under ``ident`` (default its build-id); failed columns and
        columns without an identity are not kept."""
        ident = ident or column.build_id
        if column.failed or not ident:
            return
        self._write(self._column_path(ident, digest), json.dumps(column.to_json()))

    def name_build_id(self, name: str) -> str | None:
        """The build-id recorded for a Debian build name, or None."""
        try:
            with self.fs.open(f"{self.root}/names/{name}", "r") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def record_name(self, name: str, build_id: str) -> None:
        """Remember that the Debian build ``name`` has ``build_id``."""
        self._write(f"{self.root}/names/{name}", build_id + "\n")
