"""Semantic search over AI-policy takes, from Python.

    import takes

    with takes.Takes("data/index") as index:
        for result in index.search("what about compute governance", k=5):
            print(takes.citation(result.take), result.score)

Importing this package is cheap (no model, no FAISS, no numpy): ``Takes(...)``
loads the model and the index once.
"""

from indexer.api import Takes, cited, prompt_block
from indexer.errors import ProjectError, TakesError
from indexer.models import SearchResult, Take, citation

__all__ = ["ProjectError", "SearchResult", "Take", "Takes", "TakesError", "citation", "cited", "prompt_block"]
