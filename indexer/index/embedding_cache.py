"""The embedding cache: vectors by (model, text hash), so unchanged text is never embedded twice."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from indexer.fsutil import checksum_bytes
from indexer.index.layout import connect, unit_rows

logger = logging.getLogger(__name__)


def _cache_checksum(model: str, digest: str, blob: bytes) -> str:
    # Bound to its key too: a vector moved to another text's row fails.
    return checksum_bytes(b"\0".join((model.encode(), digest.encode(), blob)))


class EmbeddingCache:
    """Vectors keyed by (model, text hash), so unchanged text is never embedded twice.

    Each entry carries a checksum, verified before reuse; an entry that fails
    (or a cache file SQLite cannot read) is treated as absent, so the text is
    embedded again and the entry rewritten. The cache never fails a write.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rejected = 0
        self._connection: sqlite3.Connection | None = None
        try:
            connection = connect(self.path)
            connection.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT, text_hash TEXT, vector BLOB, checksum TEXT, "
                "PRIMARY KEY (model, text_hash))"
            )
            columns = {row[1] for row in connection.execute("PRAGMA table_info(vectors)")}
            if "checksum" not in columns:
                connection.execute("ALTER TABLE vectors ADD COLUMN checksum TEXT")
            # The text's token vectors (indexer/token_vectors.py, checksummed
            # on their own); NULL in entries written before they were kept.
            if "token_vectors" not in columns:
                connection.execute("ALTER TABLE vectors ADD COLUMN token_vectors BLOB")
            self._connection = connection
        except sqlite3.Error as error:
            logger.warning("ignoring the embedding cache %s (%s): `takes repair` rebuilds it", self.path, error)

    @staticmethod
    def entry_is_sound(model: str, digest: str, blob, checksum: str | None) -> bool:
        if not isinstance(blob, bytes) or len(blob) % 4 or not blob:
            return False
        if checksum is not None:
            return checksum == _cache_checksum(model, digest, blob)
        # Entries written before checksums: accept only finite unit vectors.
        return bool(unit_rows(np.frombuffer(blob, dtype=np.float32)[None, :])[0])

    def get_many(
        self, model: str, hashes: Sequence[str], dim: int | None = None, tokens: dict[str, bytes] | None = None
    ) -> dict[str, np.ndarray]:
        """Sound vectors by text hash; with ``tokens``, fills it with their stored token vectors (where kept)."""
        found: dict[str, np.ndarray] = {}
        if self._connection is None:
            return found
        try:
            for start in range(0, len(hashes), 500):
                chunk = list(hashes[start : start + 500])
                placeholders = ",".join("?" * len(chunk))
                for text_digest, blob, checksum, token_value in self._connection.execute(
                    f"SELECT text_hash, vector, checksum, token_vectors FROM vectors WHERE model = ? AND text_hash IN ({placeholders})",
                    [model, *chunk],
                ):
                    if not self.entry_is_sound(model, text_digest, blob, checksum) or (dim and len(blob) != 4 * dim):
                        self.rejected += 1
                        continue
                    found[text_digest] = np.frombuffer(blob, dtype=np.float32)
                    if tokens is not None and token_value is not None:
                        tokens[text_digest] = bytes(token_value)
        except sqlite3.Error as error:
            logger.warning("ignoring the embedding cache %s (%s): `takes repair` rebuilds it", self.path, error)
            return {}
        if self.rejected:
            logger.warning("%d damaged entries in %s are embedded again", self.rejected, self.path)
        return found

    def put_many(self, model: str, items: Iterable[tuple]) -> None:
        """Keep (text hash, vector) or (text hash, vector, stored token vectors or None) items."""
        if self._connection is None:
            return
        rows = []
        for digest, vector, *token_value in items:
            blob = np.asarray(vector, np.float32).tobytes()
            rows.append((model, digest, blob, _cache_checksum(model, digest, blob), token_value[0] if token_value else None))
        try:
            with self._connection:
                self._connection.execute("BEGIN")
                # An entry given without token vectors keeps those it had (a write with storing turned off).
                self._connection.executemany(
                    "INSERT INTO vectors (model, text_hash, vector, checksum, token_vectors) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (model, text_hash) DO UPDATE SET vector = excluded.vector, checksum = excluded.checksum, "
                    "token_vectors = coalesce(excluded.token_vectors, vectors.token_vectors)",
                    rows,
                )
        except sqlite3.Error as error:
            # Only a speed-up is lost: the vectors still go into the segment.
            logger.warning("cannot write the embedding cache %s: %s", self.path, error)

    def damaged_entries(self) -> list[tuple[str, str]]:
        """(model, text hash) of every entry that fails its check; reads the whole cache."""
        if self._connection is None:
            raise sqlite3.DatabaseError("unreadable")
        return [
            (model, digest)
            for model, digest, blob, checksum in self._connection.execute("SELECT model, text_hash, vector, checksum FROM vectors")
            if not self.entry_is_sound(model, digest, blob, checksum)
        ]

    def delete(self, keys: Sequence[tuple[str, str]] = (), *, model: str | None = None) -> None:
        """Delete entries by key, or every entry of ``model``."""
        if self._connection is None:
            return
        with self._connection:
            self._connection.execute("BEGIN")
            if model is not None:
                self._connection.execute("DELETE FROM vectors WHERE model = ?", (model,))
            self._connection.executemany("DELETE FROM vectors WHERE model = ? AND text_hash = ?", list(keys))

    def vacuum(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.execute("VACUUM")
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def cache_model_name(model: str, backend: str) -> str:
    """The embedding cache's model key: backends give slightly different vectors."""
    return model if backend == "torch" else f"{model}|{backend}"
