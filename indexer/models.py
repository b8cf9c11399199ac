"""Records shared by every layer: the same field names in the CLI, HTTP and MCP."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A take with its relevance score (higher is better)."""

    take: Take
    score: float

    def to_dict(self) -> dict:
        return {**self.take.to_dict(), "score": self.score}
