"""`takes copy`: move a corpus between an index folder and a database, vectors (and token vectors) included.

Nothing is embedded again: the source's vectors go into the target's
embedding cache under the source's model and backend, then the target's
ordinary ``replace_all`` stores the takes, finding every vector in the cache
(an embedder that refuses to run proves it). So the target is written the way
every write is, one transaction or one generation, and a failed copy leaves it
as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.errors import TakesError
from indexer.models import Take


@dataclass(frozen=True)
class CopyReport:
    copied: int
    model: str
    backend: str
    generation: int
    source: str
    target: str

    def __str__(self) -> str:
        return (
            f"copied {self.copied} takes ({self.model}, {self.backend} vectors, none re-embedded) "
            f"from {self.source} to {self.target}: generation {self.generation}"
        )


class _NoEmbedding:
    """The embedder of a copy: every vector comes from the source, so running it is a bug."""

    def __call__(self):
        raise TakesError("takes copy found a take without its vector in the source; nothing was copied")


def read_embedded(index_dir: Path) -> tuple[list[Take], np.ndarray, list[bytes | None], str, str]:
    """(takes, vectors, stored token vectors, model, backend) of an index folder's current generation, in row order."""
    from indexer import ann
    from indexer.index import EmbeddedStore

    store = EmbeddedStore(Path(index_dir))
    try:
        generation = store.load()
        row_ids = sorted(int(row_id) for row_id in ann.stored_ids(generation.faiss_index))
        found = generation.takes(row_ids)
        row_ids = [row_id for row_id in row_ids if row_id in found]
        vectors = generation.vectors(row_ids)
        token_values: dict[int, bytes] = {}
        for start in range(0, len(row_ids), 2000):
            token_values.update(generation.stored_token_values(row_ids[start : start + 2000]))
        return (
            [found[row_id] for row_id in row_ids],
            vectors.astype(np.float32),
            [token_values.get(row_id) for row_id in row_ids],
            generation.info.model,
            generation.info.backend,
        )
    finally:
        store.close()


def read_postgres(store) -> tuple[list[Take], np.ndarray, list[bytes | None], str, str]:
    """(takes, vectors, stored token vectors, model, backend) of a database's current generation, in row order."""
    generation = store.load()
    row_ids = generation.row_ids()
    takes, vectors, token_values = [], [], []
    for start in range(0, len(row_ids), 2000):
        chunk = row_ids[start : start + 2000]
        found, stored, tokens = generation.takes(chunk), generation.vectors(chunk), generation.stored_token_values(chunk)
        for row_id in chunk:
            takes.append(found[row_id])
            vectors.append(stored[row_id])
            token_values.append(tokens.get(row_id))
    matrix = np.stack(vectors) if vectors else np.zeros((0, generation.info.dim), np.float32)
    return takes, matrix.astype(np.float32), token_values, generation.info.model, generation.info.backend


def _fill_embedded_cache(
    index_dir: Path, takes: Sequence[Take], vectors: np.ndarray, token_values: Sequence[bytes | None], model: str, backend: str
) -> None:
    from indexer.index.embedding_cache import EmbeddingCache, cache_model_name
    from indexer.index.layout import CACHE_NAME, text_hash

    Path(index_dir).mkdir(parents=True, exist_ok=True)
    cache = EmbeddingCache(Path(index_dir) / CACHE_NAME)
    try:
        cache.put_many(cache_model_name(model, backend), zip((text_hash(take.text) for take in takes), vectors, token_values))
    finally:
        cache.close()


def _target_holds(target: str | Path) -> int:
    """How many takes ``target`` already holds (0 when it is new or empty)."""
    from indexer.postgres.connection import is_database_url
    from indexer.postgres.store import PostgresStore

    if is_database_url(str(target)):
        store = PostgresStore(str(target))
        try:
            info = store._corpus()
        finally:
            store.close()
        return info.count if info else 0
    from indexer.index import EmbeddedStore

    store = EmbeddedStore(Path(target))
    try:
        manifest = store.committed_info()
    except TakesError:
        return 0
    finally:
        store.close()
    return manifest.count if manifest else 0


def copy_corpus(source: str | Path, target: str | Path, *, replace: bool = False, lock_timeout: float = 30.0) -> CopyReport:
    """Copy the current generation of ``source`` to ``target`` (each a folder or a postgresql:// URL).

    A target that already holds takes is replaced only with ``replace``.
    """
    from indexer.postgres.connection import is_database_url, redact
    from indexer.postgres.store import PostgresStore

    if str(source) == str(target):
        raise TakesError(f"--from and --to are the same ({redact(str(source))}): nothing was copied")
    held = _target_holds(target)
    if held and not replace:
        raise TakesError(
            f"{redact(str(target))} already holds {held} takes: copy with --replace to replace them "
            f"(they serve until the copy commits); nothing was copied"
        )

    if is_database_url(str(source)):
        source_store = PostgresStore(str(source))
        try:
            takes, vectors, token_values, model, backend = read_postgres(source_store)
        finally:
            source_store.close()
        source_name = source_store.location
    else:
        takes, vectors, token_values, model, backend = read_embedded(Path(source))
        source_name = str(source)
    if is_database_url(str(target)):
        target_store = PostgresStore(str(target))
        try:
            with target_store.writer(lock_timeout=lock_timeout) as writer:
                writer.fill_cache(takes, vectors, model=model, backend=backend, token_values=token_values)
                report = writer.replace_all(takes, _NoEmbedding(), model=model, backend=backend)
        finally:
            target_store.close()
        target_name = target_store.location
    else:
        from indexer.index import EmbeddedStore

        with EmbeddedStore(Path(target)).writer(lock_timeout=lock_timeout) as writer:
            _fill_embedded_cache(Path(target), takes, vectors, token_values, model, backend)
            report = writer.replace_all(takes, _NoEmbedding(), model=model, backend=backend)
        target_name = str(target)
    return CopyReport(report.added, model, backend, report.generation, source_name, target_name)
