"""Faults a user or the machine inflicts on an index: each loses nothing and serves nothing damaged.

Every case checks the same three things: the command says what happened in
one line (no traceback), the committed generation is whole (the old one or
the new one), and `takes check` / `takes repair` find and fix what can be
fixed, saying what is lost. Separate processes are real `takes` commands;
disk-full faults come from a small tmpfs (SQLite's writes) or from
tests.failing_writes (Python's file writes failing with ENOSPC).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from embeddings import DEFAULT_MODEL
from indexer.errors import IndexCorrupt, NotAnIndex
from indexer.index.sizes import index_bytes
from indexer.index.snapshot import load_snapshot
from indexer.serving import Searcher
from indexer.sources import read_takes
from indexer.index.check import check_index
from indexer.index.manifest import open_index_database
from indexer.index.writer import IndexWriter
from search_api.cli import cli
from tests.cli_process import REPO, run_takes, serving, start_takes, stop, takes_env, wait_until
from tests.samples import UNROLL_IDS

QUERY = "who should pay for AI auditors"



def takes(*args, **env):
    """`takes ARGS` in this process; (exit code, stdout + stderr)."""
    result = CliRunner().invoke(cli, [str(arg) for arg in args], env=env or None)
    return result.exit_code, result.output


def one_line_error(result) -> str:
    """The single error line of a failed `takes` process (no traceback)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    # Progress lines ("loading model ...") may come first; the error is one line.
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("takes:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def committed(index_dir):
    connection, manifest = open_index_database(index_dir)
    connection.close()
    return manifest


def leftovers(index_dir) -> list[str]:
    """Temporary files a write may have left anywhere in the index."""
    return sorted(str(path.relative_to(index_dir)) for path in index_dir.rglob("*") if path.name.endswith(".tmp"))


def flip(path, offset: int, count: int = 64) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        original = handle.read(count)
        handle.seek(offset)
        handle.write(bytes(byte ^ 0xFF for byte in original))


def check_lines(index_dir) -> tuple[int, list[str]]:
    code, output = takes("check", "--index-dir", index_dir)
    return code, [line for line in output.splitlines() if line.startswith("problem: ")]


# -- a folder that is not an index ---------------------------------------------


def test_a_folder_that_is_not_an_index_is_never_written(tmp_path, unroll):
    folder = tmp_path / "videos"
    (folder / "segments").mkdir(parents=True)
    (folder / "segments" / "episode1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (folder / "manifest.json").write_text('{"episodes": 1}')
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    for command in (["index"], ["add", unroll], ["index", "--replace"]):
        code, output = takes(*command, "--index-dir", folder)
        assert code == 1 and "is not a takes index" in output and "nothing was written" in output, output
        assert len(output.strip().splitlines()) == 1
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before
    # A database that is someone else's SQLite file is not an index either.
    other = tmp_path / "other"
    other.mkdir()
    connection = sqlite3.connect(other / "takes.sqlite")
    connection.execute("CREATE TABLE recipes (name TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(NotAnIndex):
        IndexWriter(other)


def test_cleanup_deletes_only_files_named_like_ours(index_copy, seed_takes):
    user_file = index_copy / "segments" / "episode1.mp4"
    user_file.write_bytes(b"precious")
    (index_copy / "notes.txt").write_text("mine")
    orphan = index_copy / "segments" / "seg-000077.faiss"
    orphan.write_bytes(b"left by a crash")
    with IndexWriter(index_copy) as writer:
        writer.remove([seed_takes[0].id])
    assert user_file.read_bytes() == b"precious" and (index_copy / "notes.txt").read_text() == "mine"
    assert not orphan.exists()


# -- errors name a repair that loses nothing -----------------------------------


def test_a_count_mismatch_names_repair_and_repair_keeps_every_take(index_copy, unroll, embedder):
    with IndexWriter(index_copy) as writer:
        writer.add(read_takes(unroll), embedder, model=DEFAULT_MODEL)
    total = committed(index_copy).count
    connection = sqlite3.connect(index_copy / "takes.sqlite")
    manifest = json.loads(connection.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()[0])
    connection.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", (json.dumps({**manifest, "count": total + 200}),))
    connection.commit()
    connection.close()
    (index_copy / "manifest.json").unlink()
    with pytest.raises(IndexCorrupt, match="takes repair") as caught:
        load_snapshot(index_copy)
    assert "takes index" not in str(caught.value)
    code, output = takes("repair", "--index-dir", index_copy)
    assert code == 0, output
    snapshot = load_snapshot(index_copy)
    assert snapshot.manifest.count == snapshot.faiss_index.ntotal == total
    assert Searcher(index_copy, embedder=embedder).get_take(UNROLL_IDS[0])


def test_no_corruption_message_suggests_the_command_that_replaces_the_index():
    # `takes index` replaces every take with the seed corpus: it repairs nothing.
    for path in sorted((REPO / "indexer" / "index").glob("*.py")) + [REPO / "indexer/search.py", REPO / "indexer/errors.py"]:
        module = path.relative_to(REPO)
        text = path.read_text()
        for line_number, line in enumerate(text.splitlines(), 1):
            if "`takes index`" in line:
                assert "build one with" in line, f"{module}:{line_number}: {line.strip()}"


# -- two writers when .lock is deleted ---------------------------------------


def test_deleting_the_lock_during_a_write_lets_only_one_writer_commit(index_copy, tmp_path, unroll, seed_takes):
    old = committed(index_copy)
    marker, resume, log = tmp_path / "paused", tmp_path / "resume", tmp_path / "first.log"
    first = start_takes(
        index_copy, "add", unroll, log=log,
        TAKES_TEST_PAUSE_AT="before-transaction", TAKES_TEST_PAUSE_FILE=marker, TAKES_TEST_RESUME_FILE=resume,
    )
    try:
        wait_until(lambda: marker.exists() or first.poll() is not None, timeout=120, what="the first writer to pause")
        assert marker.exists(), log.read_text()
        (index_copy / ".lock").unlink()
        second = run_takes(index_copy, "remove", seed_takes[0].id, "--lock-timeout", "1")
        assert second.returncode == 0, second.stderr
        resume.write_text("go")
        assert first.wait(timeout=120) == 1, log.read_text()
    finally:
        stop(first)
    message = log.read_text().strip().splitlines()[-1]
    assert "another writer committed generation" in message and "nothing was changed" in message
    snapshot = load_snapshot(index_copy)
    assert snapshot.generation == old.generation + 1
    assert snapshot.manifest.count == snapshot.faiss_index.ntotal == len(seed_takes) - 1
    assert check_index(index_copy)[0] == []
    # Run again, as the message says: it works.
    again = run_takes(index_copy, "add", unroll)
    assert again.returncode == 0, again.stderr
    assert committed(index_copy).count == len(seed_takes) + 2


# -- `takes index` on an index that holds takes -------------------------------


def test_index_refuses_to_replace_takes_unless_asked(index_copy, unroll, seed_takes, tmp_path):
    code, output = takes("index", unroll, "--index-dir", index_copy)
    assert code == 1
    assert output.strip() == (
        f"takes: error: the index in {index_copy} holds {len(seed_takes)} takes; "
        "`takes add` adds to it, `takes index --replace` replaces it"
    )
    assert committed(index_copy).count == len(seed_takes)
    code, output = takes("index", "--if-missing", "--index-dir", index_copy)
    assert code == 0 and "already exists" in output
    # --replace keeps the old generation until the new one commits.
    log, marker = tmp_path / "replace.log", tmp_path / "reached"
    process = start_takes(index_copy, "index", unroll, "--replace", log=log, TAKES_TEST_PAUSE_AT="after-segment", TAKES_TEST_PAUSE_FILE=marker)
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, timeout=120, what="the replacing writer to pause")
        assert marker.exists(), log.read_text()
        assert load_snapshot(index_copy).manifest.count == len(seed_takes)
        process.kill()
        process.wait(timeout=30)
    finally:
        stop(process)
    assert load_snapshot(index_copy).manifest.count == len(seed_takes)
    code, output = takes("index", unroll, "--replace", "--index-dir", index_copy)
    assert code == 0, output
    assert committed(index_copy).count == 3


# -- corruption at rest ------------------------------------------------------


def test_a_flipped_segment_is_detected_checked_and_repaired(index_copy, embedder, seed_takes):
    (segment,) = committed(index_copy).segments
    flip(index_copy / segment.file, (index_copy / segment.file).stat().st_size // 2)
    with pytest.raises(IndexCorrupt, match=r"does not match the checksum.*`takes repair`"):
        load_snapshot(index_copy)
    result = run_takes(index_copy, "search", QUERY)
    assert "takes repair" in one_line_error(result)
    code, problems = check_lines(index_copy)
    assert code == 1 and len(problems) == 1 and segment.file in problems[0], problems
    code, output = takes("repair", "--index-dir", index_copy)
    assert code == 0 and "re-embedded 99 takes" in output and "(0 embedded" in output, output
    assert check_lines(index_copy) == (0, [])
    results = Searcher(index_copy, embedder=embedder).search(QUERY, 10, mode="dense")
    assert results and all(result.score <= 1.0001 for result in results)


def test_a_format_1_index_without_checksums_loads_and_still_rejects_damaged_vectors(index_copy, embedder, seed_takes):
    connection = sqlite3.connect(index_copy / "takes.sqlite")
    manifest = json.loads(connection.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()[0])
    old = {**manifest, "format_version": 1, "segments": [{k: v for k, v in s.items() if k != "checksum"} for s in manifest["segments"]]}
    connection.execute("UPDATE meta SET value = ? WHERE key = 'manifest'", (json.dumps(old, indent=2),))
    connection.commit()
    connection.close()
    (index_copy / "manifest.json").write_text(json.dumps(old, indent=2))
    assert load_snapshot(index_copy).manifest.count == len(seed_takes)
    code, output = takes("check", "--index-dir", index_copy)
    assert code == 0 and "no checksum (format 1)" in output, output
    # Damage inside the vectors: no checksum to catch it, but no unit vector either.
    segment = index_copy / manifest["segments"][0]["file"]
    flip(segment, segment.stat().st_size // 2)
    with pytest.raises(IndexCorrupt, match="not unit length"):
        load_snapshot(index_copy)
    code, output = takes("repair", "--index-dir", index_copy)
    assert code == 0, output
    upgraded = committed(index_copy)
    assert upgraded.format_version == 2 and all(segment.checksum for segment in upgraded.segments)


def test_a_damaged_model_copy_is_refused_and_repair_restores_it(index_copy):
    from embeddings.onnx import model_cache_dir

    # The first search copies the model into the index.
    assert run_takes(index_copy, "search", QUERY).returncode == 0
    model_dir = model_cache_dir(DEFAULT_MODEL, index_copy)
    (onnx_file,) = (model_dir / "onnx").glob("*.onnx")
    flip(onnx_file, onnx_file.stat().st_size // 2, 1)
    result = run_takes(index_copy, "search", QUERY)
    line = one_line_error(result)
    assert "ONNX model copy" in line and "takes repair" in line
    code, problems = check_lines(index_copy)
    assert code == 1 and any(onnx_file.name in problem for problem in problems), problems
    code, output = takes("repair", "--index-dir", index_copy)
    assert code == 0 and "restored the ONNX model copy" in output, output
    result = run_takes(index_copy, "search", QUERY, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)


def test_damaged_cache_entries_are_embedded_again_never_reused(index_copy, embedder, seed_takes):
    cache = sqlite3.connect(index_copy / "embedding-cache.sqlite")
    hashes = [row[0] for row in cache.execute("SELECT text_hash FROM vectors LIMIT 5")]
    garbage = (np.full(384, 1000.0, np.float32)).tobytes()
    cache.executemany("UPDATE vectors SET vector = ? WHERE text_hash = ?", [(garbage, digest) for digest in hashes])
    cache.commit()
    cache.close()
    code, problems = check_lines(index_copy)
    assert code == 1 and "5 entries fail their checksum" in problems[0], problems
    with IndexWriter(index_copy) as writer:
        report = writer.rebuild(embedder, model=DEFAULT_MODEL)
    assert report.embedded == 5
    scores = [result.score for result in Searcher(index_copy, embedder=embedder).search(QUERY, 20, mode="dense")]
    assert max(scores) <= 1.0001
    # The re-embedded entries replaced the damaged ones.
    assert check_lines(index_copy) == (0, [])


def test_an_unreadable_cache_file_is_ignored_and_rebuilt(index_copy, embedder):
    cache_path = index_copy / "embedding-cache.sqlite"
    cache_path.write_bytes(os.urandom(cache_path.stat().st_size))
    code, problems = check_lines(index_copy)
    assert code == 1 and "embedding-cache.sqlite" in problems[0]
    code, output = takes("repair", "--index-dir", index_copy)
    assert code == 0 and "rebuilt embedding-cache.sqlite" in output, output
    with IndexWriter(index_copy) as writer:
        report = writer.rebuild(embedder, model=DEFAULT_MODEL)
    assert report.embedded == report.added


def test_random_bytes_in_the_saved_trained_index_are_discarded(index_copy, embedder, monkeypatch):
    with IndexWriter(index_copy, ann_threshold=10) as writer:
        writer.rebuild(embedder, model=DEFAULT_MODEL)
    assert load_snapshot(index_copy).manifest.index_type.startswith("ivf")
    trained = index_copy / "ann-cache.faiss"
    assert trained.exists()
    trained.write_bytes(os.urandom(trained.stat().st_size))
    code, problems = check_lines(index_copy)
    assert code == 1 and "ann-cache.faiss" in problems[0], problems
    results = Searcher(index_copy, embedder=embedder).search(QUERY, 5, mode="dense")
    assert len(results) == 5
    # The load trained afresh and saved an intact file.
    assert check_lines(index_copy) == (0, [])


def corrupt_a_page_of_takes(index_dir) -> None:
    """Overwrite a leaf page of the takes table with garbage (a bad sector, say)."""
    connection = sqlite3.connect(index_dir / "takes.sqlite")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    pages = [row[0] for row in connection.execute("SELECT pageno FROM dbstat WHERE name = 'takes' AND pagetype = 'leaf'")]
    connection.close()
    page = pages[len(pages) // 2]
    with open(index_dir / "takes.sqlite", "r+b") as handle:
        handle.seek((page - 1) * page_size + 8)
        handle.write(os.urandom(page_size - 8))


@pytest.mark.parametrize("with_shell", [True, False], ids=["sqlite3-recover", "row-by-row"])
def test_a_damaged_database_page_is_one_line_and_repair_recovers_the_rest(with_shell, index_copy, embedder, seed_takes):
    if with_shell:
        shell = shutil.which("sqlite3")
        probe = subprocess.run([shell, str(index_copy / "takes.sqlite"), ".recover"], capture_output=True) if shell else None
        if probe is None or probe.returncode != 0:
            pytest.skip("no sqlite3 shell with .recover here (Debian's lacks the sqlite_dbpage table)")
    corrupt_a_page_of_takes(index_copy)
    for command in (("search", QUERY), ("stats",), ("remove", seed_takes[0].id)):
        one_line_error(run_takes(index_copy, *command))
    code, problems = check_lines(index_copy)
    assert code == 1 and "takes.sqlite" in problems[0], problems
    # Without the sqlite3 shell on PATH, rows are read one by one.
    env = {} if with_shell else {"PATH": os.path.dirname(sys.executable)}
    result = run_takes(index_copy, "repair", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    recovered = [line for line in result.stdout.splitlines() if line.startswith("recovered ")]
    assert recovered and ("sqlite3 .recover" if with_shell else "row by row") in recovered[0]
    assert "lost" in recovered[0] and list(index_copy.glob("takes.sqlite.damaged-*"))
    snapshot = load_snapshot(index_copy)
    assert 0 < snapshot.manifest.count < len(seed_takes)
    assert snapshot.manifest.count == snapshot.faiss_index.ntotal
    assert check_lines(index_copy) == (0, [])
    assert Searcher(index_copy, embedder=embedder).search(QUERY, 3)


def test_a_damaged_text_index_is_rebuilt_from_the_rows(index_copy, embedder):
    connection = sqlite3.connect(index_copy / "takes.sqlite")
    connection.execute("DELETE FROM takes_fts_data WHERE id > 10")
    connection.commit()
    connection.close()
    code, problems = check_lines(index_copy)
    assert code == 1 and "FTS5" in problems[0], problems
    code, output = takes("repair", "--index-dir", index_copy)
    assert code == 0 and "rebuilt the FTS5 text index" in output, output
    results = Searcher(index_copy, embedder=embedder).search("guillotines", 1, mode="lexical")
    assert "guillotines" in results[0].take.text


@pytest.mark.parametrize(
    "content",
    [b"null", b"\xff\xfe not utf-8", b'{"format_version": 1e400}', b"1e400", b"[]", b'{"format_version": 2, "dim": 1e400}'],
    ids=["null", "not-utf8", "huge-version", "huge-number", "list", "huge-dim"],
)
def test_a_malformed_manifest_json_is_one_line_and_repair_rewrites_it(content, index_copy):
    (index_copy / "manifest.json").write_bytes(content)
    line = one_line_error(run_takes(index_copy, "stats"))
    assert "manifest.json is not a readable manifest" in line and "takes repair" in line
    code, output = takes("repair", "--index-dir", index_copy)
    assert code == 0 and "rewrote manifest.json" in output, output
    assert load_snapshot(index_copy).manifest.count == 99


# -- read-only index -------------------------------------------------------------


@pytest.fixture
def read_only_index(index_copy, tmp_path):
    """The index copy seen through a read-only bind mount (as a read-only volume or share would be)."""
    target = tmp_path / "read-only"
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(index_copy), str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True, capture_output=True)
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_read_only_index_is_searched_and_served_and_writes_fail_in_one_line(read_only_index, unroll, tmp_path, seed_takes):
    result = run_takes(read_only_index, "search", QUERY, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)
    assert run_takes(read_only_index, "stats").returncode == 0
    assert run_takes(read_only_index, "check").returncode == 0
    for command in (("add", unroll), ("remove", seed_takes[0].id), ("rebuild",), ("compact",)):
        assert "read-only" in one_line_error(run_takes(read_only_index, *command))
    import httpx

    with serving(read_only_index, tmp_path / "serve.log") as (url, _):
        response = httpx.post(f"{url}/search", json={"q": QUERY, "k": 3}, timeout=30)
        assert response.status_code == 200, response.text


# -- disk full ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command,pattern",
    [
        (("add", "UNROLL"), r"\.seg-\d+\.faiss\.tmp$"),
        (("rebuild",), r"\.seg-\d+\.faiss\.tmp$"),
        (("compact",), r"\.seg-\d+\.faiss\.tmp$"),
    ],
    ids=["add-segment", "rebuild-segment", "compact-segment"],
)
def test_disk_full_while_writing_a_segment_changes_nothing(command, pattern, index_copy, unroll, seed_takes):
    old = committed(index_copy)
    if command[0] == "compact":
        with IndexWriter(index_copy) as writer:
            writer.remove([seed_takes[0].id])
        old = committed(index_copy)
    args = [str(unroll) if arg == "UNROLL" else arg for arg in command]
    result = subprocess.run(
        [sys.executable, "-m", "tests.failing_writes", "ENOSPC", pattern, *args],
        env=takes_env(index_copy), cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    line = one_line_error(result)
    assert "no space left on the device" in line and f"still holds generation {old.generation}" in line
    assert committed(index_copy) == old
    assert leftovers(index_copy) == []
    assert {f"segments/{p.name}" for p in (index_copy / "segments").iterdir()} == {s.file for s in old.segments}
    assert check_index(index_copy)[0] == []


def test_disk_full_writing_manifest_json_after_the_commit_keeps_the_commit(index_copy, unroll, seed_takes):
    old = committed(index_copy)
    result = subprocess.run(
        [sys.executable, "-m", "tests.failing_writes", "ENOSPC", r"\.manifest\.json\.tmp$", "add", str(unroll)],
        env=takes_env(index_copy), cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    # The change committed: it is reported as done, and the mirror catches up later.
    assert result.returncode == 0, result.stderr
    assert committed(index_copy).generation == old.generation + 1
    assert json.loads((index_copy / "manifest.json").read_text())["generation"] == old.generation
    assert leftovers(index_copy) == []
    IndexWriter(index_copy).close()
    assert json.loads((index_copy / "manifest.json").read_text())["generation"] == old.generation + 1


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MB tmpfs: room for an index and its model copy, then filled to the byte asked."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill_leaving(disk, free: int) -> None:
    filler = disk / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * (1 << 20))
            handle.flush()
    with contextlib.suppress(OSError):
        with open(filler, "ab") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - free))


def test_disk_full_at_every_write_point_of_sqlite_and_the_segments(small_disk, seed_index, seed_takes):
    """Whatever the space left, a write completes or changes nothing, in one line, leaving no temporary."""
    outcomes = set()
    for free in (0, 16 << 10, 64 << 10, 160 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20):
        for command in (("remove", seed_takes[1].id), ("rebuild",), ("compact",)):
            index_dir = small_disk / "index"
            shutil.rmtree(index_dir, ignore_errors=True)
            (small_disk / "filler").unlink(missing_ok=True)
            shutil.copytree(seed_index, index_dir, ignore=shutil.ignore_patterns(".lock"))
            if command[0] == "compact":
                with IndexWriter(index_dir) as writer:
                    writer.remove([seed_takes[0].id])
            old = committed(index_dir)
            fill_leaving(small_disk, free)
            result = run_takes(index_dir, *command, timeout=300)
            (small_disk / "filler").unlink()
            now = committed(index_dir)
            if result.returncode == 0:
                outcomes.add("done")
                assert now.generation == old.generation + 1
            else:
                line = one_line_error(result)
                assert "no space left on" in line.lower(), line
                outcomes.add("file" if "cannot write" in line else "sqlite")
                assert now == old, (free, command)
            assert leftovers(index_dir) == [], (free, command)
            snapshot = load_snapshot(index_dir)
            assert snapshot.manifest.count == snapshot.faiss_index.ntotal
            assert check_index(index_dir)[0] == [], (free, command)
    # SQLite's writes and a file write both failed somewhere, and some writes fit.
    assert outcomes == {"done", "sqlite", "file"}, outcomes


# -- bad settings and odd indexes -------------------------------------------------


def test_a_bad_ann_threshold_is_one_line(index_copy, unroll):
    line = one_line_error(run_takes(index_copy, "add", unroll, TAKES_ANN_THRESHOLD="abc"))
    assert "TAKES_ANN_THRESHOLD" in line and "'abc'" in line and "integer" in line


def test_rebuild_on_an_empty_index_and_an_empty_database(tmp_path, embedder):
    empty = tmp_path / "empty"
    with IndexWriter(empty) as writer:
        writer.replace_all([], embedder, model=DEFAULT_MODEL)
    result = run_takes(empty, "rebuild")
    assert result.returncode == 0, result.stderr
    assert "rebuilt 0 takes" in result.stdout
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "takes.sqlite").write_bytes(b"")
    line = one_line_error(run_takes(zero, "rebuild"))
    assert "no index in" in line


def test_stats_counts_named_files_only_and_shows_what_compact_reclaims(index_copy, seed_takes):
    code, output = takes("stats", "--json", "--index-dir", index_copy)
    before = json.loads(output)
    shutil.copy(index_copy / committed(index_copy).segments[0].file, index_copy / "segments" / "seg-000050.faiss")
    code, output = takes("stats", "--json", "--index-dir", index_copy)
    after = json.loads(output)
    assert after["index_bytes"] == before["index_bytes"]
    assert after["reclaimable_bytes"] >= before["reclaimable_bytes"] + 384 * 4 * len(seed_takes)


# -- compact -------------------------------------------------------------------------


def test_compact_gives_back_what_removes_and_rebuilds_took(index_copy, embedder, seed_takes):
    searcher = Searcher(index_copy, embedder=embedder)
    start_bytes = index_bytes(index_copy)
    with IndexWriter(index_copy) as writer:
        writer.remove([seed_takes[0].id])
        writer.rebuild(embedder, model=DEFAULT_MODEL)
        writer.add(seed_takes[:1], embedder, model=DEFAULT_MODEL)
        writer.remove([seed_takes[1].id])
    assert len(committed(index_copy).segments) == 2
    code, output = takes("stats", "--json", "--index-dir", index_copy)
    assert json.loads(output)["reclaimable_bytes"] > 0
    expected = [result.take.id for result in (searcher.refresh(), searcher.search(QUERY, 10))[1]]
    grown_bytes = index_bytes(index_copy)
    code, output = takes("compact", "--index-dir", index_copy)
    assert code == 0 and "2 segments -> 1" in output, output
    manifest = committed(index_copy)
    assert len(manifest.segments) == 1 and manifest.segments[0].count == manifest.count == len(seed_takes) - 1
    connection = sqlite3.connect(index_copy / "takes.sqlite")
    assert connection.execute("SELECT count(*) FROM takes WHERE removed_generation IS NOT NULL").fetchone()[0] == 0
    connection.close()
    # Back to about the size of a fresh index (VACUUM adds a few map pages for incremental vacuum).
    assert index_bytes(index_copy) < grown_bytes and index_bytes(index_copy) <= start_bytes * 1.05
    searcher.refresh()
    assert [result.take.id for result in searcher.search(QUERY, 10)] == expected
    assert check_index(index_copy)[0] == []


def test_a_killed_compact_leaves_the_old_generation(index_copy, tmp_path, seed_takes):
    with IndexWriter(index_copy) as writer:
        writer.remove([seed_takes[0].id])
    old = committed(index_copy)
    marker, log = tmp_path / "reached", tmp_path / "compact.log"
    process = start_takes(index_copy, "compact", log=log, TAKES_TEST_PAUSE_AT="after-segment", TAKES_TEST_PAUSE_FILE=marker)
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, timeout=120, what="compact to pause")
        assert marker.exists(), log.read_text()
        process.kill()
        process.wait(timeout=30)
    finally:
        stop(process)
    assert committed(index_copy) == old
    snapshot = load_snapshot(index_copy)
    assert snapshot.manifest.count == snapshot.faiss_index.ntotal == len(seed_takes) - 1
    code, output = takes("compact", "--index-dir", index_copy)
    assert code == 0, output
    assert check_index(index_copy)[0] == []
