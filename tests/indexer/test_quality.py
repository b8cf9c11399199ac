"""Hybrid ranking, filters, context, grouping, and query text that looks like FTS5 syntax."""

from __future__ import annotations

import pytest

from embeddings import DEFAULT_MODEL
from indexer.errors import InvalidQuery
from indexer.models import Take, group_by_thread
from indexer.index.reader import fts_match
from indexer.search import MODES, query_terms
from indexer.serving import Searcher
from indexer.storage import Filters
from indexer.index.writer import IndexWriter


def test_names_are_found_by_hybrid_and_lexical(searcher):
    for mode in ("hybrid", "lexical"):
        top = searcher.search("Toolformer", 3, mode=mode)
        assert "Toolformer" in top[0].take.text
    assert any("BLOOM" in r.take.text for r in searcher.search("BLOOM vs GLM-130B", 3))


@pytest.mark.parametrize(
    "query",
    ['"compute', "compute*", "NEAR(compute governance)", "compute AND OR NOT", "(policy))", "title: policy",
     "🙂 policy 🙂", "🙂", "'; DROP TABLE takes; --", "^policy", "a - b + c", '"unbalanced "quotes"'],
)
@pytest.mark.parametrize("mode", MODES)
def test_query_text_is_data_not_fts_syntax(searcher, query, mode):
    results = searcher.search(query, 5, mode=mode)
    assert isinstance(results, list)


def test_fts_query_quotes_every_word_and_drops_function_words():
    assert fts_match(query_terms('what about "compute" NEAR(x)')) == '"compute" OR "near" OR "x"'
    assert fts_match(query_terms("what about it")) == '"what" OR "about" OR "it"'
    assert fts_match(query_terms("🙂 :: ()")) is None


def test_author_filter_by_name_or_handle(searcher):
    for author in ("Jack Clark", "@jackclarkSF", "jackclarksf"):
        assert len(searcher.search("policy", 10, filters=Filters(author=author))) == 10
    assert searcher.search("policy", 10, filters=Filters(author="Somebody Else")) == []


def test_date_filters_apply_before_top_k(searcher):
    results = searcher.search("AI policy", 10, filters=Filters(since="2023-01-01"))
    # 9 takes are dated 2023 or later: all of them come back, none older.
    assert len(results) == 9
    assert all(r.take.date >= "2023-01-01" for r in results)
    results = searcher.search("AI policy", 10, filters=Filters(since="2022-07-01", until="2022-07-31"))
    assert {r.take.date for r in results} == {"2022-07-01", "2022-07-17"}
    with pytest.raises(InvalidQuery, match="ISO date"):
        Filters(since="July 2022")
    with pytest.raises(InvalidQuery, match="after until"):
        Filters(since="2023-01-02", until="2023-01-01")


def test_thread_filter_and_min_score(searcher, seed_takes):
    thread_id = next(t.thread_id for t in seed_takes if t.date == "2023-02-12")
    for mode in MODES:
        results = searcher.search("language models", 10, mode=mode, filters=Filters(thread_id=thread_id))
        assert results and all(r.take.thread_id == thread_id for r in results)
    scored = searcher.search("guillotines", 10, mode="dense")
    cut = scored[2].score
    kept = searcher.search("guillotines", 10, mode="dense", filters=Filters(min_score=cut))
    assert [r.take.id for r in kept] == [r.take.id for r in scored[:3]]


def test_context_returns_neighbours_in_order(searcher):
    result = searcher.search("guillotines", 1, context=2)[0]
    before, after = result.context
    assert [t.position for t in before] == [result.take.position - 2, result.take.position - 1]
    assert [t.position for t in after] == [result.take.position + 1, result.take.position + 2]
    assert all(t.thread_id == result.take.thread_id for t in (*before, *after))
    first = searcher.get_thread(result.take.thread_id)[0]
    opening = [r for r in searcher.search(first.text, 5, context=3) if r.take.id == first.id][0]
    assert opening.context[0] == () and len(opening.context[1]) == 3
    assert set(result.to_dict()["context"]) == {"before", "after"}
    with pytest.raises(InvalidQuery, match="context"):
        searcher.search("x", 1, context=11)


def test_group_by_thread_gives_one_entry_per_thread_in_thread_order(searcher):
    results = searcher.search("AI progress and capabilities", 20)
    groups = group_by_thread(results)
    assert len(groups) == len({r.take.thread_id for r in results})
    assert sum(len(g.results) for g in groups) == len(results)
    scores = [g.score for g in groups]
    assert scores == sorted(scores, reverse=True)
    for group in groups:
        positions = [r.take.position for r in group.results]
        assert positions == sorted(positions)
    assert set(groups[0].to_dict()) == {"thread_id", "score", "takes"}


def test_near_duplicate_takes_from_two_sources_appear_once(tmp_path, seed_takes, embedder):
    original = next(t for t in seed_takes if "guillotines" in t.text)
    # The same words from another source and author (say a quote account): kept in the index, shown once.
    copy = Take(
        id="quoter-1", text="  " + original.text.upper() + "  ", author="Quoter", handle="@quoter",
        date="2024-01-01", thread_id="quoter-2024-01-01", position=1, thread_size=1, url=None, source="other.jsonl",
    )
    with IndexWriter(tmp_path) as writer:
        writer.replace_all([*seed_takes, copy], embedder, model=DEFAULT_MODEL)
    searcher = Searcher(tmp_path, embedder=embedder)
    for mode in MODES:
        texts = [" ".join(r.take.text.casefold().split()) for r in searcher.search("guillotines", 10, mode=mode)]
        assert len(texts) == len(set(texts))
        assert " ".join(original.text.casefold().split()) in texts
