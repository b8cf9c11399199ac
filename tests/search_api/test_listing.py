"""GET /authors, GET /threads, and the author filter and grouped context over HTTP."""

from __future__ import annotations

from collections import Counter


def test_authors_lists_every_author_with_counts(client):
    response = client.get("/authors")
    assert response.status_code == 200
    assert response.json() == {"authors": [{"author": "Jack Clark", "handle": "@jackclarkSF", "takes": 99, "threads": 7}]}


def test_threads_lists_id_author_date_size_and_first_words(client):
    threads = client.get("/threads").json()["threads"]
    assert len(threads) == 7
    assert set(threads[0]) == {"thread_id", "author", "handle", "date", "takes", "thread_size", "first_words"}
    seed = next(t for t in threads if t["thread_id"] == "jackclarkSF-2022-08-06")
    assert seed["takes"] == 81 and seed["thread_size"] == 81 and seed["first_words"].startswith("One like = one spicy take")
    assert client.get("/threads", params={"author": "clark"}).json()["threads"] == threads
    assert client.get("/threads", params={"author": "nobody"}).json()["threads"] == []
    # A thread by id is still where it was.
    assert len(client.get("/threads/jackclarkSF-2022-08-06").json()["takes"]) == 81


def test_the_author_filter_matches_a_surname(client):
    results = client.get("/search", params={"q": "compute", "author": "Clark"}).json()["results"]
    assert len(results) == 10


def test_grouped_context_shows_each_neighbour_once(client):
    body = client.get(
        "/search", params={"q": "compute", "k": 20, "context": 1, "group_by_thread": "true", "since": "2023-01-01"}
    ).json()
    for group in body["threads"]:
        shown = Counter()
        for take in group["takes"]:
            shown[take["id"]] += 1
            for neighbour in take["context"]["before"] + take["context"]["after"]:
                shown[neighbour["id"]] += 1
        assert max(shown.values()) == 1, (group["thread_id"], shown)
