"""Thread Reader App unrolls: the real seed page and small general unrolls."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from indexer.errors import ParseError
from indexer.sources import parse_text, read_takes
from indexer.sources.threadreader import parse

SEED = Path(__file__).resolve().parents[2] / "indexer" / "corpus" / "jackclark_ai_policy.txt"
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


@pytest.fixture(scope="module")
def seed_takes():
    return read_takes(SEED)


def test_seed_main_thread(seed_takes):
    main = [take for take in seed_takes if take.thread_id == "jackclarkSF-2022-08-06"]
    assert len(main) == 81
    assert [take.position for take in main] == list(range(1, 82))
    assert main[0].text == "One like = one spicy take about AI policy."
    assert main[-1].text.startswith("The fact large-scale models display qualitatively new capabilities")
    assert main[0].id == "jackclarkSF-2022-08-06-1"
    assert {(t.author, t.handle, t.date, t.thread_size, t.url, t.source) for t in main} == {
        ("Jack Clark", "@jackclarkSF", "2022-08-06", 81, None, "jackclark_ai_policy.txt")
    }


def test_seed_more_from_threads(seed_takes):
    shown = Counter((t.thread_id, t.date, t.thread_size) for t in seed_takes if t.date != "2022-08-06")
    assert shown == {
        ("jackclarkSF-2023-06-25", "2023-06-25", 22): 2,
        ("jackclarkSF-2023-02-12", "2023-02-12", 5): 4,
        ("jackclarkSF-2023-01-29", "2023-01-29", 5): 3,
        ("jackclarkSF-2022-11-05", "2022-11-05", 6): 3,
        ("jackclarkSF-2022-07-17", "2022-07-17", 12): 3,
        ("jackclarkSF-2022-07-01", "2022-07-01", 6): 3,
    }
    assert len(seed_takes) == 81 + 18
    # File order is kept: the More-from threads follow the main thread, each from position 1.
    assert [t.thread_id for t in seed_takes[81:84]] == ["jackclarkSF-2023-06-25"] * 2 + ["jackclarkSF-2023-02-12"]
    assert [t.position for t in seed_takes[83:87]] == [1, 2, 3, 4]
    assert all(t.author == "Jack Clark" and t.handle == "@jackclarkSF" for t in seed_takes)


def test_seed_multi_line_tweets_stay_whole(seed_takes):
    by_id = {take.id: take for take in seed_takes}
    assert by_id["jackclarkSF-2023-06-25-2"].text == (
        "I gave a slide preso back in fall of 2022 along these lines. Including some slides here. "
        "The gist of it is if you basically go after compute in the wrong ways you annoy a huge amount "
        "of people and you guarantee pushback and differential tech development.\n"
        "\n"
        "Since I gave that presentation we've seen:\n"
        "- people build chatGPT clone models by training on chatGPT outputs\n"
        "- low-cost finetuning like LORA / QLORA etc\n"
        "- increase in number of actors trying to do open/decentralized model development\n"
        "- etc together.xyz"
    )
    assert by_id["jackclarkSF-2022-11-05-1"].text == (
        "If you want a visceral sense of how different development practices and strategies can lead to "
        "radically different performance, compare and contrast performance of the BLOOM and GLM-130B LLMs.\n"
        "\n"
        "huggingface.co/bigscience/blo…\n"
        "\n"
        "huggingface.co/spaces/THUDM/G…"
    )
    assert by_id["jackclarkSF-2022-11-05-2"].text.startswith("Feels kind of meaningful")
    assert by_id["jackclarkSF-2023-02-12-4"].text == (
        "Another fav of mine= this wild paper where they staple MuJoCo to an LM arxiv.org/abs/2210.05359"
    )


FURNITURE = (
    "Profile picture", "Read 22 tweets", "Read 5 tweets", "Thread Reader", "Donate", "0xfe58", "3ATGMx",
    "• • •", "Missing some Tweet", "Keep Current", "Stay in touch", "Read all threads", "PDF",
    "@threadreaderapp", "@ThreadReaderApp", "Practice here first", "More from", "Premium", "Follow Us",
    "Read on X", "13 min read", "Jun 25, 2023", "Ethereum", ":(",
)


def test_seed_has_no_page_furniture(seed_takes):
    leaked = [(take.id, word) for take in seed_takes for word in FURNITURE if word in take.text]
    assert leaked == []


def test_seed_ids_unique_url_safe_and_stable(seed_takes):
    ids = [take.id for take in seed_takes]
    assert len(set(ids)) == len(ids)
    assert all(URL_SAFE.fullmatch(i) and URL_SAFE.fullmatch(t.thread_id) for i, t in zip(ids, seed_takes))
    assert parse(SEED.read_text(encoding="utf-8"), "jackclark_ai_policy.txt") == seed_takes


GENERAL = """\
Ada Lovelace Profile picture
Mar 3, 2024 12 tweets 3 min read Read on Twitter
1/ Compute thresholds are a blunt tool.
2/12 They age badly as efficiency improves.
4/ Skipped three: the unroll numbers decide positions.
- a bullet that continues tweet four
5/ Read 99 tweets (in a main thread this is just a tweet).

• • •

Did Thread Reader help you today?
Support us! We are indie developers!

Ada Lovelace Profile picture
Mar 3, 2024 1 tweet 1 min read Read on X
A second thread by the same author on the same day.

Grace Hopper Profile picture
Sep. 9th, 2023 2 tweets 1 min read Read on X
Unnumbered tweets get positions in order.
arxiv.org/abs/2210.11610
Second tweet.
"""


def test_general_unroll_several_pages():
    takes = parse_text(GENERAL, "mixed.txt")
    assert [(t.thread_id, t.position, t.thread_size, t.date) for t in takes] == [
        ("ada-lovelace-2024-03-03", 1, 12, "2024-03-03"),
        ("ada-lovelace-2024-03-03", 2, 12, "2024-03-03"),
        ("ada-lovelace-2024-03-03", 4, 12, "2024-03-03"),
        ("ada-lovelace-2024-03-03", 5, 12, "2024-03-03"),
        ("ada-lovelace-2024-03-03-2", 1, 1, "2024-03-03"),
        ("grace-hopper-2023-09-09", 1, 2, "2023-09-09"),
        ("grace-hopper-2023-09-09", 2, 2, "2023-09-09"),
    ]
    assert takes[0].text == "1/ Compute thresholds are a blunt tool."
    assert takes[2].text == (
        "4/ Skipped three: the unroll numbers decide positions.\n- a bullet that continues tweet four"
    )
    assert takes[5].text == "Unnumbered tweets get positions in order.\narxiv.org/abs/2210.11610"
    assert {(t.author, t.handle) for t in takes} == {("Ada Lovelace", None), ("Grace Hopper", None)}
    assert takes[3].text == "5/ Read 99 tweets (in a main thread this is just a tweet)."
    assert not any("Support us" in t.text or "Thread Reader" in t.text for t in takes)


def test_numbered_tweet_after_blank_line_starts_a_new_tweet():
    text = "Ada Profile picture\nMar 3, 2024 3 tweets\n1/ one\n\n2/ two\n\nstill two\n3/ three\n"
    takes = parse(text, "n.txt")
    assert [(t.position, t.text) for t in takes] == [(1, "1/ one"), (2, "2/ two\n\nstill two"), (3, "3/ three")]


def test_same_handle_same_date_gets_suffix():
    page = "Ada Profile picture\nMar 3, 2024 1 tweet\nfirst\n• • •\nMore from @ada_l\nMar 3, 2024\nsecond\nRead 4 tweets\n"
    takes = parse(page, "a.txt")
    assert [(t.thread_id, t.id, t.handle, t.thread_size) for t in takes] == [
        ("ada_l-2024-03-03", "ada_l-2024-03-03-1", "@ada_l", 1),
        ("ada_l-2024-03-03-2", "ada_l-2024-03-03-2-1", "@ada_l", 4),
    ]


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("Just some notes\nabout AI policy\n", "notes.txt:1:", "'<Name> Profile picture'"),
        ("\n\nJack Clark Profile picture\nhello there\n", "notes.txt:4:", "'<Mon D, YYYY> N tweets ...'"),
        ("Jack Clark Profile picture\nAug 6, 2022 81 tweets 13 min read Read on X\n\n• • •\n", "notes.txt:1:", "no tweets"),
        ("Jack Clark Profile picture\nFeb 30, 2023 2 tweets\nhello\n", "notes.txt:2:", "not a valid date: 'Feb 30, 2023'"),
    ],
)
def test_malformed_unrolls(text, where, expected):
    with pytest.raises(ParseError) as caught:
        parse(text, "notes.txt")
    assert str(caught.value).startswith(where)
    assert expected in str(caught.value)


def test_empty_unroll_is_an_error():
    with pytest.raises(ParseError, match=r"^notes\.txt: empty file"):
        parse("  \n\n", "notes.txt")


UNROLLS = Path(__file__).resolve().parents[1] / "data" / "unrolls"


@pytest.mark.parametrize(
    ("name", "threads"),
    [
        # (thread id, author, handle, takes shown, thread size)
        ("no_separator.txt", [("priya-raman-2024-04-02", "Priya Raman", None, 7, 7)]),
        ("handle_in_header.txt", [("tibarra_ai-2023-11-14", "Tomás Ibarra", "@tibarra_ai", 4, 4)]),
        ("handle_under_name.txt", [("meilin_policy-2025-01-08", "Mei Lin", "@meilin_policy", 3, 3)]),
        (
            "several_pages.txt",
            [
                ("ada_l-2024-03-03", "Ada Lovelace", "@ada_l", 2, 2),
                ("ada_l-2024-02-20", "Ada Lovelace", "@ada_l", 1, 9),
                ("ghopper-2023-09-09", "Grace Hopper", "@ghopper", 3, 3),
            ],
        ),
        ("numbered.txt", [("sokoye-2024-06-30", "Samuel Okoye", "@sokoye", 5, 5)]),
    ],
)
def test_unroll_variants(name, threads):
    takes = read_takes(UNROLLS / name)
    shown = Counter((t.thread_id, t.author, t.handle, t.thread_size) for t in takes)
    assert shown == {(thread_id, author, handle, size): count for thread_id, author, handle, count, size in threads}
    assert all(1 <= t.position <= t.thread_size for t in takes)
    leaked = [(t.id, word) for t in takes for word in (*FURNITURE, "Share this page", "Enter URL") if word in t.text]
    assert leaked == []


def test_unroll_variants_keep_their_text():
    by_id = {t.id: t for name in ("no_separator.txt", "handle_under_name.txt", "numbered.txt") for t in read_takes(UNROLLS / name)}
    assert by_id["priya-raman-2024-04-02-7"].text.startswith("None of this works without incident reporting")
    assert by_id["meilin_policy-2025-01-08-2"].text.endswith("and then nobody will enforce it.")
    assert by_id["meilin_policy-2025-01-08-3"].text.endswith("what the threshold actually catches")
    assert by_id["sokoye-2024-06-30-3"].text.endswith(
        "choose to share.\n- a few thousand GPUs is enough for evaluation work\n- training frontier models is not the job"
    )


@pytest.mark.parametrize(
    ("tweet", "cleaned"),
    [
        ("open models (e.g )\n- etctogether.xyz", "open models\n- etc together.xyz"),
        ("See the repo (via )and e.gexample.org/paper.", "See the repo and e.g example.org/paper."),
        ("A lovely chart! Image Image", "A lovely chart!"),
        ("Results [arxiv.org/abs/1] Image", "Results [arxiv.org/abs/1]"),
        # Words that only look like leftovers stay.
        ("We run etcd.io and call f() in the Image", "We run etcd.io and call f() in the Image"),
        ("Image\nMy Image matters (e.g. this one)", "Image\nMy Image matters (e.g. this one)"),
    ],
)
def test_scraping_leftovers_are_cleaned_by_rule(tweet, cleaned):
    page = "Ada Profile picture\nMar 3, 2024 1 tweet\n" + tweet.replace("\n", "\n\n") + "\n"
    (take,) = parse(page, "a.txt")
    assert take.text == cleaned.replace("\n", "\n\n")


def test_unroll_thread_never_takes_its_footer_as_a_tweet():
    page = "Ada Profile picture\nMar 3, 2024 2 tweets\n1/ one\n2/ two\nRead 2 tweets\nKeep Current with Ada\n"
    assert [(t.position, t.thread_size, t.text) for t in parse(page, "a.txt")] == [(1, 2, "1/ one"), (2, 2, "2/ two")]


def test_only_short_navigation_before_the_header_is_skipped():
    header = "Ada Profile picture\nMar 3, 2024 1 tweet\nThe take.\n"
    assert [t.text for t in parse("Thread Reader\nShare this page!\n\n" + header, "a.txt")] == ["The take."]
    # A line that could be a take is not dropped unseen.
    with pytest.raises(ParseError, match=r"^a\.txt:1: expected a Thread Reader App header"):
        parse("A note I wrote before pasting the unroll below, which matters.\n" + header, "a.txt")
