"""Crash safety and concurrency of the writer, with real separate processes.

A writer is stopped at a named point (TAKES_TEST_PAUSE_AT, see
indexer.index.write_safety.PAUSE_POINTS) and killed with SIGKILL; the index must still load
and answer, with the old generation or the new one, never a mix.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from embeddings import DEFAULT_MODEL
from indexer.errors import IndexCorrupt, TakeNotFound
from indexer.index.snapshot import load_snapshot
from indexer.serving import Searcher
from indexer.sources import read_takes
from indexer.index.manifest import open_index_database
from indexer.index.write_safety import PAUSE_POINTS
from indexer.index.writer import IndexWriter
from search_api.cli import cli
from tests.cli_process import run_takes, start_takes, stop, wait_until
from tests.samples import UNROLL_IDS, nearest_takes

NEW_IDS = UNROLL_IDS
QUERY = "who should pay for AI auditors"



def kill_at(point: str, index_dir, tmp_path, *args) -> None:
    """Run `takes ARGS`, wait until it reaches ``point``, then SIGKILL it."""
    assert point in PAUSE_POINTS
    marker, log = tmp_path / f"reached-{point}", tmp_path / f"writer-{point}.log"
    process = start_takes(index_dir, *args, log=log, TAKES_TEST_PAUSE_AT=point, TAKES_TEST_PAUSE_FILE=marker)
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, timeout=120, what=f"the writer to reach {point}")
        assert marker.exists(), f"the writer exited with {process.returncode} before {point}: {log.read_text()}"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop(process)


def segment_files(index_dir) -> set[str]:
    return {f"segments/{path.name}" for path in (index_dir / "segments").iterdir()}


def mirror(index_dir) -> dict:
    return json.loads((index_dir / "manifest.json").read_text())


def committed(index_dir):
    connection, manifest = open_index_database(index_dir)
    connection.close()
    return manifest


def assert_cleaned_by_next_writer(index_dir) -> None:
    """Opening a writer removes unnamed segments and temp files and rewrites a stale manifest.json."""
    (index_dir / "segments" / ".seg-000099.faiss.tmp").write_bytes(b"half a segment")
    (index_dir / ".manifest.json.tmp").write_text("{")
    IndexWriter(index_dir).close()
    manifest = committed(index_dir)
    assert segment_files(index_dir) == {segment.file for segment in manifest.segments}
    assert not (index_dir / ".manifest.json.tmp").exists()
    assert mirror(index_dir) == json.loads(manifest.to_json())


@pytest.mark.parametrize("point", ["before-segment", "after-segment", "after-commit"])
def test_killed_add_leaves_the_old_or_the_new_generation(point, index_copy, tmp_path, unroll, embedder, seed_takes):
    old = committed(index_copy)
    kill_at(point, index_copy, tmp_path, "add", unroll)

    snapshot = load_snapshot(index_copy)
    searcher = Searcher(index_copy, embedder=embedder)
    if point == "after-commit":
        # Committed: the new takes are in, consistently, though manifest.json still shows the old generation.
        assert (snapshot.generation, snapshot.manifest.count) == (old.generation + 1, len(seed_takes) + 3)
        assert mirror(index_copy)["generation"] == old.generation
        assert searcher.get_take(NEW_IDS[2]).text.startswith("3/ So fund AI auditors")
        assert searcher.search(QUERY, 3)[0].take.id in NEW_IDS
    else:
        assert (snapshot.generation, snapshot.manifest.count) == (old.generation, len(seed_takes))
        assert snapshot.faiss_index.ntotal == len(seed_takes)
        with pytest.raises(TakeNotFound):
            searcher.get_take(NEW_IDS[0])
        assert not {result.take.id for result in searcher.search(QUERY, 10)} & set(NEW_IDS)
        orphan = f"segments/seg-{old.generation + 1:06d}.faiss"
        # The kill came after the segment file was written, or before: the file says which.
        assert (orphan in segment_files(index_copy)) == (point == "after-segment")

    assert_cleaned_by_next_writer(index_copy)
    encoded = embedder.texts_encoded
    with IndexWriter(index_copy) as writer:
        report = writer.add(read_takes(unroll), embedder, model=DEFAULT_MODEL)
    # The killed process had already cached its vectors: nothing is embedded twice.
    assert embedder.texts_encoded == encoded and report.embedded == 0
    assert report.added == (0 if point == "after-commit" else 3)
    searcher.refresh()
    assert searcher.manifest.count == len(seed_takes) + 3
    assert searcher.search(QUERY, 3)[0].take.id in NEW_IDS


@pytest.mark.parametrize("point", ["before-segment", "after-segment", "after-commit", "after-mirror"])
def test_killed_rebuild_leaves_the_old_or_the_new_generation(point, index_copy, tmp_path, embedder, seed_takes):
    old = committed(index_copy)
    kill_at(point, index_copy, tmp_path, "rebuild")

    snapshot = load_snapshot(index_copy)
    new = point in ("after-commit", "after-mirror")
    assert snapshot.generation == old.generation + new
    assert snapshot.manifest.count == snapshot.faiss_index.ntotal == len(seed_takes)
    assert mirror(index_copy)["generation"] == (old.generation + 1 if point == "after-mirror" else old.generation)
    if new:
        # The old segment outlives the commit until orphans are cleaned.
        assert {segment.file for segment in old.segments} <= segment_files(index_copy)
    searcher = Searcher(index_copy, embedder=embedder)
    assert "guillotines" in searcher.search("guillotines", 1)[0].take.text

    assert_cleaned_by_next_writer(index_copy)
    assert load_snapshot(index_copy).manifest.count == len(seed_takes)


def test_killed_remove_after_its_commit_is_removed(index_copy, tmp_path, seed_takes):
    old = committed(index_copy)
    kill_at("after-commit", index_copy, tmp_path, "remove", seed_takes[0].id)
    snapshot = load_snapshot(index_copy)
    assert (snapshot.generation, snapshot.manifest.count) == (old.generation + 1, len(seed_takes) - 1)
    assert_cleaned_by_next_writer(index_copy)


def test_a_newer_or_different_manifest_json_is_reported_as_corrupt(index_copy):
    manifest = mirror(index_copy)
    (index_copy / "manifest.json").write_text(json.dumps({**manifest, "generation": manifest["generation"] + 3}))
    with pytest.raises(IndexCorrupt, match=r"manifest.json is at generation \d+ but takes.sqlite only at"):
        load_snapshot(index_copy)
    (index_copy / "manifest.json").write_text(json.dumps({**manifest, "count": 7}))
    with pytest.raises(IndexCorrupt, match=r"disagree about generation \d+ \(count\)"):
        load_snapshot(index_copy)
    # The database is the commit point: the next writer rewrites the mirror from it.
    IndexWriter(index_copy).close()
    assert mirror(index_copy) == manifest
    assert load_snapshot(index_copy).manifest.count == 99

    (index_copy / "manifest.json").write_text('{"format_version": 1, "model": ')
    with pytest.raises(IndexCorrupt, match="manifest.json is not a readable manifest"):
        load_snapshot(index_copy)
    # The repair the message suggests works.
    result = CliRunner().invoke(cli, ["rebuild", "--index-dir", str(index_copy)])
    assert result.exit_code == 0, result.output
    assert load_snapshot(index_copy).manifest.count == 99


def test_segments_that_disagree_with_the_database_are_corrupt_and_rebuild_repairs(index_copy, seed_takes):
    import faiss
    import numpy as np

    (segment,) = committed(index_copy).segments
    path = index_copy / segment.file
    # The right number of vectors, but under row ids the database does not have.
    vectors = np.random.default_rng(0).standard_normal((segment.count, 384)).astype(np.float32)
    stranger = faiss.IndexIDMap2(faiss.IndexFlatIP(384))
    stranger.add_with_ids(vectors, np.arange(10_000, 10_000 + segment.count, dtype=np.int64))
    path.write_bytes(faiss.serialize_index(stranger).tobytes())
    # The file is not the one the generation committed: its checksum says so first.
    with pytest.raises(IndexCorrupt, match=r"seg-\d+\.faiss does not match the checksum .*`takes repair`"):
        load_snapshot(index_copy)

    path.unlink()
    with pytest.raises(IndexCorrupt, match=r"cannot read vector segment .*seg-\d+\.faiss"):
        load_snapshot(index_copy)
    # Rebuild re-embeds from the database through the cache: no model, no segment needed.
    result = run_takes(index_copy, "rebuild")
    assert result.returncode == 0, result.stderr
    assert "0 texts embedded" in result.stdout and "loading model" not in result.stderr
    assert load_snapshot(index_copy).manifest.count == len(seed_takes)


def test_a_second_writer_waits_for_the_lock_then_gives_up_with_a_clear_message(index_copy, unroll, seed_takes):
    with IndexWriter(index_copy):
        started = time.monotonic()
        result = run_takes(index_copy, "remove", seed_takes[0].id, "--lock-timeout", "1")
        waited = time.monotonic() - started
        assert result.returncode == 1
        assert "is being written by another writer (pid" in result.stderr and "waited 1s" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert waited >= 1

        # `add` parses first, then waits for the lock; the model is never loaded.
        result = run_takes(index_copy, "add", unroll, "--lock-timeout", "0.5")
        assert result.returncode == 1 and "waited 0.5s" in result.stderr
        assert "loading model" not in result.stderr
    assert committed(index_copy).count == len(seed_takes)


def test_a_second_writer_proceeds_when_the_first_finishes_in_time(index_copy, tmp_path, seed_takes):
    writer = IndexWriter(index_copy)
    log = tmp_path / "second.log"
    second = start_takes(index_copy, "remove", seed_takes[0].id, "--lock-timeout", "60", log=log)
    try:
        time.sleep(1.5)
        assert second.poll() is None, log.read_text()  # still waiting
        writer.close()
        assert second.wait(timeout=60) == 0, log.read_text()
    finally:
        writer.close()
        stop(second)
    assert "removed 1 takes" in log.read_text()
    assert committed(index_copy).count == len(seed_takes) - 1


def test_searches_during_writes_by_another_process_see_one_generation_at_a_time(index_copy, unroll, embedder, seed_takes):
    searcher = Searcher(index_copy, embedder=embedder)
    query_vector = embedder.encode([QUERY])[0]
    removed = NEW_IDS[2]
    observed: list[tuple[int, list[str], list[str]]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def keep_searching():
        # Only this thread refreshes, so the snapshot cannot change during one iteration.
        try:
            while not done.is_set():
                searcher.refresh()
                generation = searcher.snapshot.generation
                dense = [take.id for take, _ in nearest_takes(searcher.snapshot, query_vector, 10)]
                default = [result.take.id for result in searcher.search(QUERY, 10)]
                assert searcher.snapshot.generation == generation
                observed.append((generation, dense, default))
                # Leave the writer process some CPU: the machine may have two cores.
                time.sleep(0.02)
        except BaseException as error:  # noqa: BLE001 - any failure at all is what this test looks for
            errors.append(error)

    reader = threading.Thread(target=keep_searching)
    start = committed(index_copy).generation
    reader.start()
    try:
        added = run_takes(index_copy, "add", unroll)
        assert added.returncode == 0, added.stderr
        dropped = run_takes(index_copy, "remove", removed)
        assert dropped.returncode == 0, dropped.stderr
        wait_until(lambda: observed and observed[-1][0] == start + 2, timeout=30, what="the reader to reach the last generation")
    finally:
        done.set()
        reader.join(timeout=30)
    assert not errors, errors

    visible = {
        start: {take.id for take in seed_takes},
        start + 1: {take.id for take in seed_takes} | set(NEW_IDS),
        start + 2: ({take.id for take in seed_takes} | set(NEW_IDS)) - {removed},
    }
    by_generation: dict[int, set[tuple[str, ...]]] = {}
    for generation, dense, default in observed:
        assert generation in visible
        assert set(dense) <= visible[generation] and set(default) <= visible[generation], generation
        by_generation.setdefault(generation, set()).add(tuple(dense))
    # One ranking per generation: no search saw part of one and part of another.
    assert all(len(rankings) == 1 for rankings in by_generation.values()), by_generation
    assert {start, start + 2} <= set(by_generation)
    (final,) = by_generation[start + 2]
    (first,) = by_generation[start]
    assert not set(first) & set(NEW_IDS)
    assert set(final) & set(NEW_IDS) and removed not in final
    assert len(observed) > 20
