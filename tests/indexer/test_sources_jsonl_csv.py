"""JSON Lines and CSV records: given and derived ids, validation, line numbers."""

from __future__ import annotations

import json

import pytest

from indexer.errors import ParseError
from indexer.sources import parse_text, read_takes
from indexer.sources import csv_rows, jsonl


def jsonl_text(*records: dict | str) -> str:
    return "\n".join(record if isinstance(record, str) else json.dumps(record) for record in records) + "\n"


def test_jsonl_given_fields_are_kept_and_tidied():
    text = jsonl_text(
        {
            "id": "t1-a",
            "text": "  Compute   thresholds\tage badly.  ",
            "author": "Ada",
            "handle": "ada_l",
            "date": "2023-06-25T10:00:00Z",
            "thread_id": "t1",
            "position": 3,
            "thread_size": 5,
            "url": "https://x.com/ada_l/status/1",
            "extra": "ignored",
        }
    )
    (take,) = jsonl.parse(text, "takes.jsonl")
    assert take.to_dict() == {
        "id": "t1-a",
        "text": "Compute thresholds age badly.",
        "author": "Ada",
        "handle": "@ada_l",
        "date": "2023-06-25",
        "thread_id": "t1",
        "position": 3,
        "thread_size": 5,
        "url": "https://x.com/ada_l/status/1",
        "source": "takes.jsonl",
    }


def test_jsonl_derived_ids_are_stable_and_skip_blank_lines():
    records = [
        {"text": "alone"},
        {"text": "first", "thread_id": "t"},
        {"text": "second", "thread_id": "t"},
        {"text": "n", "id": 17},
    ]
    takes = parse_text(jsonl_text(*records), "My Takes.jsonl")
    # Written out so a change of the id scheme, which would re-add every take
    # of an existing index as new, cannot pass unnoticed.
    assert [(t.id, t.thread_id, t.position, t.thread_size) for t in takes] == [
        ("my-takes-pccfomw44ler-1", "my-takes-pccfomw44ler", 1, 1),
        ("t-1-tbyg4y5w", "t", 1, 2),
        ("t-2-hxeptbrh", "t", 2, 2),
        ("17", "my-takes-7otzea53juhw", 1, 1),
    ]
    # Blank lines move records down but do not change their ids.
    spaced = "\n\n".join(json.dumps(record) for record in records)
    assert parse_text(spaced, "My Takes.jsonl") == takes


@pytest.mark.parametrize(
    ("lines", "where", "problem"),
    [
        (['{"text": "ok"}', "", '{"text": "broken"'], "x.jsonl:3:", "malformed JSON"),
        (['{"text": "ok"}', '["text"]'], "x.jsonl:2:", "expected a JSON object"),
        (['{"author": "Ada"}'], "x.jsonl:1:", "missing or empty 'text'"),
        (['{"text": "   "}'], "x.jsonl:1:", "missing or empty 'text'"),
        (['{"text": 5}'], "x.jsonl:1:", "'text' must be a string"),
        (['{"text": "a", "position": 0}'], "x.jsonl:1:", "'position' must be a positive integer, got 0"),
        (['{"text": "a", "position": "two"}'], "x.jsonl:1:", "'position' must be a positive integer"),
        (['{"text": "a", "position": 1.5}'], "x.jsonl:1:", "'position' must be a positive integer"),
        (['{"text": "a", "position": true}'], "x.jsonl:1:", "'position' must be a positive integer"),
        (['{"text": "a", "thread_size": -2}'], "x.jsonl:1:", "'thread_size' must be a positive integer"),
        (['{"text": "a", "date": "June 25, 2023"}'], "x.jsonl:1:", "'date' 'June 25, 2023' is not an ISO date"),
        (['{"text": "a", "id": "a/b"}'], "x.jsonl:1:", "'id' 'a/b' is not URL-safe"),
        (['{"text": "a", "thread_id": "x y"}'], "x.jsonl:1:", "'thread_id' 'x y' is not URL-safe"),
        (['{"text": "a", "id": "k"}', '{"text": "b", "id": "k"}'], "x.jsonl:2:", "duplicate id 'k' (first used on line 1)"),
        (["", "  "], "x.jsonl", "no records"),
    ],
)
def test_malformed_jsonl(lines, where, problem):
    with pytest.raises(ParseError) as caught:
        jsonl.parse("\n".join(lines), "x.jsonl")
    assert str(caught.value).startswith(where)
    assert problem in str(caught.value)


CSV = """\
text,Author,handle,date,thread_id,position,url
"A take that spans
two lines, with a comma",Ada,@ada_l,2024-03-03,t1,1,
Second take,Ada,ada_l,2024-03-03,t1,2,https://example.org/2
Own thread,,,,,,
"""


def test_csv_rows():
    takes = csv_rows.parse(CSV, "rows.csv")
    assert [(t.id, t.thread_id, t.position, t.thread_size, t.author, t.handle, t.date, t.url) for t in takes] == [
        ("t1-1-w4kpyrpb", "t1", 1, 2, "Ada", "@ada_l", "2024-03-03", None),
        ("t1-2-upytvrnz", "t1", 2, 2, "Ada", "@ada_l", "2024-03-03", "https://example.org/2"),
        ("rows-qtvhy2hkcup4-1", "rows-qtvhy2hkcup4", 1, 1, None, None, None, None),
    ]
    assert takes[0].text == "A take that spans\ntwo lines, with a comma"
    assert parse_text(CSV, "rows.csv") == takes


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("title,body\nx,y\n", "rows.csv:1:", "expected a header row with a 'text' column, found columns: 'title', 'body'"),
        # The bad row starts on physical line 4, after a record spanning lines 2-3.
        ('text,position\n"two\nlines",1\nbad,zero\n', "rows.csv:4:", "'position' must be a positive integer, got 'zero'"),
        ("text,date\nok,2024-01-01\n\nlate,2024-13-01\n", "rows.csv:4:", "'date' '2024-13-01' is not an ISO date"),
        ("text,author\nhello, world,Ada\n", "rows.csv:2:", "expected 2 fields (text, author), found 3"),
        ('text,author\nok,Ada\n"never closed,Ada\n', "rows.csv:3:", "malformed CSV"),
        ("text,author\n,Ada\n", "rows.csv:2:", "missing or empty 'text'"),
        ("text,id\na,x/y\n", "rows.csv:2:", "'id' 'x/y' is not URL-safe"),
        ("text,author\n", "rows.csv", "no rows after the header"),
    ],
)
def test_malformed_csv(text, where, problem):
    with pytest.raises(ParseError) as caught:
        csv_rows.parse(text, "rows.csv")
    assert str(caught.value).startswith(where)
    assert problem in str(caught.value)


def test_read_takes_errors_name_the_path(tmp_path):
    path = tmp_path / "takes.jsonl"
    path.write_text('{"text": "fine"}\n{"text": ""}\n', encoding="utf-8")
    with pytest.raises(ParseError) as caught:
        read_takes(path)
    assert str(caught.value) == f"{path}:2: missing or empty 'text'"
