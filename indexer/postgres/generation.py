"""The read side of the shared store: one generation's takes, BM25 over its text, its nearest vectors."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Sequence

import numpy as np

from indexer.errors import ModelMismatch, TakeNotFound
from indexer.models import AuthorSummary, Take, ThreadSummary, first_words
from indexer.postgres.corpus import COLUMNS, CorpusRow, filter_sql, take_from_row, visible
from indexer.storage import Filters, lexical_retrieval

if TYPE_CHECKING:
    from indexer.postgres.store import PostgresStore

# BM25 as FTS5 computes it (indexer/ranking.py divides by the idf mass).
BM25_K1 = 1.2
BM25_B = 0.75

# A filter passed by at most this many takes is answered by an exact scan of
# them (cheaper and exact); a broader one by the HNSW index with iterative
# scan, which keeps walking the graph until enough takes pass the filter.
EXACT_SCAN_LIMIT = 2000
# Candidates HNSW keeps while walking (pgvector's ef_search): at least twice
# what is asked, so recall at the fusion depth stays near exact.
MIN_EF_SEARCH = 100


class PostgresGeneration:
    """One generation of the corpus for reading (``Generation``); every query names its number."""

    def __init__(self, store: PostgresStore, info: CorpusRow, previous: PostgresGeneration | None = None):
        self.store = store
        self.info = info
        self._document_counts: dict[str, int] = {}
        self._lexemes: dict[str, tuple[str, ...]] = {}
        self._mean: np.ndarray | None = None
        # (float64 sum, count) of the vectors the mean is of; ``previous``
        # lends its own so that this one adds and subtracts only what changed.
        self._vector_sum: tuple[np.ndarray, int] | None = None
        # Kept only while it has a sum to lend (then it holds no previous of its own).
        self._previous = previous if previous is not None and previous._vector_sum is not None else None
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self.info.generation

    @property
    def manifest(self) -> CorpusRow:
        return self.info

    def _visible(self) -> tuple[str, list]:
        return visible(self.info.generation)

    # -- TakeLookup ---------------------------------------------------------------

    def takes(self, row_ids: Sequence[int]) -> dict[int, Take]:
        if not row_ids:
            return {}
        clause, params = self._visible()
        with self.store.reading() as connection:
            rows = connection.execute(
                f"SELECT row_id, {COLUMNS} FROM takes WHERE row_id = ANY(%s) AND {clause}",
                [list(map(int, row_ids)), *params],
            ).fetchall()
        return {row[0]: take_from_row(row[1:]) for row in rows}

    def take(self, take_id: str) -> Take:
        clause, params = self._visible()
        with self.store.reading() as connection:
            row = connection.execute(f"SELECT {COLUMNS} FROM takes WHERE id = %s AND {clause}", [take_id, *params]).fetchone()
        if row is None:
            raise TakeNotFound(f"no take with id {take_id!r}")
        return take_from_row(row)

    def thread(self, thread_id: str) -> list[Take]:
        clause, params = self._visible()
        with self.store.reading() as connection:
            rows = connection.execute(
                f"SELECT {COLUMNS} FROM takes WHERE thread_id = %s AND {clause} ORDER BY position, row_id",
                [thread_id, *params],
            ).fetchall()
        if not rows:
            raise TakeNotFound(f"no thread with id {thread_id!r}")
        return [take_from_row(row) for row in rows]

    def neighbours(self, take: Take, size: int) -> tuple[tuple[Take, ...], tuple[Take, ...]]:
        if size <= 0:
            return (), ()
        clause, params = self._visible()
        with self.store.reading() as connection:
            before = connection.execute(
                f"SELECT {COLUMNS} FROM takes WHERE thread_id = %s AND position < %s AND {clause} "
                f"ORDER BY position DESC LIMIT %s",
                [take.thread_id, take.position, *params, size],
            ).fetchall()
            after = connection.execute(
                f"SELECT {COLUMNS} FROM takes WHERE thread_id = %s AND position > %s AND {clause} "
                f"ORDER BY position LIMIT %s",
                [take.thread_id, take.position, *params, size],
            ).fetchall()
        return tuple(take_from_row(row) for row in reversed(before)), tuple(take_from_row(row) for row in after)

    def _term_lexemes(self, connection, terms: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Each term's lexemes, as the text search indexes words (usually one: its stem)."""
        missing = [term for term in dict.fromkeys(terms) if term not in self._lexemes]
        if missing:
            rows = connection.execute(
                "SELECT term, array(SELECT lexeme FROM unnest(takes_document(term)) ORDER BY lexeme) "
                "FROM unnest(%s::text[]) AS term",
                [missing],
            ).fetchall()
            with self._lock:
                for term, lexemes in rows:
                    self._lexemes[term] = tuple(lexemes)
        return {term: self._lexemes[term] for term in terms}

    def _posting_visible(self) -> tuple[str, list]:
        """SQL condition for postings of takes in this generation (postings are never changed)."""
        generation = self.info.generation
        return (
            "p.added_generation <= %s AND NOT EXISTS (SELECT 1 FROM takes r WHERE r.row_id = p.row_id "
            "AND r.removed_generation IS NOT NULL AND r.removed_generation <= %s)",
            [generation, generation],
        )

    def _counts(self, connection, lexemes: Sequence[str]) -> dict[str, int]:
        """How many takes of the generation hold each lexeme (from the postings, for the missing ones)."""
        missing = [lexeme for lexeme in dict.fromkeys(lexemes) if lexeme not in self._document_counts]
        if missing:
            clause, params = self._posting_visible()
            found = dict(
                connection.execute(
                    f"SELECT p.lexeme, count(*) FROM takes_postings p WHERE p.lexeme = ANY(%s) AND {clause} GROUP BY p.lexeme",
                    [missing, *params],
                ).fetchall()
            )
            with self._lock:
                if len(self._document_counts) > 10_000:
                    self._document_counts.clear()
                self._document_counts.update({lexeme: found.get(lexeme, 0) for lexeme in missing})
        return {lexeme: self._document_counts[lexeme] for lexeme in lexemes}

    def document_counts(self, terms: Sequence[str]) -> list[int]:
        if not terms:
            return []
        with self.store.reading() as connection:
            lexemes = self._term_lexemes(connection, terms)
            counts = self._counts(connection, [lexeme for values in lexemes.values() for lexeme in values])
        # A term the text search splits ("gpt_4") counts as its rarest part.
        return [min((counts[lexeme] for lexeme in lexemes[term]), default=0) for term in terms]

    def lexical(self, terms: Sequence[str], depth: int, filters: Filters) -> list[tuple[int, float]]:
        """BM25 computed in SQL from term frequencies and document lengths, as FTS5's bm25() does.

        (ts_rank is not BM25: it has no idf and a different length norm, and
        the calibrated scores of indexer/ranking.py assume BM25.) The postings
        give each matching take's counts; with filters, only the takes passing
        them are scored.
        """
        if not terms or self.info.count == 0:
            return []
        from indexer.ranking import idf

        with self.store.reading() as connection:
            term_lexemes = self._term_lexemes(connection, terms)
            lexemes = sorted({lexeme for values in term_lexemes.values() for lexeme in values})
            if not lexemes:
                return []
            counts = self._counts(connection, lexemes)
            idfs = [idf(self.info.count, counts[lexeme]) for lexeme in lexemes]
            clause, params = self._posting_visible()
            # Every term's postings are joined, so every term scores; the
            # candidates are the takes holding a rare word, or all the words
            # when every one is common (indexer/storage.py, lexical_retrieval).
            term_counts = [min((counts[lexeme] for lexeme in term_lexemes[term]), default=0) for term in terms]
            retrieval = lexical_retrieval(terms, term_counts, self.info.count)
            retrieving = sorted({lexeme for term in retrieval.terms for lexeme in term_lexemes[term]})
            # The candidates' row ids, for the filtered and the checked
            # queries: for a conjunction, the rarest word's takes probed for
            # each other word (an index lookup each, not a walk over the
            # common words' postings). Unfiltered, ``_conjunction`` joins them.
            candidate_sql, candidate_params = "", []
            if retrieval.every:
                rarest_first = sorted(retrieving, key=lambda lexeme: counts[lexeme])
                candidate_sql = "SELECT r.row_id FROM takes_postings r WHERE r.lexeme = %s" + "".join(
                    f" AND EXISTS (SELECT 1 FROM takes_postings r{n} WHERE r{n}.lexeme = %s AND r{n}.row_id = r.row_id)"
                    for n in range(1, len(rarest_first))
                )
                candidate_params = rarest_first
            elif retrieving != lexemes:
                candidate_sql = "SELECT DISTINCT r.row_id FROM takes_postings r WHERE r.lexeme = ANY(%s)"
                candidate_params = [retrieving]
            passing, join, passing_params = "", "", []
            if filters.restricts_rows():
                # The takes passing the filters first, once: joining them to the
                # postings by row id costs what they number (a correlated check
                # per posting cost a row lookup for every take holding a common word).
                visible_clause, visible_params = self._visible()
                filter_clause, filter_params = filter_sql(filters)
                passing = f"WITH passing AS MATERIALIZED (SELECT takes.row_id FROM takes WHERE {visible_clause} AND {filter_clause})"
                join = "JOIN passing ON passing.row_id = p.row_id"
                passing_params = [*visible_params, *filter_params]
            score = f"sum(q.idf * p.tf * {BM25_K1 + 1} / (p.tf + {BM25_K1} * ({1 - BM25_B} + {BM25_B} * p.length / %s)))"
            query = f"""{passing}
                    SELECT p.row_id, {score} AS score
                    FROM unnest(%s::text[], %s::float8[]) AS q(lexeme, idf)
                    JOIN takes_postings p ON p.lexeme = q.lexeme {join}
                    WHERE {clause} {{candidates}}
                    GROUP BY p.row_id ORDER BY score DESC, p.row_id LIMIT %s"""
            head = [*passing_params, self.info.average_length, lexemes, idfs, *params]

            def ranked(candidate_sql: str, candidate_params: list) -> list:
                candidates = f" AND p.row_id IN ({candidate_sql})" if candidate_sql else ""
                if passing:
                    return connection.execute(query.format(candidates=candidates), [*head, *candidate_params, depth]).fetchall()
                # Ranked first, then the top few checked against removals:
                # checking every posting's take cost a row lookup each (most
                # of a search over a common word at 100k takes). Removed takes
                # are few (purged by the next write but one); when they push
                # a live one out of the top, the checked query answers.
                generation = self.info.generation
                if candidate_sql and retrieval.every:
                    ranked_sql, ranked_params = self._conjunction(lexemes, idfs, generation, 2 * depth, rarest_first)
                else:
                    within = candidates if candidate_sql else ""
                    ranked_sql = f"""SELECT p.row_id, {score} AS score
                        FROM unnest(%s::text[], %s::float8[]) AS q(lexeme, idf) JOIN takes_postings p ON p.lexeme = q.lexeme
                        WHERE p.added_generation <= %s {within}
                        GROUP BY p.row_id ORDER BY score DESC, p.row_id LIMIT %s"""
                    ranked_params = [self.info.average_length, lexemes, idfs, generation, *(candidate_params if within else []), 2 * depth]
                rows = connection.execute(
                    f"""WITH ranked AS ({ranked_sql})
                        SELECT ranked.row_id, ranked.score, (SELECT count(*) FROM ranked) FROM ranked
                        WHERE NOT EXISTS (SELECT 1 FROM takes r WHERE r.row_id = ranked.row_id
                                          AND r.removed_generation IS NOT NULL AND r.removed_generation <= %s)
                        ORDER BY ranked.score DESC, ranked.row_id LIMIT %s""",
                    [*ranked_params, generation, depth],
                ).fetchall()
                if len(rows) >= depth or not rows or rows[0][2] < 2 * depth:
                    return [(row_id, value) for row_id, value, _ in rows]
                return connection.execute(query.format(candidates=candidates), [*head, *candidate_params, depth]).fetchall()

            rows = ranked(candidate_sql, candidate_params)
            if retrieval.every and len(rows) < depth:
                # Fewer takes hold every word than asked for: any of them, as below the rule.
                rows = ranked("", [])
        return [(int(row_id), float(score)) for row_id, score in rows]

    def _conjunction(self, lexemes: Sequence[str], idfs: Sequence[float], generation: int, limit: int, every: Sequence[str]) -> tuple[str, list]:
        """SQL (and its parameters) for the best ``limit`` takes holding all of ``every`` (rarest first), by BM25 over ``lexemes``.

        The lexemes' postings joined by take (each lexeme's run of the
        (lexeme, row_id) index is in row-id order, so the planner can merge
        them): the join keeps the takes holding them all and brings each one's
        term frequencies; the rarest's postings carry the length. Finding the
        takes first (EXISTS probes) and then reading all their postings again
        by (lexeme, take) cost twice the lookups (docs/PERFORMANCE.md,
        "Conjunctions on PostgreSQL by joined postings"). Lexemes that score
        without retrieving, if any, are left-joined and count 0 when missing.
        """
        idf_of = dict(zip(lexemes, idfs))
        scoring = [every[0], *(lexeme for lexeme in lexemes if lexeme != every[0])]
        norm = f"({1 - BM25_B} + {BM25_B} * r0.length / %s)"
        parts, part_params, joins, join_params = [], [], [], []
        for number, lexeme in enumerate(scoring):
            if number:
                kind = "JOIN" if lexeme in every else "LEFT JOIN"
                joins.append(f"{kind} takes_postings r{number} ON r{number}.lexeme = %s AND r{number}.row_id = r0.row_id")
                join_params.append(lexeme)
            tf = f"coalesce(r{number}.tf, 0)"
            parts.append(f"%s * {tf} * {BM25_K1 + 1} / ({tf} + {BM25_K1} * {norm})")
            part_params += [idf_of[lexeme], self.info.average_length]
        sql = f"""SELECT r0.row_id, {" + ".join(parts)} AS score
            FROM takes_postings r0 {" ".join(joins)}
            WHERE r0.lexeme = %s AND r0.added_generation <= %s
            ORDER BY score DESC, r0.row_id LIMIT %s"""
        return sql, [*part_params, *join_params, every[0], generation, limit]

    def authors(self) -> list[AuthorSummary]:
        clause, params = self._visible()
        with self.store.reading() as connection:
            rows = connection.execute(
                f"""SELECT min(author), min(handle), count(*), count(DISTINCT thread_id) FROM takes WHERE {clause}
                    GROUP BY lower(coalesce(author, '')), lower(coalesce(handle, ''))
                    ORDER BY count(*) DESC, lower(coalesce(min(author), min(handle), '')) COLLATE "C" """,
                params,
            ).fetchall()
        return [AuthorSummary(author, handle, takes, threads) for author, handle, takes, threads in rows]

    def threads(self, filters: Filters) -> list[ThreadSummary]:
        clause, params = self._visible()
        filter_clause, filter_params = filter_sql(filters or Filters())
        # The first take passing the filters stands for its thread, as in the embedded store.
        with self.store.reading() as connection:
            rows = connection.execute(
                f"""WITH passing AS (SELECT row_id, thread_id, author, handle, date, text, position, thread_size
                                 FROM takes WHERE {clause} AND {filter_clause}),
                         firsts AS (SELECT DISTINCT ON (thread_id) thread_id, author, handle, date, text
                                    FROM passing ORDER BY thread_id, position, row_id),
                         sizes AS (SELECT thread_id, count(*) AS takes, max(thread_size) AS size FROM passing GROUP BY thread_id)
                    SELECT firsts.thread_id, author, handle, date, sizes.takes, sizes.size, text
                    FROM firsts JOIN sizes USING (thread_id)
                    ORDER BY date COLLATE "C" DESC NULLS LAST, firsts.thread_id COLLATE "C" """,
                [*params, *filter_params],
            ).fetchall()
        return [
            ThreadSummary(thread_id, author, handle, day, takes, size, first_words(text))
            for thread_id, author, handle, day, takes, size, text in rows
        ]

    def texts(self, limit: int) -> list[str]:
        """Up to ``limit`` texts of the generation (word statistics for the search page)."""
        clause, params = self._visible()
        with self.store.reading() as connection:
            return [row[0] for row in connection.execute(f"SELECT text FROM takes WHERE {clause} ORDER BY row_id LIMIT %s", [*params, limit])]

    def stats(self) -> dict:
        clause, params = self._visible()
        with self.store.reading() as connection:
            threads = connection.execute(f"SELECT count(DISTINCT thread_id) FROM takes WHERE {clause}", params).fetchone()[0]
            sizes = connection.execute(
                """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
                   FROM pg_class c WHERE c.relname IN ('takes', 'takes_corpus') AND c.relkind = 'r'"""
            ).fetchone()[0]
            removed = connection.execute(
                "SELECT count(*) FROM takes WHERE removed_generation IS NOT NULL"
            ).fetchone()[0]
            stored = connection.execute("SELECT count(*) FROM takes").fetchone()[0]
            dead = connection.execute(
                "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables WHERE relname = 'takes'"
            ).fetchone()
        per_row = sizes / max(stored, 1)
        return {
            "takes": self.info.count,
            "threads": threads,
            "model": self.info.model,
            "dim": self.info.dim,
            "index_bytes": int(sizes),
            "reclaimable_bytes": int(per_row * (removed + (dead[0] if dead else 0))),
            "index_type": self.info.index_type,
            "generation": self.info.generation,
            "backend": self.info.backend,
        }

    # -- VectorSearch -------------------------------------------------------------

    def nearest(self, vector: np.ndarray, depth: int, filters: Filters) -> list[tuple[int, float]]:
        """Filters and vector search in one SQL statement; exact when few takes pass the filters."""
        if self.info.count == 0 or depth <= 0:
            return []
        query = np.ascontiguousarray(np.ravel(vector), dtype=np.float32)
        if len(query) != self.info.dim:
            raise ModelMismatch(self.info.model, self.info.dim, self.info.model, len(query))
        dim = int(self.info.dim)
        clause, params = self._visible()
        filter_clause, filter_params = filter_sql(filters)
        # Every take visible in a generation has its dimension; the HNSW index is
        # partial on it, so the approximate query names it (reading each row's
        # vector to check it would slow the scans below: not there).
        where = f"{clause} AND {filter_clause}"
        indexed = f"vector_dims(takes.embedding) = {dim} AND {where}"
        from pgvector import Vector

        query_value = Vector(query)
        with self.store.reading("search") as connection:
            exact = False
            if filters.restricts_rows():
                passing = connection.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM takes WHERE {where} LIMIT {EXACT_SCAN_LIMIT + 1}) AS passing",
                    [*params, *filter_params],
                ).fetchone()[0]
                if passing == 0:
                    return []
                exact = passing <= EXACT_SCAN_LIMIT
            rows = [] if exact else self._approximate(connection, query_value, dim, indexed, [*params, *filter_params], depth)
            wanted = min(depth, self.info.count)
            if exact or len(rows) < wanted:
                # Ordering by the float32 distance (no index on it) is an exact scan of the passing takes.
                rows = connection.execute(
                    f"""SELECT row_id, -(embedding <#> %s) AS score FROM takes WHERE {where}
                        ORDER BY embedding <#> %s, row_id LIMIT %s""",
                    [query_value, *params, *filter_params, query_value, depth],
                ).fetchall()
        return [(int(row_id), float(score)) for row_id, score in rows]

    def _approximate(self, connection, query_value, dim: int, where: str, params: list, depth: int):
        self.store.set_ef_search(connection, min(max(MIN_EF_SEARCH, 2 * depth), 1000))
        # relaxed_order iterative scan: HNSW keeps walking until ``depth`` rows
        # pass the WHERE; the outer ORDER BY restores exact order by the float32 score.
        return connection.execute(
            f"""WITH nearest AS MATERIALIZED (
                    SELECT row_id, embedding FROM takes WHERE {where}
                    ORDER BY embedding::halfvec({dim}) <#> %s::halfvec({dim}) LIMIT %s)
                SELECT row_id, -(embedding <#> %s) AS score FROM nearest ORDER BY score DESC, row_id""",
            [*params, query_value, depth, query_value],
        ).fetchall()

    def inner_products(self, vector: np.ndarray, row_ids: Sequence[int]) -> dict[int, float]:
        if not row_ids:
            return {}
        from pgvector import Vector

        query = Vector(np.ascontiguousarray(np.ravel(vector), dtype=np.float32))
        with self.store.reading("search") as connection:
            rows = connection.execute(
                "SELECT row_id, -(embedding <#> %s) FROM takes WHERE row_id = ANY(%s)", [query, list(map(int, row_ids))]
            ).fetchall()
        return {int(row_id): float(score) for row_id, score in rows}

    def mean_direction(self) -> np.ndarray:
        """The unit mean of the generation's vectors: from the previous generation's sum and the rows that changed, else one pass."""
        if self._mean is not None:
            return self._mean
        previous, self._previous = self._previous, None  # not kept: a chain of generations would stay in memory
        total = self._sum_from(previous) if previous is not None else None
        if total is None:
            total = self._full_sum()
        vector_sum, _ = total
        norm = float(np.linalg.norm(vector_sum))
        self._vector_sum = total
        self._mean = (vector_sum / norm).astype(np.float32) if norm > 0 else np.zeros(self.info.dim, np.float32)
        return self._mean

    def _full_sum(self) -> tuple[np.ndarray, int]:
        """(sum, count) of every vector of the generation: one pass over the table (about 0.9 s at 100k takes)."""
        clause, params = self._visible()
        with self.store.reading("search") as connection:
            mean, count = connection.execute(
                f"SELECT avg(embedding), count(*) FROM takes WHERE vector_dims(embedding) = {int(self.info.dim)} AND {clause}", params
            ).fetchone()
        if mean is None:
            return np.zeros(self.info.dim, np.float64), 0
        return np.asarray(mean.to_numpy(), dtype=np.float64) * count, int(count)

    # Above this many changed rows one pass over the table costs about the same.
    _CHANGED_ROWS_LIMIT = 20_000

    def _sum_from(self, previous: PostgresGeneration) -> tuple[np.ndarray, int] | None:
        """(sum, count) as ``previous``'s plus the rows added since minus those removed; None when that cannot be known.

        Exact up to float64 rounding (a full pass adds the same vectors in
        another order). Rows removed after ``previous`` that a later commit
        has already purged cannot be subtracted: the count then disagrees
        with the corpus row's, and the caller makes the full pass.
        """
        known = previous._vector_sum
        before, now = previous.info, self.info
        if known is None or known[1] != before.count or (before.model, before.dim) != (now.model, now.dim):
            return None
        if before.generation >= now.generation:
            return None
        dim = int(now.dim)
        with self.store.reading("search") as connection:
            # Row ids grow with the generations (as the writer's postings
            # insert assumes): the added rows are the top of the primary key,
            # found from its end; the removed ones come from takes_removed.
            rows = connection.execute(
                f"""(SELECT true, embedding FROM takes
                     WHERE row_id > (SELECT coalesce(max(row_id), 0) FROM takes WHERE added_generation <= %(before)s)
                       AND added_generation > %(before)s AND added_generation <= %(now)s
                       AND (removed_generation IS NULL OR removed_generation > %(now)s) AND vector_dims(embedding) = {dim}
                     LIMIT %(limit)s)
                    UNION ALL
                    (SELECT false, embedding FROM takes
                     WHERE removed_generation > %(before)s AND removed_generation <= %(now)s
                       AND added_generation <= %(before)s AND vector_dims(embedding) = {dim}
                     LIMIT %(limit)s)""",
                {"before": before.generation, "now": now.generation, "limit": self._CHANGED_ROWS_LIMIT + 1},
            ).fetchall()
        if len(rows) > self._CHANGED_ROWS_LIMIT:
            return None  # a large change (a replace): one pass costs no more
        vector_sum, count = known[0].copy(), known[1]
        for added, embedding in rows:
            vector = np.asarray(embedding.to_numpy(), dtype=np.float64)
            if added:
                vector_sum += vector
                count += 1
            else:
                vector_sum -= vector
                count -= 1
        return (vector_sum, count) if count == now.count else None

    def token_vectors(self, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
        from indexer import token_vectors

        rows = self._token_rows(row_ids)
        return token_vectors.decode_rows(rows, self.info.dim, self.store.location)

    def stored_token_values(self, row_ids: Sequence[int]) -> dict[int, bytes]:
        """The stored token vectors of these takes as stored (``takes copy`` moves them as they are)."""
        return {int(row_id): value for row_id, _, value in self._token_rows(row_ids)}

    def _token_rows(self, row_ids: Sequence[int]) -> list[tuple[int, str, bytes]]:
        import psycopg

        if not row_ids:
            return []
        with self.store.reading("search") as connection:
            try:
                # Binary results: bytea in text form is hex, twice the bytes
                # to send and parse (about 21 kB a take): a third of this read.
                rows = connection.execute(
                    "SELECT row_id, text, token_vectors FROM takes WHERE row_id = ANY(%s) AND token_vectors IS NOT NULL",
                    [list(map(int, row_ids))],
                    binary=True,
                ).fetchall()
            except psycopg.errors.UndefinedColumn:
                # A database not yet migrated to schema 3 (readers never migrate).
                return []
        return [(int(row_id), text, bytes(value)) for row_id, text, value in rows]

    def vectors(self, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored float32 vectors of these takes (``takes copy`` moves them as they are)."""
        with self.store.reading() as connection:
            rows = connection.execute(
                "SELECT row_id, embedding FROM takes WHERE row_id = ANY(%s)", [list(map(int, row_ids))]
            ).fetchall()
        return {int(row_id): np.asarray(embedding.to_numpy(), dtype=np.float32) for row_id, embedding in rows}

    def row_ids(self) -> list[int]:
        """Every row id of the generation, in insertion order."""
        clause, params = self._visible()
        with self.store.reading() as connection:
            return [row[0] for row in connection.execute(f"SELECT row_id FROM takes WHERE {clause} ORDER BY row_id", params)]


def _tsquery(lexemes: Sequence[str]) -> str:
    """A tsquery matching any of ``lexemes``, each quoted: words are data, never query syntax."""
    return " | ".join("'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'" for lexeme in lexemes)


# -- writing ------------------------------------------------------------------------
