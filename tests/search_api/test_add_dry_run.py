"""`takes add --dry-run`: what would be added, per thread, with duplicates skipped, and nothing written."""

from __future__ import annotations

import hashlib

from click.testing import CliRunner

from search_api.cli import cli


def fingerprint(index_dir):
    # SQLite's -wal/-shm side files come and go as connections close (an empty WAL is removed): not index content.
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(index_dir.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


def test_dry_run_reports_new_takes_and_duplicates_and_writes_nothing(index_copy, tmp_path):
    new = tmp_path / "new.jsonl"
    new.write_text(
        '{"text": "Compute thresholds age badly as hardware improves.", "author": "Dana Okafor", "thread_id": "dana-1"}\n'
        '{"text": "Audits need access to weights, not only APIs.", "author": "Dana Okafor", "thread_id": "dana-1"}\n'
        # The same words as a seed take from the same author: a duplicate.
        '{"text": "Pretty much everyone who works on AI thinks that they\'re \'one of the good people\'. '
        'Statistically, this is unlikely to be the case.", "author": "Jack Clark", "thread_id": "quote-1"}\n'
    )
    before = fingerprint(index_copy)
    result = CliRunner().invoke(cli, ["add", str(new), "--dry-run", "--index-dir", str(index_copy)])
    assert result.exit_code == 0, result.output
    assert "dana-1  Dana Okafor" in result.output and "2 new: Compute thresholds age badly" in result.output
    assert "would add 2 takes in 1 threads, skip 1 duplicates" in result.output
    assert "nothing written" in result.output
    assert fingerprint(index_copy) == before


def test_dry_run_on_a_folder_with_no_index_creates_nothing(tmp_path):
    new = tmp_path / "thread.txt"
    new.write_text("A first take about evaluations.\n\nA second take about compute.\n")
    target = tmp_path / "not-yet"
    result = CliRunner().invoke(cli, ["add", str(new), "--dry-run", "--index-dir", str(target)])
    assert result.exit_code == 0, result.output
    assert "would add 2 takes in 1 threads, skip 0 duplicates" in result.output
    assert not target.exists()
