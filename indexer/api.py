"""The library API: the one front door that the CLI, the HTTP API, MCP and Python programs call.

    from indexer.api import Takes

    with Takes("data/index") as takes:
        for result in takes.search("what about compute governance", k=5, since="2023-01-01"):
            print(citation(result.take), result.take.text)

Importing this module is cheap (no model, no numpy, no FAISS). ``Takes(...)``
loads nothing either: the model and the index load on the first call that
needs them (``search``, ``take``, ``thread``), or at once with ``load()``.
Listing, stats and writes that embed nothing never load the model. One
instance serves any number of threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Union

from embeddings.base import DEFAULT_THREADS
from indexer.errors import IndexNotFound, ParseError, TakesError
from indexer.following import GenerationFollower
from indexer.models import AuthorSummary, SearchResult, Take, ThreadSummary
from indexer.prompt import cited, prompt_block
from indexer.query_limits import DEFAULT_K, DEFAULT_MODE, PROMPT_K

if TYPE_CHECKING:
    from embeddings import Embedder
    from indexer.index.writer import IndexWriter
    from indexer.serving import Searcher
    from indexer.storage import ChangeReport, CompactReport, CorpusInfo, Store, TakeLookup

__all__ = ["GenerationFollower", "ModelChoice", "Takes", "choose_model", "cited", "prompt_block", "read_sources"]

log = logging.getLogger("takes")

# A file path, or a take already made in code.
Source = Union[Path, str, Take]


@dataclass(frozen=True)
class ModelChoice:
    model: str
    backend: str


def choose_model(manifest: CorpusInfo | None, model: str | None = None, backend: str | None = None) -> ModelChoice:
    """The model and backend to embed with, for reading and for writing alike.

    As asked, else what built the index (``manifest``), else the defaults for
    a new index. Queries follow the index's backend because the other
    backend's vectors differ slightly (cosine about 0.99). Pass
    ``manifest=None`` for an index that is being replaced.
    """
    from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL

    return ModelChoice(
        model=model or (manifest.model if manifest else DEFAULT_MODEL),
        backend=backend or (manifest.backend if manifest else DEFAULT_BACKEND),
    )


def read_sources(sources: Source | Iterable[Source], format: str | None = None, *, include_private: bool = False) -> list[Take]:
    """The takes of files (any input format) and Take objects, in order; every file parses or nothing is returned."""
    from indexer.sources import read_takes

    items = [sources] if isinstance(sources, (str, Path, Take)) else list(sources)
    takes: list[Take] = []
    for item in items:
        takes.extend([item] if isinstance(item, Take) else read_takes(item, format, include_private=include_private))
    return takes


class Takes:
    """Search, read and change one index.

    Safe to share between threads: searches run concurrently (each thread gets
    its own read-only SQLite connection) and writes are serialized.

    Args:
        index_dir: the index directory (``takes index`` builds one).
        model: the model to search and write with; default: the one that built the index.
        backend: ``torch`` or ``onnx``; default: the index's own.
        reranker: a local cross-encoder folder that re-scores the top takes
            (slower; off by default), or an object with ``score(query, texts)``.
        late_interaction: score takes by token-level similarity with the
            same model too (on by default; False: pooled vectors and BM25 only).
        threads: threads for ONNX Runtime, torch and FAISS per searching thread
            (0: the libraries' defaults). The library reads no environment:
            the CLI and the server pass ``Settings.threads`` (``TAKES_THREADS``).
        batch_queries: encode queries that arrive together in one model call
            (a server under concurrent load; indexer/query_batching.py).
        lock_timeout: seconds a write waits for another writer.
        notify: called with a line for a person when a slow step starts (a model load).
        searcher: an already loaded Searcher to serve from (tests, embedding).
        store: any ``indexer.storage.Store`` to serve instead of ``index_dir``'s
            embedded store (``Takes.open(store)`` says the same).
    """

    def __init__(
        self,
        index_dir: Path | str | None = None,
        *,
        model: str | None = None,
        backend: str | None = None,
        reranker=None,
        late_interaction: bool = True,
        threads: int = DEFAULT_THREADS,
        batch_queries: bool = False,
        lock_timeout: float = 30.0,
        notify: Callable[[str], None] | None = None,
        searcher: Searcher | None = None,
        store: Store | None = None,
        ann_threshold: int | None = None,
        store_token_vectors: bool = True,
    ):
        if isinstance(reranker, (str, Path)):
            from embeddings.reranker import CrossEncoderReranker

            reranker = CrossEncoderReranker(reranker)
        if store is None and searcher is not None:
            store = searcher.store
        if index_dir is None:
            if store is None:
                raise TypeError("Takes needs an index_dir or a store")
            index_dir = getattr(store, "index_dir", None) or store.location
        self.index_dir = Path(index_dir)
        self._store = store
        # Where the int8 ONNX model copy is kept: the embedded store's folder, else the user cache.
        store_dir = index_dir if store is None else getattr(store, "index_dir", None)
        self.model_cache_dir = Path(store_dir) if store_dir is not None else None
        self.model, self.requested_backend = model, backend
        self.reranker, self.late_interaction = reranker, late_interaction
        self.compute_threads, self.lock_timeout = threads, lock_timeout
        # None: the embedded store's default (indexer/ann.py DEFAULT_THRESHOLD).
        self._store_options = {} if ann_threshold is None else {"ann_threshold": ann_threshold}
        if not store_token_vectors:
            # Writers keep no token vectors: late interaction computes them at query time.
            self._store_options["store_token_vectors"] = False
        self._notify = notify or (lambda line: None)
        self._batch_queries = batch_queries
        self.query_batcher = None
        self._searcher: Searcher | None = None
        self._adopted_encoder = None
        self._load_lock = threading.Lock()
        self._write_lock = threading.Lock()
        if searcher is not None:
            self._adopt(searcher)

    # -- the two constructions the storage layer is reached through --------------

    @classmethod
    def open(cls, store: Store, **options) -> Takes:
        """Serve any ``indexer.storage.Store`` (the embedded one, PostgreSQL...)."""
        return cls(store=store, **options)

    @property
    def store(self) -> Store:
        """The corpus this serves: the one given, or the embedded store of ``index_dir`` (opened on first use)."""
        if self._store is None:
            from indexer.index import EmbeddedStore

            self._store = EmbeddedStore(self.index_dir, **self._store_options)
        return self._store

    def _open_searcher(self) -> Searcher:
        from indexer.serving import Searcher

        # The model stays as asked (None: follow the index's model across rebuilds); the backend is decided here.
        backend = self.model_choice().backend
        batcher = self._new_batcher()
        try:
            return Searcher(
                self.model_cache_dir,
                store=self.store,
                model=self.model,
                backend=backend,
                threads=self.compute_threads,
                reranker=self.reranker,
                late_interaction=self.late_interaction,
                query_encoder=batcher,
            )
        except BaseException:
            if batcher is not None:
                batcher.close()
                self.query_batcher = None
            raise

    def _not_found(self) -> IndexNotFound:
        """The IndexNotFound naming where this store looked (a folder, or a database URL without its password)."""
        not_found = getattr(self.store, "not_found", None)
        return not_found() if not_found is not None else IndexNotFound(self.index_dir)

    def _open_writer(self) -> IndexWriter:
        return self.store.writer(lock_timeout=self.lock_timeout)

    # -- loading ---------------------------------------------------------------

    def _new_batcher(self):
        if not self._batch_queries:
            return None
        from indexer.query_batching import QueryBatcher
        from indexer.openmp import limit_threads

        threads = self.compute_threads
        # Reads the served embedder at each batch, so a refresh's new model is used.
        self.query_batcher = QueryBatcher(
            lambda texts: self.searcher.embedder.encode(texts),
            on_start=lambda: limit_threads(threads),
            # Late interaction's query tokens come from the vector's own model run.
            encode_with_tokens=self._encode_with_tokens if self.late_interaction else None,
        )
        return self.query_batcher

    def _encode_with_tokens(self, texts):
        embedder = self.searcher.embedder
        if hasattr(embedder, "encode_with_token_vectors"):
            return embedder.encode_with_token_vectors(texts)
        return embedder.encode(texts), embedder.token_vectors(texts)

    def _adopt(self, searcher: Searcher) -> None:
        """Serve from a Searcher built elsewhere; batching (from ``load``) hands its own encoder back on ``stop_batching``."""
        self._searcher = searcher
        self.compute_threads = searcher.threads
        self._adopted_encoder = searcher.query_encoder

    def _start_batching(self) -> None:
        if self._batch_queries and self.query_batcher is None and self._searcher is not None:
            self._searcher.query_encoder = self._new_batcher()

    def stop_batching(self) -> None:
        """Stop the batching worker (a server shutting down); searches then encode in their own thread."""
        if self.query_batcher is None:
            return
        if self._searcher is not None and self._searcher.query_encoder is self.query_batcher:
            self._searcher.query_encoder = self._adopted_encoder
        self.query_batcher.close()
        self.query_batcher = None

    def load(self) -> Takes:
        """Load the model and the index now (a server does, so a missing index is one clear line at start)."""
        from indexer.openmp import limit_threads

        # Before FAISS and torch load: OMP_NUM_THREADS then holds in every thread.
        limit_threads(self.compute_threads)
        self.searcher  # noqa: B018 - loading is the point
        # A server started again after a stop batches again.
        self._start_batching()
        return self

    @property
    def searcher(self) -> Searcher:
        """The loaded index and model; loads them on first use (and retries after a failure)."""
        searcher = self._searcher
        if searcher is None:
            with self._load_lock:
                if self._searcher is None:
                    self._searcher = self._open_searcher()
                    log.info("loaded %d takes from %s", self._searcher.manifest.count, self.store.location)
                searcher = self._searcher
        return searcher

    @property
    def loaded(self) -> bool:
        return self._searcher is not None

    @property
    def count(self) -> int:
        """Takes in the generation served (or committed, before the index is loaded)."""
        if self._searcher is not None:
            return self._searcher.manifest.count
        manifest = self._manifest()
        return manifest.count if manifest else 0

    @property
    def generation(self) -> int | None:
        """The generation being served; None before the index is loaded."""
        return self._searcher.snapshot.generation if self._searcher is not None else None

    @property
    def backend(self) -> str:
        """The backend queries and writes embed with."""
        if self._searcher is not None:
            return self._searcher.backend
        return self.model_choice().backend

    def model_choice(self) -> ModelChoice:
        """The model and backend this index is searched and written with now (``choose_model``)."""
        return choose_model(self._manifest(), self.model, self.requested_backend)

    def exists(self) -> bool:
        """True when the directory holds an index (possibly empty)."""
        return self.store.exists()

    def _manifest(self) -> CorpusInfo | None:
        return self.store.committed_info()

    def _lookup(self) -> TakeLookup:
        """The served generation's takes, or the committed one's without loading vectors or the model."""
        if self._searcher is not None:
            return self._searcher.snapshot
        return self.store.lookup()

    # -- reading -----------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = DEFAULT_K,
        *,
        mode: str = DEFAULT_MODE,
        context: int = 0,
        author: str | None = None,
        handle: str | None = None,
        thread_id: str | None = None,
        since: str | date | None = None,
        until: str | date | None = None,
        min_score: float | None = None,
    ) -> list[SearchResult]:
        """The ``k`` takes that best answer ``query``, best first (filters apply before the cut).

        ``context``: up to this many neighbouring takes before and after each
        result. Each result's ``score`` is 0 to 1 on one scale and its
        ``match`` is ``strong`` or ``weak``; when no result is strong, nothing
        in the index answers the query well. Raises InvalidQuery (an empty
        query, k outside 1..100, a bad date...).
        """
        # Before the model loads: a bad query costs nothing.
        filters = self.check_query(
            query, k, author=author, handle=handle, thread_id=thread_id, since=since, until=until, min_score=min_score
        )
        return self.searcher.search(query, k, mode=mode, filters=filters, context=context)

    @staticmethod
    def check_query(query: str, k: int = DEFAULT_K, **filters):
        """The ``Filters`` of a search, or InvalidQuery naming the bad parameter; loads nothing."""
        from indexer.search import validate_query
        from indexer.storage import Filters

        validate_query(query, k)
        return Filters(**filters)

    def prompt_block(self, query: str, k: int = PROMPT_K, **filters) -> str:
        """``search`` rendered as a numbered, cited text block for a prompt."""
        return prompt_block(self.search(query, k, **filters), query.strip())

    def take(self, take_id: str) -> Take:
        """One take by id; raises TakeNotFound."""
        return self.searcher.get_take(take_id)

    def thread(self, thread_id: str) -> list[Take]:
        """Every take of a thread, in order; raises TakeNotFound."""
        return self.searcher.get_thread(thread_id)

    def authors(self) -> list[AuthorSummary]:
        """Every author with their counts, most takes first (no model load)."""
        return self._lookup().authors()

    def threads(self, *, author: str | None = None) -> list[ThreadSummary]:
        """Every thread (``author``: only theirs), newest first (no model load)."""
        from indexer.storage import Filters

        return self._lookup().threads(Filters(author=author))

    def stats(self) -> dict:
        """Counts, model and size of the generation served (GET /stats, `takes stats --json`)."""
        if self._searcher is not None:
            return self._searcher.stats()
        return self._lookup().stats()

    def common_texts(self, limit: int) -> list[str]:
        """Up to ``limit`` texts of the served generation, for word statistics (the search page)."""
        return self._lookup().texts(limit)

    # -- following new generations ---------------------------------------------------

    def refresh(self) -> bool:
        """Serve the newest generation on disk (written by this process or another); True when it swapped."""
        if self._searcher is None:
            return False  # nothing served yet: the first use loads the newest
        return self._searcher.refresh()

    def serve_committed(self, generation: int) -> str | None:
        """Serve ``generation`` (just committed) now; if that fails, why, without failing the write."""
        if self._searcher is None or self._searcher.snapshot.generation >= generation:
            return None
        try:
            self._searcher.refresh()
        except Exception as error:  # noqa: BLE001 - the write is committed whatever went wrong here
            log.warning("committed generation %d but could not serve it yet: %s", generation, error)
            return (
                f"committed as generation {generation}; the server will serve it at its next reload "
                f"(reloading failed: {type(error).__name__})"
            )
        return None

    def follow(self, interval: float) -> GenerationFollower:
        """Start a background thread that serves new generations every ``interval`` seconds."""
        return GenerationFollower(self, interval)

    # -- writing -------------------------------------------------------------------

    def _embedder_for(self, choice: ModelChoice):
        """The loaded embedder when it is the one asked for, else a factory that loads it only if some text needs embedding."""
        from embeddings import load_embedder
        from indexer.serving import same_model

        served = self._searcher
        if served is not None and served.backend == choice.backend and same_model(served.embedder.name, choice.model):
            return served.embedder

        def create() -> Embedder:
            if choice.backend == "onnx":
                from embeddings.onnx import needs_build

                if needs_build(choice.model, self.model_cache_dir):
                    self._notify(f"building the int8 ONNX model for {choice.model}: once per machine, about 15 s...")
            self._notify(f"loading model {choice.model} ({choice.backend})...")
            cache_dir = str(self.model_cache_dir) if self.model_cache_dir is not None else None
            return load_embedder(choice.model, choice.backend, cache_dir=cache_dir, threads=self.compute_threads)

        return create

    def _write(self, write, *, needs_index: bool = True):
        """Run ``write(writer)`` under the writer lock, then serve what it committed."""
        if needs_index and not self.exists():
            # Checked before the writer creates anything there.
            raise self._not_found()
        with self._write_lock, self._open_writer() as writer:
            report = write(writer)
        self.serve_committed(report.generation)
        return report

    def new_takes(self, sources: Source | Iterable[Source], format: str | None = None, *, include_private: bool = False) -> list[Take]:
        """The takes ``add`` would add (not yet indexed), found without writing anything: a dry run."""
        takes = read_sources(sources, format, include_private=include_private)
        without_lock = getattr(self.store, "new_takes", None)
        if without_lock is not None:
            # A dry run that need not wait for a writer (the embedded store reads a snapshot).
            return without_lock(takes)
        with self._write_lock, self._open_writer() as writer:
            return writer.new_takes(takes)

    def add(
        self,
        sources: Source | Iterable[Source],
        format: str | None = None,
        *,
        include_private: bool = False,
        progress: bool = False,
        source: str = "the takes",
    ) -> ChangeReport:
        """Add takes (objects, or files in any input format) and start serving them.

        Takes already indexed (same id, or the same text from the same author)
        are skipped and only new text is embedded. Every file parses before
        anything is written. Creates the index if there is none. ``source``
        names the takes in an error about a value the index cannot hold.
        """
        takes = read_sources(sources, format, include_private=include_private)

        def add(writer: IndexWriter) -> ChangeReport:
            # An existing index keeps its model (a different model is a ModelMismatch).
            choice = choose_model(writer.manifest, self.model, self.requested_backend)
            try:
                return writer.add(takes, self._embedder_for(choice), model=choice.model, backend=choice.backend, progress=progress)
            except OverflowError:
                # The parsers bound the known fields; this is the backstop for a
                # Take made in code or a JSON body, so it is bad input, not a crash.
                raise ParseError(source, None, "a number is out of range for the index (at most 2^63-1)") from None
            except UnicodeEncodeError:
                raise ParseError(source, None, "a string holds a lone UTF-16 surrogate, which is not text") from None

        return self._write(add, needs_index=False)

    def index(
        self, sources: Source | Iterable[Source], format: str | None = None, *, replace: bool = False, progress: bool = False
    ) -> ChangeReport:
        """Build the index from ``sources`` with the asked (or default) model.

        Refuses an index that already holds takes unless ``replace``; the old
        index keeps serving until the new one commits.
        """
        takes = read_sources(sources, format)

        def build(writer: IndexWriter) -> ChangeReport:
            if writer.manifest is not None and writer.manifest.count and not replace:
                raise TakesError(
                    f"the index in {self.store.location} holds {writer.manifest.count} takes; "
                    f"`takes add` adds to it, `takes index --replace` replaces it"
                )
            choice = choose_model(None, self.model, self.requested_backend)
            return writer.replace_all(takes, self._embedder_for(choice), model=choice.model, backend=choice.backend, progress=progress)

        return self._write(build, needs_index=False)

    def remove(self, ids: Sequence[str] = (), *, thread_id: str | None = None) -> ChangeReport:
        """Remove takes by id, or a whole thread; an unknown id removes nothing and raises TakeNotFound."""
        return self._write(lambda writer: writer.remove(list(ids), thread_id=thread_id))

    def rebuild(self, *, progress: bool = False) -> ChangeReport:
        """Re-embed every take into a fresh generation (with another ``model``: switch models)."""

        def rebuild(writer: IndexWriter) -> ChangeReport:
            if writer.manifest is None:
                raise self._not_found()
            choice = choose_model(writer.manifest, self.model, self.requested_backend)
            return writer.rebuild(self._embedder_for(choice), model=choice.model, backend=choice.backend, progress=progress)

        return self._write(rebuild)

    def compact(self) -> CompactReport:
        """Purge removed takes, merge the vector segments, VACUUM: a new generation with the same takes."""
        return self._write(lambda writer: writer.compact())

    # -- maintenance of the embedded store (files on this machine) ------------------

    def check(self):
        """(problems, notes): every file of the index verified."""
        from indexer.index.check import check_index

        self._embedded_only("takes check")
        return check_index(self.index_dir)

    def repair(self):
        """(what was done, problems left): rebuild what ``check`` finds damaged from what is intact."""
        from indexer.index.check import repair_index

        self._embedded_only("takes repair")
        return repair_index(
            self.index_dir, lambda model, backend: self._embedder_for(ModelChoice(model, backend)), lock_timeout=self.lock_timeout
        )

    def _embedded_only(self, what: str) -> None:
        if self.model_cache_dir is None:
            raise TakesError(
                f"{what} checks an index folder's files; {self.store.location} is a database, whose server checks "
                f"its own data (amcheck, pg_checksums)"
            )

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        self.stop_batching()
        if self._searcher is not None:
            self._searcher.close()

    def __enter__(self) -> Takes:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
