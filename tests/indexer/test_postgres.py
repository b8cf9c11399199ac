"""What only the PostgreSQL store has: migrations, secrets, notifications, BM25 equal to FTS5's."""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import psycopg
import pytest

from embeddings import DEFAULT_MODEL
from indexer.postgres import DatabaseUnavailable, PostgresStore, redact
from indexer.postgres import schema
from indexer.search import query_terms
from indexer.storage import Filters
from tests.conftest import DEV_JUDGMENTS

SECRET = "s3cr3t-Pa55word"


def with_password(url: str, password: str = SECRET) -> str:
    parts = urllib.parse.urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    user = user.split(":")[0] or "postgres"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@pytest.fixture
def seeded(database_url, seed_takes, embedder):
    store = PostgresStore(database_url)
    with store.writer() as writer:
        writer.replace_all(seed_takes, embedder, model=DEFAULT_MODEL)
    yield store
    store.close()


def test_migrations_run_once_in_order_and_again_change_nothing(database_url):
    with psycopg.connect(database_url, autocommit=True) as connection:
        assert schema.schema_version(connection) == 0
        assert schema.migrate(connection) == [version for version, _, _ in schema.MIGRATIONS]
        assert schema.migrate(connection) == []
        assert schema.schema_version(connection) == schema.LATEST_VERSION
        rows = connection.execute("SELECT version FROM takes_schema_version ORDER BY version").fetchall()
    assert [row[0] for row in rows] == [version for version, _, _ in schema.MIGRATIONS]


def test_the_vector_index_is_hnsw_over_half_precision(seeded):
    with psycopg.connect(seeded.url) as connection:
        (definition,) = connection.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (schema.vector_index_name(384),)
        ).fetchone()
    assert "hnsw" in definition and "halfvec(384)" in definition and "halfvec_ip_ops" in definition


def test_lexical_scores_equal_fts5_bm25_on_the_dev_queries(seeded, seed_index, embedder):
    """Same words, same document lengths, same formula: the two stores' BM25 agree to the third decimal."""
    from indexer.index import EmbeddedStore

    embedded = EmbeddedStore(seed_index).load()
    generation = seeded.load()
    pg_ids = {row_id: take.id for row_id, take in generation.takes(generation.row_ids()).items()}
    queries = [entry["query"] for entry in json.loads(DEV_JUDGMENTS.read_text())["queries"]]
    assert len(queries) > 10
    for query in queries:
        fts5 = embedded.lexical(query_terms(query), 20, Filters())
        fts5_ids = embedded.takes([row_id for row_id, _ in fts5])
        expected = [(fts5_ids[row_id].id, round(score, 3)) for row_id, score in fts5]
        found = [(pg_ids[row_id], round(score, 3)) for row_id, score in generation.lexical(query_terms(query), 20, Filters())]
        assert found == expected, query


def test_the_password_never_appears_in_location_stats_or_errors(database_url, seed_takes, embedder):
    url = with_password(database_url)
    assert SECRET in url
    store = PostgresStore(url)
    assert SECRET not in store.location and "***" in store.location
    with store.writer() as writer:
        writer.replace_all(seed_takes[:5], embedder, model=DEFAULT_MODEL)
    assert SECRET not in json.dumps(store.load().stats())
    missing = PostgresStore(urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/no_such_database")))
    with pytest.raises(DatabaseUnavailable) as raised:
        missing.load()
    assert SECRET not in str(raised.value) and "no_such_database" in str(raised.value)
    assert SECRET not in repr(store)
    for form in (url, f"host=/tmp dbname=takes user=me password={SECRET}", f"{url}&password={SECRET}"):
        assert SECRET not in redact(form)


def test_each_commit_notifies_listeners(seeded, embedder):
    from tests.indexer.test_store_contract import new_take

    listener = seeded.listen()
    try:
        with seeded.writer() as writer:
            writer.add([new_take(1)], embedder, model=DEFAULT_MODEL)
        notes = [note.payload for note in listener.notifies(timeout=10, stop_after=1)]
    finally:
        listener.close()
    assert notes == ["2"]


def test_the_corpus_row_counts_what_a_full_recount_finds_after_every_kind_of_commit(seeded, seed_takes, embedder):
    """Each commit adds its own rows to the committed count and length and subtracts those it removed: never a drift."""
    from tests.indexer.test_store_contract import new_take

    def recount():
        with seeded.reader().cursor() as cursor:
            return cursor.execute(
                "SELECT count(*), coalesce(sum(length), 0) FROM takes WHERE removed_generation IS NULL"
            ).fetchone()

    def corpus_row():
        info = seeded.committed_info()
        return info.count, info.total_length

    assert corpus_row() == recount() and corpus_row()[0] == len(seed_takes)
    commits = [
        lambda writer: writer.add([new_take(1), new_take(2)], embedder, model=DEFAULT_MODEL),
        lambda writer: writer.remove(["dana-1", seed_takes[0].id]),
        lambda writer: writer.remove(thread_id=seed_takes[5].thread_id),
        lambda writer: writer.add([new_take(3)], embedder, model=DEFAULT_MODEL),
        lambda writer: writer.rebuild(embedder, model=DEFAULT_MODEL),
        lambda writer: writer.compact(),
        lambda writer: writer.replace_all(seed_takes[:10], embedder, model=DEFAULT_MODEL),
        lambda writer: writer.add([new_take(4)], embedder, model=DEFAULT_MODEL),
    ]
    for commit in commits:
        with seeded.writer() as writer:
            commit(writer)
        assert corpus_row() == recount()
    assert corpus_row()[0] == 11


def test_a_filter_just_past_the_exact_scan_limit_still_fills_the_depth(database_url, embedder, monkeypatch):
    """The approximate path with a filter: HNSW's iterative scan keeps going until the depth is filled."""
    from indexer.postgres import generation as generation_module
    from tests.indexer.test_store_contract import new_take

    takes = [new_take(n, thread="even" if n % 2 else "odd") for n in range(1, 81)]
    store = PostgresStore(database_url)
    with store.writer() as writer:
        writer.replace_all(takes, embedder, model=DEFAULT_MODEL)
    monkeypatch.setattr(generation_module, "EXACT_SCAN_LIMIT", 5)
    monkeypatch.setattr(generation_module, "MIN_EF_SEARCH", 10)
    generation = store.load()
    vector = embedder.encode(["auditors for frontier AI"])[0]
    found = generation.takes([row for row, _ in generation.nearest(vector, 30, Filters(thread_id="odd"))])
    assert len(found) == 30 and {take.thread_id for take in found.values()} == {"odd"}
    store.close()


def test_copy_moves_a_corpus_to_the_database_and_back_without_embedding(seed_index, database_url, tmp_path, embedder):
    from indexer.postgres.copy import copy_corpus, read_embedded, read_postgres

    there = copy_corpus(seed_index, database_url)
    back = copy_corpus(database_url, tmp_path / "back")
    assert there.copied == back.copied == 99 and there.backend == back.backend
    original, copied = read_embedded(seed_index), read_embedded(tmp_path / "back")
    assert original[0] == copied[0] and original[2:] == copied[2:]
    assert np.array_equal(original[1], copied[1])
    # Token vectors travel as stored, both ways: every take has its own.
    assert all(value is not None for value in original[2])
    store = PostgresStore(database_url)
    takes, vectors, token_values, model, _ = read_postgres(store)
    assert takes == original[0] and np.array_equal(vectors, original[1]) and model == original[3]
    assert token_values == original[2]
    store.close()


READ_ONLY_GRANTS = """
CREATE ROLE takes_reader LOGIN PASSWORD 'reader-secret';
GRANT CONNECT ON DATABASE "{database}" TO takes_reader;
GRANT USAGE ON SCHEMA public TO takes_reader;
GRANT SELECT ON takes, takes_postings, takes_corpus, takes_schema_version TO takes_reader;
"""


def test_a_read_only_role_searches_and_cannot_write(seeded, embedder):
    """The grants docs/DEPLOY.md gives a search server are enough to serve, and not to write."""
    from indexer.errors import IndexReadOnly
    from tests.indexer.test_store_contract import QUERY, new_take

    database = urllib.parse.urlsplit(seeded.url).path.lstrip("/")
    with psycopg.connect(seeded.url, autocommit=True) as connection:
        connection.execute("DROP ROLE IF EXISTS takes_reader")
        connection.execute(READ_ONLY_GRANTS.format(database=database))
    parts = urllib.parse.urlsplit(seeded.url)
    reader = PostgresStore(urllib.parse.urlunsplit(parts._replace(netloc="takes_reader:reader-secret@" + parts.netloc.rpartition("@")[2])))
    try:
        generation = reader.load()
        assert generation.nearest(embedder.encode([QUERY])[0], 5, Filters(author="Clark"))
        assert generation.lexical(query_terms(QUERY), 5, Filters())
        assert generation.stats()["takes"] == 99 and reader.current_generation() == 1
        with pytest.raises(IndexReadOnly, match="write grants") as raised:
            with reader.writer(lock_timeout=1) as writer:
                writer.add([new_take(1)], embedder, model=DEFAULT_MODEL)
        assert "reader-secret" not in str(raised.value)
        assert reader.current_generation() == 1
    finally:
        reader.close()
        with psycopg.connect(seeded.url, autocommit=True) as connection:
            connection.execute(f'REVOKE ALL ON DATABASE "{database}" FROM takes_reader')
            connection.execute("DROP OWNED BY takes_reader")
            connection.execute("DROP ROLE takes_reader")


def test_the_served_generation_offers_what_the_front_door_reads(seeded, seed_takes):
    """Takes (indexer/api.py) reads these beyond the Generation protocol: the same on both stores."""
    generation = seeded.load()
    assert generation.generation == generation.manifest.generation == 1
    assert generation.texts(3) == [take.text for take in seed_takes[:3]]
    assert seeded.committed_info().count == 99 and seeded.lookup().info.count == 99


def test_a_database_made_before_token_vectors_searches_then_migrates_without_losing_takes(seeded, embedder, seed_takes):
    from indexer.search import Ranker
    from tests.indexer.test_store_contract import QUERY, live_row_ids, new_take

    with psycopg.connect(seeded.url, autocommit=True) as connection:
        connection.execute("ALTER TABLE takes DROP COLUMN token_vectors")
        connection.execute("ALTER TABLE takes_embedding_cache DROP COLUMN token_vectors")
        connection.execute("DELETE FROM takes_schema_version WHERE version = 3")
    reader = PostgresStore(seeded.url)
    try:
        generation = reader.load()
        assert generation.token_vectors(live_row_ids(generation)) == {}
        before = embedder.token_texts_encoded
        assert len(Ranker(embedder).search(generation, QUERY, 10)) == 10
        assert embedder.token_texts_encoded > before
        with reader.writer() as writer:
            report = writer.add([new_take(1)], embedder, model=DEFAULT_MODEL)
        assert report.added == 1 and report.skipped == 0
        with psycopg.connect(seeded.url) as connection:
            assert schema.schema_version(connection) == schema.LATEST_VERSION
        generation = reader.load()
        row_ids = live_row_ids(generation)
        assert len(row_ids) == len(seed_takes) + 1
        stored = generation.token_vectors(row_ids)
        assert [generation.takes(list(stored))[row_id].id for row_id in stored] == ["dana-1"]
    finally:
        reader.close()
