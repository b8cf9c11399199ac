"""The storage contract (indexer/storage.py), one suite for every store.

Each test runs on each store through the interfaces only (Store, Writer,
Generation), with the real model and a real database: what ranking and the
front door rely on holds the same on both.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from embeddings import DEFAULT_MODEL
from indexer.errors import IndexLocked, IndexNotFound, ModelMismatch, TakeNotFound
from indexer.models import Take
from indexer.search import query_terms
from indexer.storage import Filters
from tests.cli_process import REPO, wait_until

STORES = ["embedded", "postgres"]
# Where each store's writer is stopped mid-add: its rows written, nothing committed.
MID_ADD = {"embedded": "after-segment", "postgres": "inside-transaction"}
STATS_KEYS = {"takes", "threads", "model", "dim", "index_bytes", "reclaimable_bytes", "index_type", "generation", "backend"}
QUERY = "what about compute governance"


def open_store(kind: str, where: str):
    """A store of ``kind`` at ``where`` (a database URL or a folder)."""
    if kind == "postgres":
        from indexer.postgres import PostgresStore

        return PostgresStore(where)
    from indexer.index import EmbeddedStore

    return EmbeddedStore(where)


@pytest.fixture(params=STORES)
def location(request, tmp_path):
    """(kind, where) of an empty store."""
    if request.param == "postgres":
        return request.param, request.getfixturevalue("database_url")
    return request.param, str(tmp_path / "index")


@pytest.fixture
def store(location):
    opened = open_store(*location)
    yield opened
    opened.close()


@pytest.fixture
def seeded(store, seed_takes, embedder):
    with store.writer() as writer:
        writer.replace_all(seed_takes, embedder, model=DEFAULT_MODEL)
    return store


def new_take(number: int, text: str | None = None, author: str = "Dana Okafor", thread: str = "dana-thread") -> Take:
    return Take(
        id=f"dana-{number}",
        text=text or f"Take {number}: lighthouse keepers are the right model for frontier AI auditors, reason {number}.",
        author=author,
        handle="@dana",
        date="2024-03-03",
        thread_id=thread,
        position=number,
        thread_size=None,
        url=None,
        source="dana.txt",
    )


def ids_of(generation, ranked) -> list[str]:
    takes = generation.takes([row_id for row_id, _ in ranked])
    return [takes[row_id].id for row_id, _ in ranked if row_id in takes]


def test_an_empty_store_has_no_generation(store):
    assert not store.exists()
    assert store.current_generation() == 0
    with pytest.raises(IndexNotFound):
        store.load()


def test_replace_all_makes_the_first_generation(seeded, seed_takes, embedder):
    generation = seeded.load()
    assert seeded.exists() and seeded.current_generation() == 1
    assert (generation.info.generation, generation.info.count, generation.info.dim) == (1, len(seed_takes), embedder.dim)
    assert generation.info.model == DEFAULT_MODEL.removeprefix("sentence-transformers/")
    first = seed_takes[0]
    assert generation.take(first.id) == first
    thread = generation.thread(first.thread_id)
    assert [take.position for take in thread] == sorted(take.position for take in thread)
    stats = generation.stats()
    assert set(stats) == STATS_KEYS
    assert stats["takes"] == len(seed_takes) and stats["threads"] == len({take.thread_id for take in seed_takes})
    assert stats["index_bytes"] > 0


def test_neighbours_are_the_takes_around_in_thread_order(seeded, seed_takes):
    generation = seeded.load()
    thread = generation.thread(seed_takes[0].thread_id)
    middle = thread[len(thread) // 2]
    before, after = generation.neighbours(middle, 2)
    index = thread.index(middle)
    assert list(before) == thread[index - 2 : index] and list(after) == thread[index + 1 : index + 3]
    assert generation.neighbours(thread[0], 3)[0] == ()
    assert generation.neighbours(middle, 0) == ((), ())


def test_adding_known_takes_is_skipped_without_a_generation(seeded, seed_takes, embedder):
    with seeded.writer() as writer:
        report = writer.add(seed_takes[:5], embedder, model=DEFAULT_MODEL)
    assert (report.added, report.skipped, report.generation) == (0, 5, 1)
    assert seeded.current_generation() == 1


def test_dedupe_by_id_and_by_text_from_the_same_author(seeded, embedder):
    original = new_take(1)
    respaced = dataclasses.replace(new_take(2), text="  " + original.text.upper().replace(" ", "   ") + " ")
    other_author = dataclasses.replace(new_take(3, text=original.text), author="Someone Else", handle="@else")
    same_id = dataclasses.replace(new_take(1), text="Entirely different words under a known id.")
    with seeded.writer() as writer:
        assert writer.new_takes([original, respaced, other_author]) == [original, other_author]
        report = writer.add([original, respaced, other_author, same_id], embedder, model=DEFAULT_MODEL)
    assert (report.added, report.skipped, report.generation) == (2, 2, 2)
    assert report.added_ids == ["dana-1", "dana-3"]
    generation = seeded.load()
    assert generation.take("dana-1").text == original.text
    assert generation.info.count == 101


def test_remove_takes_a_take_out_of_text_and_vector_search_in_one_generation(seeded, embedder):
    before = seeded.load()
    terms = query_terms(QUERY)
    vector = embedder.encode([QUERY])[0]
    best = ids_of(before, before.nearest(vector, 5, Filters()))[0]
    lexical_best = ids_of(before, before.lexical(terms, 5, Filters()))[0]
    with seeded.writer() as writer:
        report = writer.remove([best, lexical_best])
    assert report.removed == len({best, lexical_best}) and report.generation == 2
    after = seeded.load()
    assert after.info.count == before.info.count - report.removed
    for take_id in (best, lexical_best):
        with pytest.raises(TakeNotFound):
            after.take(take_id)
    assert best not in ids_of(after, after.nearest(vector, 50, Filters()))
    assert lexical_best not in ids_of(after, after.lexical(terms, 50, Filters()))
    # The generation loaded before the removal still answers as it was.
    assert before.take(best).id == best
    assert ids_of(before, before.nearest(vector, 5, Filters()))[0] == best


def test_removing_an_unknown_id_removes_nothing(seeded, seed_takes):
    with seeded.writer() as writer:
        with pytest.raises(TakeNotFound, match="nothing removed"):
            writer.remove([seed_takes[0].id, "no-such-take"])
        with pytest.raises(TakeNotFound):
            writer.remove(thread_id="no-such-thread")
    assert seeded.current_generation() == 1
    assert seeded.load().take(seed_takes[0].id)


def test_remove_a_whole_thread(seeded, seed_takes):
    thread_id = seed_takes[-1].thread_id
    size = sum(take.thread_id == thread_id for take in seed_takes)
    with seeded.writer() as writer:
        assert writer.remove(thread_id=thread_id).removed == size
    generation = seeded.load()
    with pytest.raises(TakeNotFound):
        generation.thread(thread_id)
    assert thread_id not in {summary.thread_id for summary in generation.threads(Filters())}


def test_rebuild_reembeds_from_the_cache_into_a_new_generation(seeded, embedder, seed_takes):
    vector = embedder.encode([QUERY])[0]
    before = seeded.load()
    with seeded.writer() as writer:
        report = writer.rebuild(embedder, model=DEFAULT_MODEL)
    assert (report.added, report.embedded, report.generation) == (len(seed_takes), 0, 2)
    after = seeded.load()
    assert after.info.count == len(seed_takes)
    assert ids_of(after, after.nearest(vector, 10, Filters())) == ids_of(before, before.nearest(vector, 10, Filters()))


def test_filters_run_with_the_vector_search(seeded, seed_takes, embedder):
    generation = seeded.load()
    vector = embedder.encode([QUERY])[0]
    thread_id = seed_takes[-1].thread_id
    in_thread = [take.id for take in seed_takes if take.thread_id == thread_id]
    # A selective filter still returns every take passing it, up to the depth.
    found = ids_of(generation, generation.nearest(vector, 50, Filters(thread_id=thread_id)))
    assert sorted(found) == sorted(in_thread)
    for author in ("Clark", "jack clark", "@jackclarkSF", "jackclarksf", "JACK"):
        assert len(generation.nearest(vector, 50, Filters(author=author))) == 50, author
    for author in ("Clar", "Jack Clark Jr", "%", "_ack"):
        assert generation.nearest(vector, 50, Filters(author=author)) == [], author
    assert generation.lexical(query_terms(QUERY), 50, Filters(author="Clar")) == []
    dates = sorted({take.date[:10] for take in seed_takes if take.date})
    since = generation.takes([row for row, _ in generation.nearest(vector, 50, Filters(since=dates[-1]))])
    assert since and all(take.date[:10] >= dates[-1] for take in since.values())
    until = generation.takes([row for row, _ in generation.lexical(query_terms(QUERY), 50, Filters(until=dates[0]))])
    assert all(take.date[:10] <= dates[0] for take in until.values())
    assert generation.nearest(vector, 5, Filters(handle="jackclarkSF"))
    assert generation.nearest(vector, 5, Filters(handle="@nobody")) == []


def test_nearest_is_best_first_and_agrees_with_inner_products(seeded, embedder):
    generation = seeded.load()
    vector = embedder.encode([QUERY])[0]
    ranked = generation.nearest(vector, 20, Filters())
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == 20
    exact = generation.inner_products(vector, [row_id for row_id, _ in ranked])
    assert all(abs(exact[row_id] - score) < 1e-5 for row_id, score in ranked)
    mean = generation.mean_direction()
    assert mean.shape == (embedder.dim,) and abs(float(np.linalg.norm(mean)) - 1) < 1e-5


def test_lexical_scores_are_bm25_with_document_counts(seeded, seed_takes):
    generation = seeded.load()
    terms = query_terms(QUERY)
    counts = generation.document_counts(terms)
    assert all(0 < count <= len(seed_takes) for count in counts), counts
    assert generation.document_counts(["zzqqxx"]) == [0]
    ranked = generation.lexical(terms, 10, Filters())
    assert ranked and [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)
    # Query syntax is data: quotes, operators and parentheses match nothing special.
    assert generation.lexical(["'", "&", "!("], 5, Filters()) == []
    assert generation.lexical(["compute:*"], 5, Filters()) == generation.lexical(["compute"], 5, Filters())


def test_threads_newest_first_and_authors(seeded, seed_takes):
    generation = seeded.load()
    threads = generation.threads(Filters())
    assert len(threads) == len({take.thread_id for take in seed_takes})
    dates = [summary.date for summary in threads]
    assert dates == sorted(dates, reverse=True)
    first = threads[0]
    assert first.takes == sum(take.thread_id == first.thread_id for take in seed_takes)
    assert generation.threads(Filters(author="nobody")) == []
    (author,) = generation.authors()
    assert (author.author, author.handle, author.takes) == ("Jack Clark", "@jackclarkSF", len(seed_takes))


def test_a_different_model_is_a_model_mismatch(seeded, embedder):
    generation = seeded.load()
    with pytest.raises(ModelMismatch):
        generation.info.check_model("some-other-model")
    generation.info.check_model(DEFAULT_MODEL, embedder.dim)
    with seeded.writer() as writer:
        with pytest.raises(ModelMismatch):
            writer.add([new_take(1)], embedder, model="some-other-model")
    assert seeded.current_generation() == 1


def test_a_second_writer_waits_then_is_refused(seeded):
    with seeded.writer():
        with pytest.raises(IndexLocked, match="another writer"):
            seeded.writer(lock_timeout=0.3)
    # Released with the first writer.
    seeded.writer(lock_timeout=1).close()


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from embeddings import DEFAULT_MODEL, load_embedder
    from indexer.models import Take
    from tests.indexer.test_store_contract import new_take, open_store
    kind, where, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = open_store(kind, where)
    with store.writer(lock_timeout=120) as writer:
        report = writer.add([new_take(n) for n in range(first, first + count)], load_embedder(), model=DEFAULT_MODEL)
    print(report.generation, report.added)
    """
)


def run_writer(location, first: int, count: int, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, *location, str(first), str(count)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_writer_killed_mid_add_leaves_nothing_half_written(seeded, location, tmp_path):
    marker = tmp_path / "paused"
    process = run_writer(location, 1, 20, TAKES_TEST_PAUSE_AT=MID_ADD[location[0]], TAKES_TEST_PAUSE_FILE=str(marker))
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, timeout=120, what="the writer to pause")
        assert marker.exists(), process.communicate()[1]
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    generation = seeded.load()
    assert generation.info.generation == 1 and generation.info.count == 99
    with pytest.raises(TakeNotFound):
        generation.take("dana-1")
    # The lock died with the writer: the next one goes ahead.
    with seeded.writer(lock_timeout=30) as writer:
        assert writer.new_takes([new_take(1)]) == [new_take(1)]
        writer.add([new_take(1)], lambda: pytest.fail("the killed writer's vectors are in the embedding cache"), model=DEFAULT_MODEL)
    # No take without its vector or its token vectors.
    generation = seeded.load()
    row_ids = live_row_ids(generation)
    assert len(row_ids) == 100 and sorted(generation.token_vectors(row_ids)) == sorted(row_ids)


def test_two_writers_at_once_make_two_whole_generations(seeded, location):
    processes = [run_writer(location, 1, 10), run_writer(location, 100, 10)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [error for _, error in outputs]
    generations = sorted(int(out.split()[0]) for out, _ in outputs)
    assert generations == [2, 3]
    generation = seeded.load()
    assert generation.info.count == 99 + 20
    assert {f"dana-{n}" for n in [*range(1, 11), *range(100, 110)]} <= {
        take.id for take in generation.takes(list(range(1, 1000))).values()
    }


def test_readers_on_threads_share_one_generation(seeded, embedder):
    generation = seeded.load()
    vector = embedder.encode([QUERY])[0]
    expected = generation.nearest(vector, 10, Filters())
    results, errors = [], []

    def search():
        try:
            for _ in range(5):
                results.append(generation.nearest(vector, 10, Filters()))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    workers = [threading.Thread(target=search) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and all(result == expected for result in results)


def test_a_generation_loaded_from_the_previous_one_has_the_mean_of_a_fresh_load(seeded, location, seed_takes, embedder):
    """A follower's load adds and subtracts only what changed; it must equal a load from nothing at every step."""

    def fresh_mean():
        other = open_store(*location)
        try:
            return other.load().mean_direction()
        finally:
            other.close()

    served = seeded.load()
    served.mean_direction()
    steps = [
        [("add", [1, 2, 3])],
        [("remove", ["dana-2", seed_takes[0].id])],
        # Several commits between two loads, removals among them (a store may
        # already have purged rows removed before the last commit).
        [("add", [4, 5]), ("remove", ["dana-4"]), ("remove", ["dana-5", seed_takes[1].id]), ("add", [6])],
        [("remove", [seed_takes[3].id]), ("add", [7]), ("add", [8])],
        [("remove", [])],  # a whole thread
    ]
    for step in steps:
        for action, what in step:
            with seeded.writer() as writer:
                if action == "add":
                    writer.add([new_take(number) for number in what], embedder, model=DEFAULT_MODEL)
                elif what:
                    writer.remove(what)
                else:
                    writer.remove(thread_id=seed_takes[2].thread_id)
        followed = seeded.load(previous=served)
        assert followed.generation > served.generation
        np.testing.assert_allclose(followed.mean_direction(), fresh_mean(), atol=1e-6)
        assert abs(float(np.linalg.norm(followed.mean_direction())) - 1) < 1e-5
        served = followed


def live_row_ids(generation) -> list[int]:
    """Every row id of a generation, found through the interface (the nearest of all takes)."""
    return [row_id for row_id, _ in generation.nearest(np.ones(generation.info.dim, np.float32), generation.info.count, Filters())]


def within_int8_rounding(stored: np.ndarray, fresh: np.ndarray) -> bool:
    """Whether ``stored`` is ``fresh`` quantized per token (scale max|x| / 127: every component within half a step)."""
    steps = np.max(np.abs(fresh), axis=1, keepdims=True) / 127
    return stored.shape == fresh.shape and bool(np.all(np.abs(stored - fresh) <= steps / 2 + 1e-6))


def test_stored_token_vectors_are_a_fresh_model_pass_within_int8_rounding(seeded, embedder):
    generation = seeded.load()
    row_ids = live_row_ids(generation)
    stored = generation.token_vectors(row_ids)
    assert sorted(stored) == sorted(row_ids)
    takes = generation.takes(row_ids)
    for row_id in row_ids[:20]:
        (fresh,) = embedder.token_vectors([takes[row_id].text])
        assert within_int8_rounding(stored[row_id], fresh), takes[row_id].id
    assert generation.token_vectors([]) == {} and generation.token_vectors([10**9]) == {}


def test_a_search_runs_the_model_for_no_candidate(seeded, embedder):
    from indexer.search import Ranker

    generation = seeded.load()
    before = embedder.token_texts_encoded
    results = Ranker(embedder).search(generation, QUERY, 10)
    assert len(results) == 10
    assert embedder.token_texts_encoded == before


def test_takes_embedded_before_keep_their_token_vectors_from_the_cache(seeded, embedder, seed_takes):
    """A text already embedded is not embedded again, and its take still gets its token vectors."""
    with seeded.writer() as writer:
        rebuilt = writer.rebuild(embedder, model=DEFAULT_MODEL)
        again = writer.add([dataclasses.replace(seed_takes[0], id="same-text", author="Someone Else")], embedder, model=DEFAULT_MODEL)
    assert rebuilt.embedded == 0 and (again.added, again.embedded) == (1, 0)
    generation = seeded.load()
    row_ids = live_row_ids(generation)
    assert len(row_ids) == 100 and sorted(generation.token_vectors(row_ids)) == sorted(row_ids)
