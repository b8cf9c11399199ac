"""The Python API: `Takes` over a real index, from one thread and from eight."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest

from indexer.api import Takes, cited, prompt_block
from indexer.errors import InvalidQuery, TakeNotFound
from indexer.models import Take, citation

QUERIES = [
    "what about compute governance",
    "open source models",
    "measuring AI systems and evaluations",
    "governments are behind",
    "China and export controls",
    "AI companies and regulation",
    "guillotines",
    "information asymmetry from big computers",
]


@pytest.fixture(scope="module")
def takes(seed_index, embedder):
    from indexer.serving import Searcher

    with Takes(seed_index, searcher=Searcher(seed_index, embedder=embedder)) as client:
        yield client


def test_citation_names_author_date_thread_and_position():
    take = Take("t-46", "text", "Jack Clark", "@jackclarkSF", "2022-08-06", "jackclarkSF-2022-08-06", 46, 81, None, "seed.txt")
    assert citation(take) == "Jack Clark (@jackclarkSF), 2022-08-06, thread jackclarkSF-2022-08-06 take 46/81"
    unsized = Take("x", "text", None, "@someone", "2023-01-02T10:00:00", "thread-x", 3, None, "https://x.com/someone/status/1", "a.jsonl")
    assert citation(unsized) == "@someone, 2023-01-02, thread thread-x take 3, https://x.com/someone/status/1"


def test_search_with_filters(takes):
    results = takes.search("what about compute governance", k=8)
    assert len(results) == 8
    assert any(r.take.date == "2023-06-25" and "go after compute" in r.take.text for r in results)
    recent = takes.search("what about compute governance", k=5, since=date(2023, 1, 1), author="Jack Clark")
    assert recent and all(r.take.date >= "2023-01-01" for r in recent)
    lexical = takes.search("guillotines", k=3, mode="lexical")
    assert "guillotine" in lexical[0].take.text.lower()
    with_context = takes.search("guillotines", k=1, context=1)
    assert with_context[0].context is not None
    with pytest.raises(InvalidQuery, match="k must be"):
        takes.search("compute", k=0)
    with pytest.raises(InvalidQuery, match="empty"):
        takes.search("  ")


def test_get_take_and_thread(takes):
    thread = takes.thread("jackclarkSF-2023-06-25")
    assert [t.position for t in thread] == sorted(t.position for t in thread)
    assert takes.take(thread[0].id) == thread[0]
    with pytest.raises(TakeNotFound):
        takes.thread("no-such-thread")
    with pytest.raises(TakeNotFound):
        takes.take("no-such-take")


def test_cited_and_context_block(takes):
    results = takes.search("what about compute governance", k=3)
    data = cited(results[0])
    assert data["citation"] == citation(results[0].take) and data["score"] == round(results[0].score, 6)
    block = takes.prompt_block("what about compute governance", k=3)
    assert block.startswith("Takes retrieved for: what about compute governance")
    for number, result in enumerate(results, start=1):
        assert f"[{number}] {citation(result.take)}" in block
    assert "No takes match." in prompt_block([], "nothing")


def test_concurrent_searches_match_sequential_ones(takes):
    sequential = {query: [(r.take.id, r.score) for r in takes.search(query, k=10)] for query in QUERIES}

    def run(query):
        return query, [(r.take.id, r.score) for r in takes.search(query, k=10)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(run, QUERIES * 4))
    assert len(concurrent) == 32
    for query, ranked in concurrent:
        assert [take_id for take_id, _ in ranked] == [take_id for take_id, _ in sequential[query]], query
        assert [score for _, score in ranked] == pytest.approx([score for _, score in sequential[query]], abs=1e-5), query


def test_add_takes_and_files_then_search_them(index_copy, embedder, tmp_path):
    from indexer.serving import Searcher

    novel = Take("bots-1", "Lighthouse keepers should regulate chatbots through fog horn licensing.", "Ada Example",
                 "@ada", "2024-03-01", "ada-2024-03-01", 1, 2, None, "test")
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text('{"id": "bots-2", "text": "Fog horn licensing is a terrible metaphor for model weights.", '
                     '"author": "Ada Example", "handle": "@ada", "date": "2024-03-01", "thread_id": "ada-2024-03-01", "position": 2}\n')
    with Takes(index_copy, searcher=Searcher(index_copy, embedder=embedder)) as client:
        before = client.stats()["takes"]
        report = client.add([novel, jsonl])
        assert report.added == 2
        assert client.stats()["takes"] == before + 2
        assert client.search("fog horn licensing for chatbots", k=1)[0].take.id in {"bots-1", "bots-2"}
        assert [t.id for t in client.thread("ada-2024-03-01")] == ["bots-1", "bots-2"]
        assert client.add(novel).added == 0


def test_importing_the_package_stays_cheap():
    code = "import sys, indexer; from indexer import Takes; print('torch' in sys.modules, 'faiss' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]


def test_takes_serves_any_store_it_is_given(seed_index, takes):
    from indexer.index import EmbeddedStore

    with Takes.open(EmbeddedStore(seed_index)) as opened:
        assert opened.store.location == str(seed_index)
        query = "what about compute governance"
        assert [r.take.id for r in opened.search(query, k=5)] == [r.take.id for r in takes.search(query, k=5)]
