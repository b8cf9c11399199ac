"""Format detection, format names, and reading files from disk."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.errors import ParseError
from indexer.sources import FORMATS, detect_format, parse_text, read_takes

SEED = Path(__file__).resolve().parents[2] / "indexer" / "corpus" / "jackclark_ai_policy.txt"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SEED.read_text(encoding="utf-8"), "threadreader"),
        ("\n  window.YTD.tweets.part0 = [ ]", "archive"),
        ("Someone\nMar 3, 2024 4 tweets 1 min read Read on Twitter\n1/ hi", "threadreader"),
        ('{"text": "a"}\n\n{"text": "b"}\n', "jsonl"),
        ('{"text": "a"}\n{"text": "broken', "jsonl"),  # fails loudly later instead of becoming text
        ("\ufefftext,author\nhello,Ada\n", "csv"),
        ("id, Text ,thread_id\n1,hello,t\n", "csv"),
        ("text, and other things I think\nmore\n", "text"),
        ("title,body\nx,y\n", "csv"),  # header-like: the CSV parser names the missing 'text' column
        ("text;author\nhello;Ada\n", "csv"),
        ("Text\tauthor\nhello\tAda\n", "csv"),
        ("yes,no\nmaybe so\n", "text"),
        ("Just a note.\n\nAnother one.", "text"),
    ],
)
def test_detect_format(text, expected):
    assert detect_format(text, "input") == expected


@pytest.mark.parametrize("text", ["", "\n \n\t"])
def test_detect_empty_input_names_the_formats(text):
    with pytest.raises(ParseError) as caught:
        detect_format(text, "empty.txt")
    assert str(caught.value).startswith("empty.txt: empty file")
    assert all(name in str(caught.value) for name in FORMATS)


def test_unknown_format_names_the_valid_ones():
    with pytest.raises(ParseError) as caught:
        parse_text("hello", "notes.txt", "markdown")
    assert str(caught.value) == (
        "notes.txt: unknown format 'markdown': expected one of threadreader, archive, jsonl, csv, text, bluesky, mastodon"
    )


def test_explicit_format_overrides_detection():
    text = "text,author\nhello,Ada\n"
    assert [t.text for t in parse_text(text, "a.csv")] == ["hello"]
    assert [t.text for t in parse_text(text, "a.txt", "text")] == ["text,author\nhello,Ada"]
    with pytest.raises(ParseError, match=r"^a\.txt:1: expected a Thread Reader App header"):
        parse_text(text, "a.txt", "threadreader")


def test_every_format_parses_through_parse_text():
    samples = {
        "threadreader": "Ada Profile picture\nMar 3, 2024 1 tweet 1 min read Read on X\nhi\n",
        "archive": 'window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "full_text": "hi"}}]',
        "jsonl": '{"text": "hi"}',
        "csv": "text\nhi\n",
        "text": "hi there",
        "mastodon": '{"@context": "https://www.w3.org/ns/activitystreams", "type": "OrderedCollection", "orderedItems": ['
        '{"type": "Create", "actor": "https://m.example/users/ada", "object": {"id": "https://m.example/users/ada/statuses/1",'
        ' "type": "Note", "content": "<p>hi</p>", "published": "2024-01-01T00:00:00Z", "to": ["as:Public"]}}]}',
    }
    # A Bluesky export is binary: only read_takes (from its file) reads it.
    assert sorted(samples) == sorted(set(FORMATS) - {"bluesky"})
    for name, text in samples.items():
        assert detect_format(text, "f") == name
        assert [t.text for t in parse_text(text, "f")] == ["hi there" if name == "text" else "hi"]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(ParseError) as caught:
        read_takes(path)
    assert str(caught.value) == f"{path}: file not found"


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ParseError) as caught:
        read_takes(path)
    assert str(caught.value).startswith(f"{path}:2: not UTF-8 text (byte 0xe9")


def test_folder_other_than_an_archive(tmp_path):
    with pytest.raises(ParseError, match="only an X archive folder"):
        read_takes(tmp_path, "text")


def test_read_takes_uses_the_base_name_as_source(tmp_path):
    path = tmp_path / "sub" / "takes.jsonl"
    path.parent.mkdir()
    path.write_text('\ufeff{"text": "hi"}\n', encoding="utf-8")
    ((source, take_id),) = [(t.source, t.id) for t in read_takes(str(path))]
    assert source == "takes.jsonl" and re.fullmatch(r"takes-[a-z2-7]{12}-1", take_id)


def test_importing_sources_stays_light():
    code = "import sys, indexer.sources; print(sorted({'numpy', 'torch', 'faiss', 'fastapi'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
