"""Records shared by every layer: the same field names in the CLI, HTTP and MCP."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# The public fields of a take, in the order they are shown and serialized.
TAKE_FIELDS = (
    "id",
    "text",
    "author",
    "handle",
    "date",
    "thread_id",
    "position",
    "thread_size",
    "url",
    "source",
)


@dataclass(frozen=True, slots=True)
class Take:
    """One short post, placed in its thread.

    ``id`` and ``thread_id`` are URL-safe and stable across rebuilds of the
    same input; ``date`` is ISO (``YYYY-MM-DD`` or a full timestamp);
    ``position`` is 1-based; ``thread_size`` is the count the source declares.
    """

    id: str
    text: str
    author: str | None
    handle: str | None
    date: str | None
    thread_id: str
    position: int
    thread_size: int | None
    url: str | None
    source: str

    def to_dict(self) -> dict:
        # Spelled out, not dataclasses.asdict: asdict deep-copies every field, a
        # measurable share of a search response of ten takes with neighbours.
        return {
            "id": self.id,
            "text": self.text,
            "author": self.author,
            "handle": self.handle,
            "date": self.date,
            "thread_id": self.thread_id,
            "position": self.position,
            "thread_size": self.thread_size,
            "url": self.url,
            "source": self.source,
        }


def author_label(author: str | None, handle: str | None) -> str:
    """``Jack Clark (@jackclarkSF)``, or whichever of the two is known; empty when neither is."""
    if author and handle:
        return f"{author} ({handle})"
    return author or handle or ""


def citation(take: Take) -> str:
    """How to cite a take in a prompt or an answer.

    ``Jack Clark (@jackclarkSF), 2022-08-06, thread jackclarkSF-2022-08-06 take 46/81``,
    with the post's URL appended when known. The thread is named by its id:
    a date names no thread when one author posts two threads on one day, and
    the id is what ``get_thread`` and ``GET /threads/{thread_id}`` take.
    """
    who = author_label(take.author, take.handle)
    day = (take.date or "")[:10] or None
    size = f"/{take.thread_size}" if take.thread_size else ""
    parts = [who or "unknown author"]
    if day:
        parts.append(day)
    parts.append(f"thread {take.thread_id} take {take.position}{size}")
    if take.url:
        parts.append(take.url)
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A take with its relevance score: 0 to 1, the same scale in every mode (indexer/ranking.py).

    ``match`` is ``strong`` from ``ranking.STRONG`` (0.5) up, else ``weak``.

    ``context`` holds the takes just before and after it in its thread, when
    the search asked for them.
    """

    take: Take
    score: float
    context: tuple[tuple[Take, ...], tuple[Take, ...]] | None = None

    @property
    def match(self) -> str:
        from indexer.ranking import match_label

        return match_label(self.score)

    def to_dict(self) -> dict:
        data = {**self.take.to_dict(), "score": round(self.score, 6), "match": self.match}
        if self.context is not None:
            before, after = self.context
            data["context"] = {"before": [t.to_dict() for t in before], "after": [t.to_dict() for t in after]}
        return data


@dataclass(frozen=True, slots=True)
class ThreadGroup:
    """The matching takes of one thread, in thread order; ``score`` is the best of them."""

    thread_id: str
    score: float
    results: tuple[SearchResult, ...]

    def to_dict(self) -> dict:
        return {"thread_id": self.thread_id, "score": round(self.score, 6), "takes": [r.to_dict() for r in self.results]}


def strong_matches(results) -> int:
    """How many of ``results`` are strong matches: 0 says nothing in the index answers well."""
    return sum(1 for result in results if result.match == "strong")


def group_by_thread(results: list[SearchResult]) -> list[ThreadGroup]:
    """One group per thread, ordered by each thread's best result.

    Context windows that overlap are merged: read in order, a group shows
    each take of its thread once (a neighbour shared by two results, or a
    neighbour that is itself a result, is not repeated).
    """
    groups: dict[str, list[SearchResult]] = {}
    for result in results:
        groups.setdefault(result.take.thread_id, []).append(result)
    return [
        ThreadGroup(thread_id, max(r.score for r in members), _merge_context(sorted(members, key=lambda r: r.take.position)))
        for thread_id, members in groups.items()
    ]


def _merge_context(ordered: list[SearchResult]) -> tuple[SearchResult, ...]:
    """``ordered`` (one thread, by position) with each neighbour kept in the first window that shows it."""
    matched = {result.take.id for result in ordered}
    shown: set[str] = set()
    merged = []
    for result in ordered:
        if result.context is None:
            merged.append(result)
            continue

        def fresh(takes: tuple[Take, ...]) -> tuple[Take, ...]:
            kept = tuple(take for take in takes if take.id not in shown and take.id not in matched)
            shown.update(take.id for take in kept)
            return kept

        before = fresh(result.context[0])
        after = fresh(result.context[1])
        # replace(): whatever else a result carries is kept.
        merged.append(replace(result, context=(before, after)))
    return tuple(merged)


@dataclass(frozen=True, slots=True)
class AuthorSummary:
    """One author of the index: ``takes`` and ``threads`` count what is indexed."""

    author: str | None
    handle: str | None
    takes: int
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """One thread of the index: who, when, how many takes, and how it starts.

    ``takes`` counts the takes indexed; ``thread_size`` is the count the
    source declares (None when it declares none).
    """

    thread_id: str
    author: str | None
    handle: str | None
    date: str | None
    takes: int
    thread_size: int | None
    first_words: str

    def to_dict(self) -> dict:
        return asdict(self)


def first_words(text: str, count: int = 12) -> str:
    """The first ``count`` words of ``text``, with an ellipsis when there are more."""
    words = text.split()
    return " ".join(words[:count]) + (" ..." if len(words) > count else "")
