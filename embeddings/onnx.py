"""sentence-transformers on ONNX Runtime with an int8 dynamically-quantized model.

The quantized model is derived locally from the shipped weights the first time
it is needed (no network) and kept in a cache folder, so later loads take a
fraction of a second. Reusing the cached file, even on another machine, is
deliberate: an index and its queries must be encoded by the very same model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from embeddings import int8_kernels
from embeddings.base import DEFAULT_THREADS, EmbeddingError
from embeddings.sentence_transformer import _load_sentence_transformer

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'optimum-onnx[onnxruntime]' (a dependency of takes)"
MANIFEST_NAME = "takes-onnx.json"
# How the model is derived; a user-cache copy made by an older recipe is
# rebuilt, while an index keeps the copy its takes were embedded with.
RECIPE = 2
# Texts encoded side by side when embedding in bulk (one per core); a query
# or a handful of takes stays on one thread.
BULK_WORKERS = max(1, min(4, os.cpu_count() or 1))
BULK_MIN_TEXTS_PER_WORKER = 16
# The default model's int8 export, derived once from the shipped weights
# (`python -m embeddings.ship`) and committed: a new machine copies it instead
# of building, so running takes needs neither torch nor optimum. Built with the
# avx2 preset, which runs on every x86-64 CPU (and arm64) without saturating.
SHIPPED_MODELS = Path(__file__).resolve().parent / "shipped"
SHIPPED_QUANTIZATION = "avx2"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def pick_quantization_config(flags: set[str] | None = None, machine: str | None = None) -> str:
    """Name the sentence-transformers quantization preset that suits this CPU.

    Falls back to ``avx2`` when the CPU cannot be inspected: its unsigned
    8-bit weights are the preset least prone to int16 saturation on CPUs
    without VNNI.
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = _cpu_flags() if flags is None else flags
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    return "avx2"


def default_cache_root() -> Path:
    """Where quantized models go when no index directory is given."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "takes" / "onnx-models"


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if slug == name:
        return slug
    # Paths and hub names lose characters: a short hash keeps two different
    # models from sharing one folder.
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{slug[-80:] or 'model'}-{digest}"


def model_cache_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the quantized model for ``name``."""
    root = Path(cache_dir) / "onnx-models" if cache_dir is not None else default_cache_root()
    return root / _slug(name)


def _read_manifest(model_dir: Path) -> dict | None:
    """The build record, or None when the folder is missing or incomplete."""
    try:
        manifest = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not (model_dir / str(manifest.get("file_name", ""))).is_file():
        return None
    return manifest


class ModelCopyDamaged(EmbeddingError):
    """A model copy's files do not match the checksums recorded when it was made."""


# Files already hashed by this process, by identity and version: a model is
# hashed once per process, not at every load.
_known_digests: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    status = path.stat()
    key = (str(path), status.st_size, status.st_mtime_ns, status.st_ino, status.st_dev)
    known = _known_digests.get(key)
    if known is None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        known = _known_digests[key] = digest.hexdigest()
    return known


def _file_checksums(model_dir: Path) -> dict[str, str]:
    """SHA-256 of every file of a model folder but its manifest, by relative path."""
    return {
        path.relative_to(model_dir).as_posix(): _sha256(path)
        for path in sorted(model_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def verify_model_files(model_dir: Path) -> list[tuple[str, str]]:
    """(path, problem) for each file of a model folder that fails its recorded checksum.

    A folder made before checksums were recorded has nothing to check: [].
    """
    try:
        manifest = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [(str(model_dir / MANIFEST_NAME), "missing")]
    except (OSError, ValueError) as error:
        return [(str(model_dir / MANIFEST_NAME), f"unreadable ({error})")]
    recorded = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(recorded, dict):
        return [] if isinstance(manifest, dict) else [(str(model_dir / MANIFEST_NAME), "not a model manifest")]
    problems = []
    for relative, expected in sorted(recorded.items()):
        path = model_dir / relative
        try:
            if _sha256(path) != expected:
                problems.append((str(path), "does not match its recorded checksum (damaged on disk)"))
        except FileNotFoundError:
            problems.append((str(path), "missing"))
        except OSError as error:
            problems.append((str(path), f"unreadable ({error.strerror})"))
    return problems


def _record_checksums(model_dir: Path) -> None:
    """Write the checksums of a freshly built or copied model folder into its manifest."""
    manifest_path = model_dir / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"] = _file_checksums(model_dir)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


class _LeanRuntime:
    """The cached quantized model run by ONNX Runtime and `tokenizers` alone.

    Importing sentence-transformers (and with it torch) costs seconds, more
    than everything else `takes add` or a server start does. For the common
    shape of model (a transformer, mean pooling, normalization) the pipeline
    is three steps we can run directly; tests check the vectors equal
    sentence-transformers' own ONNX path. Any other shape returns None from
    ``open`` and the full sentence-transformers path is used.
    """

    def __init__(self, session, tokenizer, dim: int):
        self._session = session
        self._tokenizer = tokenizer
        self._inputs = {item.name for item in session.get_inputs()}
        self.dim = dim
        self.signed_weights = False

    @classmethod
    def open(cls, model_dir: Path, manifest: dict, session_options, onnxruntime, *, signed_weights: bool = True) -> "_LeanRuntime | None":
        try:
            from tokenizers import Tokenizer

            modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
            kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
            if kinds not in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]):
                return None
            pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
            if pooling.get("pooling_mode", "mean" if pooling.get("pooling_mode_mean_tokens") else None) != "mean":
                return None
            tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
            max_length = int(tokenizer_config.get("model_max_length", 512))
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except (ImportError, OSError, ValueError, KeyError, IndexError):
            return None
        # The saved tokenizer file carries the padding/truncation of its last
        # use; sentence-transformers truncates at the model's length, unpadded.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=min(max_length, 512))
        model_path = model_dir / manifest["file_name"]
        # The same model with its weights signed where that is exact here and faster (embeddings/int8_kernels.py).
        signed = None
        if signed_weights and int8_kernels.signed_products_exact(onnxruntime):
            signed = int8_kernels.signed_weights_of_file(model_path)
        session = onnxruntime.InferenceSession(
            str(model_path) if signed is None else signed, session_options, providers=["CPUExecutionProvider"]
        )
        dim = session.get_outputs()[0].shape[-1]
        if not isinstance(dim, int):
            return None
        runtime = cls(session, tokenizer, dim)
        runtime.signed_weights = signed is not None
        return runtime

    def encode(self, texts: list[str], progress: bool = False, tokens: list | None = None) -> np.ndarray:
        """Unit vectors of ``texts``; with ``tokens`` (a list as long as ``texts``) also each text's unit token vectors."""
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), desc="Embedding", unit="take")
        workers = min(BULK_WORKERS, len(texts) // BULK_MIN_TEXTS_PER_WORKER) if BULK_WORKERS > 1 else 1
        if workers <= 1:
            self._encode_rows(texts, range(len(texts)), vectors, tokens, bar)
        else:
            # Bulk work (indexing): one text per run keeps a vector a function
            # of its text alone, so use the cores by running several texts at
            # once instead; ONNX Runtime releases the GIL inside run().
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                for future in [
                    pool.submit(self._encode_rows, texts, range(start, len(texts), workers), vectors, tokens, bar)
                    for start in range(workers)
                ]:
                    future.result()
        if bar is not None:
            bar.close()
        return vectors

    def _encode_rows(self, texts: list[str], rows: range, vectors: np.ndarray, tokens: list | None, bar) -> None:
        for row in rows:
            outputs = self._tokens(texts[row])
            # Unpadded (one text per run), so every token counts in the mean.
            pooled = outputs.mean(axis=0)
            vectors[row] = pooled / max(np.linalg.norm(pooled), 1e-12)
            if tokens is not None:
                tokens[row] = _unit_rows(outputs)
            if bar is not None:
                bar.update(1)

    def _tokens(self, text: str) -> np.ndarray:
        """The model's output vector for each token of ``text``, (tokens, dim)."""
        encoding = self._tokenizer.encode(text)
        feeds = {
            "input_ids": np.asarray([encoding.ids], dtype=np.int64),
            "attention_mask": np.asarray([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
        }
        return self._session.run(None, {name: value for name, value in feeds.items() if name in self._inputs})[0][0]

    def token_vectors(self, texts: list[str]) -> list[np.ndarray]:
        return [_unit_rows(self._tokens(text)) for text in texts]

    def encode_with_tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        tokens = self._tokens(text)
        # The same mean pooling as encode(): the vector is the one encode([text]) gives.
        pooled = tokens.mean(axis=0)
        return (pooled / max(np.linalg.norm(pooled), 1e-12)).astype(np.float32), _unit_rows(tokens)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _require_onnx_runtime(*, for_build: bool = True):
    """onnxruntime, and for building also optimum (which imports torch: only then)."""
    try:
        import onnxruntime

        if for_build:
            from optimum.onnxruntime import ORTModelForFeatureExtraction  # noqa: F401
    except ImportError as error:
        raise EmbeddingError(f"the onnx backend needs optimum and onnxruntime: {INSTALL_HINT} ({error})") from error
    return onnxruntime


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an advisory lock so that two processes do not build the same model at once."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename alone keeps the cache sound
        yield False
        return
    with open(lock_path, "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_directory(folder)


def _fsync_directory(folder: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _drop_root_chatter(record: logging.LogRecord) -> bool:
    # The onnxruntime quantizer logs one INFO line per tensor through the root
    # logger itself; a filter on the root logger sees only such direct calls,
    # never records propagated from named loggers, so the app's logs are untouched.
    return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _quiet_export():
    """Hide the export chatter: its advice to save into the source folder is wrong for us."""
    noisy = [logging.getLogger(name) for name in ("sentence_transformers.backend", "optimum", "transformers")]
    levels = [log.level for log in noisy]
    for log in noisy:
        log.setLevel(logging.ERROR)
    root = logging.getLogger()
    root.addFilter(_drop_root_chatter)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(_drop_root_chatter)
        for log, level in zip(noisy, levels):
            log.setLevel(level)


def activation_matmuls(onnx_path: Path) -> list[str]:
    """MatMul nodes that multiply two activations (attention's scores and mixing), not a weight."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    constants = {item.name for item in graph.initializer}
    constants.update(output for node in graph.node if node.op_type == "Constant" for output in node.output)
    return [node.name for node in graph.node if node.op_type == "MatMul" and not any(name in constants for name in node.input)]


def _quantization_config(config: str, fp32_path: Path):
    """sentence-transformers' preset for ``config``, per-channel, with weight MatMuls only.

    Dynamic quantization picks one scale per activation tensor; a MatMul of
    two activations (attention) gets both operands quantized that way. Leaving
    those few small MatMuls in fp32 brought the vectors closer to fp32 torch
    on the seed takes (lowest cosine 0.983 to 0.989, mean 0.9925 to 0.9933) at
    the same speed (`python -m bench.quantization`).
    """
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = getattr(AutoQuantizationConfig, config)
    return preset(is_static=False, per_channel=True, nodes_to_exclude=activation_matmuls(fp32_path))


def _export_quantized(name: str, staging: Path, config: str) -> str:
    """Export ``name`` to ONNX, quantize it into ``staging``; return the model file's path within it."""
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    try:
        with _quiet_export():
            # export=True converts the fp32 weights in optimum's own temporary
            # folder, never the source's, and skips the hub file listing that
            # sentence-transformers does first for a cached hub model (offline here).
            model = _load_sentence_transformer(name, backend="onnx", model_kwargs={"export": True})
            model.save(str(staging))
            export_dynamic_quantized_onnx_model(
                model, _quantization_config(config, staging / "onnx" / "model.onnx"), str(staging), file_suffix=f"qint8_{config}"
            )
    except EmbeddingError:
        raise
    except Exception as error:  # torch.onnx, optimum and onnx raise many unrelated types
        raise EmbeddingError(f"cannot build the quantized ONNX model for {name!r} ({config}): {error}") from error
    quantized = sorted((staging / "onnx").glob(f"model_*{config}.onnx"))
    if len(quantized) != 1:
        raise EmbeddingError(f"quantizing {name!r} did not produce one ONNX file in {staging / 'onnx'}")
    # The fp32 export only fed the quantizer: keeping it would cost 90 MB per index.
    (staging / "onnx" / "model.onnx").unlink(missing_ok=True)
    return quantized[0].relative_to(staging).as_posix()


class _CacheUnwritable(EmbeddingError):
    """The model cache folder cannot be written."""


def ensure_quantized_model(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cached quantized model folder for ``name``, building it on first use.

    With ``cache_dir`` (an index folder) the model is built once per machine
    in the user cache (``default_cache_root``) and copied into the index, so
    a second index, or a test's scratch index, costs a copy instead of a
    build; the index then keeps its own copy, so its queries are always
    encoded by the model that encoded its takes. When the user cache cannot
    be written the model is built in the index folder itself.

    Either way the model is assembled in a hidden folder beside the target
    and renamed into place only when complete, so a crash leaves no
    half-written model; a lock makes a second process wait for the first
    instead of repeating it.
    """
    target = model_cache_dir(name, cache_dir)
    pinned = cache_dir is not None
    if _usable(target, pinned):
        return target
    source = None
    if pinned and model_cache_dir(name) != target:
        try:
            source = ensure_quantized_model(name)
        except _CacheUnwritable as error:
            logger.info("building in the index folder instead of the user cache: %s", error)
    if source is None:
        source = shipped_model_dir(name)
    if source is None:
        _require_onnx_runtime()
    elif pinned and Path(cache_dir).is_dir() and not os.access(Path(cache_dir), os.W_OK):
        # A read-only index without its own copy (copied without it, or made
        # by an older takes): the user cache's model is the same recipe.
        logger.info("%s is read-only: using the ONNX model in %s", cache_dir, source)
        return source
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(target.parent / f".{target.name}.lock") as locked:
            if _usable(target, pinned):
                return target  # another process built it while we waited
            if locked:
                # Holding the lock means no build is running: these are crash leftovers.
                for leftover in target.parent.glob(f".{target.name}.building-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            if source is not None:
                logger.info("copying the int8 ONNX model for %s from %s into %s", name, source, target)
                _assemble(target, lambda staging: _copy_model(source, staging))
            else:
                _assemble(target, lambda staging: _build(name, staging))
    except OSError as error:
        raise _CacheUnwritable(f"cannot write the ONNX model cache in {target.parent}: {_os_reason(error)}") from error
    return target


def _os_reason(error: OSError) -> str:
    """One short reason for an OS error; shutil.copytree packs one error per file into a list."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list) and error.args[0]:
        first = error.args[0][0]
        return f"{first[-1]}" if isinstance(first, tuple) else str(first)
    return error.strerror or str(error)


def needs_build(name: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when loading ``name`` will build the quantized model (neither the index, the user cache nor takes has it)."""
    if _usable(model_cache_dir(name, cache_dir), cache_dir is not None):
        return False
    return not _usable(model_cache_dir(name), False) and shipped_model_dir(name) is None


def shipped_model_dir(name: str) -> Path | None:
    """The int8 model that comes with takes for ``name`` (the default model only), or None."""
    from embeddings import DEFAULT_MODEL

    if name not in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        return None
    folder = SHIPPED_MODELS / _slug(DEFAULT_MODEL)
    return folder if _usable(folder, False) else None


def _usable(model_dir: Path, pinned: bool) -> bool:
    """Whether a model folder can be used as is.

    The user cache's copy is rebuilt when damaged; an index's own copy is
    used whatever its recipe, and OnnxEmbedder refuses it when damaged
    (`takes repair` restores it), since its takes were embedded by it.
    """
    manifest = _read_manifest(model_dir)
    if manifest is None or not (pinned or manifest.get("recipe") == RECIPE):
        return False
    return pinned or not verify_model_files(model_dir)


def _copy_model(source: Path, staging: Path) -> None:
    shutil.copytree(source, staging, dirs_exist_ok=True)
    if _read_manifest(staging) is None or verify_model_files(staging):
        raise EmbeddingError(f"the cached ONNX model in {source} changed while it was copied; run the command again")
    if "files" not in (_read_manifest(staging) or {}):
        _record_checksums(staging)


def _build(name: str, staging: Path, config: str | None = None, *, shipped: bool = False) -> None:
    import sentence_transformers

    config = config or pick_quantization_config()
    logger.info("building the int8 ONNX model for %s in %s (%s); this happens once", name, staging.parent, config)
    file_name = _export_quantized(name, staging, config)
    manifest = {
        "model": name,
        "file_name": file_name,
        "quantization": config,
        "recipe": RECIPE,
        "built_on": platform.machine(),
        "sentence_transformers": sentence_transformers.__version__,
        "onnxruntime": _require_onnx_runtime().__version__,
    }
    if shipped:
        manifest["shipped"] = True
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    # The shipped export must stay byte-for-byte reproducible as committed;
    # its copies record their checksums when they are made (_copy_model).
    if not shipped:
        _record_checksums(staging)


def restore_model_copy(name: str, cache_dir: str | os.PathLike) -> bool:
    """Replace an index's damaged model copy with the user cache's (built if need be).

    Returns True when the new copy has exactly the files the old one
    recorded (the index's vectors stay valid), False when it differs or the
    old record is lost (the caller must re-embed every take).
    """
    target = model_cache_dir(name, cache_dir)
    try:
        recorded = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        recorded = None
    source = ensure_quantized_model(name)
    try:
        with _exclusive(target.parent / f".{target.name}.lock"):
            _assemble(target, lambda staging: _copy_model(source, staging))
    except OSError as error:
        raise _CacheUnwritable(f"cannot write the ONNX model copy in {target.parent}: {_os_reason(error)}") from error
    return recorded is not None and recorded == _file_checksums(target)


def _assemble(target: Path, fill) -> None:
    """Fill a staging folder beside ``target`` with ``fill(staging)``, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        fill(staging)
        _fsync_tree(staging)
        if target.exists():
            # A folder without a valid manifest is damaged (a complete one is
            # only ever renamed into place): set it aside before replacing it.
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if _read_manifest(target) is None:
                raise
            shutil.rmtree(staging, ignore_errors=True)  # lost a lock-free race: the winner's copy is complete
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class OnnxEmbedder:
    """An :class:`~embeddings.base.Embedder` running an int8 ONNX export of a sentence-transformers model."""

    backend = "onnx"

    def __init__(
        self, name: str, cache_dir: str | os.PathLike | None = None, threads: int | None = None, *, signed_weights: bool = True
    ):
        """Load ``name``'s int8 model, from the index folder ``cache_dir`` when given.

        ``signed_weights=False`` runs the weight products as the file stores
        them even where signed ones are exact on this CPU: the same vectors,
        for comparing speed (bench.indexing_int8).
        """
        self.name = name
        onnxruntime = _require_onnx_runtime(for_build=False)
        self.model_dir = ensure_quantized_model(name, cache_dir)
        if damaged := verify_model_files(self.model_dir):
            path, problem = damaged[0]
            raise ModelCopyDamaged(
                f"the ONNX model copy {path} {problem}: `takes repair --index-dir {cache_dir}` restores it"
                if cache_dir is not None
                else f"the ONNX model {path} {problem}"
            )
        manifest = _read_manifest(self.model_dir) or {}
        self.quantization = manifest.get("quantization", "")
        suited = pick_quantization_config()
        # The shipped model is built for every CPU on purpose: nothing to warn about.
        if self.quantization != suited and not manifest.get("shipped"):
            logger.warning(
                "the cached ONNX model in %s was quantized for %s, not this CPU (%s); it is reused so that "
                "queries match the index, but may be slower or less accurate here",
                self.model_dir,
                self.quantization,
                suited,
            )
        session_options = onnxruntime.SessionOptions()
        # 0 (TAKES_THREADS=0) is ONNX Runtime's own default.
        session_options.intra_op_num_threads = DEFAULT_THREADS if threads is None else threads
        session_options.inter_op_num_threads = 1
        # How many texts went through the model: lets tests and `takes add`
        # prove that cached or duplicate takes were not embedded again.
        self.texts_encoded = 0
        # How many texts went through the model for their token vectors alone
        # (a search scoring takes whose token vectors are not stored).
        self.token_texts_encoded = 0
        self._model = None
        self._runtime = _LeanRuntime.open(self.model_dir, manifest, session_options, onnxruntime, signed_weights=signed_weights)
        # Whether the weight products run signed (the same vectors, faster on this CPU); the
        # sentence-transformers path for other model shapes loads the file as it is.
        self.signed_weights = self._runtime is not None and self._runtime.signed_weights
        if self._runtime is not None:
            self.dim = self._runtime.dim
            return
        with _quiet_export():
            self._model = _load_sentence_transformer(
                str(self.model_dir),
                backend="onnx",
                model_kwargs={
                    "file_name": manifest.get("file_name"),
                    "provider": "CPUExecutionProvider",
                    "session_options": session_options,
                },
            )
        self.dim = int(self._model.get_embedding_dimension())

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's unit-length token vectors, (tokens, dim): late interaction's input (indexer/ranking.py)."""
        texts = list(texts)
        self.token_texts_encoded += len(texts)
        if self._runtime is not None:
            return self._runtime.token_vectors(texts)
        tokens = self._model.encode(texts, batch_size=1, output_value="token_embeddings", convert_to_numpy=False)
        return [_unit_rows(np.asarray(item, dtype=np.float32)) for item in tokens]

    def encode_with_tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's unit vector (dim,) and unit token vectors (tokens, dim), from one model pass."""
        if self._runtime is not None:
            self.texts_encoded += 1
            return self._runtime.encode_with_tokens(text)
        return self.encode([text])[0], self.token_vectors([text])[0]

    def encode_with_token_vectors(self, texts: Sequence[str], *, progress: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """``encode(texts)`` and each text's unit token vectors, from the same model runs (one text per run)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
        if self._runtime is None:
            return self.encode(texts, progress=progress), self.token_vectors(texts)
        tokens: list = [None] * len(texts)
        vectors = self._runtime.encode(texts, progress=progress and sys.stderr.isatty(), tokens=tokens)
        self.texts_encoded += len(texts)
        return vectors, tokens

    def encode(self, texts: Sequence[str], *, progress: bool = False, batch_size: int = 64) -> np.ndarray:
        """Encode texts one per model run; ``batch_size`` is accepted for the protocol only.

        Dynamic int8 quantization picks each activation scale from the whole
        batch tensor, padding included, so a batched text's vector depends on
        its batch-mates (cosine to its lone vector fell to 0.977 on the seed
        corpus). One text per run makes a vector a function of its text alone,
        like the torch backend's, and measured no slower on CPU.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not a single string: wrap it in a list")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._runtime is not None:
            vectors = self._runtime.encode(texts, progress=progress and sys.stderr.isatty())
            self.texts_encoded += len(texts)
            return vectors
        # Normalizing here makes inner product = cosine.
        vectors = self._model.encode(
            texts,
            batch_size=1,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress and sys.stderr.isatty(),
        )
        self.texts_encoded += len(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32)
