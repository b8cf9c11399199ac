"""Keeping an index current: `takes add`, `takes remove`, `takes rebuild` without re-indexing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from embeddings import DEFAULT_MODEL
from indexer import SEED_CORPUS
from indexer.errors import TakeNotFound
from indexer.index.snapshot import load_snapshot
from indexer.serving import Searcher
from indexer.sources import read_takes
from indexer.index.manifest import open_index_database
from indexer.index.writer import IndexWriter
from search_api.cli import cli
from tests.samples import UNROLL, UNROLL_IDS, nearest_takes

NEW_IDS = UNROLL_IDS


@pytest.fixture
def unroll(tmp_path):
    path = tmp_path / "dana.txt"
    path.write_text(UNROLL)
    return path


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(arg) for arg in args])

    return invoke


def live_ids(index_dir) -> set[str]:
    """Ids of the takes the committed generation holds, read straight from SQLite."""
    connection, _ = open_index_database(index_dir)
    try:
        return {row[0] for row in connection.execute("SELECT id FROM takes WHERE removed_generation IS NULL")}
    finally:
        connection.close()


def test_adding_the_same_takes_twice_adds_and_embeds_nothing_the_second_time(index_copy, unroll, embedder, seed_takes):
    takes = read_takes(unroll)
    with IndexWriter(index_copy) as writer:
        encoded = embedder.texts_encoded
        first = writer.add(takes, embedder, model=DEFAULT_MODEL)
        assert (first.added, first.skipped, first.embedded) == (3, 0, 3)
        assert embedder.texts_encoded - encoded == 3
        assert first.added_ids == NEW_IDS

        encoded = embedder.texts_encoded
        second = writer.add(takes, embedder, model=DEFAULT_MODEL)
        assert (second.added, second.skipped, second.embedded) == (0, 3, 0)
        assert embedder.texts_encoded == encoded
        # Nothing new, so no new generation either.
        assert second.generation == first.generation
    snapshot = load_snapshot(index_copy)
    assert snapshot.manifest.count == len(seed_takes) + 3 == snapshot.faiss_index.ntotal


def test_same_words_from_the_same_author_under_another_id_is_a_duplicate(index_copy, embedder, seed_takes):
    original = seed_takes[5]
    respaced = original.__class__(
        **{**original.to_dict(), "id": "copy-1", "thread_id": "copy", "text": "  " + original.text.upper().replace(" ", "   ")}
    )
    other_author = original.__class__(**{**original.to_dict(), "id": "copy-2", "thread_id": "copy", "author": "Someone Else"})
    with IndexWriter(index_copy) as writer:
        report = writer.add([respaced, other_author], embedder, model=DEFAULT_MODEL)
    # The same words from another author are a different take.
    assert (report.added, report.skipped, report.added_ids) == (1, 1, ["copy-2"])


def test_cli_add_creates_the_index_then_skips_everything_without_loading_the_model(run, tmp_path, unroll):
    index_dir = tmp_path / "new-index"
    result = run("add", unroll, "--index-dir", index_dir)
    assert result.exit_code == 0, result.output
    assert "added 3, skipped 0 duplicates" in result.output
    assert json.loads((index_dir / "manifest.json").read_text())["model"] == DEFAULT_MODEL

    result = run("add", unroll, unroll, "--index-dir", index_dir)
    assert result.exit_code == 0, result.output
    assert "added 0, skipped 6 duplicates" in result.output
    # The loading line is printed only when the model is created.
    assert "loading model" not in result.output
    assert load_snapshot(index_dir).manifest.count == 3


def test_a_parse_error_in_any_file_adds_nothing(run, index_copy, unroll, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    before = load_snapshot(index_copy).manifest
    result = run("add", unroll, bad, "--index-dir", index_copy)
    assert result.exit_code == 1
    assert f"{bad}:2: malformed JSON" in result.output
    assert "Traceback" not in result.output
    after = load_snapshot(index_copy).manifest
    assert (after.generation, after.count) == (before.generation, before.count)


def test_add_with_another_model_is_refused_before_loading_it(run, index_copy, unroll):
    result = run("add", unroll, "--model", "some-other-model", "--index-dir", index_copy)
    assert result.exit_code == 1
    assert "some-other-model" in result.output and DEFAULT_MODEL in result.output
    assert "loading model" not in result.output


def test_remove_then_add_restores_the_takes_from_the_cache(run, index_copy, seed_takes, embedder):
    original = live_ids(index_copy)
    thread_id = "jackclarkSF-2023-06-25"
    in_thread = [take.id for take in seed_takes if take.thread_id == thread_id]
    assert len(in_thread) > 1

    result = run("remove", "--thread", thread_id, "--index-dir", index_copy)
    assert result.exit_code == 0, result.output
    assert f"removed {len(in_thread)} takes" in result.output
    assert live_ids(index_copy) == original - set(in_thread)
    searcher = Searcher(index_copy, embedder=embedder)
    with pytest.raises(TakeNotFound):
        searcher.get_thread(thread_id)
    assert not any(result.take.thread_id == thread_id for result in searcher.search("what about compute governance", 20))

    result = run("add", SEED_CORPUS, "--index-dir", index_copy)
    assert result.exit_code == 0, result.output
    assert f"added {len(in_thread)}, skipped {len(seed_takes) - len(in_thread)} duplicates" in result.output
    # Their vectors were still in the embedding cache.
    assert "0 embedded" in result.output and "loading model" not in result.output
    assert live_ids(index_copy) == original
    searcher.refresh()
    assert [take.id for take in searcher.get_thread(thread_id)] == in_thread


def test_remove_by_id_and_unknown_ids_remove_nothing(run, index_copy, seed_takes):
    keep, gone = seed_takes[0].id, seed_takes[1].id
    before = load_snapshot(index_copy).manifest

    result = run("remove", keep, "no-such-take", "--index-dir", index_copy)
    assert result.exit_code == 1
    assert "no-such-take" in result.output and "nothing removed" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert load_snapshot(index_copy).manifest.generation == before.generation

    result = run("remove", gone, "--index-dir", index_copy)
    assert result.exit_code == 0, result.output
    assert f"removed 1 takes (generation {before.generation + 1})" in result.output
    assert live_ids(index_copy) == {take.id for take in seed_takes} - {gone}

    result = run("remove", "--index-dir", index_copy)
    assert result.exit_code == 2 and "--thread" in result.output


def test_rebuild_with_the_same_model_embeds_nothing(index_copy, embedder, seed_takes, searcher):
    # Dense ranking compares vectors alone (BM25 statistics shift while removed rows await purging).
    query_vector = embedder.encode(["what about compute governance"])[0]
    before = [(take.id, round(score, 5)) for take, score in nearest_takes(searcher.snapshot, query_vector, 10)]
    generation = load_snapshot(index_copy).generation
    encoded = embedder.texts_encoded
    with IndexWriter(index_copy) as writer:
        report = writer.rebuild(embedder, model=DEFAULT_MODEL)
    assert embedder.texts_encoded == encoded
    assert (report.added, report.embedded, report.generation) == (len(seed_takes), 0, generation + 1)
    snapshot = load_snapshot(index_copy)
    # One fresh segment holds everything; the old one is gone.
    assert [segment.generation for segment in snapshot.manifest.segments] == [generation + 1]
    assert sorted(path.name for path in (index_copy / "segments").iterdir()) == [f"seg-{generation + 1:06d}.faiss"]
    rebuilt = Searcher(index_copy, embedder=embedder)
    assert [(take.id, round(score, 5)) for take, score in nearest_takes(rebuilt.snapshot, query_vector, 10)] == before


def test_cli_rebuild_reports_what_it_embedded(run, index_copy, seed_takes):
    result = run("rebuild", "--index-dir", index_copy)
    assert result.exit_code == 0, result.output
    assert f"rebuilt {len(seed_takes)} takes with model {DEFAULT_MODEL}: 0 texts embedded" in result.output
    assert "loading model" not in result.output


@pytest.mark.parametrize("command", [("remove", "some-id"), ("rebuild",)])
def test_remove_and_rebuild_need_an_index_and_create_nothing(run, tmp_path, command):
    missing = tmp_path / "missing"
    result = run(*command, "--index-dir", missing)
    assert result.exit_code == 1
    assert "no index in" in result.output
    assert not missing.exists()
