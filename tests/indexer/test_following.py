"""The thread that serves generations other processes commit: how soon it looks, and how it backs off a load it cannot make."""

from __future__ import annotations

import logging

from indexer.api import Takes
from indexer.following import MAX_RETRY_WAIT, next_wait
from indexer.index.layout import database_path
from indexer.index.manifest import open_index_database
from indexer.serving import Searcher
from tests.cli_process import wait_until
from tests.indexer.test_refresh import new_thread


def test_a_refused_load_is_retried_less_and_less_often_then_at_the_interval_again():
    waits, wait = [], 0.2
    for _ in range(8):
        wait = next_wait(0.2, wait, failed=True)
        waits.append(wait)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_RETRY_WAIT, MAX_RETRY_WAIT, MAX_RETRY_WAIT]
    assert next_wait(0.2, wait, failed=False) == 0.2
    # An interval longer than the backoff stays the interval.
    assert next_wait(60.0, 60.0, failed=True) == 60.0


def test_a_follower_serves_another_writers_takes_and_keeps_serving_through_a_refused_generation(index_copy, embedder, caplog):
    caplog.set_level(logging.WARNING, logger="takes")
    served = Takes(index_copy, searcher=Searcher(index_copy, embedder=embedder))
    # No searcher: the writer serves nothing, so only the follower ever reads the new segments.
    writer = Takes(index_copy)
    first = served.generation
    follower = served.follow(0.05)
    try:
        report = writer.add(new_thread(2)[:1])
        wait_until(lambda: served.generation == report.generation, timeout=30, what="the follower to serve the new take")
        assert served.take("tester-2024-05-01-1").author == "Tester"

        # A generation whose new segment is damaged cannot be loaded: the old one stays served.
        follower.stop()
        report = writer.add(new_thread(2)[1:])
        connection, manifest = open_index_database(index_copy)
        connection.close()
        damaged = index_copy / manifest.segments[-1].file
        intact = damaged.read_bytes()
        damaged.write_bytes(intact[:-8] + bytes(8))
        follower = served.follow(0.05)
        try:
            wait_until(lambda: "not switching to the new index generation" in caplog.text, timeout=30, what="the refusal")
            assert served.generation == report.generation - 1 > first
            assert served.search("export controls on accelerators", 3)
        finally:
            damaged.write_bytes(intact)
        wait_until(lambda: served.generation == report.generation, timeout=60, what="the follower to serve the repaired generation")
    finally:
        follower.stop()


def test_a_follower_outlives_a_store_it_cannot_open_and_follows_again_once_it_can(index_copy, embedder, caplog):
    caplog.set_level(logging.WARNING, logger="takes")
    served = Takes(index_copy, searcher=Searcher(index_copy, embedder=embedder))
    served.load()
    writer = Takes(index_copy)
    database = database_path(index_copy)
    moved = database.with_name(database.name + ".away")
    # A folder where the database was: SQLite cannot open it ("unable to open
    # database file"), as when the process is out of file descriptors.
    database.rename(moved)
    database.mkdir()
    follower = served.follow(0.05)
    try:
        wait_until(lambda: "cannot look for a new index generation" in caplog.text, timeout=30, what="the failed look")
        assert follower._thread.is_alive()
        database.rmdir()
        moved.rename(database)
        report = writer.add(new_thread(2)[:1])
        wait_until(lambda: served.generation == report.generation, timeout=60, what="the follower to serve the new take")
    finally:
        follower.stop()
        if database.is_dir():
            database.rmdir()
            moved.rename(database)
