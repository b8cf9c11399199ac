"""Inputs that used to lose takes or end in a traceback: colliding names, huge values, odd bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from embeddings import DEFAULT_MODEL
from indexer.errors import ParseError
from indexer.sources import parse_text, read_takes
from indexer.sources.jsonl import loads, parse_records
from indexer.index.writer import IndexWriter

URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
UNROLL_HEADER = "Ada Profile picture\nMar 3, 2024 {count} tweets 1 min read Read on X\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def parse_error(call, *args) -> str:
    """The one-line message of the ParseError that ``call(*args)`` raises."""
    with pytest.raises(ParseError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    return message


# Ids: only the same take may share an id.


def test_same_file_name_in_two_folders_adds_both(index_copy, embedder, tmp_path):
    first = read_takes(write(tmp_path / "x" / "thread.txt", "Take about evals.\n"))
    second = read_takes(write(tmp_path / "y" / "thread.txt", "Unrelated take about chips.\n"))
    with IndexWriter(index_copy) as writer:
        assert writer.add(first, embedder, model=DEFAULT_MODEL).added == 1
        assert writer.add(second, embedder, model=DEFAULT_MODEL).added == 1
        # The same file again is the same takes: nothing new.
        assert writer.add(read_takes(tmp_path / "x" / "thread.txt"), embedder, model=DEFAULT_MODEL).added == 0


@pytest.mark.parametrize(
    ("name", "text_a", "text_b"),
    [
        ("takes.jsonl", '{"text": "Evals need outside auditors."}\n', '{"text": "Chips are the real bottleneck."}\n'),
        ("takes.csv", "text\nEvals need outside auditors.\n", "text\nChips are the real bottleneck.\n"),
        ("takes.jsonl", '{"text": "One", "thread_id": "1"}\n', '{"text": "Other", "thread_id": "1"}\n'),
    ],
)
def test_records_without_ids_in_two_folders_get_different_ids(tmp_path, name, text_a, text_b):
    (a,) = read_takes(write(tmp_path / "a" / name, text_a))
    (b,) = read_takes(write(tmp_path / "b" / name, text_b))
    assert a.id != b.id and URL_SAFE.fullmatch(a.id) and URL_SAFE.fullmatch(b.id)
    assert read_takes(tmp_path / "a" / name) == [a]  # stable


def test_non_ascii_file_names_do_not_collide(tmp_path):
    japan = read_takes(write(tmp_path / "日本.txt", "A take about export controls.\n"))
    china = read_takes(write(tmp_path / "中国.txt", "A take about open models.\n"))
    ids = [take.id for take in japan + china]
    assert len(set(ids)) == 2 and all(URL_SAFE.fullmatch(take_id) for take_id in ids)
    assert {take.source for take in japan + china} == {"日本.txt", "中国.txt"}


def test_non_ascii_authors_do_not_share_thread_ids():
    pages = [
        f"{name} Profile picture\nMar 3, 2024 1 tweet 1 min read Read on X\nA take by {name}.\n"
        for name in ("山田太郎", "李雷")
    ]
    (yamada,), (li,) = (parse_text(page, "unroll.txt") for page in pages)
    assert yamada.thread_id != li.thread_id and URL_SAFE.fullmatch(yamada.thread_id)


def test_the_same_record_twice_is_one_take_not_an_error():
    first, second = parse_text('{"text": "Same take."}\n{"text": "Same take."}\n', "twice.jsonl")
    assert first == second


def test_http_bodies_named_by_their_hash_still_get_stable_distinct_ids():
    body = [{"text": "Open weights make AI audits cheaper for everyone."}]
    (take,) = parse_records(body, "post-0123456789")
    assert parse_records(body, "post-0123456789") == [take]
    assert take.id.startswith("post-0123456789-") and URL_SAFE.fullmatch(take.id)
    (other,) = parse_records([{"text": "A different take."}], "post-0123456789")
    assert other.id != take.id


# Every bad input is one clear line.


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"text": "x", "position": 100000000000000000000}', "over the limit of 1,000,000"),
        ('{"text": "x", "thread_size": 1000001}', "over the limit of 1,000,000"),
        ('{"text": "x", "position": "' + "9" * 5000 + '"}', "over the limit of 1,000,000"),
        ('{"text": "x", "position": ' + "1" * 4301 + "}", "more than 4,300 digits"),
        ("[" * 100_000, "nested too deeply"),
        ('{"text": "\\ud800 broken emoji"}', "surrogate"),
        ('{"text": "fine", "author": "\\udfff"}', "'author' holds half of a surrogate pair"),
        ('{"text": "' + "x" * 30_000 + '"}', "over the limit of 25,000 characters per take"),
        ('{"text": "x", "id": "' + "a" * 300 + '"}', "at most 200"),
        ('{"text": "x", "id": ' + "7" * 300 + "}", "at most 200"),
        ('{"text": "x", "position": 3, "thread_size": 2}', "past the end of the thread"),
    ],
)
def test_hostile_jsonl_is_one_line_naming_the_line(line, needle):
    message = parse_error(parse_text, '{"text": "fine"}\n' + line + "\n", "bad.jsonl")
    assert message.startswith("bad.jsonl:2: ") and needle in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"a": ' + "1" * 4301 + "}", "more than 4,300 digits"),
    ],
)
def test_json_that_python_refuses_is_a_parse_error(text, needle):
    assert needle in parse_error(loads, text, "body")


def test_ten_megabyte_one_line_text_file(tmp_path):
    path = write(tmp_path / "blob.txt", "word " * 2_000_000)
    message = parse_error(read_takes, path)
    assert message.startswith(f"{path}:1: ") and "over the limit of 25,000 characters per take" in message


def test_huge_thread_reader_counts():
    message = parse_error(parse_text, UNROLL_HEADER.format(count="99999999999999999999999") + "hi there\n", "u.txt")
    assert message.startswith("u.txt:2: ") and "over the limit of 1,000,000 tweets" in message
    preview = UNROLL_HEADER.format(count=1) + "hi\n• • •\nMore from @ada\nMar 1, 2024\nyo\nRead " + "9" * 5000 + " tweets\n"
    assert "over the limit of 1,000,000 tweets" in parse_error(parse_text, preview, "u.txt")


def tweets_js(*records: dict) -> str:
    return "window.YTD.tweets.part0 = [\n" + ",\n".join(json.dumps({"tweet": r}) for r in records) + "\n]"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (tweets_js({"id_str": "9" * 5000, "full_text": "hi"}), "is not a tweet id (up to 20 digits)"),
        (tweets_js({"id_str": "1", "full_text": "\ud800"}), "surrogate"),
        (tweets_js({"id_str": "1", "full_text": "hi", "in_reply_to_status_id_str": ["1"]}), "must be a string"),
        ("window.YTD.tweets.part0 = [" + "[" * 100_000, "nested too deeply"),
        ('window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "n": ' + "1" * 4301 + "}}]", "4,300 digits"),
    ],
)
def test_hostile_archives(text, needle):
    assert needle in parse_error(parse_text, text, "tweets.js")


@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\u2029"])
def test_jsonl_strings_may_hold_unicode_line_separators(separator):
    text = json.dumps({"text": f"one{separator}line"}, ensure_ascii=False) + '\n{"text": "next"}\n\n{"text": 5}\n'
    message = parse_error(parse_text, text, "odd.jsonl")
    # The bad record is on the fourth line: the separator did not count as a line end.
    assert message.startswith("odd.jsonl:4: ")
    first, _ = parse_text(text.rsplit("\n\n", 1)[0], "odd.jsonl")
    assert first.text == "one line"


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("text;author;date\nLevy compute, fund audits;Ada;2024-03-03\n", ("Levy compute, fund audits", "Ada")),
        ("Text\tauthor\tdate\nLevy compute; fund audits\tAda\t2024-03-03\n", ("Levy compute; fund audits", "Ada")),
        ("text|author\nLevy compute, fund audits|Ada\n", ("Levy compute, fund audits", "Ada")),
    ],
)
def test_csv_with_other_delimiters(tmp_path, text, columns):
    path = write(tmp_path / "rows.csv", text)
    for takes in (read_takes(path), read_takes(path, "csv")):
        assert [(take.text, take.author) for take in takes] == [columns]


@pytest.mark.parametrize(
    "text",
    ["title,body\nLevy compute,fund audits\n", "title;body;date\nx;y;2024-01-01\n", "tweet\tauthor\nx\tAda\n"],
)
def test_csv_without_a_text_column_is_an_error_not_one_plain_take(tmp_path, text):
    path = write(tmp_path / "rows.csv", text)
    message = parse_error(read_takes, path)
    assert message.startswith(f"{path}:1: expected a header row with a 'text' column") and "--format text" in message


# Plain text is only what reads as takes.


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"vm\n", "a single word, 'vm'"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00 binary", "NUL bytes"),
        ("\x01\x02\x03\x04 ok \x05\x06\x07\x08\x0e\x0f".encode(), "control characters"),
        (b"1234 5678\n90 12\n", "no letters"),
        (b"0123456789abcdef0123456789abcdef\n", "a single word"),
    ],
)
def test_files_that_are_not_takes_are_refused_with_a_hint(tmp_path, content, reason):
    path = tmp_path / "hostname"
    path.write_bytes(content)
    message = parse_error(read_takes, path)
    assert message.startswith(f"{path}: not recognized as any input format") and reason in message
    assert "--format" in message


def test_format_text_still_takes_a_single_word():
    assert [take.text for take in parse_text("vm\n", "hostname", "text")] == ["vm"]


def test_nul_is_refused_even_as_forced_text():
    assert "NUL" in parse_error(parse_text, "a\x00b c\n", "x.txt", "text")


# Thread sizes come from the file when a record does not give them.


def test_jsonl_and_csv_thread_sizes_are_derived_from_the_file():
    records = [
        {"text": "a", "thread_id": "t"},
        {"text": "b", "thread_id": "t"},
        {"text": "c", "thread_id": "u", "position": 4},
        {"text": "d", "thread_id": "v", "thread_size": 9},
        {"text": "e", "thread_id": "v"},
        {"text": "alone"},
    ]
    takes = parse_text("\n".join(json.dumps(record) for record in records), "t.jsonl")
    assert [(t.thread_id[:1], t.position, t.thread_size) for t in takes] == [
        ("t", 1, 2), ("t", 2, 2), ("u", 4, 4), ("v", 1, 9), ("v", 2, 9), ("t", 1, 1)
    ]
    rows = parse_text("text,thread_id\none,x\ntwo,x\nthree,x\n", "t.csv")
    assert [(t.position, t.thread_size) for t in rows] == [(1, 3), (2, 3), (3, 3)]


def test_thread_reader_previews_without_a_count_are_sized_by_what_they_show():
    page = UNROLL_HEADER.format(count=1) + "hi there\n• • •\nMore from @ada\nMar 1, 2024\none\ntwo\n"
    takes = parse_text(page, "u.txt")
    assert [(t.date, t.position, t.thread_size) for t in takes] == [("2024-03-03", 1, 1), ("2024-03-01", 1, 2), ("2024-03-01", 2, 2)]


def test_long_file_names_give_ids_of_a_readable_length(tmp_path):
    (take,) = read_takes(write(tmp_path / ("policy-notes-" * 18 + ".txt"), "A take with a long file name.\n"))
    assert len(take.id) < 80 and take.id.startswith("policy-notes-policy") and URL_SAFE.fullmatch(take.id)
