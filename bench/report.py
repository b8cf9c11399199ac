"""Turn benchmark results into a printed table and the sections of docs/PERFORMANCE.md."""

from __future__ import annotations

import re
from pathlib import Path

# Sections this suite owns; any other "## " section in the file is kept as is.
OWN_SECTIONS = (
    "Machine",
    "Summary",
    "Indexing throughput",
    "Query latency",
    "Concurrent clients",
    "Thread settings",
    "Scale: exact and approximate search",
    "Cold start and memory",
    "Where a request spends its time",
    "txtai on the same takes",
)


def _ms(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "–"


def _http_rows(results: dict) -> list[dict]:
    return [row for row in results.get("http", []) if isinstance(row, dict) and "sequential" in row]


def table(results: dict) -> str:
    lines = ["", "what                                         p50 ms    p99 ms    other"]
    for name, row in (results.get("in_process") or {}).items():
        if isinstance(row, dict) and "p50_ms" in row:
            lines.append(f"{name:<44} {_ms(row['p50_ms']):>8} {_ms(row['p99_ms']):>9}")
    for row in _http_rows(results):
        seq, conc = row["sequential"], row["concurrent"]
        lines.append(f"HTTP sequential ({row['backend']})".ljust(44) + f" {_ms(seq['p50_ms']):>8} {_ms(seq['p99_ms']):>9}    {seq['requests_per_s']:.0f} req/s")
        lines.append(f"HTTP 8 clients ({row['backend']})".ljust(44) + f" {_ms(conc['p50_ms']):>8} {_ms(conc['p99_ms']):>9}    {conc['requests_per_s']:.0f} req/s")
        lines.append(f"cold start / RSS ({row['backend']})".ljust(44) + f" {row['cold_start_s']:.1f} s, {row['rss_mib']:.0f} MiB")
    txtai = results.get("txtai") or {}
    if "sequential" in txtai:
        lines.append("txtai HTTP sequential".ljust(44) + f" {_ms(txtai['sequential']['p50_ms']):>8} {_ms(txtai['sequential']['p99_ms']):>9}    {txtai['sequential']['requests_per_s']:.0f} req/s")
        lines.append("txtai HTTP 8 clients".ljust(44) + f" {_ms(txtai['concurrent']['p50_ms']):>8} {_ms(txtai['concurrent']['p99_ms']):>9}    {txtai['concurrent']['requests_per_s']:.0f} req/s")
    for row in results.get("indexing") or []:
        if "takes_per_s" in row:
            lines.append(f"indexing ({row['backend']})".ljust(44) + f" {row['takes_per_s']:.0f} takes/s")
        elif "error" in row:
            lines.append(f"indexing ({row['backend']})".ljust(44) + f" failed: {row['error'][:60]}")
    for row in results.get("threads") or []:
        if isinstance(row, dict) and "p50_ms" in row:
            lines.append(f"threads torch={row['torch_threads']} faiss={row['faiss_threads']}".ljust(44) + f" {_ms(row['p50_ms']):>8} {_ms(row['p99_ms']):>9}    max {row['max_ms']:.0f} ms")
    for row in results.get("scale") or []:
        if isinstance(row, dict) and "p50_ms" in row:
            lines.append(f"scale {row['takes']:,} {row['index']}".ljust(44) + f" {_ms(row['p50_ms']):>8} {_ms(row['p99_ms']):>9}    recall {row['recall']:.3f}, build {row['build_s']:.1f} s, {row['bytes_per_take']:.0f} B/take")
    return "\n".join(lines)


def sections(results: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    info = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    out["Machine"] = (
        f"{info['nproc']} cores ({info['cpu']}), {info['ram_gib']} GiB RAM; {versions}. "
        f"Run {results['started']} with `make bench` (`.venv/bin/python -m bench`; scratch files in "
        "`/tmp/takes-bench`, raw numbers in `/tmp/takes-bench/results.json`). Other processes shared the "
        "machine during some runs, so treat single figures as ±20%."
        + (f" Parts rerun later with `python -m bench --reuse --skip ...`: {'; '.join(results['reruns'])}." if results.get("reruns") else "")
    )

    summary = []
    http = {row["backend"]: row for row in _http_rows(results)}
    in_process = results.get("in_process") or {}
    bare = in_process.get("bare encode, default threads", {}).get("p50_ms")
    bare_one = next((row["p50_ms"] for name, row in in_process.items() if name.startswith("bare encode, ") and "default" not in name), None)
    for backend, row in http.items():
        seq, conc = row["sequential"], row["concurrent"]
        summary.append(
            f"- HTTP ({backend} backend): sequential p50 {seq['p50_ms']:.2f} ms (bare torch encode of one query, p50: "
            f"{_ms(bare)} ms at torch's default threads, {_ms(bare_one)} ms at one thread); 8 clients {conc['requests_per_s']:.0f} req/s = "
            f"{conc['requests_per_s'] / seq['requests_per_s']:.1f}x sequential, p99 {conc['p99_ms']:.1f} ms = "
            f"{conc['p99_ms'] / seq['p50_ms']:.1f}x sequential p50."
        )
    indexing = {row["backend"]: row for row in results.get("indexing") or [] if "takes_per_s" in row}
    if "torch" in indexing and "onnx" in indexing:
        ratio = indexing["onnx"].get("ratio_to_torch", indexing["onnx"]["takes_per_s"] / indexing["torch"]["takes_per_s"])
        summary.append(f"- Indexing: onnx {indexing['onnx']['takes_per_s']:.0f} takes/s vs torch {indexing['torch']['takes_per_s']:.0f} = {ratio:.1f}x (median of the per-round ratios).")
    for row in results.get("scale") or []:
        if isinstance(row, dict) and row.get("takes") == 1_000_000 and row.get("index") != "flat":
            summary.append(f"- 1M takes, {row['index']}: p50 {row['p50_ms']:.2f} ms/query, recall@10 {row['recall']:.3f} vs exact.")
    out["Summary"] = "\n".join(summary) or "(no results)"

    rows = ["| backend | takes | seconds | takes/s (median round) | x torch, per round |", "| --- | --- | --- | --- | --- |"]
    for row in results.get("indexing") or []:
        if "takes_per_s" in row:
            ratios = ", ".join(f"{ratio:.1f}" for ratio in row.get("ratios", []))
            rows.append(f"| {row['backend']} | {row['takes']:,} | {row['seconds']:.1f} | {row['takes_per_s']:.0f} | {ratios} |")
        else:
            rows.append(f"| {row['backend']} | – | – | failed: {row.get('error', '')} | |")
    out["Indexing throughput"] = (
        "`embedder.encode` over the seed takes repeated to 5,000 texts (what `takes index` spends its time on), "
        "after a warm-up batch, torch at its default threads. The backends take turns over three rounds of a third "
        "each, since this shared machine's speed drifts over minutes; the ratio is taken within each round.\n\n" + "\n".join(rows)
    )

    rows = ["| what | p50 ms | p99 ms | req/s |", "| --- | --- | --- | --- |"]
    for name, row in in_process.items():
        if isinstance(row, dict) and "p50_ms" in row:
            rows.append(f"| in-process: {name} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | |")
    for backend, row in http.items():
        seq = row["sequential"]
        rows.append(f"| HTTP GET /search k=10, {backend} backend, sequential | {_ms(seq['p50_ms'])} | {_ms(seq['p99_ms'])} | {seq['requests_per_s']:.0f} |")
    out["Query latency"] = (
        "300 queries each after 30 warm-up ones, k=10, default mode (hybrid) unless named. In-process times "
        "`Searcher.search` (encode + FAISS + FTS5 + SQLite rows); the bare encode is "
        "`SentenceTransformer(...).encode(query)` at torch's default threads and at the server's setting. "
        "HTTP is a keep-alive loopback client against a `takes serve` subprocess.\n\n" + "\n".join(rows)
    )

    rows = [
        "| server | req/s | p50 ms | p99 ms | vs sequential req/s | server CPU ms/request, sequential → 8 clients | client CPU ms/request |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for backend, row in http.items():
        seq, conc = row["sequential"], row["concurrent"]
        cpu = f"{seq['server_cpu_ms']:.2f} → {conc['server_cpu_ms']:.2f}" if "server_cpu_ms" in conc else "–"
        client = f"{conc['client_cpu_ms']:.2f}" if "client_cpu_ms" in conc else "–"
        rows.append(
            f"| takes ({backend}) | {conc['requests_per_s']:.0f} | {_ms(conc['p50_ms'])} | {_ms(conc['p99_ms'])} | "
            f"{conc['requests_per_s'] / seq['requests_per_s']:.1f}x | {cpu} | {client} |"
        )
    concurrency = results.get("concurrency") or {}
    if "summary" in concurrency:
        from bench.concurrency import NOTES, table as concurrency_table

        out["Concurrent clients"] = NOTES + "\n\n" + concurrency_table(concurrency["summary"])
        return _rest(results, out, http)
    out["Concurrent clients"] = (
        "8 keep-alive clients sending 400 requests back to back. Queries that arrive together are encoded in "
        "one model call by the batching worker (`indexer/query_batching.py`: greedy, at most 32, waiting up to "
        "3 ms for company only when the previous batch was shared, so an idle server adds no delay). torch "
        "runs such a batch as one forward pass. The int8 ONNX backend still runs one text per model run "
        "(`embeddings/onnx.py`): dynamic quantization takes each activation scale from the whole batch "
        "tensor, so a batched query's vector would depend on its batch-mates, and the same query could "
        "rank differently under load. Without that sharing, eight clients cannot get much past the two "
        "cores: the server's CPU per request (from /proc, over each run) barely falls under load, and two "
        "cores hold about two requests' worth of it at a time (the model is about 1.5 ms of it: the "
        "in-process rows above).\n\n" + "\n".join(rows)
    )
    return _rest(results, out, http)


def _rest(results: dict, out: dict, http: dict) -> dict[str, str]:
    rows = ["| torch threads | FAISS threads | p50 ms | p99 ms | max ms |", "| --- | --- | --- | --- | --- |"]
    for row in results.get("threads") or []:
        if isinstance(row, dict) and "p50_ms" in row:
            rows.append(f"| {row['torch_threads']} | {row['faiss_threads']} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | {row['max_ms']:.0f} |")
    out["Thread settings"] = (
        "Single-query `Searcher.search` (hybrid, k=10) over the seed index, 300 queries per setting, each "
        "setting in a fresh process (torch backend). `Searcher` applies `TAKES_THREADS` (default 1) to torch "
        "and FAISS in every thread that searches, and the server's batching worker does the same "
        "(`indexer/openmp.py`): OpenMP's thread count belongs to the thread that sets it. Before that, the "
        "server set it in one thread only and its request threads ran FAISS with one OpenMP thread per core; "
        "the torch backend's sequential HTTP p50 was 23.99 ms in the 04:25 UTC run of `make bench` against "
        "13.90–17.83 ms since. With two cores, concurrency comes from several requests at once, not from "
        "intra-op threads.\n\n" + "\n".join(rows)
    )

    rows = ["| takes | index | build s | bytes/take | p50 ms | p99 ms | recall@10 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in results.get("scale") or []:
        if isinstance(row, dict) and "p50_ms" in row:
            rows.append(f"| {row['takes']:,} | {row['index']} | {row['build_s']:.1f} | {row['bytes_per_take']:.0f} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | {row['recall']:.3f} |")
    out["Scale: exact and approximate search"] = SCALE_NOTES + "\n\n" + "\n".join(rows)

    rows = ["| server | cold start to first /health 200 | RSS |", "| --- | --- | --- |"]
    for backend, row in http.items():
        rows.append(f"| takes ({backend}), seed index | {row['cold_start_s']:.1f} s | {row['rss_mib']:.0f} MiB |")
    txtai = results.get("txtai") or {}
    if "cold_start_s" in txtai:
        rows.append(f"| txtai API, same takes | {txtai['cold_start_s']:.1f} s | {txtai['rss_mib']:.0f} MiB |")
    out["Cold start and memory"] = "\n".join(rows)

    profile = results.get("profile") or {}
    if "share" in profile:
        rows = ["| where | share of profiled time |", "| --- | --- |"]
        rows += [f"| {name} | {share * 100:.0f}% |" for name, share in profile["share"].items()]
        out["Where a request spends its time"] = (
            f"cProfile over {profile['requests']} searches on the {profile.get('backend', 'torch')} seed index doing what the GET /search handler does "
            "(`SearchParams` validation, then `respond`: encode, FAISS, FTS5, SQLite rows, and the JSON body the route "
            "writes itself), on one thread at "
            f"TAKES_THREADS=1; {profile['per_request_ms']:.1f} ms a request under the profiler. Self-time "
            "grouped by library. The model and index load once in the app's lifespan and SQLite connections "
            "once per thread, so neither appears. cProfile inflates pure-Python code, so the JSON share is "
            "an upper bound.\n\n" + "\n".join(rows)
        )
    else:
        out["Where a request spends its time"] = f"(not measured: {profile.get('error', 'skipped')})"
    concurrency = results.get("concurrency") or {}
    if "summary" in concurrency:
        from bench.concurrency import BREAKDOWN_NOTES, breakdown

        split = breakdown(concurrency["summary"])
        if split:
            out["Where a request spends its time"] = BREAKDOWN_NOTES + "\n\n" + split + "\n\n" + out["Where a request spends its time"]

    if "sequential" in txtai:
        out["txtai on the same takes"] = (
            "txtai's API (`uvicorn txtai.api:app`, `path:` an index built by `Embeddings(path=<the same "
            "all-MiniLM-L6-v2 folder>, content=True)`), the same queries and clients.\n\n"
            "| server | sequential p50 ms | sequential p99 ms | 8-client req/s | 8-client p99 ms |\n| --- | --- | --- | --- | --- |\n"
            + "\n".join(
                f"| takes ({backend}) | {_ms(row['sequential']['p50_ms'])} | {_ms(row['sequential']['p99_ms'])} | {row['concurrent']['requests_per_s']:.0f} | {_ms(row['concurrent']['p99_ms'])} |"
                for backend, row in http.items()
            )
            + f"\n| txtai | {_ms(txtai['sequential']['p50_ms'])} | {_ms(txtai['sequential']['p99_ms'])} | {txtai['concurrent']['requests_per_s']:.0f} | {_ms(txtai['concurrent']['p99_ms'])} |"
        )
    else:
        out["txtai on the same takes"] = f"Not measured in this run: {txtai.get('skipped') or txtai.get('error') or 'skipped'}."
    return out


SCALE_NOTES = """Synthetic 384-d unit vectors scattered around topic centres (one per 200 vectors), queries
near stored vectors; `python -m bench.scale 100000,1000000 ivf1024,hnsw32` reruns any mix (exact always).
Single-threaded FAISS in a fresh process, one query at a time after 20 untimed ones, k=10 (a run
inside the whole suite without those two measured 3.26 ms p50 at 1M: cold pages of a freshly built
index and the suite's earlier parts); recall@10 against exact search on the same data;
bytes/take is the serialized index size (vectors, ids, lists, centroids) per take. Below `TAKES_ANN_THRESHOLD` (default 50,000)
the index is exact (`flat`); from it on the writer records the approximate type in the manifest and
the loader builds it from the segment files (`indexer/ann.py`).

Why IVF and not HNSW: with `python -m bench.scale 100000 hnsw32,ivf1024` (same machine, busy)
hnsw32 (efConstruction 40, efSearch 64) built in 27–45 s against 4–7 s for ivf1024, searched in
0.16–0.18 ms against 0.3–0.6 ms, and reached recall@10 0.888 against 1.000. A 1M HNSW build
would take many minutes on two cores, and the loader builds the index at every full load (the
first, and after a rebuild); IVF (about 2·√n lists, a power of two: ivf512 at 100k, ivf2048 at 1M; nprobe 16;
k-means on 40 points a list, 10 rounds) builds in seconds to a minute and already meets the goal
(1M: p50 < 2 ms, recall@10 >= 0.95). With nprobe 16, ivf512 at 1M fell to recall 0.84, which is
why the list count grows with the index. Filters use `SearchParametersIVF(sel=IDSelectorBatch)`,
and `reconstruct` (hybrid) works through the IVF direct map. A load that trains the index saves it
(`ann-cache.faiss` in the index folder, about the size of the vectors); the next load (a server
start) reads it, adds the segments written since and drops removed takes, and a served index takes
new generations the same way; only a rebuild (new segments) means training again. IVF keeps the row
ids in its own lists with a hashtable direct map, since an id map over IVF cannot remove vectors.
`python -m bench.cold_load` measures it (section "Loading a large index")."""


def write(results: dict, path: Path) -> Path:
    """Replace this suite's sections of ``path``, keeping every other section."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else ""
    kept = []
    for block in re.split(r"(?m)^(?=## )", existing):
        if not block.startswith("## "):
            continue
        title = block[3:].splitlines()[0].strip()
        if title not in OWN_SECTIONS:
            kept.append(block.rstrip() + "\n")
    mine = sections(results)
    text = "# Performance\n\nFigures from `make bench`; every number below was produced by the command named with it.\n\n"
    text += "\n".join(f"## {title}\n\n{mine[title]}\n" for title in OWN_SECTIONS if title in mine)
    if kept:
        text += "\n" + "\n".join(kept)
    path.write_text(text)
    if isinstance(results.get("postgres"), dict) and "seed_http" in results["postgres"]:
        replace_section(path, POSTGRES_SECTION, postgres_section(results["postgres"]))
    return path


# -- the PostgreSQL store beside the embedded one (bench/postgres.py) ------------

POSTGRES_SECTION = "PostgreSQL and embedded stores through the HTTP API"


def _pair(row: dict, first: str, second: str) -> str:
    return f"{_ms(row.get(first))} / {_ms(row.get(second))}"


def postgres_section(result: dict) -> str:
    """The tables of `python -m bench.postgres` (also run by `make bench`)."""
    runs = result.get("runs") or [result]
    said = "; ".join(
        f"`{run.get('command', 'python -m bench.postgres')}` started {run.get('started', '?')}, load average "
        f"{run.get('load_average', '?')} before and {run.get('load_average_after', '?')} after" for run in runs
    )
    late = (result.get("scale") or {}).get("late_interaction", False)
    late_words = "too" if late else "with `--no-late-interaction`"
    lines = [
        f"{said} (`make bench-postgres`, and a part of `make bench`), on {result.get('machine', {}).get('nproc', '?')} cores "
        f"({result.get('machine', {}).get('cpu', '?')}). Every row is one `takes serve --workers 2` "
        "(the real CLI; `--database-url` for PostgreSQL) on its own: a sequential keep-alive client "
        "(200 hybrid searches, k=10, after 20), then 8 keep-alive clients (400); add 20 is the seconds "
        "from starting `takes add` (a new process: start-up, model, embed, commit) or from POST /takes to "
        "one server until both of two running servers (following at their default interval) return all 20, median of "
        "3 after one untimed; memory is PSS (RSS) of the server's processes and, for PostgreSQL, of the "
        "database server's, from /proc after the clients. The seed rows rank with late interaction (the "
        f"default); the 100k rows {late_words}. The 100k takes are generated (bench/take_texts.py with specific "
        "words drawn Zipf-like from 50,000) and embedded by the shipped int8 model with their stored token "
        "vectors (bench/real_embeddings.py); queries are three words of a take, encoded by the server's model.",
        "",
        "| corpus, store | sequential p50 / p99 ms | 8 clients: req/s, p99 ms (x sequential) | add 20: `takes add` / POST s | server MiB PSS (RSS) | PostgreSQL MiB PSS (RSS) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for corpus, rows in (("seed (99)", result.get("seed_http") or {}), (f"{(result.get('scale') or {}).get('takes', 0):,} generated", result.get("scale") or {})):
        for store in ("embedded", "postgres"):
            row = rows.get(store)
            if not isinstance(row, dict) or "sequential" not in row:
                continue
            sequential, concurrent, add = row["sequential"], row["concurrent_workers_2"], row.get("add") or {}
            memory, database = row.get("server_memory") or {}, row.get("postgres_memory") or {}
            lines.append(
                f"| {corpus}, {store} | {_pair(sequential, 'p50_ms', 'p99_ms')} | {concurrent['requests_per_s']:.1f}, "
                f"{_ms(concurrent['p99_ms'])} ({concurrent['ratio_to_sequential']:.2f}x) | "
                f"{_ms(add.get('cli_add_s'))} / {_ms(add.get('api_post_s'))} | {memory.get('pss_mib', '–')} ({memory.get('rss_mib', '–')}) | "
                + (f"{database.get('pss_mib')} ({database.get('rss_mib')})" if database else "–") + " |"
            )
    scale = result.get("scale") or {}
    lexical = scale.get("lexical_ms") or {}
    if lexical:
        rules = lexical.get("queries_by_rule", {})
        lines += [
            "",
            f"Lexical search alone at {scale.get('takes', 0):,} takes (library call, depth 50, 100 of the same queries), "
            "without and with the common-terms rule (indexer/storage.py `lexical_retrieval`); \"top 10 kept\" is the share "
            "of the lexical top 10 without the rule that it keeps. Queries by rule: "
            + ", ".join(f"{name} {count}" for name, count in rules.items()) + ".",
            "",
            "| store | before p50 / p90 / p99 ms | after p50 / p90 / p99 ms | top 10 kept |",
            "| --- | --- | --- | --- |",
        ]
        for store in ("embedded", "postgres"):
            row = lexical.get(store)
            if row:
                before, after = row["before"], row["after"]
                lines.append(
                    f"| {store} | {_ms(before['p50_ms'])} / {_ms(before['p90_ms'])} / {_ms(before['p99_ms'])} | "
                    f"{_ms(after['p50_ms'])} / {_ms(after['p90_ms'])} / {_ms(after['p99_ms'])} | {row['top10_kept']:.3f} |"
                )
    profile = scale.get("profile_ms") or {}
    if profile:
        parts = list(next(iter(profile.values())))
        lines += [
            "",
            f"Where one hybrid search goes at {scale.get('takes', 0):,} takes (in process, late interaction {'on' if late else 'off'}, "
            "median ms of 50 queries; the parts one after the other, the whole as the ranker runs them, with the lexical "
            "side beside the encoding; token_vectors: reading every candidate's, as for a cold cache):",
            "",
            "| part | " + " | ".join(profile) + " |",
            "| --- | " + " | ".join("---" for _ in profile) + " |",
        ]
        for part in parts:
            lines.append(f"| {part} | " + " | ".join(_ms(profile[store].get(part)) for store in profile) + " |")
    if "dense_recall_at_10" in scale:
        lines += ["", f"Dense recall@10 of PostgreSQL's HNSW against exact inner products (100 queries): {scale['dense_recall_at_10']:.3f}."]
    return "\n".join(lines)


def replace_section(path: Path, title: str, body: str) -> Path:
    """Put ``body`` under ``## title`` in ``path`` (replacing that section, or appending it), leaving the rest as is."""
    existing = path.read_text() if path.exists() else "# Performance\n"
    blocks = re.split(r"(?m)^(?=## )", existing)
    block = f"## {title}\n\n{body}\n\n"
    for index, existing_block in enumerate(blocks):
        if existing_block.startswith("## ") and existing_block[3:].splitlines()[0].strip() == title:
            blocks[index] = block
            break
    else:
        blocks.append(("\n" if not blocks[-1].endswith("\n\n") else "") + block)
    path.write_text("".join(blocks).rstrip() + "\n")
    return path
