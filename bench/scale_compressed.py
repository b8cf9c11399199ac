"""Ten million takes on one box: a compressed index with exact re-scoring, chosen by measurement.

    .venv/bin/python -m bench.scale_compressed embed      # once: real int8 vectors of generated takes
    .venv/bin/python -m bench.scale_compressed recall ["F1;F2" [NPROBES [DEPTHS]]]  # candidates on the real vectors
    .venv/bin/python -m bench.scale_compressed synthesize # synthetic vectors fitted to the real ones, as segments
    .venv/bin/python -m bench.scale_compressed build N    # the product's compressed index over N of them
    .venv/bin/python -m bench.scale_compressed scale N    # a server-like load: memory, latency, recall

Files live in /work/bench-data (outside the repo; ``TAKES_BENCH_DATA`` moves it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("TAKES_BENCH_DATA", "/work/bench-data"))
REAL_TARGET = 200_000
CHUNK = 5_000


def real_vectors_path() -> Path:
    return DATA / "real-int8-vectors.npy"


def embed(target: int = REAL_TARGET) -> None:
    """Embed ``target`` generated takes with the shipped int8 model, in resumable chunks."""
    from bench.take_texts import generate
    from embeddings import DEFAULT_MODEL, load_embedder

    chunks = DATA / "real-chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    texts = generate(target, seed=0)
    embedder = load_embedder(DEFAULT_MODEL, "onnx", cache_dir=str(DATA / "model-index"))
    for start in range(0, target, CHUNK):
        path = chunks / f"{start:08d}.npy"
        if path.exists():
            continue
        started = time.perf_counter()
        vectors = embedder.encode(texts[start : start + CHUNK])
        np.save(path.with_suffix(".tmp.npy"), vectors)
        os.replace(path.with_suffix(".tmp.npy"), path)
        print(f"embedded {start + CHUNK:,} ({CHUNK / (time.perf_counter() - started):.0f} takes/s)", file=sys.stderr, flush=True)
    gather()


def gather(save: bool = True) -> np.ndarray:
    """The embedded chunks so far, as one array (also saved as one .npy)."""
    parts = sorted((DATA / "real-chunks").glob("[0-9]*[0-9].npy"))
    vectors = np.concatenate([np.load(path) for path in parts]) if parts else np.zeros((0, 384), np.float32)
    if save:
        np.save(real_vectors_path(), vectors)
    return vectors


HELD_OUT = 1_000
K = 10
# Candidates measured on the real vectors: FAISS factory strings (one thread).
CANDIDATES = (
    "IVF1024,SQ8", "IVF4096,SQ8", "IVF1024,SQ4", "IVF4096,SQ4",
    "IVF1024,PQ48", "IVF1024,PQ96", "OPQ48,IVF1024,PQ48",
)
NPROBES = (8, 16, 32, 64)
RESCORED = (50, 100, 200)


def split_queries(vectors: np.ndarray, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(base, queries): the last HELD_OUT takes are queries and not stored, half of them perturbed.

    A perturbed query (noise of norm ~0.45, cosine ~0.9 to its take) stands in
    for a paraphrase; a held-out take is a query about a subject the corpus covers.
    """
    rng = np.random.default_rng(seed)
    base, held = vectors[:-HELD_OUT], vectors[-HELD_OUT:].copy()
    half = HELD_OUT // 2
    noise = rng.standard_normal((half, vectors.shape[1])).astype(np.float32) * (0.45 / np.sqrt(vectors.shape[1]))
    held[:half] += noise
    held /= np.linalg.norm(held, axis=1, keepdims=True)
    return np.ascontiguousarray(base), np.ascontiguousarray(held)


def exact_top(base: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Ground truth: the ids of the k largest inner products, by a chunked flat pass."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), k), np.int64)
    step = 200_000
    for start in range(0, len(base), step):
        scores = queries @ np.asarray(base[start : start + step], dtype=np.float32).T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        order = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_ids = np.take_along_axis(merged_ids, order, 1)
    return best_ids


def rescore(candidates: np.ndarray, query: np.ndarray, full: np.ndarray, k: int = K) -> np.ndarray:
    """The k candidates with the largest exact inner product (full vectors, float32 or float16)."""
    candidates = candidates[candidates >= 0]
    scores = np.asarray(full[candidates], dtype=np.float32) @ query
    return candidates[np.argsort(-scores)[:k]]


def recall_at(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(row, want[: len(row)])) / K for row, want in zip(found, truth)]))


def recall(candidates=CANDIDATES, nprobes=NPROBES, rescored=RESCORED) -> list[dict]:
    """Recall@10 and single-query latency of each candidate on the real vectors."""
    import faiss

    from bench.common import percentiles_ms

    vectors = gather(save=False)
    base, queries = split_queries(vectors)
    truth = exact_top(base, queries)
    half16 = base.astype(np.float16)
    rows = []
    print(f"{len(base):,} real vectors, {len(queries)} queries (half perturbed), k={K}", file=sys.stderr, flush=True)
    for factory in candidates:
        faiss.omp_set_num_threads(2)
        index = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = 10
        started = time.perf_counter()
        sample = base[np.random.default_rng(0).permutation(len(base))[: min(len(base), ivf.nlist * 40)]]
        index.train(sample)
        index.add(base)
        build_s = time.perf_counter() - started
        code_bytes = ivf.code_size + 8
        faiss.omp_set_num_threads(1)
        for nprobe in nprobes:
            ivf.nprobe = nprobe
            for depth in rescored:
                found, found16, times = [], [], []
                for query in queries:
                    began = time.perf_counter()
                    _, ids = index.search(query[None, :], depth)
                    top = rescore(ids[0], query, base)
                    times.append(time.perf_counter() - began)
                    found.append(top)
                    found16.append(rescore(ids[0], query, half16))
                p50, p99 = percentiles_ms(times)
                row = {
                    "index": factory, "nprobe": nprobe, "rescored": depth, "recall": recall_at(found, truth),
                    "recall_f16": recall_at(found16, truth), "p50_ms": p50, "p99_ms": p99,
                    "code_bytes": code_bytes, "build_s": build_s, "count": len(base),
                }
                rows.append(row)
                print(
                    f"| {factory} | {nprobe} | {depth} | {row['recall']:.3f} | {row['recall_f16']:.3f} | "
                    f"{p50:.2f} / {p99:.2f} | {code_bytes} | {build_s:.0f} |",
                    flush=True,
                )
    return rows


# -- 10M synthetic vectors matched to the real ones ------------------------------

SCALE_DIR = DATA / "scale-compressed"
SEGMENT_ROWS = 1_000_000
MIXTURE_COMPONENTS = 256
COMPONENT_RANK = 24
SCALE_QUERIES = 1_000
RECALL_SAMPLE = 200


class RealLike:
    """A Gaussian mixture fitted to real vectors: k-means components, each with its own principal axes.

    Each component keeps its weight, its mean, its top ``COMPONENT_RANK``
    principal directions with their spreads and an isotropic rest, so the
    synthetic vectors have the real ones' uneven cluster sizes and shapes
    (not one blob shape repeated around random centres).
    """

    def __init__(self, vectors: np.ndarray, components: int = MIXTURE_COMPONENTS, rank: int = COMPONENT_RANK, seed: int = 0):
        import faiss

        dim = vectors.shape[1]
        kmeans = faiss.Kmeans(dim, components, niter=20, seed=seed, spherical=True)
        kmeans.train(np.ascontiguousarray(vectors, dtype=np.float32))
        _, labels = kmeans.index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        labels = labels[:, 0]
        self.weights, self.means, self.axes, self.spreads, self.rest = [], [], [], [], []
        for number in range(components):
            members = vectors[labels == number].astype(np.float64)
            if len(members) < 2:
                continue
            mean = members.mean(axis=0)
            _, singular, basis = np.linalg.svd(members - mean, full_matrices=False)
            variances = singular**2 / (len(members) - 1)
            top = min(rank, len(variances))
            self.weights.append(len(members))
            self.means.append(mean)
            self.axes.append(basis[:top])
            self.spreads.append(np.sqrt(variances[:top]))
            # What the top directions leave, spread evenly over the other dimensions.
            self.rest.append(np.sqrt(max(variances[top:].sum(), 0.0) / max(dim - top, 1)))
        self.weights = np.asarray(self.weights, np.float64) / np.sum(self.weights)
        self.dim = dim

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        chosen = rng.choice(len(self.weights), size=count, p=self.weights)
        out = np.empty((count, self.dim), np.float32)
        for number in np.unique(chosen):
            rows = np.flatnonzero(chosen == number)
            along = rng.standard_normal((len(rows), len(self.spreads[number])), dtype=np.float32) * self.spreads[number].astype(np.float32)
            noise = rng.standard_normal((len(rows), self.dim), dtype=np.float32) * np.float32(self.rest[number])
            out[rows] = self.means[number].astype(np.float32) + along @ self.axes[number].astype(np.float32) + noise
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def _scale_manifest(count: int):
    import json

    from embeddings import DEFAULT_MODEL
    from indexer.index.manifest import Manifest, Segment

    record = json.loads((SCALE_DIR / "segments.json").read_text())
    segments = tuple(Segment(**item) for item in record)
    chosen, total = [], 0
    for segment in segments:
        if total >= count:
            break
        chosen.append(segment)
        total += segment.count
    return Manifest(model=DEFAULT_MODEL, dim=384, count=total, generation=len(chosen), segments=tuple(chosen),
                    index_type=_index_type(total), backend="onnx")


def _index_type(count: int) -> str:
    """What the product picks for ``count`` takes (``TAKES_BENCH_INDEX_TYPE`` overrides it for a dry run)."""
    from indexer import ann

    return os.environ.get("TAKES_BENCH_INDEX_TYPE") or ann.index_type_for(count)


def synthesize(count: int = 10_000_000) -> None:
    """Fit ``RealLike`` to the real vectors; write ``count`` samples as product segment files (1M each), resumable."""
    import json

    import faiss

    from indexer.fsutil import checksum_file
    from indexer.index.manifest import Segment

    faiss.omp_set_num_threads(1)
    real = gather(save=False)
    model = RealLike(real)
    segments_dir = SCALE_DIR / "segments"
    segments_dir.mkdir(parents=True, exist_ok=True)
    record_path = SCALE_DIR / "segments.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else []
    # Queries: fresh samples never stored, half of them perturbed like the real held-out ones.
    query_rng = np.random.default_rng(10**6)
    queries = model.sample(SCALE_QUERIES, query_rng)
    half = SCALE_QUERIES // 2
    queries[:half] += query_rng.standard_normal((half, 384)).astype(np.float32) * (0.45 / np.sqrt(384))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.save(SCALE_DIR / "queries.npy", queries)
    for number in range(len(record), count // SEGMENT_ROWS):
        started = time.perf_counter()
        vectors = model.sample(SEGMENT_ROWS, np.random.default_rng(number))
        ids = np.arange(number * SEGMENT_ROWS + 1, (number + 1) * SEGMENT_ROWS + 1, dtype=np.int64)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(384))
        index.add_with_ids(vectors, ids)
        del vectors
        file = f"segments/seg-{number + 1:06d}.faiss"
        temporary = SCALE_DIR / (file + ".tmp")
        faiss.write_index(index, str(temporary))
        del index
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, SCALE_DIR / file)
        record.append(Segment(number + 1, file, SEGMENT_ROWS, checksum_file(SCALE_DIR / file)).__dict__)
        record_path.write_text(json.dumps(record))
        print(f"segment {number + 1}: {SEGMENT_ROWS:,} vectors in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)



def _wait_for_segment(number: int, wait: bool):
    import json

    from indexer.index.manifest import Segment

    while True:
        record_path = SCALE_DIR / "segments.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else []
        if len(record) >= number:
            return Segment(**record[number - 1])
        if not wait:
            raise SystemExit(f"segment {number} is not written yet: run `synthesize` first")
        time.sleep(20)


def build(count: int = 10_000_000, wait: bool = True) -> None:
    """Build the compressed index over the synthetic segments as the product's load does, and save it for the server.

    The product's build (``ann.build_compressed``) over the segment files,
    segment by segment as ``synthesize`` writes them; training uses
    ``ann.training_sample`` of the first segment (the samples are
    independent draws, so any million is as good as all ten). Exact top 10 of
    ``RECALL_SAMPLE`` queries is computed on the way (the chunked brute-force
    pass). Build time is reported from here: run it under the lock for a figure.
    """
    import faiss

    from indexer import ann
    from indexer.index.segments import SegmentVectors, save_trained_index, verify_segment_checksum

    index_type = _index_type(count)
    segments = count // SEGMENT_ROWS
    first = _wait_for_segment(1, wait)
    queries = np.load(SCALE_DIR / "queries.npy")[:RECALL_SAMPLE]
    started = time.perf_counter()
    cpu_started = time.process_time()
    mapped = SegmentVectors.open(SCALE_DIR, (first,), np.arange(1, SEGMENT_ROWS + 1), 384)
    sample = ann.training_sample(index_type, _Rows(mapped, np.arange(1, SEGMENT_ROWS + 1)))
    best = [np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)]

    def batches():
        for number in range(1, segments + 1):
            segment = _wait_for_segment(number, wait)
            verify_segment_checksum(SCALE_DIR, segment)
            ids = np.arange((number - 1) * SEGMENT_ROWS + 1, number * SEGMENT_ROWS + 1, dtype=np.int64)
            vectors = SegmentVectors.open(SCALE_DIR, (segment,), ids, 384).gather(ids)
            scores = queries @ vectors.T
            top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
            merged = np.concatenate([best[0], np.take_along_axis(scores, top, 1)], axis=1)
            merged_ids = np.concatenate([best[1], ids[top]], axis=1)
            order = np.argsort(-merged, axis=1)[:, :K]
            best[0], best[1] = np.take_along_axis(merged, order, 1), np.take_along_axis(merged_ids, order, 1)
            for start in range(0, SEGMENT_ROWS, 250_000):
                yield vectors[start : start + 250_000], ids[start : start + 250_000]
            print(f"added segment {number} at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    index = ann.build_compressed(index_type, 384, sample, batches())
    build_s = time.perf_counter() - started
    manifest = _scale_manifest(count)
    save_trained_index(SCALE_DIR, manifest, index)
    np.save(SCALE_DIR / f"truth-{count}.npy", best[1])
    print(
        f"built {index_type} over {count:,} in {build_s:.0f} s wall, {time.process_time() - cpu_started:.0f} s CPU "
        f"(threads {faiss.omp_get_max_threads()}, nice {os.nice(0)}, load {os.getloadavg()[0]:.1f}); "
        f"ann-cache.faiss {(SCALE_DIR / 'ann-cache.faiss').stat().st_size:,} bytes",
        flush=True,
    )


class _Rows:
    def __init__(self, mapped, ids):
        self._mapped, self._ids = mapped, ids

    def __len__(self):
        return len(self._ids)

    def __getitem__(self, rows):
        return self._mapped.gather(self._ids[rows])


def _memory() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024**2, 2)
    return fields


def query(count: int = 10_000_000, depth: int = 50, nprobe: int | None = None, cold: bool = False, rescored: int | None = None) -> None:
    """Load the index the way a server start does (saved trained index + mapped segments), then 1,000 single queries.

    ``cold``: the segment files' pages are dropped from the page cache after
    the load, so every re-scored row is read from the disk at first (the worst
    case: a server just started on a machine whose cache holds other things).

    Run in a fresh process under the lock. The SQLite half of a load (live
    row ids, manifest) is replaced by the manifest the segments make: the
    vector layer of the server process, not its database.
    """
    import faiss

    from bench.common import percentiles_ms
    from indexer import ann
    from indexer.index.snapshot import nearest, snapshot_of

    faiss.omp_set_num_threads(1)  # the server's default (TAKES_THREADS unset)
    if nprobe is not None:
        ann.COMPRESSED_NPROBE = nprobe  # read by ann.search_parameters at each query
    if rescored is not None:
        ann.RESCORED = rescored  # read by snapshot.nearest at each query
    manifest = _scale_manifest(count)
    before = _memory()
    started = time.perf_counter()
    snapshot = snapshot_of(SCALE_DIR, manifest, np.arange(1, manifest.count + 1, dtype=np.int64))
    load_s = time.perf_counter() - started
    ann.mean_direction(snapshot.faiss_index, 384)  # what the serving swap computes
    if cold:
        for segment in manifest.segments:
            descriptor = os.open(SCALE_DIR / segment.file, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)
    loaded = _memory()
    queries = np.load(SCALE_DIR / "queries.npy")
    truth = np.load(SCALE_DIR / f"truth-{count}.npy")
    times, found = [], []
    for vector in queries:
        began = time.perf_counter()
        result = nearest(snapshot, vector, depth)
        times.append(time.perf_counter() - began)
        found.append(np.asarray([row for row, _ in result[:K]]))
    after = _memory()
    p50, p99 = percentiles_ms(times)
    warm50, warm99 = percentiles_ms(times[len(times) // 2 :])
    recall_10 = recall_at(found[: len(truth)], truth)
    print(
        f"{manifest.index_type} {manifest.count:,} takes, nprobe {ann.COMPRESSED_NPROBE}, rescored {ann.RESCORED}, depth {depth}, "
        f"{'segment pages evicted first' if cold else 'page cache as found'}: "
        f"load {load_s:.1f} s; search p50 {p50:.2f} ms p99 {p99:.2f} ms (second half {warm50:.2f} / {warm99:.2f}); "
        f"recall@10 {recall_10:.3f} on {len(truth)} queries; memory GiB before {before}, loaded {loaded}, after {after}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "recall"
    if command == "embed":
        embed(int(sys.argv[2]) if len(sys.argv) > 2 else REAL_TARGET)
    elif command == "gather":
        print(gather().shape)
    elif command == "recall":
        chosen = sys.argv[2].split(";") if len(sys.argv) > 2 else CANDIDATES
        # Optional comma lists: the nprobes, then the re-scored depths.
        nprobes = tuple(map(int, sys.argv[3].split(","))) if len(sys.argv) > 3 else NPROBES
        rescored = tuple(map(int, sys.argv[4].split(","))) if len(sys.argv) > 4 else RESCORED
        recall(chosen, nprobes, rescored)
    elif command == "build":
        build(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000)
    elif command == "scale":
        # scale [COUNT [NPROBE [cold|warm [RESCORED]]]] ("-": the product's setting)
        query(
            int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000,
            nprobe=int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None,
            cold=len(sys.argv) > 4 and sys.argv[4] == "cold",
            rescored=int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "-" else None,
        )
    elif command == "synthesize":
        synthesize(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000)
    else:
        sys.exit(f"unknown command {command!r}: expected embed, gather, recall or scale")
