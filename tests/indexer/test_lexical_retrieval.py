"""The common-terms rule of lexical retrieval (indexer/storage.py, lexical_retrieval), on both stores.

Above COMMON_TERMS_MIN_TAKES a query word held by more than COMMON_TERM_SHARE
of the takes does not retrieve when the query has a rarer one, yet still
scores; a query of common words only retrieves the takes holding them all.
Below it (the seed corpus) lexical search is the plain BM25 over every word.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from embeddings import DEFAULT_MODEL
from indexer import storage
from indexer.models import Take
from indexer.search import query_terms
from indexer.storage import Filters, LexicalRetrieval, lexical_retrieval
from tests.conftest import DEV_JUDGMENTS
from tests.indexer.test_store_contract import STORES, open_store


def test_the_rule_keeps_every_word_below_the_floor_and_cuts_common_ones_above():
    floor = storage.COMMON_TERMS_MIN_TAKES
    share = storage.COMMON_TERM_SHARE
    common, rare = int(share * floor) + 1, int(share * floor)
    assert lexical_retrieval(["a", "b"], [floor - 1, 1], floor - 1) == LexicalRetrieval(("a", "b"))
    assert lexical_retrieval(["a", "b", "c"], [common, rare, 1], floor) == LexicalRetrieval(("b", "c"))
    assert lexical_retrieval(["a", "b"], [common, common], floor) == LexicalRetrieval(("a", "b"), every=True)
    assert lexical_retrieval(["a"], [common], floor) == LexicalRetrieval(("a",))
    assert lexical_retrieval([], [], floor) == LexicalRetrieval(())


def test_seed_lexical_search_is_the_plain_fts5_bm25_on_every_dev_query(seed_index):
    """Bit-identical to FTS5's ranking over every query word joined to the generation, as before the rule."""
    from indexer.index import EmbeddedStore
    from indexer.index.layout import visible_clause
    from indexer.index.reader import fts_match

    store = EmbeddedStore(seed_index)
    generation = store.load()
    assert generation.info.count < storage.COMMON_TERMS_MIN_TAKES
    clause, params = visible_clause(generation.generation)
    connection = generation._connection()
    queries = [entry["query"] for entry in json.loads(DEV_JUDGMENTS.read_text())["queries"]]
    for query in queries:
        terms = query_terms(query)
        expected = [
            (int(row_id), float(score))
            for row_id, score in connection.execute(
                f"""SELECT takes.rowid, -bm25(takes_fts) FROM takes_fts JOIN takes ON takes.rowid = takes_fts.rowid
                    WHERE takes_fts MATCH ? AND {clause} ORDER BY bm25(takes_fts) LIMIT 50""",
                (fts_match(terms), *params),
            )
        ]
        assert generation.lexical(terms, 50, Filters()) == expected, query
    store.close()


def _take(number: int, words: str) -> Take:
    return Take(
        id=f"t-{number}", text=f"Note {number} on {words}.", author="Ines Ward", handle=None, date="2024-05-05",
        thread_id=f"thread-{number // 10}", position=number % 10 + 1, thread_size=None, url=None, source="test",
    )


# 60 takes: "keeper" in 20 (common), "harbour" in 20 (common; 10 with "keeper"), "beacon" in 2 (rare, one with "keeper").
CORPUS = [
    _take(n, " ".join(word for word, held in (("keeper", n < 20), ("harbour", 10 <= n < 30), ("beacon", n in (5, 55))) if held) or "gulls")
    for n in range(60)
]


def _stored(request, tmp_path, embedder, takes):
    where = request.getfixturevalue("database_url") if request.param == "postgres" else str(tmp_path / "index")
    store = open_store(request.param, where)
    with store.writer() as writer:
        writer.replace_all(takes, embedder, model=DEFAULT_MODEL)
    yield store
    store.close()


@pytest.fixture(params=STORES)
def small_corpus(request, tmp_path, embedder):
    yield from _stored(request, tmp_path, embedder, CORPUS)


def _lexical(generation, terms, depth, floor, monkeypatch):
    monkeypatch.setattr(storage, "COMMON_TERMS_MIN_TAKES", floor)
    return generation.lexical(terms, depth, Filters())


def test_common_words_score_but_do_not_retrieve_when_a_rarer_word_does(small_corpus, monkeypatch):
    generation = small_corpus.load()
    terms = ["keeper", "beacon"]
    plain = dict(_lexical(generation, terms, 60, 10**9, monkeypatch))
    ids = {row_id: take.id for row_id, take in generation.takes(list(plain)).items()}
    assert len(plain) == 21
    cut = _lexical(generation, terms, 60, 10, monkeypatch)
    # Only the two takes holding "beacon", each with its whole score ("keeper" counted for t-5).
    assert sorted(ids[row_id] for row_id, _ in cut) == ["t-5", "t-55"]
    assert all(abs(score - plain[row_id]) < 1e-9 for row_id, score in cut)
    assert [score for _, score in cut] == sorted((score for _, score in cut), reverse=True)


def test_a_query_of_common_words_retrieves_the_takes_holding_all_of_them(small_corpus, monkeypatch):
    generation = small_corpus.load()
    terms = ["keeper", "harbour"]
    plain = dict(_lexical(generation, terms, 60, 10**9, monkeypatch))
    ids = {row_id: take.id for row_id, take in generation.takes(list(plain)).items()}
    both = {f"t-{n}" for n in range(10, 20)}
    cut = _lexical(generation, terms, 5, 10, monkeypatch)
    assert len(cut) == 5 and {ids[row_id] for row_id, _ in cut} <= both
    assert all(abs(score - plain[row_id]) < 1e-9 for row_id, score in cut)
    # Fewer hold them all than asked for: any of them, as without the rule.
    assert _lexical(generation, terms, 20, 10, monkeypatch) == _lexical(generation, terms, 20, 10**9, monkeypatch)


def _varied(number: int) -> Take:
    # Term frequencies of 1-3 and lengths of 4-12 words, so a conjunction's
    # ranking is decided by BM25 itself, not by ties in row-id order.
    keeper = ("keeper " * (1 + number % 3)) if number < 30 else ""
    harbour = ("harbour " * (1 + number % 2)) if 15 <= number < 45 else ""
    filler = " ".join(["gulls"] * (number % 7))
    return replace(_take(number, "x"), text=f"{keeper}{harbour}{filler} note {number}".strip())


@pytest.fixture(params=STORES)
def varied_corpus(request, tmp_path, embedder):
    yield from _stored(request, tmp_path, embedder, [_varied(n) for n in range(60)])


def test_a_conjunction_ranks_the_takes_holding_every_word_by_their_whole_bm25(varied_corpus, monkeypatch):
    generation = varied_corpus.load()
    terms = ["keeper", "harbour"]
    plain = _lexical(generation, terms, 60, 10**9, monkeypatch)
    texts = {row_id: take.text for row_id, take in generation.takes([row for row, _ in plain]).items()}
    holding_both = [(row, score) for row, score in plain if "keeper" in texts[row] and "harbour" in texts[row]]
    assert len(holding_both) == 15 and len({round(score, 9) for _, score in holding_both}) > 3
    cut = _lexical(generation, terms, 8, 10, monkeypatch)
    assert [row for row, _ in cut] == [row for row, _ in holding_both[:8]]
    assert all(abs(score - expected) < 1e-9 for (_, score), (_, expected) in zip(cut, holding_both))
