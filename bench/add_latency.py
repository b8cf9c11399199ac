"""Time from `takes add` (20 new takes) to a running `takes serve` answering with them, by index size.

    .venv/bin/python -m bench.add_latency                       # 1k, 10k, 100k, torch then onnx; writes docs/PERFORMANCE.md
    .venv/bin/python -m bench.add_latency --sizes 1000 --backend onnx --no-docs

For each backend (torch, onnx) and size it builds an index of synthetic takes
recorded as that backend's index (so `takes add` and `takes serve` use it
without --backend), starts `takes serve` on it, runs one untimed `takes add`
of another thread as a warm-up, then:

* end to end: starts `takes add` on a new 20-take thread (a real CLI process,
  real model) and polls the server until it serves the new takes;
* where that time goes: the same steps in a fresh process with a timer on each
  (start-up and imports, parse, lock, model load, embed, commit), and the
  server's side: `load_snapshot(previous=...)`, what a refresh runs (a copy of
  the served index plus the new segment), against a full load for comparison;
* the HTTP path: POST /takes of 20 new takes to the running server, which
  embeds with the model it already has and refreshes before answering;
* `takes rebuild`: with the embedding cache warm, so it measures reading every
  take and its cached vector and writing a new generation, not the model.
  A cold rebuild (real model on every text) is timed at the smallest size.

SYNTHETIC DATA: the bulk takes are generated text with *random unit vectors*
written through IndexWriter by ``RandomUnitEmbedder`` below, because embedding
100k texts with the model would take an hour or more on two cores. The vectors
are stored under the real model's name so the CLI and server accept the index;
they mean nothing. Every *new* take goes through the real model.

ONNX: the int8 model is derived once (about 10 s) into `<index-dir>/onnx-models/`.
The benchmark builds it once before any timing and copies that folder into
every index it creates, so the timed adds measure the steady state, not the
one-off conversion.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, free_port, machine

DOCS = REPO / "docs" / "PERFORMANCE.md"
SECTION = "## Adding takes to a live index"
NEW_TAKES = 20
RELOAD_INTERVAL = 0.2  # the server's default (Settings.reload_interval)
TOKEN = "bench-token"

_WORDS = {
    "subject": "regulators labs auditors insurers governments universities startups courts unions standards-bodies".split(),
    "verb": "underrate overrate ignore fund license audit measure tax slow accelerate".split(),
    "object": "compute-thresholds open-weights model-evals export-controls liability-rules incident-reports red-teaming "
    "chip-tracking safety-cases watermarking".split(),
    "clause": "because nobody measures it|until something breaks|while the frontier moves monthly|and call it progress|"
    "without public data|on a two-year lag|with no technical staff|at the wrong layer of the stack".split("|"),
}


class RandomUnitEmbedder:
    """SYNTHETIC, for the bulk of the benchmark index only: random unit vectors, not embeddings."""

    def __init__(self, name: str, dim: int = 384, seed: int = 0):
        import numpy as np

        self.name, self.dim = name, dim
        self._rng = np.random.default_rng(seed)

    def encode(self, texts, *, progress: bool = False):
        import numpy as np

        vectors = self._rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_takes(count: int):
    """Varied, unique takes in threads of 10, cheap to generate."""
    from indexer.models import Take

    takes = []
    words = _WORDS
    for number in range(count):
        thread, position = divmod(number, 10)
        text = (
            f"{words['subject'][number % 10].replace('-', ' ')} {words['verb'][(number // 10) % 10]} "
            f"{words['object'][(number // 100) % 10].replace('-', ' ')} {words['clause'][(number // 1000) % 8]} "
            f"(note {number})"
        )
        author = f"Author {thread % 97}"
        takes.append(
            Take(
                id=f"synthetic-{thread}-{position + 1}",
                text=text,
                author=author,
                handle=None,
                date=f"2023-{1 + thread % 12:02d}-{1 + thread % 28:02d}",
                thread_id=f"synthetic-{thread}",
                position=position + 1,
                thread_size=10,
                url=None,
                source="synthetic",
            )
        )
    return takes


def new_thread_unroll(label: str) -> tuple[str, list[str]]:
    """A Thread Reader unroll of NEW_TAKES fresh tweets; returns (text, ids)."""
    author = f"Bench {label}"
    topics = "compute governance|model evaluations|open weights|export controls|AI liability".split("|")
    tweets = [
        f"{n}/ Take {n} of thread {label}: on {topics[n % 5]}, the useful question is who measures it, "
        f"how often, and who gets to see the numbers ({label}-{n})."
        for n in range(1, NEW_TAKES + 1)
    ]
    text = f"{author} Profile picture\nMar 3, 2024 {NEW_TAKES} tweets 3 min read Read on X\n" + "\n".join(tweets) + "\n• • •\n"
    slug = author.lower().replace(" ", "-")
    return text, [f"{slug}-2024-03-03-{n}" for n in range(1, NEW_TAKES + 1)]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _env(index_dir: Path, **extra) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TAKES_")}
    env.update(TAKES_INDEX_DIR=str(index_dir), HF_HUB_OFFLINE="1", **extra)
    return env


def _takes(*args) -> list[str]:
    return [sys.executable, "-m", "search_api.cli", *map(str, args)]


def build_index(index_dir: Path, count: int, backend: str = "torch", onnx_models: Path | None = None) -> float:
    """The synthetic index, recorded as a ``backend`` index; for onnx, with the derived model copied in."""
    from embeddings import DEFAULT_MODEL
    from indexer.index.writer import IndexWriter

    started = time.perf_counter()
    with IndexWriter(index_dir) as writer:
        writer.replace_all(synthetic_takes(count), RandomUnitEmbedder(DEFAULT_MODEL), model=DEFAULT_MODEL, backend=backend)
    seconds = time.perf_counter() - started
    if onnx_models is not None:
        shutil.copytree(onnx_models, index_dir / "onnx-models", dirs_exist_ok=True)
    return seconds


def prepare_onnx_model(workdir: Path) -> Path:
    """Derive the int8 ONNX model once (untimed); returns the `onnx-models` folder to copy into each index."""
    from embeddings import DEFAULT_MODEL, load_embedder

    cache = workdir / "onnx-cache"
    started = time.perf_counter()
    load_embedder(DEFAULT_MODEL, "onnx", cache_dir=str(cache))
    print(f"[onnx] model ready in {time.perf_counter() - started:.1f}s (untimed)", file=sys.stderr, flush=True)
    return cache / "onnx-models"


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when this benchmark dies, even by SIGKILL (Linux)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Server:
    """`takes serve` on a free port, with the admin token so POST /takes works."""

    def __init__(self, index_dir: Path, log: Path):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            _takes("serve", "--port", self.port),
            env=_env(index_dir, TAKES_ADMIN_TOKEN=TOKEN),
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A harness that kills this benchmark on a timeout must not leave a server running.
            preexec_fn=_die_with_parent,
        )
        self.client = httpx.Client(base_url=self.url, timeout=120)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"takes serve exited: {log.read_text()}")
            try:
                if self.client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("takes serve did not start in 300 s")
            time.sleep(0.1)
        self.startup = time.perf_counter() - started

    def serves(self, take_id: str) -> bool:
        return self.client.get(f"/takes/{take_id}").status_code == 200

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._log.close()


def end_to_end_add(index_dir: Path, server: Server, workdir: Path, label: str) -> dict:
    """Start `takes add`; stop the clock when the server returns the last new take."""
    text, ids = new_thread_unroll(label)
    path = workdir / f"{label}.txt"
    path.write_text(text)
    started = time.perf_counter()
    process = subprocess.Popen(_takes("add", path), env=_env(index_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    exited = served = None
    while exited is None or served is None:
        if exited is None and process.poll() is not None:
            exited = time.perf_counter() - started
            if process.returncode != 0:
                raise RuntimeError(f"takes add failed: {process.stderr.read().decode()}")
        if served is None and server.serves(ids[-1]):
            served = time.perf_counter() - started
        if time.perf_counter() - started > 300:
            raise RuntimeError("the server never served the added takes")
        # Polling adds up to this much to "served"; faster polling would steal CPU from the add.
        time.sleep(0.05)
    results = server.client.get("/search", params={"q": f"Take 7 of thread {label} on model evaluations", "k": 3}).json()["results"]
    assert any(result["id"] in ids for result in results), results
    return {"served": served, "add_exited": exited}


def breakdown_child(index_dir: str, file: str, spawned_at: float) -> None:
    """Run in a fresh process: the steps of `takes add`, each timed; prints JSON."""
    began = time.time()
    marks = {"startup": began - spawned_at}
    clock = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        marks[name] = now - clock
        clock = now

    from embeddings import load_embedder
    from indexer.sources import read_takes
    from indexer.index.writer import IndexWriter
    from indexer.api import choose_model  # the rule `takes add` follows

    mark("imports")
    takes = read_takes(Path(file))
    mark("parse")
    writer = IndexWriter(Path(index_dir))
    mark("lock_open")
    model, backend = (lambda choice: (choice.model, choice.backend))(choose_model(writer.manifest))  # as `takes add` picks them
    embedder = load_embedder(model, backend, cache_dir=index_dir)
    mark("model_load")

    class Timed:
        name, dim, seconds = embedder.name, embedder.dim, 0.0

        def encode(self, texts, *, progress=False):
            started = time.perf_counter()
            try:
                return embedder.encode(texts, progress=progress)
            finally:
                Timed.seconds += time.perf_counter() - started

    report = writer.add(takes, Timed(), model=model, backend=backend)
    total = time.perf_counter() - clock
    marks["embed"] = Timed.seconds
    marks["dedupe_cache_commit"] = total - Timed.seconds
    marks["backend"] = backend
    clock = time.perf_counter()
    writer.close()
    mark("close")
    assert report.added == NEW_TAKES, report
    print(json.dumps(marks))


def breakdown(index_dir: Path, workdir: Path, label: str) -> dict:
    text, _ = new_thread_unroll(label)
    path = workdir / f"{label}.txt"
    path.write_text(text)
    spawned = time.time()
    output = subprocess.run(
        [sys.executable, "-m", "bench.add_latency", "--child-breakdown", str(index_dir), str(path), repr(spawned)],
        env=_env(index_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    marks = json.loads(output.strip().splitlines()[-1])
    marks.pop("backend", None)
    return marks


def server_refresh(index_dir: Path, repeat: int = 3) -> dict:
    """What the server's refresh does after a commit of NEW_TAKES takes, and a full load for comparison.

    The refresh is ``load_snapshot(index_dir, previous=<served snapshot>)``: a
    copy of the served FAISS index with the new segment added (no re-reading
    of every segment, no re-training of an approximate index). The commit
    between the two loads uses random vectors; only the vectors' count matters
    here. A full ``load_snapshot(index_dir)`` is what a server start costs.
    """
    from embeddings import DEFAULT_MODEL
    from indexer.index.snapshot import load_snapshot
    from indexer.index.writer import IndexWriter

    refreshes, fulls = [], []
    index_type = "?"
    for attempt in range(repeat):
        started = time.perf_counter()
        served = load_snapshot(index_dir)
        fulls.append(time.perf_counter() - started)
        index_type = served.manifest.index_type
        text, _ = new_thread_unroll(f"refresh{attempt}-{served.manifest.count}")
        path = index_dir.parent / f"refresh-{attempt}.txt"
        path.write_text(text)
        from indexer.sources import read_takes

        with IndexWriter(index_dir) as writer:
            report = writer.add(read_takes(path), RandomUnitEmbedder(DEFAULT_MODEL, seed=attempt + 1), model=DEFAULT_MODEL, backend=writer.manifest.backend)
        assert report.added == NEW_TAKES, report
        started = time.perf_counter()
        refreshed = load_snapshot(index_dir, previous=served)
        refreshes.append(time.perf_counter() - started)
        assert refreshed.faiss_index.ntotal == served.faiss_index.ntotal + NEW_TAKES
    return {
        "total": statistics.median(refreshes),
        "full": statistics.median(fulls),
        "index_type": index_type,
    }


def post_takes(server: Server, label: str) -> float:
    """POST /takes of NEW_TAKES records; the response comes after the searcher has refreshed."""
    records = [
        {"id": f"post-{label}-{n}", "text": f"Posted take {n} ({label}): regulators should publish their AI eval results quarterly, item {n}."}
        for n in range(1, NEW_TAKES + 1)
    ]
    started = time.perf_counter()
    response = server.client.post("/takes", json=records, headers={"Authorization": f"Bearer {TOKEN}"})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    assert response.json()["added"] == NEW_TAKES and server.serves(records[-1]["id"])
    return elapsed


def timed_command(index_dir: Path, *args) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(_takes(*args), env=_env(index_dir), cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"takes {' '.join(map(str, args))} failed: {result.stderr}")
    return elapsed, result.stdout.strip()


def cold_rebuild(index_dir: Path, workdir: Path) -> tuple[float, int]:
    """`takes rebuild` with an empty embedding cache: every text goes through the real model."""
    cold = workdir / "cold"
    shutil.copytree(index_dir, cold, ignore=shutil.ignore_patterns("embedding-cache.sqlite*", ".lock"))
    seconds, output = timed_command(cold, "rebuild")
    embedded = int(output.split(": ", 1)[1].split(" texts embedded")[0])
    shutil.rmtree(cold)
    return seconds, embedded


def run(sizes: list[int], repeat: int, workdir: Path, backend: str = "torch", onnx_models: Path | None = None) -> list[dict]:
    rows = []
    for size in sizes:
        index_dir = workdir / f"index-{backend}-{size}"
        print(f"[{backend} {size}] building synthetic index ...", file=sys.stderr, flush=True)
        build_seconds = build_index(index_dir, size, backend, onnx_models if backend == "onnx" else None)
        server = Server(index_dir, workdir / f"serve-{backend}-{size}.log")
        try:
            print(f"[{backend} {size}] server up in {server.startup:.1f}s; warm-up add, then timing takes add ...", file=sys.stderr, flush=True)
            # Untimed: first use of the model files and the takes code after the index was written.
            end_to_end_add(index_dir, server, workdir, f"warm{backend}{size}")
            runs = [end_to_end_add(index_dir, server, workdir, f"e2e{size}r{attempt}") for attempt in range(repeat)]
            parts = [breakdown(index_dir, workdir, f"parts{size}r{attempt}") for attempt in range(repeat)]
            refresh = server_refresh(index_dir)
            posts = [post_takes(server, f"{size}r{attempt}") for attempt in range(repeat)]
            print(f"[{backend} {size}] timing takes rebuild ...", file=sys.stderr, flush=True)
            rebuild_seconds, _ = timed_command(index_dir, "rebuild")
            cold = cold_rebuild(index_dir, workdir) if size == min(sizes) else None
        finally:
            server.close()
        row = {
            "backend": backend,
            "size": size,
            "build_seconds": build_seconds,
            "server_startup": server.startup,
            "served": statistics.median(r["served"] for r in runs),
            "served_all": [r["served"] for r in runs],
            "add_exited": statistics.median(r["add_exited"] for r in runs),
            "parts": {name: statistics.median(p[name] for p in parts) for name in parts[0]},
            "refresh": refresh,
            "post": statistics.median(posts),
            "post_all": posts,
            "rebuild": rebuild_seconds,
            "cold_rebuild": cold,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        shutil.rmtree(index_dir)
    return rows


PART_NAMES = [
    ("startup", "interpreter start"),
    ("imports", "imports"),
    ("parse", "parse"),
    ("lock_open", "lock + open"),
    ("model_load", "model load"),
    ("embed", "embed 20"),
    ("dedupe_cache_commit", "dedupe + commit"),
]


def table(result: dict) -> str:
    lines = [
        "| backend | takes in index | `takes add` → served | `takes add` exits | POST /takes → served | `takes rebuild` (warm cache) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['backend']} | {row['size']:,} | {row['served']:.2f} s | {row['add_exited']:.2f} s | {row['post']:.2f} s | {row['rebuild']:.2f} s |"
        )
    lines += [
        "",
        "Where the time of one `takes add` goes (fresh process, seconds), and the server's side:",
        "",
        "| backend | takes in index | " + " | ".join(label for _, label in PART_NAMES)
        + " | server refresh: `load_snapshot(previous=…)` | full `load_snapshot` (server start), for comparison |",
        "| --- | ---: |" + " ---: |" * (len(PART_NAMES) + 2),
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['backend']} | {row['size']:,} | " + " | ".join(f"{row['parts'][name]:.2f}" for name, _ in PART_NAMES)
            + f" | {row['refresh']['total']:.2f} | {row['refresh']['full']:.2f} ({row['refresh']['index_type']}) |"
        )
    return "\n".join(lines)


def _reading(rows: list[dict]) -> list[str]:
    """What one backend's rows say, against the goal."""
    largest, smallest = rows[-1], rows[0]
    backend = largest["backend"]
    parts = largest["parts"]
    process_total = sum(parts.values())
    fixed = parts["startup"] + parts["imports"] + parts["model_load"]
    growth = largest["served"] - smallest["served"]
    met = largest["served"] < 2
    return [
        f"- {backend}: 20 takes into {largest['size']:,} are served {largest['served']:.1f} s after `takes add` starts "
        f"({smallest['served']:.1f} s at {smallest['size']:,}): the goal (under 2 s) is {'met' if met else 'not met'}. "
        f"The `takes add` process takes {process_total:.1f} s at {largest['size']:,}, of which start-up, imports and "
        f"the model load are {fixed:.1f} s (model load {parts['model_load']:.2f} s), embedding the 20 texts "
        f"{parts['embed']:.2f} s and dedupe + commit {parts['dedupe_cache_commit']:.2f} s "
        f"({smallest['parts']['dedupe_cache_commit']:.2f} s at {smallest['size']:,}). The server's refresh is "
        f"{largest['refresh']['total']:.2f} s at {largest['size']:,} ({smallest['refresh']['total']:.2f} s at "
        f"{smallest['size']:,}) against {largest['refresh']['full']:.2f} s for a full load. From {smallest['size']:,} "
        f"to {largest['size']:,} the end-to-end time grows by {growth:+.1f} s; POST /takes (model already loaded) "
        f"takes {largest['post']:.2f} s at {largest['size']:,} ({smallest['post']:.2f} s at {smallest['size']:,}).",
    ]


def section(result: dict, command: str) -> str:
    rows = result["rows"]
    backends = list(dict.fromkeys(row["backend"] for row in rows))
    cold = [row for row in rows if row["cold_rebuild"]]
    m = result["machine"]
    text = [
        SECTION,
        "",
        f"Command: `{command}` (median of {result['repeat']} runs per size and backend, after one untimed warm-up "
        f"add per index). Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, CPU only. Run "
        f"{result['started']}. Load average: {result['load_before']} at the start, {result['load_after']} at the "
        "end (other jobs may share the machine, so treat single figures as ±30%).",
        "",
        "SYNTHETIC: the bulk of each index is generated text with random unit vectors written through IndexWriter "
        "(embedding 100k texts with the model would take an hour or more here), recorded as a torch or an onnx index "
        "so `takes add` and `takes serve` pick that backend without `--backend`; the 20 new takes go through the real "
        "`takes add` CLI and the real model. For onnx the int8 model is derived once before any timing and its "
        "`onnx-models/` folder copied into each index, so the timed adds are the steady state, not the one-off "
        "conversion (about 10 s). \"Served\" means the running `takes serve` returns the last new take "
        "(`GET /takes/{id}` answers from the generation being served); the server polls for new generations every "
        f"{RELOAD_INTERVAL:g} s (`TAKES_RELOAD_INTERVAL`), which is part of that time.",
        "",
        table(result),
        "",
        "What the figures say (goal: 20 takes into a 100k index served in under 2 s end to end, the cost growing "
        "with the new takes, not the index):",
        "",
    ]
    for backend in backends:
        text += _reading([row for row in rows if row["backend"] == backend])
    late = [row for row in rows if row["add_exited"] > row["served"]]
    if late:
        text.append(
            "- Where `takes add` exits after the take is already served ("
            + ", ".join(f"{row['backend']} at {row['size']:,}" for row in late)
            + "), the process's teardown after its commit (with torch: unloading it) counts in \"exits\" but not in \"served\"."
        )
    text.append(
        "- `takes rebuild` with the same model embeds nothing (every vector comes from the embedding cache), so it "
        "measures reading every take and cached vector and writing a new generation: "
        + "; ".join(
            f"{row['backend']} {row['rebuild']:.1f} s at {row['size']:,}" for row in rows if row["size"] in (rows[0]["size"], rows[-1]["size"])
        )
        + "."
    )
    for row in cold:
        seconds, embedded = row["cold_rebuild"]
        text.append(
            f"- A cold rebuild ({row['backend']}, no embedding cache, every text through the model) of {row['size']:,} "
            f"takes took {seconds:.1f} s for {embedded:,} texts, about {embedded / seconds:.0f} texts/s including the "
            f"model load; at that rate re-embedding 100k takes would take about {100_000 / (embedded / seconds) / 60:.0f} min."
        )
    return "\n".join(text) + "\n"


def write_docs(text: str) -> None:
    """Replace this benchmark's section of docs/PERFORMANCE.md, leaving the others alone."""
    DOCS.parent.mkdir(exist_ok=True)
    existing = DOCS.read_text() if DOCS.exists() else "# Performance\n"
    lines = existing.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        updated = existing.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        updated = "".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    DOCS.write_text(updated)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated index sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (the median is reported)")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    parser.add_argument("--backend", default="torch,onnx", help="torch, onnx, or both one after the other (default torch,onnx)")
    parser.add_argument("--child-breakdown", nargs=3, metavar=("INDEX", "FILE", "SPAWNED_AT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_breakdown:
        index_dir, file, spawned = args.child_breakdown
        breakdown_child(index_dir, file, float(spawned))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = [int(size) for size in args.sizes.split(",")]
    backends = [name.strip() for name in args.backend.split(",") if name.strip()]
    if not set(backends) <= {"torch", "onnx"}:
        parser.error("--backend: torch, onnx or torch,onnx")
    command = ".venv/bin/python -m bench.add_latency" + ("" if args.sizes == "1000,10000,100000" else f" --sizes {args.sizes}")
    if args.repeat != 3:
        command += f" --repeat {args.repeat}"
    if args.backend != "torch,onnx":
        command += f" --backend {args.backend}"
    load_before = load_average()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="takes-add-latency-") as workdir:
        onnx_models = prepare_onnx_model(Path(workdir)) if "onnx" in backends else None
        for backend in backends:
            rows += run(sizes, args.repeat, Path(workdir), backend, onnx_models)
    result = {"rows": rows, "machine": machine(), "repeat": args.repeat, "started": started}
    result["load_before"], result["load_after"] = load_before, load_average()
    text = section(result, command)
    print(text)
    if not args.no_docs:
        write_docs(text)
        print(f"wrote {DOCS.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
