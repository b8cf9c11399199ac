"""The int8 ONNX backend: agrees with torch, builds its quantized model once, keeps the Embedder contract."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from embeddings import DEFAULT_MODEL, EmbeddingError, resolve_model_path  # noqa: E402
from embeddings.base import Embedder  # noqa: E402
from embeddings.onnx import (  # noqa: E402
    MANIFEST_NAME,
    OnnxEmbedder,
    ensure_quantized_model,
    model_cache_dir,
    pick_quantization_config,
)

SEED_CORPUS = Path(__file__).resolve().parents[2] / "indexer" / "corpus" / "jackclark_ai_policy.txt"


@pytest.fixture(scope="module")
def seed_texts() -> list[str]:
    """The takes of the seed thread, read without the parser so this test stands alone."""
    lines = SEED_CORPUS.read_text(encoding="utf-8").splitlines()[:85]
    texts = [line.strip() for line in lines if len(line.strip()) > 40]
    assert len(texts) > 70
    return texts


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-index")


@pytest.fixture(scope="module")
def onnx_embedder(onnx_cache) -> OnnxEmbedder:
    return OnnxEmbedder(DEFAULT_MODEL, cache_dir=onnx_cache)


def _file_times(folder: Path) -> dict[str, int]:
    return {path.relative_to(folder).as_posix(): path.stat().st_mtime_ns for path in folder.rglob("*")}


def test_onnx_vectors_agree_with_torch(onnx_embedder, torch_embedder, seed_texts):
    quantized = onnx_embedder.encode(seed_texts)
    reference = torch_embedder.encode(seed_texts)
    cosines = (quantized * reference).sum(axis=1)
    assert cosines.mean() > 0.98
    assert cosines.min() > 0.95


def test_onnx_output_is_unit_float32_rows(onnx_embedder, seed_texts):
    vectors = onnx_embedder.encode(seed_texts[:10])
    assert isinstance(onnx_embedder, Embedder)
    assert (onnx_embedder.name, onnx_embedder.backend, onnx_embedder.dim) == (DEFAULT_MODEL, "onnx", 384)
    assert vectors.shape == (10, 384)
    assert vectors.dtype == np.float32
    assert vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_batched_and_single_encoding_give_the_same_vectors(backend, onnx_embedder, torch_embedder, seed_texts):
    model = onnx_embedder if backend == "onnx" else torch_embedder
    texts = seed_texts[:16]
    batched = model.encode(texts, batch_size=8)
    one_at_a_time = np.vstack([model.encode([text]) for text in texts])
    np.testing.assert_allclose(batched, one_at_a_time, atol=1e-4)


def test_an_int8_vector_is_bit_identical_whatever_it_is_embedded_with(onnx_embedder, seed_texts):
    """The int8 scales come from the tensor run, so a take's vector must not see its batch-mates."""
    take = seed_texts[3]
    alone = onnx_embedder.encode([take])[0]
    short, long = min(seed_texts, key=len), max(seed_texts, key=len)
    for batch in ([short, take], [take, long, short], [long] * 5 + [take], seed_texts[:3] + [take]):
        vectors = onnx_embedder.encode(batch, batch_size=len(batch))
        assert np.array_equal(vectors[batch.index(take)], alone)
    # Bulk encoding (indexing) runs texts on several threads at once.
    assert np.array_equal(onnx_embedder.encode(seed_texts)[3], alone)


def test_texts_encoded_counts_texts(onnx_embedder, seed_texts):
    before = onnx_embedder.texts_encoded
    onnx_embedder.encode(seed_texts[:3])
    onnx_embedder.encode([])
    assert onnx_embedder.texts_encoded == before + 3


def test_empty_input_gives_zero_rows(onnx_embedder):
    vectors = onnx_embedder.encode([])
    assert vectors.shape == (0, onnx_embedder.dim)
    assert vectors.dtype == np.float32


def test_a_single_string_is_refused(onnx_embedder):
    with pytest.raises(TypeError, match="not a single string"):
        onnx_embedder.encode("one take")


def test_quantized_model_is_built_once_and_reused(onnx_embedder, onnx_cache, seed_texts):
    model_dir = model_cache_dir(DEFAULT_MODEL, onnx_cache)
    assert model_dir == onnx_cache / "onnx-models" / DEFAULT_MODEL == onnx_embedder.model_dir
    onnx_files = sorted(path.name for path in model_dir.rglob("*.onnx"))
    assert onnx_files == [f"model_qint8_{onnx_embedder.quantization}.onnx"]
    assert (model_dir / MANIFEST_NAME).is_file()
    before = _file_times(model_dir)

    again = OnnxEmbedder(DEFAULT_MODEL, cache_dir=onnx_cache)

    assert _file_times(model_dir) == before
    assert not list(model_dir.parent.glob("*.building-*"))
    np.testing.assert_array_equal(again.encode(seed_texts[:4]), onnx_embedder.encode(seed_texts[:4]))


def test_building_never_writes_into_the_shipped_model(onnx_embedder):
    shipped = Path(resolve_model_path(DEFAULT_MODEL))
    assert not list(shipped.rglob("*.onnx"))


def test_interrupted_and_concurrent_builds_end_with_one_complete_model(tmp_path, caplog):
    target = model_cache_dir(DEFAULT_MODEL, tmp_path)
    # What a crash leaves: a half-built staging folder, and a target without its manifest.
    crashed = target.parent / f".{target.name}.building-crashed"
    (crashed / "onnx").mkdir(parents=True)
    (crashed / "onnx" / "model.onnx").write_bytes(b"half")
    target.mkdir()
    (target / "config.json").write_text("{}")
    results: list[Path | BaseException] = []

    def build():
        try:
            results.append(ensure_quantized_model(DEFAULT_MODEL, tmp_path))
        except BaseException as error:  # surfaced by the assertion below
            results.append(error)

    with caplog.at_level(logging.INFO, logger="embeddings.onnx"):
        workers = [threading.Thread(target=build) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    assert results == [target, target]
    # One of the two threads fills the folder (from the user cache, or by a
    # build when the user cache is empty); the other waits and reuses it.
    fills = [record for record in caplog.records if record.getMessage().startswith(("building the int8", "copying the int8"))]
    assert len(fills) == 1
    assert (target / MANIFEST_NAME).is_file()
    assert (target / "config.json").read_text() != "{}"
    assert sorted(path.name for path in target.parent.iterdir()) == [f".{target.name}.lock", target.name]


def test_missing_model_is_a_clean_error_and_leaves_nothing_behind(tmp_path):
    with pytest.raises(EmbeddingError, match="cannot load model"):
        OnnxEmbedder(str(tmp_path / "no-such-model"), cache_dir=tmp_path / "index")
    # The build runs in the user cache first; neither it nor the index keeps a half-built folder.
    for folder in (tmp_path / "index" / "onnx-models", model_cache_dir("x").parent):
        leftovers = [path.name for path in folder.glob("*") if not path.name.endswith(".lock")] if folder.exists() else []
        assert not [name for name in leftovers if "no-such-model" in name or ".building-" in name]


def test_missing_onnx_runtime_names_the_extra(tmp_path, monkeypatch):
    # A None entry makes `import onnxruntime` fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EmbeddingError, match=r"pip install 'optimum-onnx\[onnxruntime\]'"):
        OnnxEmbedder(DEFAULT_MODEL, cache_dir=tmp_path)


def test_user_cache_is_used_without_an_index_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert model_cache_dir(DEFAULT_MODEL) == tmp_path / "takes" / "onnx-models" / DEFAULT_MODEL
    # Paths lose their separators but keep a hash, so two models never share a folder.
    first, second = model_cache_dir("/models/a/x"), model_cache_dir("/models/b/x")
    assert first != second and "/" not in first.name


def test_quantization_config_follows_the_cpu():
    assert pick_quantization_config({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64") == "avx512_vnni"
    assert pick_quantization_config({"avx2", "avx512f", "avx512bw"}, "x86_64") == "avx512"
    assert pick_quantization_config({"avx2"}, "x86_64") == "avx2"
    assert pick_quantization_config(set(), "x86_64") == "avx2"
    assert pick_quantization_config(set(), "aarch64") == "arm64"


def test_thread_count_comes_from_the_environment(monkeypatch):
    from search_api.settings import Settings, SettingsError

    monkeypatch.delenv("TAKES_THREADS", raising=False)
    assert Settings().threads == 1
    monkeypatch.setenv("TAKES_THREADS", "2")
    assert Settings().threads == 2
    monkeypatch.setenv("TAKES_THREADS", "0")  # the libraries' own defaults
    assert Settings().threads == 0
    for bad in ("many", "-1"):
        monkeypatch.setenv("TAKES_THREADS", bad)
        with pytest.raises(SettingsError, match="TAKES_THREADS"):
            Settings()


def test_the_lean_runtime_matches_sentence_transformers_own_onnx_path(onnx_embedder, onnx_cache, seed_texts, monkeypatch):
    """A cached model runs on onnxruntime + tokenizers alone; its vectors must be sentence-transformers'."""
    import embeddings.onnx as onnx_module

    assert onnx_embedder._runtime is not None
    long_text = " ".join(seed_texts) * 3  # past the model's 256-token limit: truncation must agree too
    texts = [*seed_texts[:20], long_text]
    lean = onnx_embedder.encode(texts)
    monkeypatch.setattr(onnx_module._LeanRuntime, "open", classmethod(lambda cls, *args, **options: None))
    reference = OnnxEmbedder(DEFAULT_MODEL, cache_dir=onnx_cache)
    assert reference._runtime is None
    np.testing.assert_allclose(lean, reference.encode(texts), atol=1e-5)


def test_a_cached_model_loads_without_importing_torch(onnx_embedder, onnx_cache):
    code = (
        "import sys; from embeddings.onnx import OnnxEmbedder; "
        f"e = OnnxEmbedder({DEFAULT_MODEL!r}, cache_dir={str(onnx_cache)!r}); e.encode(['compute']); "
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]


def test_a_new_index_copies_the_user_cache_model_instead_of_building(onnx_embedder, tmp_path, caplog):
    shared = ensure_quantized_model(DEFAULT_MODEL)  # built once per machine (here: per test run)
    with caplog.at_level(logging.INFO, logger="embeddings.onnx"):
        copied = ensure_quantized_model(DEFAULT_MODEL, tmp_path / "index")
    messages = [record.getMessage() for record in caplog.records]
    assert not [message for message in messages if message.startswith("building")]
    assert [message for message in messages if message.startswith("copying")]
    assert copied == model_cache_dir(DEFAULT_MODEL, tmp_path / "index")
    files = sorted(path.relative_to(shared).as_posix() for path in shared.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(copied).as_posix() for path in copied.rglob("*") if path.is_file())
    for name in files:
        assert (shared / name).read_bytes() == (copied / name).read_bytes()


def test_an_index_keeps_its_model_but_a_stale_user_cache_is_not_reused(tmp_path):
    from embeddings.onnx import RECIPE, _usable

    folder = tmp_path / "model"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"weights")
    (folder / MANIFEST_NAME).write_text('{"file_name": "onnx/model.onnx", "recipe": 1}')
    assert _usable(folder, pinned=True)  # an index's copy: its takes were embedded with it
    assert not _usable(folder, pinned=False)  # the user cache: rebuilt by the current recipe
    (folder / MANIFEST_NAME).write_text(f'{{"file_name": "onnx/model.onnx", "recipe": {RECIPE}}}')
    assert _usable(folder, pinned=False)


def test_an_unwritable_user_cache_builds_in_the_index_folder(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("embeddings.onnx.SHIPPED_MODELS", tmp_path / "nothing-shipped")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the user cache should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with caplog.at_level(logging.INFO, logger="embeddings.onnx"):
        model_dir = ensure_quantized_model(DEFAULT_MODEL, tmp_path / "index")
    assert (model_dir / MANIFEST_NAME).is_file()
    assert any(record.getMessage().startswith("building the int8 ONNX model") for record in caplog.records)
    assert blocker.read_text().startswith("a file")


def test_only_weight_matmuls_are_quantized(onnx_embedder):
    import onnx

    graph = onnx.load(str(onnx_embedder.model_dir / _read_manifest_file(onnx_embedder.model_dir)), load_external_data=False).graph
    ops = [node.op_type for node in graph.node]
    # Attention's two activation MatMuls per layer stay fp32; every weight MatMul is int8.
    assert ops.count("MatMul") == 12
    assert ops.count("MatMulInteger") == 36


def _read_manifest_file(model_dir: Path) -> str:
    import json

    return json.loads((model_dir / MANIFEST_NAME).read_text())["file_name"]


def test_needs_build_is_false_once_the_user_cache_or_the_index_has_the_model(onnx_embedder, tmp_path, monkeypatch):
    from embeddings.onnx import needs_build

    ensure_quantized_model(DEFAULT_MODEL)
    assert not needs_build(DEFAULT_MODEL, tmp_path / "fresh-index")  # a copy will do
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert not needs_build(DEFAULT_MODEL, tmp_path / "fresh-index")  # takes ships the default model
    monkeypatch.setattr("embeddings.onnx.SHIPPED_MODELS", tmp_path / "nothing-shipped")
    assert needs_build(DEFAULT_MODEL, tmp_path / "fresh-index")
    assert not needs_build(DEFAULT_MODEL, onnx_embedder.model_dir.parent.parent)  # the index's own copy


def test_a_new_machine_copies_the_shipped_model_without_torch(tmp_path):
    """An empty user cache and a new index: the default model is copied from takes itself, not built."""
    code = (
        "import sys, logging; logging.basicConfig(level=logging.INFO)\n"
        "from embeddings.onnx import OnnxEmbedder\n"
        f"e = OnnxEmbedder({DEFAULT_MODEL!r}, cache_dir={str(tmp_path / 'index')!r}); e.encode(['compute'])\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules, 'optimum' in sys.modules)"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.split() == ["False", "False", "False"]
    assert "copying the int8 ONNX model" in done.stderr and "building" not in done.stderr
    assert "not this CPU" not in done.stderr


def test_the_shipped_model_is_what_the_recipe_derives_from_the_shipped_weights(tmp_path, seed_texts):
    """The committed file is no opaque blob: rebuilt here (torch extra), it encodes the same vectors."""
    import json

    from embeddings.onnx import RECIPE, SHIPPED_QUANTIZATION, _build, shipped_model_dir

    shipped = shipped_model_dir(DEFAULT_MODEL)
    assert shipped is not None, "embeddings/shipped/ lacks the default model: run python -m embeddings.ship"
    manifest = json.loads((shipped / MANIFEST_NAME).read_text())
    assert manifest["recipe"] == RECIPE and manifest["quantization"] == SHIPPED_QUANTIZATION and manifest["shipped"]
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    _build(DEFAULT_MODEL, rebuilt, SHIPPED_QUANTIZATION, shipped=True)
    (tmp_path / "a" / "onnx-models").mkdir(parents=True)
    (tmp_path / "b" / "onnx-models").mkdir(parents=True)
    shutil.copytree(shipped, tmp_path / "a" / "onnx-models" / DEFAULT_MODEL)
    shutil.copytree(rebuilt, tmp_path / "b" / "onnx-models" / DEFAULT_MODEL)
    ours = OnnxEmbedder(DEFAULT_MODEL, cache_dir=tmp_path / "a").encode(seed_texts[:20])
    fresh = OnnxEmbedder(DEFAULT_MODEL, cache_dir=tmp_path / "b").encode(seed_texts[:20])
    assert float((ours * fresh).sum(axis=1).min()) > 0.9999
