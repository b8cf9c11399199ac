"""`takes check` and `takes repair`: verify every file of an index, rebuild what is damaged from what is intact."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from indexer import ann, token_vectors
from indexer.errors import IndexCorrupt, IndexNotFound
from indexer.fsutil import forget_digests
from indexer.index.embedding_cache import EmbeddingCache, cache_model_name
from indexer.index.layout import (
    CACHE_NAME,
    DATABASE_NAME,
    LIVE,
    MANIFEST_NAME,
    SEGMENT_FILE,
    SEGMENTS_DIR,
    TOKEN_COLUMN,
    TRAINED_INDEX_NAME,
    connect,
    has_token_column,
    database_path,
    iter_live_rows,
)
from indexer.index.manifest import Manifest, check_mirror, read_manifest, read_mirror_text
from indexer.index.segments import SegmentVectors, read_segment, verify_trained_index
from indexer.index.writer import EmbedderFactory, IndexWriter


@dataclass(frozen=True)
class Problem:
    """One thing `takes check` found wrong: the file, what is wrong, and what repairs it."""

    path: str
    message: str
    # What `takes repair` does about it: text, fts, segments, tokens, cache, trained, model, mirror, database.
    kind: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class _Findings:
    """What a check found so far: problems (with what repairs them) and notes."""

    def __init__(self):
        self.problems: list[Problem] = []
        self.notes: list[str] = []

    def problem(self, path, message: str, kind: str) -> None:
        self.problems.append(Problem(str(path), message, kind))


def check_index(index_dir: Path) -> tuple[list[Problem], list[str]]:
    """Verify every file of an index; (problems, notes). Reads every byte, so it is not cheap."""
    index_dir = Path(index_dir)
    if not database_path(index_dir).exists():
        raise IndexNotFound(index_dir)
    forget_digests()
    findings = _Findings()
    manifest = _check_database(index_dir, findings)
    if manifest is None:
        return findings.problems, findings.notes
    _check_trained_index(index_dir, findings)
    _check_cache(index_dir / CACHE_NAME, findings)
    for path, issue in model_copy_problems(index_dir, manifest):
        findings.problem(path, f"{issue}: `takes repair` restores the model copy", "model")
    named = {segment.file for segment in manifest.segments}
    orphans = [path for path in (index_dir / SEGMENTS_DIR).glob("*") if SEGMENT_FILE.match(path.name) and f"{SEGMENTS_DIR}/{path.name}" not in named]
    if orphans:
        findings.notes.append(f"{len(orphans)} segment files no generation names: the next write (or `takes compact`) deletes them")
    return findings.problems, findings.notes


def _check_database(index_dir: Path, findings: _Findings) -> Manifest | None:
    """Check the database, the mirror, the text index and the segments; the manifest, or None if unreadable."""
    database = database_path(index_dir)
    try:
        connection = connect(database, readonly=True)
        integrity = [row[0] for row in connection.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as error:
        findings.problem(database, f"SQLite cannot read it ({error}): `takes repair` recovers the readable takes", "database")
        return None
    try:
        if integrity != ["ok"]:
            findings.problem(database, f"damaged pages ({integrity[0]}; {len(integrity)} findings): `takes repair` recovers the readable takes", "database")
            return None
        try:
            manifest = read_manifest(connection)
        except IndexCorrupt as error:
            findings.problem(database, str(error), "database")
            return None
        if manifest is None:
            raise IndexNotFound(index_dir)
        try:
            check_mirror(index_dir, manifest, read_mirror_text(index_dir))
        except IndexCorrupt as error:
            message = str(error).split(": ", 1)[-1] if str(error).startswith(str(index_dir)) else str(error)
            findings.problem(index_dir / MANIFEST_NAME, message, "mirror")
        live = np.fromiter(iter_live_rows(connection, manifest.generation), dtype=np.int64)
        if len(live) != manifest.count:
            findings.problem(database, f"the manifest counts {manifest.count} takes but the database holds {len(live)}: `takes repair` re-embeds them", "segments")
        _check_text_index(connection, database, findings)
        _check_segments(index_dir, manifest, live, findings)
        _check_token_vectors(connection, database, manifest, findings)
    finally:
        connection.close()
    return manifest


def _check_text_index(connection: sqlite3.Connection, database: Path, findings: _Findings) -> None:
    """The FTS5 index must hold exactly the live takes."""
    current_rows = {row[0] for row in connection.execute(f"SELECT rowid FROM takes WHERE {LIVE}")}
    try:
        text_rows = {row[0] for row in connection.execute("SELECT id FROM takes_fts_docsize")}
        connection.execute("SELECT count(*) FROM takes_fts WHERE takes_fts MATCH 'a'").fetchone()
    except sqlite3.DatabaseError as error:
        findings.problem(database, f"the FTS5 text index is damaged ({error}): `takes repair` rebuilds it", "fts")
        return
    if text_rows != current_rows:
        findings.problem(
            database,
            f"the FTS5 text index holds {len(text_rows)} takes, {len(text_rows - current_rows)} of them not live, "
            f"and misses {len(current_rows - text_rows)}: `takes repair` rebuilds it",
            "fts",
        )


def _check_segments(index_dir: Path, manifest: Manifest, live: np.ndarray, findings: _Findings) -> None:
    """Every segment the manifest names must verify, and every live take have a vector in one."""
    covered = np.zeros(0, np.int64)
    for segment in manifest.segments:
        try:
            ids, _ = read_segment(index_dir, segment, manifest.dim)
        except IndexCorrupt as error:
            findings.problem(index_dir / segment.file, str(error).split(f"{segment.file} ", 1)[-1], "segments")
            continue
        covered = np.concatenate([covered, ids])
        if ann.is_compressed(manifest.index_type):
            # A compressed index re-scores from the segment's vectors read in place.
            try:
                SegmentVectors.open(index_dir, (segment,), ids, manifest.dim)
            except IndexCorrupt as error:
                findings.problem(index_dir / segment.file, str(error).split(f"{segment.file} ", 1)[-1], "segments")
        if segment.checksum is None:
            findings.notes.append(f"{index_dir / segment.file}: no checksum (format 1): `takes compact` writes a checksummed segment")
    missing = np.setdiff1d(live, covered)
    if len(missing) and not any(p.kind == "segments" for p in findings.problems):
        findings.problem(index_dir / DATABASE_NAME, f"{len(missing)} takes have no vector in any segment: `takes repair` re-embeds them", "segments")


def _check_token_vectors(connection: sqlite3.Connection, database: Path, manifest: Manifest, findings: _Findings) -> None:
    """Every stored token vector value must pass its checksum (one bound to its take's text)."""
    if not has_token_column(connection):
        findings.notes.append(f"{database}: made before token vectors were stored: the next writer adds their column")
        return
    damaged = absent = 0
    for text, value in connection.execute(f"SELECT text, {TOKEN_COLUMN} FROM takes WHERE {LIVE}"):
        if value is None:
            absent += 1
        elif not token_vectors.is_sound(value, text, manifest.dim):
            damaged += 1
    if damaged:
        findings.problem(
            database,
            f"the stored token vectors of {damaged} takes fail their checksum (search computes those with the model): "
            f"`takes repair` stores them again",
            "tokens",
        )
    if absent:
        findings.notes.append(f"{absent} takes have no stored token vectors (indexed before they were kept): search computes them with the model")


def _check_trained_index(index_dir: Path, findings: _Findings) -> None:
    trained = index_dir / TRAINED_INDEX_NAME
    if trained.exists() and (issue := verify_trained_index(trained)) is not None:
        findings.problem(trained, f"{issue}: loads ignore it and train afresh; `takes repair` deletes it", "trained")


def _check_cache(cache_path: Path, findings: _Findings) -> None:
    """Count the cache entries that fail their check (a damaged cache costs only re-embedding)."""
    if not cache_path.exists():
        return
    try:
        cache = connect(cache_path, readonly=True)
        try:
            results = [row[0] for row in cache.execute("PRAGMA integrity_check(5)")]
            if results != ["ok"]:
                raise sqlite3.DatabaseError(results[0])
            columns = {row[1] for row in cache.execute("PRAGMA table_info(vectors)")}
            select = "model, text_hash, vector, " + ("checksum" if "checksum" in columns else "NULL")
            damaged = sum(
                not EmbeddingCache.entry_is_sound(model, digest, blob, checksum)
                for model, digest, blob, checksum in cache.execute(f"SELECT {select} FROM vectors")
            )
        finally:
            cache.close()
        if damaged:
            findings.problem(cache_path, f"{damaged} entries fail their checksum: they are embedded again when needed; `takes repair` deletes them", "cache")
    except sqlite3.DatabaseError as error:
        findings.problem(cache_path, f"SQLite cannot read it ({error}): it is ignored; `takes repair` rebuilds it", "cache")


def model_copy_problems(index_dir: Path, manifest: Manifest) -> list[tuple[str, str]]:
    """(path, problem) for the files of the index's own ONNX model copy that fail their checksums."""
    if manifest.backend != "onnx":
        return []
    from embeddings.onnx import model_cache_dir, verify_model_files

    model_dir = model_cache_dir(manifest.model, index_dir)
    # No copy yet is no problem: the first load makes one.
    return verify_model_files(model_dir) if model_dir.exists() else []


def repair_index(
    index_dir: Path, embedder_for: Callable[[str, str], "EmbedderFactory"], *, lock_timeout: float = 30.0
) -> tuple[list[str], list[Problem]]:
    """Rebuild what is damaged from what is intact; (what was done, problems left).

    Order matters: the database first (everything else is derived from its
    rows), then the model copy and the cache (the vectors come from them),
    then the text index and the vectors.
    """
    index_dir = Path(index_dir)
    problems, _ = check_index(index_dir)
    if not problems:
        return [], []
    kinds = {problem.kind for problem in problems}
    actions: list[str] = []
    reembed = "segments" in kinds
    with IndexWriter(index_dir, lock_timeout=lock_timeout, recover="database" in kinds) as writer:
        if writer.recovery is not None:
            actions.append(str(writer.recovery))
            reembed = True
        manifest = writer.manifest
        if manifest is None:
            raise IndexNotFound(index_dir)
        if "mirror" in kinds:
            actions.append(f"rewrote {MANIFEST_NAME} from {DATABASE_NAME} (generation {manifest.generation})")
        if "trained" in kinds:
            (index_dir / TRAINED_INDEX_NAME).unlink(missing_ok=True)
            actions.append(f"deleted the damaged {TRAINED_INDEX_NAME} (the next load trains a new one)")
        if "cache" in kinds:
            dropped = writer.drop_damaged_cache_entries()
            actions.append(
                f"rebuilt {CACHE_NAME} (SQLite could not read it)" if dropped < 0 else f"deleted {dropped} damaged entries of {CACHE_NAME}"
            )
        if "model" in kinds:
            from embeddings.onnx import restore_model_copy

            if restore_model_copy(manifest.model, index_dir):
                actions.append(f"restored the ONNX model copy of {manifest.model} (identical to the one that embedded the takes)")
            else:
                writer.forget_cached_vectors(cache_model_name(manifest.model, manifest.backend))
                reembed = True
                actions.append(f"replaced the ONNX model copy of {manifest.model}; it differs from the old one, so every take is embedded again")
        if "fts" in kinds and writer.recovery is None:
            writer.rebuild_text_index()
            actions.append("rebuilt the FTS5 text index from the live takes")
        if "tokens" in kinds and not reembed:
            restored = writer.restore_token_vectors(embedder_for(manifest.model, manifest.backend))
            actions.append(f"stored the token vectors of {restored} takes again (their stored ones failed their checksum)")
        if reembed:
            report = writer.rebuild(embedder_for(manifest.model, manifest.backend), model=manifest.model, backend=manifest.backend)
            actions.append(
                f"re-embedded {report.added} takes into generation {report.generation} "
                f"({report.embedded} embedded, the rest from verified cache entries)"
            )
    remaining, _ = check_index(index_dir)
    return actions, remaining
