"""The read half of the front door: a store's served generation, the model that queries it, and following new generations.

``Searcher`` owns what ranking must not: the store, the loaded generation, the
embedder (and its swap when a new generation was made by another model), the
OpenMP thread setting of each searching thread, and asks ``indexer.api.choose_model``, the one rule
deciding which model and backend to use. Ranking itself is
``indexer.search.Ranker``, given the generation to rank.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from embeddings import Embedder, load_embedder
from embeddings.base import DEFAULT_THREADS
from indexer.api import choose_model
from indexer.models import AuthorSummary, SearchResult, Take, ThreadSummary
from indexer.openmp import limit_threads
from indexer.search import DEFAULT_K, DEFAULT_MODE, Ranker
from indexer.storage import Filters

if TYPE_CHECKING:
    from indexer.storage import CorpusInfo, Generation, Store


def same_model(name: str, model: str) -> bool:
    """Whether two model names are one model (the hub prefix of the default model is noise)."""
    return name.removeprefix("sentence-transformers/") == model.removeprefix("sentence-transformers/")


class Searcher:
    """Answers queries over one store; safe to share between threads.

    The model loads once. ``refresh()`` swaps in a newer generation if a writer
    committed one; requests in flight keep the generation they started with.

    Args:
        index_dir: an index directory (the embedded store); or give ``store``.
        store: any ``indexer.storage.Store``.
        model, backend: what to query with; default: what embedded the corpus.
        embedder: an embedder already loaded (then nothing loads).
        query_encoder: maps one query to its (1, dim) vector (the server's
            batching worker); None: the embedder directly.
        threads: FAISS and torch threads per searching thread, applied in each
            thread before its first query (OpenMP's count belongs to the
            calling thread). None: 1 (Settings.threads reads TAKES_THREADS); 0: the libraries' defaults.
        reranker, late_interaction: second stages (``indexer.search.Ranker``).
    """

    def __init__(
        self,
        index_dir: Path | str | None = None,
        *,
        store: Store | None = None,
        model: str | None = None,
        backend: str | None = None,
        embedder: Embedder | None = None,
        query_encoder: Callable[[str], np.ndarray] | None = None,
        threads: int | None = None,
        reranker=None,
        late_interaction: bool = True,
    ):
        if store is None:
            from indexer.index import EmbeddedStore

            store = EmbeddedStore(index_dir)
        self.store = store
        self.index_dir = Path(index_dir) if index_dir is not None else getattr(store, "index_dir", None)
        self.threads = DEFAULT_THREADS if threads is None else threads
        self.query_encoder = query_encoder
        self.reranker, self.late_interaction = reranker, late_interaction
        self._local = threading.local()
        self._refresh_lock = threading.Lock()
        generation = store.load()
        # Fail on a mismatch before paying for a model load.
        generation.info.check_model(model)
        self._requested_model = model
        choice = choose_model(generation.info, model, backend)
        self.backend = getattr(embedder, "backend", None) or choice.backend
        embedder = embedder or self._load_embedder(choice.model)
        generation.info.check_model(embedder.name, embedder.dim)
        self._serve(generation, embedder)

    def _load_embedder(self, model: str) -> Embedder:
        cache_dir = str(self.index_dir) if self.index_dir is not None else None
        return load_embedder(model, self.backend, cache_dir=cache_dir, threads=self.threads)

    def _serve(self, generation: Generation, embedder: Embedder) -> None:
        """Make ``generation`` the one answering (a new Ranker when the model changed)."""
        generation.mean_direction()  # here, not in the first request after the swap
        if getattr(self, "_ranker", None) is None or self._ranker.embedder is not embedder:
            ranker = Ranker(
                embedder,
                encode_query=self.encode_query,
                encode_query_with_tokens=self.encode_query_with_tokens,
                reranker=self.reranker,
                late_interaction=self.late_interaction,
            )
        else:
            ranker = self._ranker
        # Reference assignment is atomic: a request sees one pair or the other.
        self._ranker, self._snapshot = ranker, generation

    # -- state ----------------------------------------------------------------

    @property
    def snapshot(self) -> Generation:
        """The generation being served."""
        return self._snapshot

    @property
    def manifest(self) -> CorpusInfo:
        return self._snapshot.info

    @property
    def embedder(self) -> Embedder:
        return self._ranker.embedder

    @property
    def ranker(self) -> Ranker:
        return self._ranker

    def _prepare_thread(self) -> None:
        if not getattr(self._local, "prepared", False):
            limit_threads(self.threads)
            self._local.prepared = True

    def current_generation(self) -> int:
        """The generation committed now (cheap)."""
        return self.store.current_generation()

    def refresh(self) -> bool:
        """Load a newer generation if there is one; returns True when it swapped."""
        with self._refresh_lock:
            if self.current_generation() == self._snapshot.info.generation:
                return False
            generation = self.store.load(previous=self._snapshot)
            info = generation.info
            embedder = self.embedder
            if not same_model(embedder.name, info.model):
                if self._requested_model is not None:
                    # The user pinned a model; keep serving what matches it.
                    info.check_model(self._requested_model)
                embedder = self._load_embedder(info.model)
            info.check_model(embedder.name, embedder.dim)
            self._serve(generation, embedder)
            return True

    # -- queries ----------------------------------------------------------------

    def encode_query(self, query: str) -> np.ndarray:
        self._prepare_thread()
        if self.query_encoder is not None:
            return self.query_encoder(query)
        return self.embedder.encode([query])

    def encode_query_with_tokens(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """The query's (1, dim) vector and its token vectors (late interaction).

        One model pass gives both (the vector is the mean of the token
        outputs), from the ``query_encoder`` (the server's batching worker)
        when it offers them; one that gives vectors only leaves the tokens to
        a pass of their own.
        """
        self._prepare_thread()
        embedder = self.embedder
        encoder = self.query_encoder
        if encoder is not None and getattr(encoder, "with_tokens", False):
            return encoder.encode_one_with_tokens(query)
        if encoder is None and hasattr(embedder, "encode_with_tokens"):
            vector, tokens = embedder.encode_with_tokens(query)
            return vector[None, :], tokens
        return self.encode_query(query), embedder.token_vectors([query])[0]

    def search(
        self, query: str, k: int = DEFAULT_K, *, mode: str = DEFAULT_MODE, filters: Filters | None = None, context: int = 0
    ) -> list[SearchResult]:
        """The ``k`` takes that best answer ``query``, best first (``context``: neighbouring takes around each)."""
        self._prepare_thread()
        return self._ranker.search(self._snapshot, query, k, mode=mode, filters=filters, neighbours=context)

    def get_take(self, take_id: str) -> Take:
        return self._snapshot.take(take_id)

    def get_thread(self, thread_id: str) -> list[Take]:
        return self._snapshot.thread(thread_id)

    def authors(self) -> list[AuthorSummary]:
        """Every author in the served generation with their counts, most takes first."""
        return self._snapshot.authors()

    def list_threads(self, filters: Filters | None = None) -> list[ThreadSummary]:
        """Every thread in the served generation (``filters``: author, dates...), newest first.

        Not ``threads``: that attribute is the thread count each search may use.
        """
        return self._snapshot.threads(filters or Filters())

    def stats(self) -> dict:
        """The object of GET /stats and `takes stats --json`, for the generation served."""
        return {**self._snapshot.stats(), "backend": self.backend}

    def close(self) -> None:
        ranker = getattr(self, "_ranker", None)
        if ranker is not None:
            ranker.close()
        self.store.close()
