"""Dense search over the seed index, on the real model."""

from __future__ import annotations

import threading

import pytest

from indexer import ranking, search
from indexer.errors import InvalidQuery, TakeNotFound
from indexer.search import MAX_K, MAX_QUERY_CHARS
from indexer.storage import Filters


def is_compute_governance_take(take) -> bool:
    return take.date == "2023-06-25" and (
        "means of production" in take.text or "go after compute in the wrong ways" in take.text
    )


# int8 vectors reorder the near-ties around these takes (cosines 0.38-0.43):
# they reliably make the first page of 10, not a fixed rank (docs/QUALITY.md).
def test_compute_governance_finds_the_june_2023_compute_takes(searcher):
    results = searcher.search("what about compute governance", 10)
    assert any(is_compute_governance_take(result.take) for result in results)


def test_results_are_best_first_with_scores_from_0_to_1(searcher):
    results = searcher.search("surveillance exports by China", 10)
    scores = [result.score for result in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert len(results) == 10


@pytest.mark.parametrize(
    ("query", "k", "message"),
    [
        ("", 10, "empty"),
        ("   \n", 10, "empty"),
        ("x" * (MAX_QUERY_CHARS + 1), 10, str(MAX_QUERY_CHARS)),
        ("ok", 0, str(MAX_K)),
        ("ok", MAX_K + 1, str(MAX_K)),
    ],
)
def test_invalid_queries_name_the_limit(searcher, query, k, message):
    with pytest.raises(InvalidQuery, match=message):
        searcher.search(query, k)


def test_thread_in_order_and_unknown_ids(searcher, seed_takes):
    main_thread = seed_takes[0].thread_id
    thread = searcher.get_thread(main_thread)
    assert [take.position for take in thread] == list(range(1, 82))
    with pytest.raises(TakeNotFound):
        searcher.get_thread("no-such-thread")
    with pytest.raises(TakeNotFound):
        searcher.get_take("no-such-take")


def test_stats_counts(searcher, seed_takes):
    stats = searcher.stats()
    assert stats["takes"] == len(seed_takes)
    assert stats["threads"] == 7
    assert stats["model"] == "all-MiniLM-L6-v2" and stats["dim"] == 384
    assert stats["index_bytes"] > 384 * 4 * len(seed_takes)


def test_results_past_a_first_window_of_duplicates_still_fill_k(tmp_path):
    """Rows are read a window at a time; takes folded as duplicates must not cut the results short."""
    from indexer.api import Takes
    from indexer.models import Take

    repeated = "Compute governance means watching who buys the largest clusters of chips."
    takes = [Take(f"copy-{n}", repeated, f"Author {n}", None, None, f"copy-{n}", 1, None, None, "t") for n in range(45)]
    others = [f"Compute governance note {n}: chips, clusters and who may buy them." for n in range(8)]
    takes += [Take(f"other-{n}", text, "Other", None, None, f"other-{n}", 1, None, None, "t") for n, text in enumerate(others)]
    with Takes(tmp_path / "index") as index:
        index.add(takes)
        results = index.search(repeated, 6, mode="dense")
    texts = [result.take.text for result in results]
    assert len(results) == 6 and len(set(texts)) == 6 and texts[0] == repeated


class _Recording:
    """A real generation that notes which thread runs each retriever."""

    def __init__(self, generation):
        self._generation, self.threads = generation, {}

    def __getattr__(self, name):
        return getattr(self._generation, name)

    def lexical(self, *args):
        self.threads["lexical"] = threading.current_thread().name
        return self._generation.lexical(*args)

    def nearest(self, *args):
        self.threads["nearest"] = threading.current_thread().name
        return self._generation.nearest(*args)


def test_hybrid_search_runs_its_lexical_side_beside_the_encoding_with_the_same_ranking(searcher):
    ranker, generation = searcher.ranker, searcher.snapshot
    recording = _Recording(generation)
    query = "export controls on chips"
    overlapped = [(result.take.id, result.score) for result in ranker.search(recording, query, 10)]
    assert recording.threads["lexical"].startswith("takes-lexical")
    assert recording.threads["nearest"] == threading.current_thread().name
    # The same evidence computed in one thread, one step after the other.
    vector, tokens = ranker._encode(query, "hybrid")
    candidates = ranker.candidates(query, "hybrid", 50, Filters(), generation, vector=vector)
    candidates = ranker._late_and_thread_evidence(generation, tokens, candidates, "hybrid", search.LATE_DEPTH)
    ranked = ranking.fuse(candidates, "hybrid", late=True)
    inline = [(result.take.id, result.score) for result in ranker._results(generation, ranked, 10, 0)]
    assert overlapped == inline


class _CountingTokens(_Recording):
    """A real generation that notes the takes whose stored token vectors are read."""

    def __init__(self, generation):
        super().__init__(generation)
        self.read: set[int] = set()

    def token_vectors(self, row_ids):
        self.read.update(row_ids)
        return self._generation.token_vectors(row_ids)


@pytest.mark.parametrize("k", [10, 20])
def test_late_interaction_reads_only_the_first_stages_best_candidates_and_their_thread_mates(searcher, embedder, monkeypatch, k):
    query, generation = "export controls on chips", searcher.snapshot
    # A new ranker: an empty token cache, so every re-scored take is read from the store.
    counting = _CountingTokens(generation)
    ranker = search.Ranker(embedder)
    results = [(r.take.id, r.score) for r in ranker.search(counting, query, k)]
    # What it should read: the first stage's best texts, and the candidates at +-1 in their threads.
    candidates = ranker.candidates(query, "hybrid", search.FUSION_DEPTH, Filters(), generation, vector=ranker._encode(query, "hybrid")[0])
    takes = generation.takes([c.row_id for c in candidates])
    best = [row_id for row_id, _ in ranking.fuse(candidates, "hybrid", late=False)][: max(2 * k, search.LATE_DEPTH)]
    at = {(take.thread_id, take.position): row_id for row_id, take in takes.items()}
    mates = {at.get((takes[row_id].thread_id, takes[row_id].position + step)) for row_id in best for step in (-1, 1)}
    assert set(best) <= counting.read == set(best) | (mates - {None})
    assert len(counting.read) < len(candidates)
    # Re-scoring every candidate instead gives the same page on the seed (docs/QUALITY.md, "Cost").
    monkeypatch.setattr(search, "LATE_DEPTH", 10**6)
    assert [(r.take.id, r.score) for r in search.Ranker(embedder).search(searcher.snapshot, "export controls on chips", k)] == results


class _CountingTakes(_Recording):
    """A real generation that counts its reads of takes by row id."""

    def __init__(self, generation):
        super().__init__(generation)
        self.reads = 0

    def takes(self, row_ids):
        self.reads += 1
        return self._generation.takes(row_ids)


def test_the_default_search_reads_its_candidates_takes_once(searcher, embedder):
    """The second stage reads every candidate's take; the page is built from them, not read again (a round trip on PostgreSQL)."""
    counting = _CountingTakes(searcher.snapshot)
    results = search.Ranker(embedder).search(counting, "export controls on chips", 10)
    assert len(results) == 10
    assert counting.reads == 1


class _LexicalAfterNearest(_Recording):
    """A real generation whose lexical side finishes only once the search by meaning has started."""

    def __init__(self, generation):
        super().__init__(generation)
        self.nearest_started = threading.Event()
        self.overlapped = None

    def lexical(self, *args):
        # A ranker that waited for the lexical side before searching by meaning never sets it.
        self.overlapped = self.nearest_started.wait(timeout=30)
        return self._generation.lexical(*args)

    def nearest(self, *args):
        self.nearest_started.set()
        return self._generation.nearest(*args)


def test_the_search_by_meaning_does_not_wait_for_the_lexical_side(searcher):
    """On PostgreSQL both are queries of several milliseconds: they overlap, whichever comes back first."""
    generation = _LexicalAfterNearest(searcher.snapshot)
    results = searcher.ranker.search(generation, "export controls on chips", 10)
    assert generation.overlapped is True
    assert [r.take.id for r in results] == [r.take.id for r in searcher.ranker.search(searcher.snapshot, "export controls on chips", 10)]
