"""Plain text: one take per paragraph, the file one thread."""

from __future__ import annotations

import pytest

from indexer.errors import ParseError
from indexer.sources import read_takes
from indexer.sources.plaintext import parse

NOTES = """

  Compute thresholds   are a blunt tool.
They age badly.\t

 \t
- a bullet stays on its own line



Third paragraph.
"""


def test_one_take_per_paragraph():
    takes = parse(NOTES, "Policy Notes.txt")
    assert [(t.id, t.thread_id, t.position, t.thread_size, t.text) for t in takes] == [
        ("policy-notes-fmakwip2e6ua-1", "policy-notes-fmakwip2e6ua", 1, 3, "Compute thresholds are a blunt tool.\nThey age badly."),
        ("policy-notes-fmakwip2e6ua-2", "policy-notes-fmakwip2e6ua", 2, 3, "- a bullet stays on its own line"),
        ("policy-notes-fmakwip2e6ua-3", "policy-notes-fmakwip2e6ua", 3, 3, "Third paragraph."),
    ]
    assert {(t.author, t.handle, t.date, t.url, t.source) for t in takes} == {
        (None, None, None, None, "Policy Notes.txt")
    }


def test_read_takes_plain_file_is_stable(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("One take.\r\n\r\nAnother take.\r\n", encoding="utf-8")
    takes = read_takes(path)
    assert [(t.id, t.text) for t in takes] == [("notes-s5jxkyqzhjdw-1", "One take."), ("notes-s5jxkyqzhjdw-2", "Another take.")]
    assert read_takes(path) == takes
    # Only spacing and line ends changed: the same takes, the same ids.
    path.write_text("One   take.\n\n\n\nAnother take.", encoding="utf-8")
    assert read_takes(path) == takes


@pytest.mark.parametrize("text", ["", " \n\t\n  \n"])
def test_empty_file_is_an_error(text):
    with pytest.raises(ParseError, match=r"^notes\.txt: empty file"):
        parse(text, "notes.txt")
