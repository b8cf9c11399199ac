"""Time from `takes add` (20 new takes) to a running `takes serve` answering with them, by index size.

    .venv/bin/python -m bench.add_latency                       # 1k, 10k, 100k; writes docs/PERFORMANCE.md
    .venv/bin/python -m bench.add_latency --sizes 1000 --no-docs

For each size it builds an index of synthetic takes, starts `takes serve` on
it, then:

* end to end: starts `takes add` on a new 20-take thread (a real CLI process,
  real model) and polls the server until it serves the new takes;
* where that time goes: the same steps in a fresh process with a timer on each
  (start-up and imports, parse, lock, model load, embed, commit), and the
  server's side (`load_snapshot`, which a refresh runs, plus the poll interval);
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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "PERFORMANCE.md"
SECTION = "## Adding takes to a live index"
NEW_TAKES = 20
RELOAD_INTERVAL = 1.0  # the server's default (Settings.reload_interval)
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


def machine() -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        "unknown",
    )
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kib / 1024**2, 1)}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _env(index_dir: Path, **extra) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TAKES_")}
    env.update(TAKES_INDEX_DIR=str(index_dir), HF_HUB_OFFLINE="1", **extra)
    return env


def _takes(*args) -> list[str]:
    return [sys.executable, "-m", "search_api.cli", *map(str, args)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def build_index(index_dir: Path, count: int) -> float:
    from embeddings import DEFAULT_MODEL
    from indexer.store import IndexWriter

    started = time.perf_counter()
    with IndexWriter(index_dir) as writer:
        writer.replace_all(synthetic_takes(count), RandomUnitEmbedder(DEFAULT_MODEL), model=DEFAULT_MODEL)
    return time.perf_counter() - started


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

        self.port = _free_port()
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
    from indexer.store import IndexWriter
    import search_api.cli  # noqa: F401 - the CLI module, as `takes add` imports it

    mark("imports")
    takes = read_takes(Path(file))
    mark("parse")
    writer = IndexWriter(Path(index_dir))
    mark("lock_open")
    model = writer.manifest.model
    embedder = load_embedder(model, "torch", cache_dir=index_dir)
    mark("model_load")

    class Timed:
        name, dim, seconds = embedder.name, embedder.dim, 0.0

        def encode(self, texts, *, progress=False):
            started = time.perf_counter()
            try:
                return embedder.encode(texts, progress=progress)
            finally:
                Timed.seconds += time.perf_counter() - started

    report = writer.add(takes, Timed(), model=model)
    total = time.perf_counter() - clock
    marks["embed"] = Timed.seconds
    marks["dedupe_cache_commit"] = total - Timed.seconds
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
    return json.loads(output.strip().splitlines()[-1])


def server_refresh(index_dir: Path, repeat: int = 3) -> dict:
    """What the server's refresh does after a commit: load the whole current generation.

    Also times its two halves separately: reading the segments, and building
    the FAISS index the manifest names (an approximate one above
    indexer.ann's threshold, trained again at every load).
    """
    import numpy as np

    from indexer.search import load_snapshot
    from indexer.store import iter_live_rows, open_index_database, read_segment

    totals, reads, builds = [], [], []
    index_type = "?"
    for _ in range(repeat):
        started = time.perf_counter()
        snapshot = load_snapshot(index_dir)
        totals.append(time.perf_counter() - started)
        index_type = snapshot.manifest.index_type

        started = time.perf_counter()
        connection, manifest = open_index_database(index_dir)
        live = np.fromiter(iter_live_rows(connection, manifest.generation), dtype=np.int64)
        connection.close()
        parts = [read_segment(index_dir, segment) for segment in manifest.segments]
        keep = [np.isin(ids, live) for ids, _ in parts]
        ids = np.concatenate([ids[mask] for (ids, _), mask in zip(parts, keep)])
        vectors = np.concatenate([vectors[mask] for (_, vectors), mask in zip(parts, keep)])
        reads.append(time.perf_counter() - started)
        try:
            from indexer import ann
        except ImportError:  # an older tree: load_snapshot builds a flat index itself
            continue
        started = time.perf_counter()
        ann.build_index(manifest.index_type, manifest.dim, vectors, ids)
        builds.append(time.perf_counter() - started)
    return {
        "total": statistics.median(totals),
        "read": statistics.median(reads),
        "build": statistics.median(builds) if builds else float("nan"),
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


def run(sizes: list[int], repeat: int, workdir: Path) -> dict:
    rows = []
    for size in sizes:
        index_dir = workdir / f"index-{size}"
        print(f"[{size}] building synthetic index ...", file=sys.stderr, flush=True)
        build_seconds = build_index(index_dir, size)
        server = Server(index_dir, workdir / f"serve-{size}.log")
        try:
            print(f"[{size}] server up in {server.startup:.1f}s; timing takes add ...", file=sys.stderr, flush=True)
            runs = [end_to_end_add(index_dir, server, workdir, f"e2e{size}r{attempt}") for attempt in range(repeat)]
            parts = [breakdown(index_dir, workdir, f"parts{size}r{attempt}") for attempt in range(repeat)]
            refresh = server_refresh(index_dir)
            posts = [post_takes(server, f"{size}r{attempt}") for attempt in range(repeat)]
            print(f"[{size}] timing takes rebuild ...", file=sys.stderr, flush=True)
            rebuild_seconds, _ = timed_command(index_dir, "rebuild")
            cold = cold_rebuild(index_dir, workdir) if size == min(sizes) else None
        finally:
            server.close()
        row = {
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
    return {"rows": rows, "machine": machine(), "repeat": repeat}


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
        "| takes in index | `takes add` → served | `takes add` exits | POST /takes → served | `takes rebuild` (warm cache) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['size']:,} | {row['served']:.2f} s | {row['add_exited']:.2f} s | {row['post']:.2f} s | {row['rebuild']:.2f} s |"
        )
    lines += [
        "",
        "Where the time of one `takes add` goes (fresh process, seconds), and the server's side:",
        "",
        "| takes in index | " + " | ".join(label for _, label in PART_NAMES)
        + " | server refresh: `load_snapshot` | of which reading segments | of which building the FAISS index |",
        "| ---: |" + " ---: |" * (len(PART_NAMES) + 3),
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['size']:,} | " + " | ".join(f"{row['parts'][name]:.2f}" for name, _ in PART_NAMES)
            + f" | {row['refresh']['total']:.2f} | {row['refresh']['read']:.2f} | "
            f"{row['refresh']['build']:.2f} ({row['refresh']['index_type']}) |"
        )
    return "\n".join(lines)


def section(result: dict, command: str) -> str:
    rows = result["rows"]
    largest, smallest = rows[-1], rows[0]
    parts = largest["parts"]
    process_total = sum(parts.values())
    fixed = parts["startup"] + parts["imports"] + parts["model_load"]
    cold = next((row for row in rows if row["cold_rebuild"]), None)
    m = result["machine"]
    text = [
        SECTION,
        "",
        f"Command: `{command}` (median of {result['repeat']} runs per size). Machine: {m['nproc']} CPUs "
        f"({m['cpu']}), {m['ram_gib']} GiB RAM, torch on CPU. Load average during the run: "
        f"{result['load_before']} at the start, {result['load_after']} at the end (other jobs shared the machine, "
        "so treat single figures as ±30%).",
        "",
        "SYNTHETIC: the bulk of each index is generated text with random unit vectors written through IndexWriter "
        "(embedding 100k texts with the model would take an hour or more here); the 20 new takes go through the real "
        "`takes add` CLI and the real model. \"Served\" means the running `takes serve` returns the last new take "
        "(`GET /takes/{id}` answers from the generation being served).",
        "",
        table(result),
        "",
        "What the figures say:",
        "",
        f"- Goal: 20 takes into 100k, served in under 2 s. Through the CLI this is "
        f"{'met' if largest['served'] < 2 else 'not met'}: "
        f"{largest['served']:.1f} s at {largest['size']:,} against {smallest['served']:.1f} s at {smallest['size']:,}. "
        f"That time is the `takes add` process up to its commit, then up to {RELOAD_INTERVAL:.0f} s until the server's "
        f"poll (`TAKES_RELOAD_INTERVAL`) notices the new generation, then the server's refresh.",
        f"- The `takes add` process ({process_total:.1f} s at {largest['size']:,}) is mostly fixed cost that does not "
        f"depend on the index: start-up, imports and loading the model take {fixed:.1f} s (model load alone "
        f"{parts['model_load']:.1f} s); embedding the 20 texts {parts['embed']:.2f} s. Its only part that grows with "
        f"the index is the dedupe, cache lookup and commit ({smallest['parts']['dedupe_cache_commit']:.2f} s at "
        f"{smallest['size']:,}, {parts['dedupe_cache_commit']:.2f} s at {largest['size']:,}; `add` reads every live id "
        "and text key to drop duplicates).",
        f"- The server's refresh grows with the index: `load_snapshot` re-reads every segment and builds the FAISS "
        f"index afresh, {smallest['refresh']['total']:.2f} s at {smallest['size']:,} and "
        f"{largest['refresh']['total']:.2f} s at {largest['size']:,} ({largest['refresh']['read']:.2f} s reading, "
        f"{largest['refresh']['build']:.2f} s building {largest['refresh']['index_type']}). Above the approximate-index "
        "threshold this is the largest cost after the model load, and it is paid at every generation, whatever its size.",
        f"- POST /takes to the running server {'meets' if largest['post'] < 2 else 'misses'} the goal: "
        f"{largest['post']:.2f} s at {largest['size']:,} ({smallest['post']:.2f} s at {smallest['size']:,}). The model "
        "is already loaded and the handler refreshes before it answers, so it costs embedding the 20 texts, the commit "
        "and the snapshot reload; at the largest size the reload is most of it.",
        f"- `takes rebuild` with the same model embeds nothing (every vector comes from the embedding cache), so it "
        f"measures reading every take and cached vector and writing a new generation: {smallest['rebuild']:.1f} s at "
        f"{smallest['size']:,}, {largest['rebuild']:.1f} s at {largest['size']:,}.",
    ]
    if cold:
        seconds, embedded = cold["cold_rebuild"]
        text.append(
            f"- A cold rebuild (no cache, every text through the real model) of {cold['size']:,} takes took "
            f"{seconds:.1f} s for {embedded:,} texts, about {embedded / seconds:.0f} texts/s including the model load; "
            f"at that rate re-embedding 100k takes would take about {100_000 / (embedded / seconds) / 60:.0f} min."
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
    parser.add_argument("--child-breakdown", nargs=3, metavar=("INDEX", "FILE", "SPAWNED_AT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_breakdown:
        index_dir, file, spawned = args.child_breakdown
        breakdown_child(index_dir, file, float(spawned))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = [int(size) for size in args.sizes.split(",")]
    command = ".venv/bin/python -m bench.add_latency" + ("" if args.sizes == "1000,10000,100000" else f" --sizes {args.sizes}")
    if args.repeat != 3:
        command += f" --repeat {args.repeat}"
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="takes-add-latency-") as workdir:
        result = run(sizes, args.repeat, Path(workdir))
    result["load_before"], result["load_after"] = load_before, load_average()
    text = section(result, command)
    print(text)
    if not args.no_docs:
        write_docs(text)
        print(f"wrote {DOCS.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
