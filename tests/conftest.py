"""Shared fixtures: the real shipped model, and a real index of the seed corpus."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.postgres import database_url, postgres_server  # noqa: F401 (fixtures)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
# A copy of ../shared/eval/dev_queries.json, so the quality floor runs wherever the repo is cloned.
DEV_JUDGMENTS = REPO / "tests" / "data" / "dev_queries.json"


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """A scratch user cache: the int8 ONNX model is built there once per run, and
    every test index copies it, without touching the developer's ~/.cache."""
    path = tmp_path_factory.mktemp("user-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch):
    """No test sees the developer's TAKES_* settings."""
    for name in list(os.environ):
        if name.startswith("TAKES_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def embedder():
    """The default embedder (int8 ONNX): what `takes index` uses."""
    from embeddings import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def torch_embedder():
    """The torch fp32 backend: the reference the int8 vectors are held to."""
    from embeddings import DEFAULT_MODEL, load_embedder

    return load_embedder(DEFAULT_MODEL, "torch")


@pytest.fixture(scope="session")
def seed_takes():
    from indexer import SEED_CORPUS
    from indexer.sources import read_takes

    return read_takes(SEED_CORPUS)


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory, embedder, seed_takes) -> Path:
    """An index of the seed corpus, built once; tests that change an index copy it."""
    from embeddings import DEFAULT_MODEL
    from indexer.index.writer import IndexWriter

    index_dir = tmp_path_factory.mktemp("seed-index")
    with IndexWriter(index_dir) as writer:
        writer.replace_all(seed_takes, embedder, model=DEFAULT_MODEL)
    return index_dir


@pytest.fixture
def index_copy(seed_index, tmp_path) -> Path:
    """A private copy of the seed index that a test may change."""
    target = tmp_path / "index"
    shutil.copytree(seed_index, target, ignore=shutil.ignore_patterns(".lock"))
    return target


@pytest.fixture(scope="session")
def searcher(seed_index, embedder):
    from indexer.serving import Searcher

    return Searcher(seed_index, embedder=embedder)


@pytest.fixture
def unroll(tmp_path):
    """A small Thread Reader unroll (tests/samples.py) as a file to add."""
    from tests.samples import UNROLL

    path = tmp_path / "dana.txt"
    path.write_text(UNROLL)
    return path


@pytest.fixture(scope="session")
def seeded_cross_encoder(tmp_path_factory):
    """A CrossEncoder folder: the shipped MiniLM layers plus a seeded, untrained one-score head.

    A real cross-encoder in shape and code path (no trained one is installable
    here), so tests can check the re-ranking interface but not its relevance.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from embeddings import resolve_model_path

    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    CrossEncoder(resolve_model_path("all-MiniLM-L6-v2"), num_labels=1, device="cpu").save(str(folder))
    return folder
