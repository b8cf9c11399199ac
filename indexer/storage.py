"""The interfaces between ranking and storage: what every store implements.

Ranking (``indexer/search.py``) and the front door (``indexer/api.py``) talk
to a corpus only through these. Two stores implement them:

- the embedded store (``indexer/index/``): SQLite + FTS5 for takes and text,
  FAISS over vector segment files, one directory on one machine;
- the shared store (``indexer/postgres/``): PostgreSQL with pgvector, for
  several servers and writers on one corpus.

A store is a corpus across *generations*: every committed write makes a new
generation number. A reader loads one generation (``Store.load``) and answers
from it until it loads the next; a writer (``Store.writer``) makes the next.
Row ids are the store's own int64 keys for takes: stable within a generation,
meaningless outside the store that issued them.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Protocol, Sequence

from indexer.errors import InvalidQuery

if TYPE_CHECKING:
    import numpy as np

    from embeddings import Embedder
    from indexer.models import AuthorSummary, Take, ThreadSummary


# Characters that separate the words of a name ("Clark, Jack", "Jack Clark (Anthropic)").
NAME_SEPARATORS = ",.;:()[]/|"


def name_words_sql(column: str) -> str:
    """SQL (the same in SQLite and PostgreSQL) for ``column`` lower-cased, its name separators made spaces."""
    name = f"lower({column})"
    for separator in NAME_SEPARATORS:
        name = f"replace({name}, '{separator}', ' ')"
    return name


# -- which query words retrieve lexical candidates ---------------------------------

# Lucene's common-terms rule (CommonTermsQuery, "cutoff_frequency"): a query
# word held by more than this share of the takes does not retrieve lexical
# candidates when the query has a rarer word; it still adds its BM25 term to
# the score of every take retrieved and its idf to the query's idf mass, so a
# retrieved take's score is what it was. Retrieving by it cost a score for
# every take holding it (thousands at 100k takes) to find a top 50 that the
# rarer words decide. Chosen by measurement on 100k generated takes
# (docs/PERFORMANCE.md, "PostgreSQL store beside the embedded one"): at 5%
# the lexical top 10 keeps 96% of its takes and the embedded p50 falls about
# 3x; at 10% it keeps 99% but few queries have a word that common; at 1-2%
# most queries are of common words only and their conjunction is often too
# small. A word in 5% of the takes has an idf of 2.9, against 7 to 11 for
# the rare ones.
COMMON_TERM_SHARE = 0.05
# Below this many takes every query word retrieves, as before the rule: the
# cost is small there, and the seed corpus's ranking and dev eval stay exactly
# what they were.
COMMON_TERMS_MIN_TAKES = 20_000


@dataclass(frozen=True)
class LexicalRetrieval:
    """Which takes a lexical search scores: those holding any of ``terms``, or (``every``) all of them."""

    terms: tuple[str, ...]
    every: bool = False


def lexical_retrieval(terms: Sequence[str], document_counts: Sequence[int], total: int) -> LexicalRetrieval:
    """The takes a lexical search for ``terms`` scores, from how many of the ``total`` takes hold each term.

    A word is common when more than ``COMMON_TERM_SHARE`` of the takes hold
    it, and only in a corpus of at least ``COMMON_TERMS_MIN_TAKES``. A query
    with a rarer word retrieves by its rare words only; a query of two or more
    common words only retrieves the takes holding every one of them (Lucene's
    rule for that case too), and a store falls back to any of them when fewer
    than the depth asked hold them all. Either way every term scores.
    """
    terms = tuple(terms)
    if total < COMMON_TERMS_MIN_TAKES or not terms:
        return LexicalRetrieval(terms)
    limit = COMMON_TERM_SHARE * total
    rare = tuple(term for term, count in zip(terms, document_counts) if count <= limit)
    if rare:
        return LexicalRetrieval(rare)
    return LexicalRetrieval(terms, every=len(set(terms)) > 1)


@dataclass(frozen=True)
class Filters:
    """Restrictions applied before the top k is cut.

    ``author`` matches the author's name (all of it, or any of its words) or
    the handle with or without '@', ignoring case; ``since``/``until`` are
    inclusive ISO dates; ``min_score`` drops results scoring below it (ranking
    applies it; stores ignore it).
    """

    author: str | None = None
    handle: str | None = None
    thread_id: str | None = None
    since: str | date | None = None
    until: str | date | None = None
    min_score: float | None = None

    def __post_init__(self):
        for name in ("since", "until"):
            value = getattr(self, name)
            if isinstance(value, date):
                # Callers may pass dates; stores compare ISO text.
                value = value.isoformat()
                object.__setattr__(self, name, value)
            if value is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise InvalidQuery(f"{name} must be an ISO date like 2023-06-25, got {value!r}")
        if self.since and self.until and self.since > self.until:
            raise InvalidQuery(f"since ({self.since}) is after until ({self.until})")

    def author_match(self) -> tuple[str, str]:
        """(LIKE pattern for the author's words, handle) that ``author`` matches, for every store's SQL.

        The pattern is matched against ``' ' || name_words_sql(author) || ' '``
        with ``ESCAPE '\\'``; the handle against ``lower(handle)``.
        """
        wanted = " ".join(self.author.split()).lower()
        # LIKE treats % and _ as wildcards: escape them so a name is matched literally.
        words = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return f"% {words} %", "@" + wanted.lstrip("@")

    def handle_match(self) -> str:
        """The lower-cased handle, with its '@', that ``handle`` matches against ``lower(handle)``."""
        return "@" + self.handle.strip().lstrip("@").lower()

    def restricts_rows(self) -> bool:
        return any(getattr(self, name) for name in ("author", "handle", "thread_id", "since", "until"))


@dataclass
class ChangeReport:
    """What a write did, for the CLI and API to report."""

    added: int = 0
    skipped: int = 0
    removed: int = 0
    embedded: int = 0
    threads: int = 0
    generation: int = 0
    added_ids: list[str] = field(default_factory=list)


@dataclass
class CompactReport:
    """What `takes compact` reclaimed."""

    bytes_before: int
    bytes_after: int
    purged: int
    segments_before: int
    segments_after: int
    generation: int
    # Why the store could not reclaim space in place, if it could not.
    not_vacuumed: str | None = None


class CorpusInfo(Protocol):
    """What one generation is: its number, size and the model that embedded it."""

    generation: int
    count: int
    model: str
    dim: int
    # The embedding backend that made the vectors; queries use it too by default.
    backend: str
    # How vectors are searched: "flat", an approximate FAISS kind, or "pgvector-hnsw".
    index_type: str

    def check_model(self, model: str | None, dim: int | None = None) -> None:
        """Raise ModelMismatch unless ``model`` (and ``dim``) is what embedded this corpus."""


class TakeLookup(Protocol):
    """Takes, their text and their threads, as of one generation."""

    info: CorpusInfo

    def takes(self, row_ids: Sequence[int]) -> dict[int, Take]:
        """The takes with these row ids (ids not in the generation are left out)."""

    def token_vectors(self, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored token vectors, float32 (tokens, dim), of these takes: one round trip for all.

        Takes stored without them (written before they were kept, or with
        storing turned off) and values failing their checksum are left out:
        ranking computes those with the model.
        """

    def take(self, take_id: str) -> Take:
        """One take by its id; raises TakeNotFound."""

    def thread(self, thread_id: str) -> list[Take]:
        """Every take of a thread in position order; raises TakeNotFound."""

    def neighbours(self, take: Take, size: int) -> tuple[tuple[Take, ...], tuple[Take, ...]]:
        """Up to ``size`` takes before and after ``take`` in its thread, in thread order."""

    def lexical(self, terms: Sequence[str], depth: int, filters: Filters) -> list[tuple[int, float]]:
        """The top ``depth`` takes holding any of ``terms``, as (row id, BM25 score), best first.

        ``terms`` are already case-folded content words (``indexer.search.query_terms``);
        each is matched as a plain word, never as query syntax. The score is
        BM25 (k1 1.2, b 0.75) or as close to it as the store computes: ranking
        divides it by the query's idf mass (``document_counts``). Only the
        takes ``lexical_retrieval(terms, ...)`` names are candidates;
        each is scored by every term.
        """

    def document_counts(self, terms: Sequence[str]) -> list[int]:
        """How many takes of the generation hold each term."""

    def authors(self) -> list[AuthorSummary]:
        """Every author with their take and thread counts, most takes first."""

    def threads(self, filters: Filters) -> list[ThreadSummary]:
        """Every thread with a take passing ``filters``, newest first."""

    def texts(self, limit: int) -> list[str]:
        """Up to ``limit`` texts of the generation, any of them (word statistics for the search page)."""

    def stats(self) -> dict:
        """The object of GET /stats: takes, threads, model, dim, index_type, generation, backend, sizes."""


class VectorSearch(Protocol):
    """Nearest-neighbour search over one generation's unit-length vectors (inner product = cosine)."""

    def nearest(self, vector: np.ndarray, depth: int, filters: Filters) -> list[tuple[int, float]]:
        """The ``depth`` takes passing ``filters`` nearest ``vector``, as (row id, inner product), best first.

        A selective filter still returns ``depth`` takes when that many pass it.
        """

    def inner_products(self, vector: np.ndarray, row_ids: Sequence[int]) -> dict[int, float]:
        """``vector``'s inner product with the stored vectors of these takes."""

    def mean_direction(self) -> np.ndarray:
        """The unit mean of the generation's vectors (zeros when it is empty)."""


class Generation(TakeLookup, VectorSearch, Protocol):
    """One generation of a corpus, loaded for reading; never changes after loading.

    Safe to share between threads (each store keeps a connection per thread).
    """


class Writer(AbstractContextManager, Protocol):
    """The single writer of a corpus while open (other writers wait or get IndexLocked).

    Every method commits one generation or nothing: a failure or a crash
    leaves the previous generation intact and served.
    """

    info: CorpusInfo | None  # None before the first write

    def add(self, takes: Sequence[Take], embedder, *, model: str, backend: str | None = None, progress: bool = False) -> ChangeReport:
        """Add the takes not already stored (same id, or same text from the same author)."""

    def replace_all(self, takes: Sequence[Take], embedder, *, model: str, backend: str | None = None, progress: bool = False) -> ChangeReport:
        """Make the corpus hold exactly ``takes`` (deduplicated), embedded by ``model``."""

    def rebuild(self, embedder, *, model: str, backend: str | None = None, progress: bool = False) -> ChangeReport:
        """Re-embed every take (with a new model, say)."""

    def remove(self, ids: Sequence[str] = (), thread_id: str | None = None) -> ChangeReport:
        """Remove takes by id or a whole thread; an unknown id raises TakeNotFound and removes nothing."""

    def compact(self) -> CompactReport:
        """Reclaim the space of removed takes and superseded generations."""

    def new_takes(self, takes: Sequence[Take]) -> list[Take]:
        """Which of ``takes`` an add would store (a dry run: nothing is written)."""

    def close(self) -> None: ...


class Store(Protocol):
    """A corpus across generations."""

    # Where the corpus lives, for messages: a directory, or a database URL without its password.
    location: str

    def exists(self) -> bool:
        """True once a first generation has been committed."""

    def current_generation(self) -> int:
        """The generation committed now (cheap: a reader polls it); 0 when empty."""

    def committed_info(self) -> CorpusInfo | None:
        """What the committed generation is (model, count...), without loading it; None when empty."""

    def lookup(self) -> TakeLookup:
        """The committed generation's takes without loading its vectors (listing, stats: no model needed).

        Raises IndexNotFound when there is none.
        """

    def load(self, previous: Generation | None = None) -> Generation:
        """The current generation, for reading; raises IndexNotFound when there is none.

        With ``previous`` (the generation being served) a store may build the
        new one from it, so the cost follows the size of the change.
        """

    def writer(self, *, lock_timeout: float = 30.0) -> Writer:
        """Open the corpus for writing (waits up to ``lock_timeout`` s for another writer)."""

    def close(self) -> None: ...

