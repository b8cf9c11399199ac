"""Read side of an index: load a generation, answer queries, follow new generations."""

from __future__ import annotations

import dataclasses
import logging
import re
import sqlite3
import threading
from datetime import date
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from embeddings import Embedder, load_embedder
from embeddings.base import threads_from_environment
from indexer import ann, ranking
from indexer.errors import IndexCorrupt, InvalidQuery, TakeNotFound
from indexer.threads import limit_threads
from indexer.models import TAKE_FIELDS, AuthorSummary, SearchResult, Take, ThreadSummary, first_words
from indexer.ranking import Candidate
from indexer.storage import Filters
from indexer.store import (
    DATABASE_NAME,
    REPAIR_HINT,
    Manifest,
    damaged_database,
    named_files_bytes,
    reclaimable_bytes,
    connect,
    database_path,
    iter_live_rows,
    normalize_model_name,
    open_index_database,
    read_manifest,
    read_segment,
    read_trained_index,
    save_trained_index,
    take_from_row,
)

from indexer.query_limits import DEFAULT_K, DEFAULT_MODE, MAX_K, MAX_QUERY_CHARS, MODES
from indexer.query_limits import MAX_NEIGHBOURS as MAX_CONTEXT

# Candidates each retriever contributes to fusion (indexer/ranking.py).
FUSION_DEPTH = 50
# Fused candidates a cross-encoder re-scores (at least 2k): one model pass per
# candidate, so it is opt-in (docs/PERFORMANCE.md, "Re-ranking").
RERANK_DEPTH = 30

_COLUMNS = ", ".join(TAKE_FIELDS)


def validate_query(query: str, k: int) -> str:
    """Return the stripped query, or raise InvalidQuery naming the limit broken."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidQuery("query must not be empty or only whitespace")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidQuery(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    return query.strip()


def visible_clause(generation: int) -> tuple[str, tuple[int, int]]:
    """SQL condition for rows that exist in ``generation`` (added by it, not yet removed)."""
    return (
        "takes.added_generation <= ? AND (takes.removed_generation IS NULL OR takes.removed_generation > ?)",
        (generation, generation),
    )


# A standard English function-word list (the NLTK/Snowball core), not tuned to any query.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves""".split()
)


def query_terms(query: str) -> list[str]:
    """The words of ``query`` that carry it, once each, in order (function words only when nothing else is left)."""
    words = re.findall(r"\w+", query.casefold())
    # Function words match nearly every take and drown the words that carry
    # the question; keep them only when nothing else is left ("what about it").
    content = [word for word in words if word not in STOPWORDS] or words
    return list(dict.fromkeys(content))


def fts_query(query: str) -> str | None:
    """Turn user text into an FTS5 query that matches any of its words.

    Query text is data, never FTS5 syntax: every word is quoted, so quotes,
    ``*``, ``NEAR(``, ``AND``/``OR``/``NOT``, parentheses and colons search as
    plain words. Returns None when nothing searchable is left (emoji only).
    """
    terms = query_terms(query)
    return " OR ".join(f'"{term}"' for term in terms) if terms else None


# Characters that separate the words of a name ("Clark, Jack", "Jack Clark (Anthropic)").
_NAME_SEPARATORS = ",.;:()[]/|"


def author_clause(author: str) -> tuple[str, list[str]]:
    """SQL matching ``author`` against the name (all of it, or any of its words) or the handle.

    Case-insensitive (SQLite's lower(): ASCII letters); the handle matches
    with or without its '@'. ``Clark``, ``jack clark``, ``@jackclarkSF`` and
    ``jackclarksf`` all find Jack Clark (@jackclarkSF).
    """
    wanted = " ".join(author.split()).lower()
    name = "lower(takes.author)"
    for separator in _NAME_SEPARATORS:
        name = f"replace({name}, '{separator}', ' ')"
    # LIKE treats % and _ as wildcards: escape them so a name is matched literally.
    words = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return (
        f"((' ' || {name} || ' ') LIKE ? ESCAPE '\\' OR lower(takes.handle) = ?)",
        [f"% {words} %", "@" + wanted.lstrip("@")],
    )


def filter_sql(filters: Filters) -> tuple[str, tuple]:
    """SQL condition (and parameters) for the takes passing ``filters``."""
    clauses, params = ["1"], []
    if filters.author:
        clause, author_params = author_clause(filters.author)
        clauses.append(clause)
        params += author_params
    if filters.handle:
        clauses.append("lower(takes.handle) = lower(?)")
        params.append("@" + filters.handle.strip().lstrip("@"))
    if filters.thread_id:
        clauses.append("takes.thread_id = ?")
        params.append(filters.thread_id)
    # Dates compare as text: ISO dates (and timestamps) sort chronologically.
    if filters.since:
        clauses.append("substr(takes.date, 1, 10) >= ?")
        params.append(filters.since)
    if filters.until:
        clauses.append("substr(takes.date, 1, 10) <= ?")
        params.append(filters.until)
    return " AND ".join(clauses), tuple(params)


@dataclass(frozen=True)
class Snapshot:
    """One generation of the index, loaded into memory; never changes after loading."""

    manifest: Manifest
    vectors: object  # faiss.Index with SQLite row ids
    loaded_at: float

    @property
    def generation(self) -> int:
        return self.manifest.generation


def load_snapshot(index_dir: Path, previous: Snapshot | None = None) -> Snapshot:
    """Load the current generation: the manifest and live row ids read in one SQLite snapshot.

    With ``previous`` (the generation being served), a generation that only
    added segments or removed takes is built from a copy of it: the cost then
    follows the size of the change, not of the index (no re-reading every
    segment, no re-training an approximate index). Every segment read is
    verified against its checksum (once per file per process).
    """

    connection, _ = open_index_database(index_dir)
    try:
        for attempt in range(3):
            try:
                connection.execute("BEGIN")
                try:
                    manifest = read_manifest(connection)
                    live = np.fromiter(iter_live_rows(connection, manifest.generation), dtype=np.int64)
                finally:
                    connection.execute("COMMIT")
            except sqlite3.DatabaseError as error:
                raise damaged_database(database_path(index_dir), error) from None
            if len(live) != manifest.count:
                raise IndexCorrupt(
                    f"{index_dir}: the manifest counts {manifest.count} takes but the database holds "
                    f"{len(live)} for generation {manifest.generation}: {REPAIR_HINT}"
                )
            # A trained approximate index saved by an earlier load stands in
            # for ``previous`` when there is none (a server start).
            base = previous
            if base is None and manifest.index_type != "flat":
                saved = read_trained_index(index_dir, manifest)
                if saved is not None:
                    base = Snapshot(manifest=saved[0], vectors=saved[1], loaded_at=time.time())
            if base is not None:
                try:
                    # A served index is copied, never changed in place; a cached one is ours.
                    index = _extend(base, manifest, live, index_dir, copy=base is previous)
                except IndexCorrupt:
                    index = None
                if index is not None and index.ntotal == manifest.count:
                    if base is not previous:
                        logging.getLogger(__name__).info(
                            "reusing the trained %s index saved at generation %d", manifest.index_type, base.generation
                        )
                    return Snapshot(manifest=manifest, vectors=index, loaded_at=time.time())
            kept_ids, kept_vectors = [], []
            try:
                for segment in manifest.segments:
                    ids, vectors = read_segment(index_dir, segment, manifest.dim)
                    keep = np.isin(ids, live)
                    if keep.any():
                        kept_ids.append(ids[keep])
                        kept_vectors.append(vectors[keep])
            except IndexCorrupt:
                # A writer may have replaced the segments between our read of
                # the manifest and of the files: read the new manifest.
                if attempt == 2 or not _manifest_changed(connection, manifest):
                    raise
                continue
            # The manifest names the index type (exact, or approximate above
            # ann.threshold() takes); segments hold plain vectors either way.
            index = ann.build_index(
                manifest.index_type,
                manifest.dim,
                np.concatenate(kept_vectors) if kept_vectors else np.zeros((0, manifest.dim), np.float32),
                np.concatenate(kept_ids) if kept_ids else np.zeros(0, np.int64),
            )
            if index.ntotal != manifest.count:
                raise IndexCorrupt(
                    f"{index_dir}: generation {manifest.generation} has {manifest.count} takes but "
                    f"{index.ntotal} vectors: {REPAIR_HINT}"
                )
            if manifest.index_type != "flat":
                save_trained_index(index_dir, manifest, index)
            return Snapshot(manifest=manifest, vectors=index, loaded_at=time.time())
    finally:
        connection.close()
    raise AssertionError("unreachable")


def _extend(previous: Snapshot, manifest: Manifest, live: np.ndarray, index_dir: Path, *, copy: bool = True):
    """A copy of ``previous``'s index with the new segments added and removed takes dropped.

    None when the change is not of that shape (a rebuild, a new model, or a
    different index type): the caller then loads from scratch.
    """
    import faiss

    before = previous.manifest
    if (before.model, before.dim, before.index_type) != (manifest.model, manifest.dim, manifest.index_type):
        return None
    old_files = {segment.file for segment in before.segments}
    if not old_files <= {segment.file for segment in manifest.segments}:
        return None
    # A segment file is rewritten only by a compact or repair (a new name then):
    # the same name with another checksum means the saved state is not this one.
    now = {segment.file: segment.checksum for segment in manifest.segments}
    if any(segment.checksum != now[segment.file] for segment in before.segments):
        return None
    served_ids = ann.stored_ids(previous.vectors)
    removed = served_ids[~np.isin(served_ids, live)]
    # The served index is never changed in place: requests may be using it.
    index = faiss.clone_index(previous.vectors) if copy else previous.vectors
    if len(removed):
        try:
            ann.remove_ids(index, removed)
        except RuntimeError:
            return None  # this index type cannot remove: load from scratch
    for segment in manifest.segments:
        if segment.file in old_files:
            continue
        ids, vectors = read_segment(index_dir, segment, manifest.dim)
        keep = np.isin(ids, live)
        if keep.any():
            index.add_with_ids(np.ascontiguousarray(vectors[keep]), ids[keep])
    return index


def _manifest_changed(connection, manifest: Manifest) -> bool:
    current = read_manifest(connection)
    return current is not None and current.generation != manifest.generation


class Searcher:
    """Answers queries over one index directory; safe to share between threads.

    The model loads once. ``refresh()`` swaps in a newer generation if a writer
    committed one; requests in flight keep the snapshot they started with.
    """

    def __init__(
        self,
        index_dir: Path | str,
        *,
        model: str | None = None,
        backend: str | None = None,
        embedder: Embedder | None = None,
        query_encoder: Callable[[str], np.ndarray] | None = None,
        threads: int | None = None,
        reranker=None,
        late_interaction: bool = False,
    ):
        self.index_dir = Path(index_dir)
        # FAISS and torch threads per searching thread, applied in each thread
        # before its first query (OpenMP's count belongs to the calling
        # thread). None: TAKES_THREADS or 1; 0: the libraries' defaults.
        self.threads = threads_from_environment() if threads is None else threads
        # Maps one query to its (1, dim) vector; the server sets a batching
        # worker here. None: call the embedder directly.
        self.query_encoder = query_encoder
        # Optional second stage: an object with score(query, texts) -> relevance
        # per text (embeddings.reranker.CrossEncoderReranker); None: off.
        self.reranker = reranker
        # Second stage with the same model: MaxSim over token vectors (indexer/ranking.py).
        self.late_interaction = late_interaction
        self._token_cache = _TokenCache()
        self._snapshot = load_snapshot(self.index_dir)
        manifest = self._snapshot.manifest
        # Fail on a mismatch before paying for a model load.
        manifest.check_model(model)
        self._requested_model = model
        # Queries use the backend that embedded the index unless told otherwise
        # (the other backend's vectors differ slightly: cosine about 0.99).
        self.backend = getattr(embedder, "backend", None) or backend or manifest.backend
        self._embedder = embedder or load_embedder(model or manifest.model, self.backend, cache_dir=str(self.index_dir), threads=self.threads)
        manifest.check_model(self._embedder.name, self._embedder.dim)
        if late_interaction and not hasattr(self._embedder, "token_vectors"):
            from embeddings import EmbeddingError

            raise EmbeddingError(f"late interaction needs token vectors, which the {self.backend} embedder does not give")
        self._local = threading.local()
        self._refresh_lock = threading.Lock()
        # Takes holding each query word, per generation: the idf of lexical evidence.
        self._document_counts: dict[tuple[int, str], int] = {}
        # (generation, unit mean vector): computed before the first query of each generation.
        self._centroid: tuple[int, np.ndarray] | None = None
        self.centroid(self._snapshot)

    # -- state ----------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def manifest(self) -> Manifest:
        return self._snapshot.manifest

    def _connection(self):
        """One read-only SQLite connection per thread, opened once."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(database_path(self.index_dir), readonly=True)
            self._local.connection = connection
        return connection

    def _prepare_thread(self) -> None:
        if not getattr(self._local, "prepared", False):
            limit_threads(self.threads)
            self._local.prepared = True

    def current_generation(self) -> int:
        """The generation committed on disk now (cheap: one indexed read)."""
        manifest = read_manifest(self._connection())
        return manifest.generation if manifest else 0

    def refresh(self) -> bool:
        """Load a newer generation if there is one; returns True when it swapped."""
        with self._refresh_lock:
            if self.current_generation() == self._snapshot.generation:
                return False
            snapshot = load_snapshot(self.index_dir, previous=self._snapshot)
            embedder = self._embedder
            if normalize_model_name(embedder.name) != snapshot.manifest.model:
                if self._requested_model is not None:
                    # The user pinned a model; keep serving what matches it.
                    snapshot.manifest.check_model(self._requested_model)
                embedder = load_embedder(snapshot.manifest.model, self.backend, cache_dir=str(self.index_dir), threads=self.threads)
            snapshot.manifest.check_model(embedder.name, embedder.dim)
            self.centroid(snapshot)  # here, not in the first request after the swap
            if embedder is not self._embedder:
                self._token_cache = _TokenCache()
            # Reference assignment is atomic: a request sees one snapshot or the other.
            self._embedder, self._snapshot = embedder, snapshot
            return True

    # -- queries ----------------------------------------------------------------

    def encode_query(self, query: str) -> np.ndarray:
        self._prepare_thread()
        if self.query_encoder is not None:
            return self.query_encoder(query)
        return self._embedder.encode([query])

    def search(
        self,
        query: str,
        k: int = DEFAULT_K,
        *,
        mode: str = DEFAULT_MODE,
        filters: Filters | None = None,
        context: int = 0,
    ) -> list[SearchResult]:
        """The ``k`` takes that best answer ``query``, best first.

        Filters apply before the top ``k`` is cut, so a filtered search still
        returns up to ``k`` matches. Takes with the same text appear once.
        """
        query = validate_query(query, k)
        if not isinstance(context, int) or not 0 <= context <= MAX_CONTEXT:
            raise InvalidQuery(f"context must be an integer from 0 to {MAX_CONTEXT}, got {context!r}")
        if mode not in MODES:
            raise InvalidQuery(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        filters = filters or Filters()
        snapshot = self._snapshot
        allowed = self._allowed_rows(filters, snapshot)
        if allowed is not None and len(allowed) == 0:
            return []
        # Fetch more than k: duplicates are folded and fusion needs depth.
        depth = max(k * 2, FUSION_DEPTH)
        candidates = self.candidates(query, mode, depth, filters, snapshot, allowed)
        ranked = ranking.fuse(candidates, mode)
        if self.late_interaction and mode != "lexical" and ranked:
            ranked = self._late_interaction(query, mode, ranked, max(2 * k, RERANK_DEPTH), candidates)
        if self.reranker is not None:
            ranked = self._rerank(query, ranked[: max(2 * k, RERANK_DEPTH)])
        if filters.min_score is not None:
            ranked = [(row_id, score) for row_id, score in ranked if score >= filters.min_score]
        takes = self.takes_by_row([row_id for row_id, _ in ranked])
        results: list[SearchResult] = []
        seen_texts: set[str] = set()
        for row_id, score in ranked:
            take = takes.get(row_id)
            if take is None:
                continue
            folded = " ".join(take.text.casefold().split())
            if folded in seen_texts:
                continue
            seen_texts.add(folded)
            results.append(SearchResult(take, score, self.context(take, context) if context else None))
            if len(results) == k:
                break
        return results

    def _late_interaction(
        self, query: str, mode: str, ranked: list[tuple[int, float]], depth: int, candidates: list[Candidate]
    ) -> list[tuple[int, float]]:
        """Re-score the fused top ``depth`` with MaxSim as third evidence; the rest follow, below them."""
        head = ranked[:depth]
        takes = self.takes_by_row([row_id for row_id, _ in head])
        evidence = {candidate.row_id: candidate for candidate in candidates}
        query_tokens = self._embedder.token_vectors([query])[0]
        calibration = ranking.LATE_INTERACTION
        if mode == "dense":
            calibration = dataclasses.replace(calibration, lexical_weight=0.0)
        rescored = []
        for row_id, _ in head:
            take = takes.get(row_id)
            if take is None:
                continue
            late = ranking.maxsim(query_tokens, self._token_cache.get(take.text, self._embedder))
            rescored.append((row_id, calibration.score(dataclasses.replace(evidence[row_id], late=late))))
        rescored.sort(key=lambda item: item[1], reverse=True)
        floor = rescored[-1][1] if rescored else 0.0
        # Takes past the re-scored head keep their order, scaled under the head's lowest score.
        tail = [(row_id, min(score, floor) * 0.999) for row_id, score in ranked[depth:]]
        return rescored + tail

    def _rerank(self, query: str, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Re-score the fused top with the cross-encoder; its relevance (0 to 1) becomes the score."""
        takes = self.takes_by_row([row_id for row_id, _ in ranked])
        row_ids = [row_id for row_id, _ in ranked if row_id in takes]
        relevance = np.asarray(self.reranker.score(query, [takes[row_id].text for row_id in row_ids]), dtype=np.float64)
        if relevance.size and (relevance.min() < 0 or relevance.max() > 1):
            relevance = 1 / (1 + np.exp(-relevance))  # logits: a model without a final sigmoid
        return sorted(zip(row_ids, relevance.tolist()), key=lambda item: item[1], reverse=True)

    def candidates(
        self,
        query: str,
        mode: str,
        depth: int,
        filters: Filters,
        snapshot: Snapshot,
        allowed: np.ndarray | None = None,
        *,
        centring: float = ranking.CENTRING,
    ) -> list[Candidate]:
        """Each retriever's top ``depth`` for ``query``, with the evidence fusion scores them by.

        Hybrid mode judges every candidate by both: a take found only by its
        words gets its true cosine (read back from FAISS), one found only by
        meaning a lexical evidence of 0 (it matched no query word well enough
        to be in the lexical top ``depth``). The dense evidence is the cosine
        less ``centring`` times the take's cosine with the corpus's mean
        direction (indexer/ranking.py, "hubs"): one search with a shifted
        query vector gives it for every take.
        """
        lexical: dict[int, float] = {}
        if mode != "dense":
            lexical = dict(self._lexical(query, depth, filters, snapshot))
            if lexical:
                mass = self._idf_mass(query, snapshot)
                lexical = {row_id: score / mass for row_id, score in lexical.items()}
        if mode == "lexical":
            return [Candidate(row_id, 0.0, evidence) for row_id, evidence in lexical.items()]
        vector = np.ravel(self.encode_query(query))
        if centring:
            vector = vector - centring * self.centroid(snapshot)
        cosines = dict(self._dense_vector(vector, depth, allowed, snapshot))
        if mode == "hybrid":
            cosines.update(self._cosines(vector, [row_id for row_id in lexical if row_id not in cosines], snapshot))
        return [Candidate(row_id, cosine, lexical.get(row_id, 0.0)) for row_id, cosine in cosines.items()]

    def centroid(self, snapshot: Snapshot) -> np.ndarray:
        """The unit mean direction of the generation's takes, computed once per generation."""
        cached = self._centroid
        if cached is not None and cached[0] == snapshot.generation:
            return cached[1]
        centroid = ann.mean_direction(snapshot.vectors, snapshot.manifest.dim)
        self._centroid = (snapshot.generation, centroid)
        return centroid

    def _idf_mass(self, query: str, snapshot: Snapshot) -> float:
        """BM25's scale for ``query``: the summed idf of its content words (indexer/ranking.py)."""
        counts = []
        for term in query_terms(query):
            key = (snapshot.generation, term)
            count = self._document_counts.get(key)
            if count is None:
                count = self._connection().execute(
                    "SELECT count(*) FROM takes_fts WHERE takes_fts MATCH ?", (f'"{term}"',)
                ).fetchone()[0]
                if len(self._document_counts) > 10_000:
                    self._document_counts.clear()
                self._document_counts[key] = count
            counts.append(count)
        return ranking.idf_mass(max(snapshot.manifest.count, 1), counts)

    def search_vector(self, vector: np.ndarray, k: int, *, snapshot: Snapshot | None = None) -> list[SearchResult]:
        """Nearest takes to a ready-made query vector (no filters, no folding)."""
        snapshot = snapshot or self._snapshot
        ranked = self._dense_vector(vector, k, None, snapshot)
        takes = self.takes_by_row([row_id for row_id, _ in ranked])
        return [SearchResult(takes[row_id], score) for row_id, score in ranked if row_id in takes]

    @staticmethod
    def _cosines(vector: np.ndarray, row_ids: Sequence[int], snapshot: Snapshot) -> dict[int, float]:
        """Cosine of the query with specific takes (inner product: vectors are unit length)."""
        if not row_ids:
            return {}
        stored = np.vstack([snapshot.vectors.reconstruct(int(row_id)) for row_id in row_ids])
        return dict(zip(row_ids, (stored @ np.ravel(vector)).tolist()))

    def _dense_vector(self, vector, depth: int, allowed: np.ndarray | None, snapshot: Snapshot) -> list[tuple[int, float]]:
        import faiss

        self._prepare_thread()
        index = snapshot.vectors
        if index.ntotal == 0:
            return []
        selector = faiss.IDSelectorBatch(allowed) if allowed is not None else None
        params = ann.search_parameters(snapshot.manifest.index_type, selector)
        scores, ids = index.search(np.atleast_2d(vector).astype(np.float32), min(depth, index.ntotal), params=params)
        return [(int(row_id), float(score)) for row_id, score in zip(ids[0], scores[0]) if row_id >= 0]

    def _lexical(self, query: str, depth: int, filters: Filters, snapshot: Snapshot) -> list[tuple[int, float]]:
        match = fts_query(query)
        if match is None:
            return []
        clause, params = visible_clause(snapshot.generation)
        filter_clause, filter_params = filter_sql(filters)
        # bm25() is lower-is-better (negative); negate so higher is better everywhere.
        rows = self._connection().execute(
            f"""SELECT takes.rowid, -bm25(takes_fts) AS score
                FROM takes_fts JOIN takes ON takes.rowid = takes_fts.rowid
                WHERE takes_fts MATCH ? AND {clause} AND {filter_clause}
                ORDER BY bm25(takes_fts) LIMIT ?""",
            (match, *params, *filter_params, depth),
        ).fetchall()
        return [(int(row_id), float(score)) for row_id, score in rows]

    def _allowed_rows(self, filters: Filters, snapshot: Snapshot) -> np.ndarray | None:
        """Row ids passing the metadata filters, or None when nothing filters."""
        if not filters.restricts_rows():
            return None
        clause, params = visible_clause(snapshot.generation)
        filter_clause, filter_params = filter_sql(filters)
        rows = self._connection().execute(
            f"SELECT rowid FROM takes WHERE {clause} AND {filter_clause}", (*params, *filter_params)
        )
        return np.fromiter((row[0] for row in rows), dtype=np.int64)

    def context(self, take: Take, size: int) -> tuple[tuple[Take, ...], tuple[Take, ...]]:
        """Up to ``size`` takes before and after ``take`` in its thread, in order."""
        if size <= 0:
            return (), ()
        clause, params = self._visible()
        connection = self._connection()
        before = connection.execute(
            f"SELECT {_COLUMNS} FROM takes WHERE thread_id = ? AND position < ? AND {clause} ORDER BY position DESC LIMIT ?",
            (take.thread_id, take.position, *params, size),
        ).fetchall()
        after = connection.execute(
            f"SELECT {_COLUMNS} FROM takes WHERE thread_id = ? AND position > ? AND {clause} ORDER BY position LIMIT ?",
            (take.thread_id, take.position, *params, size),
        ).fetchall()
        return tuple(take_from_row(row) for row in reversed(before)), tuple(take_from_row(row) for row in after)

    def takes_by_row(self, row_ids: Sequence[int]) -> dict[int, Take]:
        if not row_ids:
            return {}
        placeholders = ",".join("?" * len(row_ids))
        rows = self._connection().execute(
            f"SELECT rowid, {_COLUMNS} FROM takes WHERE rowid IN ({placeholders})", list(row_ids)
        )
        return {row[0]: take_from_row(row[1:]) for row in rows}

    def _visible(self) -> tuple[str, tuple[int, int]]:
        return visible_clause(self._snapshot.generation)

    def get_take(self, take_id: str) -> Take:
        clause, params = self._visible()
        row = self._connection().execute(f"SELECT {_COLUMNS} FROM takes WHERE id = ? AND {clause}", (take_id, *params)).fetchone()
        if row is None:
            raise TakeNotFound(f"no take with id {take_id!r}")
        return take_from_row(row)

    def get_thread(self, thread_id: str) -> list[Take]:
        clause, params = self._visible()
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM takes WHERE thread_id = ? AND {clause} ORDER BY position, rowid",
            (thread_id, *params),
        ).fetchall()
        if not rows:
            raise TakeNotFound(f"no thread with id {thread_id!r}")
        return [take_from_row(row) for row in rows]

    def authors(self) -> list[AuthorSummary]:
        """Every author in the served generation with their counts, most takes first."""
        return list_authors(self._connection(), self._snapshot.generation)

    def list_threads(self, filters: Filters | None = None) -> list[ThreadSummary]:
        """Every thread in the served generation (``filters``: author, dates...), newest first.

        Not ``threads``: that attribute is the thread count each search may use.
        """
        return list_threads(self._connection(), self._snapshot.generation, filters)

    def stats(self) -> dict:
        """The object of GET /stats and `takes stats --json`, for the generation served."""
        return index_stats(self.index_dir, self._connection(), self._snapshot.manifest, backend=self.backend)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


class _TokenCache:
    """Token vectors of recently re-scored takes, by text, within a memory budget (float16)."""

    BUDGET_BYTES = 256 * 2**20

    def __init__(self):
        self._vectors: dict[str, np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, text: str, embedder) -> np.ndarray:
        with self._lock:
            cached = self._vectors.pop(text, None)
            if cached is not None:
                self._vectors[text] = cached  # most recently used last
                return cached.astype(np.float32)
        tokens = embedder.token_vectors([text])[0]
        stored = tokens.astype(np.float16)
        with self._lock:
            self._vectors[text] = stored
            self._bytes += stored.nbytes
            while self._bytes > self.BUDGET_BYTES and self._vectors:
                oldest = next(iter(self._vectors))
                self._bytes -= self._vectors.pop(oldest).nbytes
        return tokens


def list_authors(connection, generation: int) -> list[AuthorSummary]:
    """Every author of ``generation`` with their counts, most takes first (no model needed)."""
    clause, params = visible_clause(generation)
    rows = connection.execute(
        f"""SELECT author, handle, count(*), count(DISTINCT thread_id) FROM takes WHERE {clause}
            GROUP BY lower(coalesce(author, '')), lower(coalesce(handle, ''))
            ORDER BY count(*) DESC, lower(coalesce(author, handle, ''))""",
        params,
    ).fetchall()
    return [AuthorSummary(author, handle, takes, threads) for author, handle, takes, threads in rows]


def list_threads(connection, generation: int, filters: Filters | None = None) -> list[ThreadSummary]:
    """Every thread of ``generation`` passing ``filters``, newest first (no model needed)."""
    clause, params = visible_clause(generation)
    filter_clause, filter_params = filter_sql(filters or Filters())
    # SQLite fills the bare columns of a min() aggregate from the row holding the minimum: the first take.
    rows = connection.execute(
        f"""SELECT thread_id, author, handle, date, count(*), max(thread_size), min(position), text
            FROM takes WHERE {clause} AND {filter_clause}
            GROUP BY thread_id ORDER BY date DESC, thread_id""",
        (*params, *filter_params),
    ).fetchall()
    return [
        ThreadSummary(thread_id, author, handle, day, takes, size, first_words(text))
        for thread_id, author, handle, day, takes, size, _, text in rows
    ]


def index_stats(index_dir: Path, connection, manifest: Manifest, *, backend: str | None = None) -> dict:
    """Counts, model and size of one generation (``backend``: the one serving queries, if any).

    ``index_bytes`` counts the database and the segments the manifest names
    (never orphans); ``reclaimable_bytes`` estimates what `takes compact` frees.
    """
    clause, params = visible_clause(manifest.generation)
    try:
        threads = connection.execute(f"SELECT count(DISTINCT thread_id) FROM takes WHERE {clause}", params).fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise damaged_database(database_path(index_dir), error) from None
    return {
        "takes": manifest.count,
        "threads": threads,
        "model": manifest.model,
        "dim": manifest.dim,
        "index_bytes": index_bytes(index_dir, manifest),
        "reclaimable_bytes": reclaimable_bytes(index_dir, connection, manifest),
        "index_type": manifest.index_type,
        "generation": manifest.generation,
        "backend": backend or manifest.backend,
    }


def index_bytes(index_dir: Path, manifest: Manifest | None = None) -> int:
    """Bytes on disk of the index proper: the database and the vector segments the manifest names.

    Not the embedding cache, the saved trained index, the model copy, or
    segments no generation names (those are reclaimable).
    """
    if manifest is None:
        connection, manifest = open_index_database(index_dir)
        connection.close()
    return named_files_bytes(index_dir, manifest)


__all__ = ["DEFAULT_MODE", "MODES", "Filters", "DEFAULT_K", "MAX_K", "MAX_QUERY_CHARS", "Searcher", "Snapshot", "load_snapshot", "validate_query"]
