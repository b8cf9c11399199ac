"""What the index holds: the author filter's matching, and the author and thread listings."""

from __future__ import annotations

import dataclasses

import pytest

from indexer.models import SearchResult, Take, group_by_thread
from indexer.storage import Filters


@pytest.mark.parametrize("author", ["Clark", "clark", "JACK", "jack clark", "Jack Clark", "@jackclarkSF", "jackclarksf", "@JACKCLARKSF"])
def test_the_author_filter_matches_any_word_of_the_name_or_the_handle(searcher, author):
    results = searcher.search("policy", 10, filters=Filters(author=author))
    assert len(results) == 10 and all(r.take.author == "Jack Clark" for r in results)


@pytest.mark.parametrize("author", ["Cla", "ark", "Jack Clar", "Somebody Else", "%", "_lark", "jackclark"])
def test_the_author_filter_does_not_match_parts_of_words_or_wildcards(searcher, author):
    assert searcher.search("policy", 10, filters=Filters(author=author)) == []


def test_authors_lists_every_author_with_counts(searcher):
    [author] = searcher.authors()
    assert (author.author, author.handle, author.takes, author.threads) == ("Jack Clark", "@jackclarkSF", 99, 7)
    assert author.to_dict() == {"author": "Jack Clark", "handle": "@jackclarkSF", "takes": 99, "threads": 7}


def test_list_threads_gives_id_author_date_size_and_first_words_newest_first(searcher):
    threads = searcher.list_threads()
    assert len(threads) == 7
    assert [t.date for t in threads] == sorted((t.date for t in threads), reverse=True)
    seed = next(t for t in threads if t.thread_id == "jackclarkSF-2022-08-06")
    assert (seed.author, seed.handle, seed.takes, seed.thread_size) == ("Jack Clark", "@jackclarkSF", 81, 81)
    assert seed.first_words == searcher.get_thread(seed.thread_id)[0].text.split("\n")[0][: len(seed.first_words)]
    assert sum(t.takes for t in threads) == 99
    assert searcher.list_threads(Filters(author="clark")) == threads
    assert searcher.list_threads(Filters(author="nobody")) == []


def _take(position: int) -> Take:
    return Take(f"t-{position}", f"take {position}", "A", "@a", "2024-01-01", "t", position, 9, None, "x.jsonl")


def test_grouping_merges_overlapping_context_windows():
    """Results at 3, 4 and 6 with context 1: a group reads 2, 3, 4, 5, 6, 7, each once."""
    takes = {position: _take(position) for position in range(1, 10)}

    def result(position: int, score: float) -> SearchResult:
        return SearchResult(takes[position], score, ((takes[position - 1],), (takes[position + 1],)))

    [group] = group_by_thread([result(4, 0.9), result(6, 0.8), result(3, 0.7)])
    shown = []
    for member in group.results:
        before, after = member.context
        shown += [t.position for t in before] + [member.take.position] + [t.position for t in after]
    assert shown == [2, 3, 4, 5, 6, 7]
    # Whatever else a result carries survives the merge.
    assert [dataclasses.asdict(r)["score"] for r in group.results] == [0.7, 0.9, 0.8]


def test_grouping_without_context_keeps_results_as_they_are():
    plain = [SearchResult(_take(2), 0.5), SearchResult(_take(1), 0.4)]
    [group] = group_by_thread(plain)
    assert group.results == (plain[1], plain[0])
