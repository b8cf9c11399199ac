"""The Python API for embedding takes in a program or a chatbot.

    from indexer.client import Takes

    with Takes("data/index") as takes:
        for result in takes.search("what about compute governance", k=5, since="2023-01-01"):
            print(citation(result.take), result.take.text)

Importing this module is cheap (no model, no FAISS); ``Takes(...)`` loads the
model and the index once, and one instance serves any number of threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.models import SearchResult, Take, citation

if TYPE_CHECKING:
    from indexer.search import Searcher
    from indexer.store import ChangeReport

__all__ = ["Takes", "cited", "format_context"]


def cited(item: SearchResult | Take) -> dict:
    """The API's fields of a result (or take) plus its ``citation``: what tools hand to a model."""
    take = item.take if isinstance(item, SearchResult) else item
    return {**item.to_dict(), "citation": citation(take)}


def format_context(results: Sequence[SearchResult | Take], query: str | None = None, *, title: str | None = None) -> str:
    """A numbered, cited plain-text block of takes, ready to paste into a prompt."""
    lines = [title or (f"Takes retrieved for: {query}" if query else "Takes:"), ""]
    if not results:
        lines.append("No takes match.")
    elif all(isinstance(item, SearchResult) and item.match == "weak" for item in results):
        # Said first, so a model reading the block does not take the closest for an answer.
        lines += ["No strong matches; the closest takes are:", ""]
    for number, item in enumerate(results, start=1):
        take = item.take if isinstance(item, SearchResult) else item
        weak = " (weak match)" if isinstance(item, SearchResult) and item.match == "weak" else ""
        lines.append(f"[{number}] {citation(take)}{weak}")
        lines.extend(f"    {line}" for line in take.text.splitlines() or [""])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


class Takes:
    """Search, read and extend one index; loads the model and the index once.

    Safe to share between threads: searches run concurrently (each thread gets
    its own read-only SQLite connection) and ``add`` serializes writers.

    Args:
        index_dir: the index directory (``takes index`` builds one).
        model: the model to search with; default: the one that built the index.
        backend: ``torch`` or ``onnx``.
        reranker: a local cross-encoder folder that re-scores the top takes
            (slower; off by default), or an object with ``score(query, texts)``.
        late_interaction: re-score the top takes by token-level similarity
            with the same model (better on paraphrases; off by default).
    """

    def __init__(
        self,
        index_dir: Path | str,
        *,
        model: str | None = None,
        backend: str | None = None,
        reranker=None,
        late_interaction: bool = False,
        searcher: Searcher | None = None,
    ):
        from indexer.search import Searcher

        if isinstance(reranker, (str, Path)):
            from embeddings.reranker import CrossEncoderReranker

            reranker = CrossEncoderReranker(reranker)
        self.index_dir = Path(index_dir)
        self._searcher = searcher or Searcher(
            self.index_dir, model=model, backend=backend, reranker=reranker, late_interaction=late_interaction
        )
        self.backend = self._searcher.backend
        self._write_lock = threading.Lock()

    @property
    def searcher(self) -> Searcher:
        return self._searcher

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = "hybrid",
        context: int = 0,
        author: str | None = None,
        handle: str | None = None,
        thread_id: str | None = None,
        since: str | date | None = None,
        until: str | date | None = None,
        min_score: float | None = None,
    ) -> list[SearchResult]:
        """The ``k`` takes that best answer ``query``, best first (filters apply before the cut).

        Each result's ``score`` is 0 to 1 on one scale and its ``match`` is
        ``strong`` or ``weak``; when no result is strong, nothing in the index
        answers the query well (``indexer.models.strong_matches`` counts them).
        Raises InvalidQuery (an empty query, k outside 1..100, a bad date...).
        """
        from indexer.search import Filters

        filters = Filters(
            author=author, handle=handle, thread_id=thread_id, since=since, until=until, min_score=min_score
        )
        return self._searcher.search(query, k, mode=mode, filters=filters, context=context)

    def context(self, query: str, k: int = 8, **filters) -> str:
        """``search`` rendered as a numbered, cited text block for a prompt."""
        return format_context(self.search(query, k, **filters), query)

    def get_take(self, take_id: str) -> Take:
        """One take by id; raises TakeNotFound."""
        return self._searcher.get_take(take_id)

    def get_thread(self, thread_id: str) -> list[Take]:
        """Every take of a thread, in order; raises TakeNotFound."""
        return self._searcher.get_thread(thread_id)

    def stats(self) -> dict:
        return self._searcher.stats()

    def add(self, paths_or_takes: Path | str | Take | Iterable[Path | str | Take], format: str | None = None) -> ChangeReport:
        """Add takes (objects, or files in any input format) and start serving them.

        Uses the model already loaded; takes already indexed are skipped. Every
        file parses before anything is written.
        """
        from indexer.sources import read_takes
        from indexer.store import IndexWriter

        items = [paths_or_takes] if isinstance(paths_or_takes, (str, Path, Take)) else list(paths_or_takes)
        takes: list[Take] = []
        for item in items:
            takes.extend([item] if isinstance(item, Take) else read_takes(item, format))
        with self._write_lock, IndexWriter(self.index_dir) as writer:
            model = writer.manifest.model if writer.manifest else self._searcher.manifest.model
            report = writer.add(takes, self._searcher.embedder, model=model, backend=self.backend)
        self.refresh()
        return report

    def refresh(self) -> bool:
        """Serve the newest generation on disk (written by ``add`` or another process)."""
        return self._searcher.refresh()

    def close(self) -> None:
        self._searcher.close()

    def __enter__(self) -> Takes:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
