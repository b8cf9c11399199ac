"""Ranking: query parsing and limits, candidate retrieval, fusion, second stages, duplicate folding.

Ranking talks to a corpus only through the interfaces of ``indexer.storage``
(a ``Generation``: take lookup and vector search), so every store ranks the
same way. It loads no model and opens no file: the front door
(``indexer/serving.py``) hands it the generation to rank and the embedder.
"""

from __future__ import annotations

import functools
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from indexer import ranking
from indexer.errors import InvalidQuery
from indexer.models import SearchResult, Take
from indexer.query_limits import DEFAULT_K, DEFAULT_MODE, MAX_K, MAX_NEIGHBOURS, MAX_QUERY_CHARS, MODES
from indexer.ranking import Candidate
from indexer.storage import Filters

if TYPE_CHECKING:
    from embeddings import Embedder
    from indexer.storage import Generation

# Candidates each retriever contributes to fusion (indexer/ranking.py).
FUSION_DEPTH = 50
# Fused candidates a cross-encoder re-scores (at least 2k): one model pass per
# candidate, so it is opt-in (docs/PERFORMANCE.md, "Re-ranking").
RERANK_DEPTH = 30
# Candidates late interaction re-scores: the first stage's best (at least 2k).
# Each needs its stored token vectors, about 21 kB a take, so on a large
# corpus, where every candidate is new to the cache, this is what a search
# reads (docs/PERFORMANCE.md, the 100k goals under "PostgreSQL store beside the embedded one").
LATE_DEPTH = 30
# Threads that run hybrid searches' lexical sides while their queries are
# encoded: enough for a server's concurrent requests to overlap on two cores.
LEXICAL_THREADS = 4


def validate_query(query: str, k: int) -> str:
    """Return the stripped query, or raise InvalidQuery naming the limit broken."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidQuery("query must not be empty or only whitespace")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidQuery(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    return query.strip()


def validate_search(query: str, k: int, mode: str, neighbours: int) -> str:
    """``validate_query`` plus the mode and the neighbour count; the stripped query."""
    query = validate_query(query, k)
    if not isinstance(neighbours, int) or not 0 <= neighbours <= MAX_NEIGHBOURS:
        raise InvalidQuery(f"context must be an integer from 0 to {MAX_NEIGHBOURS}, got {neighbours!r}")
    if mode not in MODES:
        raise InvalidQuery(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return query


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


@functools.lru_cache(maxsize=4096)
def same_text(text: str) -> str:
    """What two results must share to count as one (the same words, whatever the case or spacing).

    Every candidate of every search is folded (65 a search, 3 us each), and
    the candidates of one corpus's searches repeat: the recent ones are kept.
    """
    return " ".join(text.casefold().split())


class Ranker:
    """Ranks the takes of a generation for a query, with one embedder and optional second stages.

    Args:
        embedder: the model that embedded the corpus (query vectors, token vectors).
        encode_query: maps one query to its (1, dim) vector (a batching worker,
            say); default: ``embedder.encode``.
        reranker: an object with ``score(query, texts) -> relevance`` per text
            (embeddings.reranker.CrossEncoderReranker); None: off.
        late_interaction: score with MaxSim over the same model's token vectors
            and with the thread's evidence too (the default ranking); False, or
            an embedder without token vectors: the first stage's evidence only.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        encode_query: Callable[[str], np.ndarray] | None = None,
        encode_query_with_tokens: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None,
        reranker=None,
        late_interaction: bool = True,
    ):
        self.embedder = embedder
        self.encode_query = encode_query or (lambda query: embedder.encode([query]))
        # (1, dim) vector and token vectors of a query; default: one model pass
        # when the embedder offers it and no encode_query (a batching worker) is given.
        self.encode_query_with_tokens = encode_query_with_tokens or (
            self._one_pass if encode_query is None and hasattr(embedder, "encode_with_tokens") else self._two_passes
        )
        self.reranker = reranker
        self.late_interaction = late_interaction
        self._token_cache = _TokenCache()
        self._lexical_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def search(
        self, generation: Generation, query: str, k: int = DEFAULT_K, *, mode: str = DEFAULT_MODE, filters: Filters | None = None, neighbours: int = 0
    ) -> list[SearchResult]:
        """The ``k`` takes of ``generation`` that best answer ``query``, best first.

        Filters apply before the top ``k`` is cut, so a filtered search still
        returns up to ``k`` matches. Takes with the same text appear once.
        """
        query = validate_search(query, k, mode, neighbours)
        filters = filters or Filters()
        # Fetch more than k: duplicates are folded and fusion needs depth.
        depth = max(k * 2, FUSION_DEPTH)
        lexical = None
        if mode == "hybrid":
            # The lexical side needs no vector, so it runs while the query is
            # encoded and searched by meaning: SQLite, PostgreSQL's socket, the
            # model and FAISS all release the GIL, and a search on an idle
            # server then takes the longer of the two, not their sum.
            lexical = self._pool().submit(self.lexical_evidence, generation, query, depth, filters)
        vector, query_tokens = self._encode(query, mode)
        candidates = self.candidates(query, mode, depth, filters, generation, vector=vector, lexical=lexical)
        known: dict[int, Take] = {}
        if query_tokens is not None:
            # Every candidate's take, read once: the second stage needs their
            # texts and threads, and the results are among them.
            known = generation.takes([candidate.row_id for candidate in candidates])
            candidates = self._late_and_thread_evidence(
                generation, query_tokens, candidates, mode, max(2 * k, LATE_DEPTH), takes=known
            )
        ranked = ranking.fuse(candidates, mode, late=query_tokens is not None)
        if self.reranker is not None:
            ranked = self._rerank(generation, query, ranked[: max(2 * k, RERANK_DEPTH)])
        if filters.min_score is not None:
            ranked = [(row_id, score) for row_id, score in ranked if score >= filters.min_score]
        return self._results(generation, ranked, k, neighbours, known)

    def _results(
        self, generation: Generation, ranked: list[tuple[int, float]], k: int, neighbours: int, known: dict[int, Take] | None = None
    ) -> list[SearchResult]:
        """The first ``k`` ranked takes, one per text, with their neighbours if asked (``known``: takes already read, by row id)."""
        known = known or {}
        results: list[SearchResult] = []
        seen_texts: set[str] = set()
        # Rows are read a window at a time: fusion ranks up to 2 x FUSION_DEPTH
        # candidates, and reading (and building) every one of them to keep k
        # was about a third of a search's time outside the model.
        window = max(2 * k, 20)
        for start in range(0, len(ranked), window):
            chunk = ranked[start : start + window]
            takes = {row_id: known[row_id] for row_id, _ in chunk if row_id in known}
            missing = [row_id for row_id, _ in chunk if row_id not in takes]
            if missing:
                takes.update(generation.takes(missing))
            for row_id, score in chunk:
                take = takes.get(row_id)
                if take is None:
                    continue
                folded = same_text(take.text)
                if folded in seen_texts:
                    continue
                seen_texts.add(folded)
                results.append(SearchResult(take, score, generation.neighbours(take, neighbours) if neighbours else None))
                if len(results) == k:
                    return results
        return results

    def _encode(self, query: str, mode: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The query's vector and, when late interaction applies, its token vectors."""
        if mode == "lexical":
            return None, None
        # Checked per query: the embedder may be swapped after construction (a reload).
        if not self.late_interaction or not hasattr(self.embedder, "token_vectors"):
            return self.encode_query(query), None
        return self.encode_query_with_tokens(query)

    def _one_pass(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        # The vector is the mean of the token outputs: one forward pass gives both.
        vector, tokens = self.embedder.encode_with_tokens(query)
        return vector[None, :], tokens

    def _two_passes(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_query(query), self.embedder.token_vectors([query])[0]

    def _late_and_thread_evidence(
        self, generation: Generation, query_tokens: np.ndarray, candidates: list[Candidate], mode: str = DEFAULT_MODE,
        depth: int | None = None, takes: dict[int, Take] | None = None,
    ) -> list[Candidate]:
        """The first stage's best ``depth`` candidates (all: None) with their MaxSim (late) and thread evidence (indexer/ranking.py).

        The thread evidence still sees every candidate: a take's thread mates
        count whether or not they are re-scored, and so does the MaxSim: a
        re-scored take's +-1 thread mates among the candidates lend it their
        token matches (``ranking.late_evidence``), so their token vectors are
        read too. ``takes``: the candidates' takes by row id, when already read.
        """
        if takes is None:
            takes = generation.takes([candidate.row_id for candidate in candidates])
        present = [candidate for candidate in candidates if candidate.row_id in takes]
        thread = ranking.thread_evidence(
            {c.row_id: c.cosine for c in present}, {c.row_id: takes[c.row_id].thread_id for c in present}
        )
        scored = present
        if depth is not None and len(present) > depth:
            # The first stage's best ``depth`` texts: copies of one text are
            # folded into one result, so they count once (and share one read).
            folded = {c.row_id: same_text(takes[c.row_id].text) for c in present}
            best: set[str] = set()
            for row_id, _ in ranking.fuse(present, mode, late=False):
                best.add(folded[row_id])
                if len(best) == depth:
                    break
            # In retrieval order still: fusion keeps it for ties.
            scored = [candidate for candidate in present if folded[candidate.row_id] in best]
        # Each re-scored take's +-1 thread mates among the candidates, re-scored or not:
        # their token vectors are read after the re-scored takes' own.
        places = [(takes[c.row_id].thread_id, takes[c.row_id].position) for c in present]
        mates_of = {c.row_id: [present[m].row_id for m in near] for c, near in zip(present, ranking.thread_mates(places))}
        rows = [c.row_id for c in scored]
        rows += sorted({mate for row_id in rows for mate in mates_of[row_id]} - set(rows))
        place = {row_id: index for index, row_id in enumerate(rows)}
        mates = [[place[mate] for mate in mates_of[row_id]] for row_id in rows[: len(scored)]]
        mates += [[] for _ in rows[len(scored) :]]
        tokens = self._token_cache.get_many([takes[row_id].text for row_id in rows], self.embedder, rows, generation.token_vectors)
        late = ranking.late_evidence(query_tokens, tokens, generation.mean_direction(), mates=mates)
        # Built directly: dataclasses.replace reads the fields anew each call (0.1 ms a search).
        return [
            Candidate(candidate.row_id, candidate.cosine, candidate.lexical, late=float(value), thread=thread[candidate.row_id])
            for candidate, value in zip(scored, late)
        ]

    def _rerank(self, generation: Generation, query: str, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Re-score the fused top with the cross-encoder; its relevance (0 to 1) becomes the score."""
        takes = generation.takes([row_id for row_id, _ in ranked])
        row_ids = [row_id for row_id, _ in ranked if row_id in takes]
        relevance = np.asarray(self.reranker.score(query, [takes[row_id].text for row_id in row_ids]), dtype=np.float64)
        if relevance.size and (relevance.min() < 0 or relevance.max() > 1):
            relevance = 1 / (1 + np.exp(-relevance))  # logits: a model without a final sigmoid
        return sorted(zip(row_ids, relevance.tolist()), key=lambda item: item[1], reverse=True)


    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._lexical_pool is None:
                self._lexical_pool = ThreadPoolExecutor(LEXICAL_THREADS, thread_name_prefix="takes-lexical")
            return self._lexical_pool

    def close(self) -> None:
        """Stop the lexical threads (searching again starts them anew)."""
        with self._pool_lock:
            pool, self._lexical_pool = self._lexical_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    @staticmethod
    def lexical_evidence(generation: Generation, query: str, depth: int, filters: Filters) -> dict[int, float]:
        """The lexical top ``depth``, each take's BM25 divided by the query's idf mass (indexer/ranking.py)."""
        terms = query_terms(query)
        lexical = dict(generation.lexical(terms, depth, filters))
        if not lexical:
            return {}
        mass = ranking.idf_mass(max(generation.info.count, 1), generation.document_counts(terms))
        return {row_id: score / mass for row_id, score in lexical.items()}

    def candidates(
        self, query: str, mode: str, depth: int, filters: Filters, generation: Generation, *, centring: float = ranking.CENTRING,
        vector: np.ndarray | None = None, lexical: Future | None = None,
    ) -> list[Candidate]:
        """Each retriever's top ``depth`` for ``query``, with the evidence fusion scores them by.

        Hybrid mode judges every candidate by both: a take found only by its
        words gets its true cosine (read back from the vectors), one found only
        by meaning a lexical evidence of 0 (it matched no query word well
        enough to be in the lexical top ``depth``). The dense evidence is the
        cosine less ``centring`` times the take's cosine with the corpus's mean
        direction (indexer/ranking.py, "hubs"): one search with a shifted
        query vector gives it for every take. ``vector``: the query's, when
        already encoded; ``lexical``: the lexical evidence being computed
        (``lexical_evidence``). The late and thread evidence are filled in by search().
        """
        def lexical_side() -> dict[int, float]:
            return lexical.result() if lexical is not None else self.lexical_evidence(generation, query, depth, filters)

        if mode == "lexical":
            return [Candidate(row_id, 0.0, value) for row_id, value in lexical_side().items()]
        vector = np.ravel(self.encode_query(query) if vector is None else vector)
        if centring:
            vector = vector - centring * generation.mean_direction()
        # The search by meaning first: a lexical side running beside it is
        # waited for only once this is done (on PostgreSQL both are queries
        # of several milliseconds, and they overlap).
        cosines = dict(generation.nearest(vector, depth, filters))
        evidence: dict[int, float] = {}
        if mode == "hybrid":
            evidence = lexical_side()
            cosines.update(generation.inner_products(vector, [row_id for row_id in evidence if row_id not in cosines]))
        return [Candidate(row_id, cosine, evidence.get(row_id, 0.0)) for row_id, cosine in cosines.items()]


class _TokenCache:
    """Token vectors of recently scored takes, by text, within a memory budget.

    A take's come from memory, else from the store (kept there at indexing,
    int8: indexer/token_vectors.py), else from the model: one pass per take,
    2 to 5 ms, for takes stored before they were kept. float32 here, as
    MaxSim multiplies them: converting float16 back for every candidate of
    every query cost as much as the MaxSim itself. A take's tokens are about
    55 times its pooled vector (40 KB for 100 words), so the budget holds a
    few thousand takes; past it the least recently used go.
    """

    BUDGET_BYTES = 256 * 2**20

    def __init__(self):
        self._vectors: dict[str, np.ndarray] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(
        self,
        texts: Sequence[str],
        embedder,
        row_ids: Sequence[int] = (),
        read_stored: Callable[[list[int]], dict[int, np.ndarray]] | None = None,
    ) -> list[np.ndarray]:
        """The token vectors of each of ``texts`` (the takes ``row_ids``, whose stored ones ``read_stored`` reads)."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                cached = self._vectors.pop(text, None)
                if cached is not None:
                    self._vectors[text] = cached  # most recently used last
                    found[text] = cached
        missing = list(dict.fromkeys(text for text in texts if text not in found))
        if missing and read_stored is not None:
            row_of = dict(zip(texts, row_ids))
            stored = read_stored([row_of[text] for text in missing])
            fresh = {text: stored[row_of[text]] for text in missing if row_of[text] in stored}
            self._keep(fresh, found)
            missing = [text for text in missing if text not in fresh]
        if missing:
            self._keep(dict(zip(missing, embedder.token_vectors(missing))), found)
        return [found[text] for text in texts]

    def _keep(self, fresh: dict[str, np.ndarray], found: dict[str, np.ndarray]) -> None:
        if fresh:
            with self._lock:
                for text, tokens in fresh.items():
                    tokens = np.ascontiguousarray(tokens, dtype=np.float32)
                    found[text] = tokens
                    if text not in self._vectors:
                        self._vectors[text] = tokens
                        self._bytes += tokens.nbytes
                while self._bytes > self.BUDGET_BYTES and self._vectors:
                    oldest = next(iter(self._vectors))
                    self._bytes -= self._vectors.pop(oldest).nbytes


__all__ = ["DEFAULT_K", "DEFAULT_MODE", "MAX_K", "MAX_NEIGHBOURS", "MAX_QUERY_CHARS", "MODES", "Ranker", "query_terms", "validate_query"]
