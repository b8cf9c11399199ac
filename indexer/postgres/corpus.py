"""What every side of the shared store shares: the corpus row and the SQL pieces (visibility, filters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from indexer.errors import ModelMismatch
from indexer.models import TAKE_FIELDS, Take
from indexer.storage import Filters, name_words_sql

INDEX_TYPE = "pgvector-hnsw"
NOTIFY_CHANNEL = "takes_generation"

COLUMNS = ", ".join(TAKE_FIELDS)


# -- the corpus row -------------------------------------------------------------


@dataclass(frozen=True)
class CorpusRow:
    """One generation's corpus row: what ``CorpusInfo`` is for this store."""

    generation: int
    count: int
    model: str
    dim: int
    backend: str
    total_length: int = 0
    index_type: str = INDEX_TYPE

    def check_model(self, model: str | None, dim: int | None = None) -> None:
        """Raise ModelMismatch unless ``model`` (and ``dim``) is what embedded this corpus."""
        from indexer.index.layout import normalize_model_name

        if model is not None and normalize_model_name(model) != self.model:
            raise ModelMismatch(self.model, self.dim, model, dim)
        if dim is not None and dim != self.dim:
            raise ModelMismatch(self.model, self.dim, model or self.model, dim)

    @property
    def average_length(self) -> float:
        return self.total_length / self.count if self.count else 1.0


def read_corpus(connection) -> CorpusRow | None:
    row = connection.execute(
        "SELECT generation, count, model, dim, backend, total_length FROM takes_corpus"
    ).fetchone()
    return CorpusRow(*row) if row else None


# -- SQL pieces -----------------------------------------------------------------

def visible(generation: int) -> tuple[str, list]:
    """SQL condition for rows of ``generation`` (added by it, not removed by it)."""
    return (
        "takes.added_generation <= %s AND (takes.removed_generation IS NULL OR takes.removed_generation > %s)",
        [generation, generation],
    )


def filter_sql(filters: Filters) -> tuple[str, list]:
    """SQL condition (and parameters) for the takes passing ``filters``: the embedded store's rules.

    ``author`` matches the whole name, any word of it (after the separators
    in names become spaces) or the handle with or without '@', ignoring case.
    """
    clauses, params = ["true"], []
    if filters.author:
        pattern, handle = filters.author_match()
        name = name_words_sql("takes.author")
        clauses.append(f"((' ' || {name} || ' ') LIKE %s ESCAPE '\\' OR lower(takes.handle) = %s)")
        params += [pattern, handle]
    if filters.handle:
        clauses.append("lower(takes.handle) = %s")
        params.append(filters.handle_match())
    if filters.thread_id:
        clauses.append("takes.thread_id = %s")
        params.append(filters.thread_id)
    # Dates compare as text: ISO dates (and timestamps) sort chronologically.
    if filters.since:
        clauses.append("substr(takes.date, 1, 10) >= %s")
        params.append(filters.since)
    if filters.until:
        clauses.append("substr(takes.date, 1, 10) <= %s")
        params.append(filters.until)
    return " AND ".join(clauses), params


def take_from_row(row: Sequence) -> Take:
    return Take(*row)


def existing_values(connection, column: str, values: Sequence[str]) -> set[str]:
    """Which of ``values`` a live take already has in ``column`` (``id`` or ``text_key``)."""
    unique = list(dict.fromkeys(values))
    if not unique:
        return set()
    rows = connection.execute(
        f"SELECT {column} FROM takes WHERE removed_generation IS NULL AND {column} = ANY(%s)", (unique,)
    )
    return {row[0] for row in rows}
