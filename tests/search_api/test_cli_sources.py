"""`takes add` of Bluesky, Mastodon and Thread Reader inputs together, and of Bluesky links."""

from __future__ import annotations

import json
import socket

import pytest

from tests.bluesky_api import HANDLE, FakeAppView, serve
from tests.bluesky_car import OWNER, sample_repository
from tests.mastodon_archive import write_zip
from tests.samples import UNROLL

BLUESKY_TAKES, MASTODON_PUBLIC, MASTODON_PRIVATE, UNROLL_TAKES = 7, 5, 2, 3



@pytest.fixture
def inputs(tmp_path):
    unroll = tmp_path / "dana-unroll.txt"
    unroll.write_text(UNROLL, encoding="utf-8")
    car = tmp_path / "repo.car"
    car.write_bytes(sample_repository().car())
    return unroll, car, write_zip(tmp_path / "mastodon-archive.zip")


def stats(run, index_dir) -> dict:
    result = run("stats", "--json", "--index-dir", index_dir)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_mixed_sources_add_into_one_index_and_dedupe(run, tmp_path, inputs):
    index_dir = tmp_path / "index"
    total = BLUESKY_TAKES + MASTODON_PUBLIC + UNROLL_TAKES
    result = run("add", *inputs, "--index-dir", index_dir)
    assert result.exit_code == 0, result.output
    # "They track training cost, not capability." was posted on both networks
    # by the same author: the same text from the same author is one take.
    assert f"added {total - 1}, skipped 1 duplicates" in result.output
    assert stats(run, index_dir)["takes"] == total - 1

    again = run("add", *inputs, "--index-dir", index_dir)
    assert again.exit_code == 0, again.output
    assert f"added 0, skipped {total} duplicates" in again.output

    result = run("search", "compute thresholds blunt tool", "-k", "20", "--json", "--index-dir", index_dir)
    found = json.loads(result.output)["results"]
    sources = {take["source"] for take in found}
    assert {"repo.car", "mastodon-archive.zip"} <= sources
    by_source = {take["source"]: take for take in found}
    assert by_source["repo.car"]["url"].startswith(f"https://bsky.app/profile/{OWNER}/post/")
    assert by_source["mastodon-archive.zip"]["url"].startswith("https://mastodon.example/@policyfan/")


def test_private_mastodon_posts_only_with_the_flag(run, tmp_path, inputs):
    index_dir = tmp_path / "index"
    zip_path = inputs[2]
    assert f"added {MASTODON_PUBLIC}," in run("add", zip_path, "--index-dir", index_dir).output
    result = run("add", zip_path, "--include-private", "--index-dir", index_dir)
    assert result.exit_code == 0, result.output
    assert f"added {MASTODON_PRIVATE}, skipped {MASTODON_PUBLIC} duplicates" in result.output


def test_a_bluesky_link_adds_its_thread_and_dedupes_with_the_export(run, tmp_path, inputs):
    index_dir = tmp_path / "index"
    app_view = FakeAppView(sample_repository(), handles={OWNER: HANDLE}, names={OWNER: "Policy Fan"})
    link = f"https://bsky.app/profile/{HANDLE}/post/3kthread0002a"
    with serve(app_view) as url:
        result = run("add", link, "--index-dir", index_dir, TAKES_BLUESKY_API=url)
        assert result.exit_code == 0, result.output
        # The API shows a thread by its reply links, so the answer to a deleted
        # post is not under it (the export has it in the thread: four posts).
        assert "added 3, skipped 0" in result.output
        found = json.loads(run("search", "training cost capability", "-k", "1", "--json", "--index-dir", index_dir).output)["results"]
        assert found[0]["handle"] == f"@{HANDLE}" and found[0]["url"] == f"https://bsky.app/profile/{HANDLE}/post/3kthread0002a"
        # The export holds the same posts: only the others are new.
        result = run("add", inputs[1], "--index-dir", index_dir)
        assert f"added {BLUESKY_TAKES - 3}, skipped 3 duplicates" in result.output
        result = run("add", "--author", HANDLE, "--since", "2024-05-01", "--index-dir", index_dir, TAKES_BLUESKY_API=url)
        assert result.exit_code == 0, result.output
        assert f"added 0, skipped {BLUESKY_TAKES} duplicates" in result.output


def test_offline_is_one_line_and_adds_nothing(run, tmp_path, inputs):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    index_dir = tmp_path / "index"
    link = f"https://bsky.app/profile/{OWNER}/post/3kthread0001a"
    result = run("add", inputs[0], link, "--index-dir", index_dir, TAKES_BLUESKY_API=f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    # The progress bar (stderr, rewritten in place with \r) is gone by then: the error is the last line.
    last_line = result.output.strip().replace("\r", "\n").splitlines()[-1]
    assert last_line.startswith("takes: error: cannot reach the Bluesky API") and "offline?" in last_line
    assert not (index_dir / "manifest.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "give the files or Bluesky links to add"), (("x.txt", "--since", "2024-01-01"), "--since goes with --author")],
)
def test_add_usage_errors(run, tmp_path, args, message):
    result = run("add", *args, "--index-dir", tmp_path / "index")
    assert result.exit_code == 2 and message in result.output
