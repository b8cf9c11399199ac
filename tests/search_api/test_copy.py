"""`takes copy`: a corpus to a database and back, vectors with it, the password never shown."""

from __future__ import annotations

import json
import urllib.parse


def test_copy_to_a_database_and_back_then_search_the_copy(run, seed_index, database_url, tmp_path):
    secret_url = urllib.parse.urlunsplit(
        urllib.parse.urlsplit(database_url)._replace(netloc="postgres:copy-secret@" + urllib.parse.urlsplit(database_url).netloc.rpartition("@")[2])
    )
    result = run("copy", "--from", seed_index, "--to", secret_url)
    assert result.exit_code == 0, result.output
    assert "copied 99 takes" in result.output and "none re-embedded" in result.output
    assert "copy-secret" not in result.output and "***" in result.output

    again = run("copy", "--from", seed_index, "--to", secret_url)
    assert again.exit_code == 1 and "already holds 99 takes" in again.output and "--replace" in again.output
    assert "copy-secret" not in again.output

    back = run("copy", "--from", database_url, "--to", tmp_path / "back")
    assert back.exit_code == 0, back.output
    found = run("search", "what about compute governance", "--json", "--index-dir", tmp_path / "back")
    expected = run("search", "what about compute governance", "--json", "--index-dir", seed_index)
    assert found.exit_code == 0, found.output
    def ranked(output):
        return [(item["id"], round(item["score"], 6)) for item in json.loads(output)["results"]]

    assert ranked(found.output) == ranked(expected.output) and len(ranked(found.output)) == 10


def test_copy_errors_are_one_line(run, tmp_path):
    missing = run("copy", "--from", tmp_path / "nothing-here", "--to", tmp_path / "target")
    assert missing.exit_code == 1 and "no index in" in missing.output and "Traceback" not in missing.output
