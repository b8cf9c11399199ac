"""The ``takes`` command line.

Options fall back to ``TAKES_*`` environment variables. Heavy imports (torch,
FAISS, FastAPI) happen inside commands, so ``takes --help`` is instant. User
errors print one line and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
import textwrap
from pathlib import Path

import click

from search_api.settings import DEFAULT_INDEX_DIR

index_dir_option = click.option(
    "--index-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TAKES_INDEX_DIR",
    default=DEFAULT_INDEX_DIR,
    show_default=True,
    help="Index directory.",
)
model_option = click.option(
    "--model",
    envvar="TAKES_MODEL",
    default=None,
    help="sentence-transformers model name or path. Default: the index's model, "
    "or all-MiniLM-L6-v2 for a new index.",
)
backend_option = click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    envvar="TAKES_BACKEND",
    default=None,
    help="Embedding backend: onnx (int8, faster) or torch (fp32). Default: the "
    "backend that built the index, or onnx for a new index.",
)

reranker_option = click.option(
    "--reranker",
    envvar="TAKES_RERANKER",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Re-score the top takes with this local cross-encoder folder; off by default. "
    "Slower per query: docs/PERFORMANCE.md.",
)


late_interaction_option = click.option(
    "--late-interaction/--no-late-interaction",
    envvar="TAKES_LATE_INTERACTION",
    default=False,
    show_default=True,
    help="Re-score the top takes by token-level similarity with the same model: "
    "better on paraphrased questions, about twice the time per query once warm (docs/QUALITY.md).",
)


def _reranker(path: Path | None):
    """The cross-encoder second stage, or None when off."""
    from search_api.app import second_stage_reranker

    return second_stage_reranker(path)


lock_timeout_option = click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    envvar="TAKES_LOCK_TIMEOUT",
    default=30.0,
    show_default=True,
    help="Seconds to wait for another writer to finish before giving up.",
)


def user_errors(command):
    """Turn the project's own errors into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from embeddings import EmbeddingError
        from indexer.errors import TakesError

        try:
            return command(*args, **kwargs)
        except (TakesError, EmbeddingError) as error:
            raise click.ClickException(str(error)) from None
        except sqlite3.DatabaseError as error:
            # A damaged database page met outside the store's own checks.
            raise click.ClickException(
                f"the index database is damaged ({error}): `takes check` lists the damage, `takes repair` recovers the readable takes"
            ) from None

    return wrapper


class OneLineErrors(click.Group):
    """Report usage errors as one line (no usage block) and exit 2."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.Abort:
            click.echo("takes: aborted", err=True)
            sys.exit(1)
        except click.ClickException as error:
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            click.echo(f"takes: error: {error.format_message()}{hint}", err=True)
            sys.exit(error.exit_code)
        # Commands return None on success; an int return is an exit status.
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="takes")
def cli() -> None:
    """Semantic search over AI-policy takes.

    \b
    Quick start:
      takes index                      # index the bundled Jack Clark threads
      takes search "what about compute governance"
      takes serve                      # HTTP API on http://127.0.0.1:8000
    """


def _embedder_factory(model: str, backend: str, index_dir: Path):
    """Load the model only when a text actually needs embedding."""

    def create():
        from embeddings import load_embedder

        if backend == "onnx":
            from embeddings.onnx import needs_build

            if needs_build(model, index_dir):
                click.echo(f"building the int8 ONNX model for {model}: once per machine, about 15 s...", err=True)
        click.echo(f"loading model {model} ({backend})...", err=True)
        return load_embedder(model, backend, cache_dir=str(index_dir))

    return create


def _writer_backend(writer, backend: str | None) -> str:
    """The backend a write uses: as asked, else the index's own, else the default."""
    from embeddings import DEFAULT_BACKEND

    return backend or (writer.manifest.backend if writer.manifest else DEFAULT_BACKEND)


def _add_through_server(server: str, token: str | None, files, input_format: str | None, include_private: bool = False) -> tuple[int, int]:
    """POST each file's takes (parsed here, so errors name the file and line) to a running server."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from indexer.errors import TakesError
    from indexer.models import TAKE_FIELDS
    from indexer.sources import read_takes

    if not token:
        raise TakesError("--server needs the server's admin token: pass --token or set TAKES_ADMIN_TOKEN")
    batches = [(Path(path).name, read_takes(path, input_format, include_private=include_private)) for path in files]
    added = skipped = 0
    for source, takes in batches:
        records = [{name: getattr(take, name) for name in TAKE_FIELDS if name != "source"} for take in takes]
        url = f"{server.rstrip('/')}/takes?{urllib.parse.urlencode({'source': source})}"
        request = urllib.request.Request(
            url,
            data=json.dumps(records).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                report = json.load(response)
        except urllib.error.HTTPError as error:
            try:
                detail = json.load(error).get("detail", error.reason)
            except ValueError:
                detail = error.reason
            raise TakesError(f"{server} refused {source} ({error.code}): {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise TakesError(f"cannot reach the takes server at {server}: {reason}") from None
        added += report["added"]
        skipped += report["skipped"]
    return added, skipped


def _server_call(server: str, method: str, path: str, token: str | None = None) -> dict:
    """One JSON request to a running `takes serve`; its refusals and absence become TakesError lines."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from indexer.errors import TakesError

    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"{server.rstrip('/')}{path}", headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        try:
            detail = json.load(error).get("detail", error.reason)
        except ValueError:
            detail = error.reason
        raise TakesError(f"{server} refused {method} {urllib.parse.unquote(path)} ({error.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TakesError(f"cannot reach the takes server at {server}: {reason}") from None


def _remove_through_server(server: str, token: str | None, ids, thread_id: str | None) -> int:
    """Remove takes with DELETE /takes/{id}, once every one of them is known to exist (GET)."""
    from urllib.parse import quote

    from indexer.errors import TakesError

    if not token:
        raise TakesError("--server needs the server's admin token: pass --token or set TAKES_ADMIN_TOKEN")
    targets = list(dict.fromkeys(ids))
    for take_id in targets:
        _server_call(server, "GET", f"/takes/{quote(take_id, safe='')}")
    if thread_id is not None:
        thread = _server_call(server, "GET", f"/threads/{quote(thread_id, safe='')}")
        targets += [take["id"] for take in thread["takes"] if take["id"] not in targets]
    removed = 0
    for take_id in targets:
        removed += _server_call(server, "DELETE", f"/takes/{quote(take_id, safe='')}", token)["removed"]
    return removed


def _print_dry_run(index_dir: Path, takes) -> None:
    """What `takes add` would add: per thread, new takes and the first words; nothing is written."""
    from indexer.store import new_takes

    fresh = new_takes(index_dir, takes)
    by_thread: dict[str, list] = {}
    for take in fresh:
        by_thread.setdefault(take.thread_id, []).append(take)
    for thread_id, members in by_thread.items():
        first = " ".join(members[0].text.split())
        who = members[0].handle or members[0].author or "unknown author"
        click.echo(f"{thread_id}  {who}  {members[0].date or ''}  {len(members)} new: {first[:70]}{'...' if len(first) > 70 else ''}")
    click.echo(
        f"would add {len(fresh)} takes in {len(by_thread)} threads, skip {len(takes) - len(fresh)} duplicates "
        f"(dry run: nothing written to {index_dir})"
    )


def _read_inputs(files: tuple[Path, ...], input_format: str | None, include_private: bool = False):
    from indexer.sources import read_takes

    takes = []
    for path in files:
        takes.extend(read_takes(path, input_format, include_private=include_private))
    return takes


def _fetch_bluesky(links: list[str], author: str | None, since: str | None, api_url: str):
    """The takes of Bluesky thread links and of ``author``'s posts, from the public API."""
    from indexer.sources.bluesky_fetch import BlueskyFetcher

    fetcher = BlueskyFetcher(api_url, progress=True)
    takes = [take for link in links for take in fetcher.thread(link)]
    if author:
        takes.extend(fetcher.author_posts(author, since))
    return takes


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "input_format", default=None, help="Force the input format instead of detecting it.")
@index_dir_option
@model_option
@backend_option
@click.option("--if-missing", is_flag=True, help="Do nothing when an index already exists.")
@click.option("--replace", is_flag=True, help="Replace an index that already holds takes (the old one serves until the new one commits).")
@user_errors
def index(files, input_format, index_dir, model, backend, if_missing, replace):
    """Build the index from FILES (default: the bundled seed thread).

    Refuses an index that already holds takes unless --replace is given; use
    `takes add` to add to it.
    """
    from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL
    from indexer.store import IndexWriter, database_path

    if if_missing and database_path(index_dir).exists():
        click.echo(f"index already exists in {index_dir}")
        return
    from indexer import SEED_CORPUS

    takes = _read_inputs(files or (SEED_CORPUS,), input_format)
    model = model or DEFAULT_MODEL
    backend = backend or DEFAULT_BACKEND
    with IndexWriter(index_dir) as writer:
        if writer.manifest is not None and writer.manifest.count and not replace:
            from indexer.errors import TakesError

            raise TakesError(
                f"the index in {index_dir} holds {writer.manifest.count} takes; "
                f"`takes add` adds to it, `takes index --replace` replaces it"
            )
        report = writer.replace_all(
            takes, _embedder_factory(model, backend, index_dir), model=model, backend=backend, progress=True
        )
    click.echo(
        f"indexed {report.added} takes in {report.threads} threads into {index_dir} "
        f"(model {model}, {report.embedded} embedded, {report.skipped} duplicates skipped)"
    )


@cli.command()
@click.argument("query")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True, help="How many takes to return (1-100).")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "lexical"]), default="hybrid", show_default=True,
              help="Ranking: meaning and words, meaning only, or words only.")
@click.option("--author", default=None, help="Only takes by this author name or handle.")
@click.option("--handle", default=None, help="Only takes by this handle (with or without '@').")
@click.option("--thread-id", "--thread", "thread_id", default=None, help="Only takes of this thread id (the API's thread_id).")
@click.option("--since", default=None, help="Only takes on or after this ISO date (2023-01-31).")
@click.option("--until", default=None, help="Only takes on or before this ISO date.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None, help="Drop results scoring below this (0 to 1; 0.5 keeps strong matches only).")
@click.option("--context", type=click.IntRange(0, 10), default=0, help="Show up to N neighbouring takes around each result.")
@click.option("--group-by-thread", is_flag=True, help="Group results by thread, takes in thread order.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "context"]),
    default="text",
    show_default=True,
    help="text for people; json: the API's response object (GET /search); context: the numbered, cited "
    "block of GET /search?format=context, for a prompt.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@index_dir_option
@model_option
@backend_option
@reranker_option
@late_interaction_option
@user_errors
def search(query, k, mode, author, handle, thread_id, since, until, min_score, context, group_by_thread, output_format, as_json, index_dir, model, backend, reranker, late_interaction):
    """Find the takes that answer QUERY."""
    import time

    from indexer.client import format_context
    from indexer.models import group_by_thread as group
    from indexer.models import strong_matches
    from indexer.search import Filters, Searcher, validate_query

    validate_query(query, k)
    filters = Filters(author=author, handle=handle, thread_id=thread_id, since=since, until=until, min_score=min_score)
    searcher = Searcher(index_dir, model=model, backend=backend, reranker=_reranker(reranker), late_interaction=late_interaction)
    # Timed as the API times it: the search alone, not the model load.
    started = time.perf_counter()
    results = searcher.search(query, k, mode=mode, filters=filters, context=context)
    took_ms = round((time.perf_counter() - started) * 1000, 2)
    if as_json or output_format == "json":
        payload = {
            "query": query,
            "k": k,
            "mode": mode,
            "results": [r.to_dict() for r in results],
            "strong_matches": strong_matches(results),
            "threads": [g.to_dict() for g in group(results)] if group_by_thread else None,
            "took_ms": took_ms,
        }
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    if output_format == "context":
        click.echo(format_context(results, query.strip()), nl=False)
        return
    if not results:
        click.echo(f"no takes match ({took_ms} ms)")
        return
    if not any(result.match == "strong" for result in results):
        click.echo(click.style("No strong matches; the closest takes are:", bold=True) + "\n")
    if group_by_thread:
        for thread in group(results):
            click.echo(click.style(f"thread {thread.thread_id}  (best {thread.score:.3f})", bold=True))
            for result in thread.results:
                _print_result(result, indent="  ")
    else:
        for rank, result in enumerate(results, start=1):
            _print_result(result, rank=rank)
    click.echo(f"{len(results)} takes in {took_ms} ms")


def _print_result(result, rank: int | None = None, indent: str = "") -> None:
    take = result.take
    size = f"/{take.thread_size}" if take.thread_size else ""
    who = " ".join(part for part in (take.author, f"({take.handle})" if take.handle else None) if part)
    label = f"{rank:>2}. " if rank is not None else ""
    click.echo(indent + click.style(f"{label}{result.score:.3f} {result.match:<6}  ", bold=True, dim=result.match == "weak")
               + f"{who}  {take.date or ''}  thread {take.thread_id} #{take.position}{size}")
    before, after = result.context or ((), ())

    def neighbours(takes) -> None:
        for neighbour in takes:
            click.echo(click.style(textwrap.indent(f"#{neighbour.position}: {neighbour.text}", indent + "    "), dim=True))

    neighbours(before)
    click.echo(textwrap.indent(take.text, indent + "    "))
    neighbours(after)
    click.echo()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same object as GET /stats).")
@index_dir_option
@user_errors
def stats(as_json, index_dir):
    """Counts, model and size of the index."""
    from indexer.search import index_stats
    from indexer.store import open_index_database

    connection, manifest = open_index_database(index_dir)
    try:
        data = index_stats(index_dir, connection, manifest)
    finally:
        connection.close()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            click.echo(f"{key:>12}: {value}")


@cli.command()
@click.option(
    "--host",
    envvar="TAKES_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Beyond loopback (0.0.0.0), only the Host names in "
    "TAKES_ALLOWED_HOSTS are answered; put a reverse proxy in front for anything public.",
)
@click.option(
    "--port",
    envvar="TAKES_PORT",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="TCP port to listen on, 1-65535.",
)
@index_dir_option
@model_option
@backend_option
@click.option(
    "--token-file",
    envvar="TAKES_ADMIN_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the admin token that enables POST/DELETE /takes (or set "
    "TAKES_ADMIN_TOKEN). Never put the token itself on a command line.",
)
@reranker_option
@late_interaction_option
@user_errors
def serve(host, port, index_dir, model, backend, token_file, reranker, late_interaction):
    """Serve the HTTP API, the search page and MCP (docs at /docs).

    Limits and timeouts come from the environment: TAKES_MAX_CONNECTIONS,
    TAKES_HEADER_TIMEOUT, TAKES_KEEP_ALIVE_TIMEOUT, TAKES_MAX_BODY_BYTES,
    TAKES_MAX_QUERY_BYTES, TAKES_MAX_QUEUED_WRITES, TAKES_LOCK_TIMEOUT and
    TAKES_ALLOWED_HOSTS (search_api/settings.py says what each does).
    """
    import socket

    import uvicorn

    from indexer.errors import TakesError
    from indexer.search import Searcher
    from indexer.threads import limit_threads
    from search_api.app import create_app
    from search_api.limits import guarded_protocol
    from search_api.settings import Settings, is_loopback

    overrides = {"admin_token_file": token_file} if token_file is not None else {}
    settings = Settings(
        index_dir=index_dir,
        model=model,
        backend=backend,
        host=host,
        port=port,
        reranker=reranker,
        late_interaction=late_interaction,
        **overrides,
    )
    # Bind before anything claims to be serving: a busy port is one clear line.
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        reason = error.strerror or str(error)
        raise TakesError(
            f"cannot listen on {host}:{port}: {reason} (another server on that port? choose another with --port or TAKES_PORT)"
        ) from None
    # Before FAISS and torch load: OMP_NUM_THREADS then holds in every thread.
    limit_threads(settings.threads)
    # Load before serving, so a missing index is one clear line.
    searcher = Searcher(
        index_dir,
        model=model,
        backend=backend,
        threads=settings.threads,
        reranker=_reranker(reranker),
        late_interaction=late_interaction,
    )
    config = uvicorn.Config(
        create_app(settings, searcher),
        log_level="warning",
        http=guarded_protocol(settings),
        timeout_keep_alive=settings.keep_alive_timeout,
    )
    click.echo(f"serving {searcher.manifest.count} takes from {index_dir} on http://{host}:{port}", err=True)
    if not is_loopback(host):
        click.echo(f"answering only Host {', '.join(settings.hosts())} (add names with TAKES_ALLOWED_HOSTS)", err=True)
    uvicorn.Server(config).run(sockets=[listener])


@cli.command(name="eval")
@click.argument("judgments", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    "modes",
    type=click.Choice(["dense", "lexical", "hybrid"]),
    multiple=True,
    help="Modes to score (repeatable). Default: all three, side by side.",
)
@click.option(
    "--compare",
    nargs=2,
    metavar="A B",
    default=None,
    help="Compare two configurations on the same queries: each is MODE, MODE+late (late interaction on) "
    "or either @INDEX_DIR (e.g. `hybrid dense`, `hybrid hybrid+late`, `hybrid hybrid@/tmp/other-model-index`); "
    "prints both per query and the paired difference B - A with its 95% interval.",
)
@click.option("--json", "as_json", is_flag=True, help="Print scores as JSON.")
@index_dir_option
@model_option
@backend_option
@reranker_option
@late_interaction_option
@user_errors
def evaluate(judgments, modes, compare, as_json, index_dir, model, backend, reranker, late_interaction):
    """Score ranking against graded JUDGMENTS: nDCG@10, recall@10 and MRR per query, means with 95% intervals.

    JUDGMENTS is a JSON file {"queries": [{"query": ..., "relevant": {"start of a take's text": grade}}]}
    with grade 2 for a take that answers the query and 1 for a related one; the repo ships the dev set
    as tests/data/dev_queries.json (its "about" field gives the matching and scoring rules).
    """
    from indexer.evaluation import evaluate as run_evaluation
    from indexer.evaluation import load_judgments, paired_difference, summary
    from indexer.search import MODES, Searcher

    judged = load_judgments(judgments)
    searchers: dict[tuple[Path, bool], Searcher] = {}

    def searcher_for(directory: Path, late: bool) -> Searcher:
        if (directory, late) not in searchers:
            searchers[directory, late] = Searcher(
                directory,
                model=model if directory == index_dir else None,
                backend=backend,
                reranker=_reranker(reranker),
                late_interaction=late,
            )
        return searchers[directory, late]

    def configuration(spec: str) -> tuple[str, bool, Path]:
        mode, _, directory = spec.partition("@")
        mode, plus, option = mode.partition("+")
        if mode not in MODES or (plus and option != "late"):
            raise click.BadParameter(
                f"{spec!r}: expected MODE, MODE+late, or either @INDEX_DIR, with MODE one of {', '.join(MODES)}",
                param_hint="--compare",
            )
        return mode, late_interaction or bool(plus), Path(directory) if directory else index_dir

    labels = list(compare) if compare else list(modes or MODES)
    configurations = [configuration(label) for label in labels]
    scores = {
        label: run_evaluation(
            judged,
            lambda query, k, mode=mode, late=late, directory=directory: [
                r.take.text for r in searcher_for(directory, late).search(query, k, mode=mode)
            ],
        )
        for label, (mode, late, directory) in zip(labels, configurations)
    }
    difference = paired_difference(scores[labels[0]], scores[labels[1]]) if compare else None
    if as_json:
        payload = {}
        for label, query_scores in scores.items():
            described = summary(query_scores)
            payload[label] = {
                "mean": {metric: values["mean"] for metric, values in described.items()},
                "interval": {metric: [values["low"], values["high"]] for metric, values in described.items()},
                "queries": [vars(q) for q in query_scores],
            }
        if difference:
            payload["difference"] = {"ndcg@10 (B - A)": difference}
        click.echo(json.dumps(payload, indent=2))
        return
    _print_evaluation(judged, labels, scores, difference)


def _print_evaluation(judged, labels, scores, difference) -> None:
    from indexer.evaluation import summary

    width = min(max(len(j.query) for j in judged), 60)
    column = max(8, *(len(label) for label in labels))
    header = "".join(f"  {label:>{column}}" for label in labels)
    for title, field in (("nDCG@10", "ndcg"), ("recall@10", "recall"), ("MRR", "reciprocal_rank")):
        click.echo(f"{title} per query\n{'query':<{width}}{header}")
        for row, judged_query in enumerate(judged):
            click.echo(f"{judged_query.query[:width]:<{width}}" + "".join(f"  {getattr(scores[label][row], field):{column}.3f}" for label in labels))
        click.echo()
    click.echo(f"{'mean [95% interval]':<{width}}" + "".join(f"  {label:>{column + 16}}" for label in labels))
    summaries = {label: summary(s) for label, s in scores.items()}
    for metric in ("ndcg@10", "recall@10", "mrr"):
        cells = "".join(
            f"  {summaries[label][metric]['mean']:{column}.3f} [{summaries[label][metric]['low']:.3f}, {summaries[label][metric]['high']:.3f}]"
            for label in labels
        )
        click.echo(f"{metric:<{width}}{cells}")
    if difference:
        click.echo(
            f"\nnDCG@10 {labels[1]} - {labels[0]}: {difference['mean']:+.3f} "
            f"[95% interval {difference['low']:+.3f}, {difference['high']:+.3f}] over {len(judged)} queries"
        )


def _require_index(index_dir: Path) -> None:
    """IndexNotFound unless ``index_dir`` holds an index: checked before the writer creates anything there."""
    from indexer.errors import IndexNotFound
    from indexer.store import database_path

    if not database_path(index_dir).exists():
        raise IndexNotFound(index_dir)


@cli.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--format", "input_format", default=None, help="Force the input format instead of detecting it.")
@click.option("--include-private", is_flag=True, help="Also add a Mastodon archive's followers-only posts and direct messages.")
@click.option("--author", "bluesky_author", default=None, help="Fetch this Bluesky handle's posts from the public API.")
@click.option("--since", default=None, help="With --author: only posts on or after this ISO date (2024-05-01).")
@click.option(
    "--bluesky-api",
    envvar="TAKES_BLUESKY_API",
    default="https://public.api.bsky.app",
    show_default=True,
    help="The Bluesky API that links and --author are fetched from.",
)
@index_dir_option
@model_option
@backend_option
@lock_timeout_option
@click.option(
    "--server",
    envvar="TAKES_SERVER",
    default=None,
    help="Add through a running `takes serve` at this URL (POST /takes) instead of writing the index here: "
    "no model load in this process.",
)
@click.option("--token", envvar="TAKES_ADMIN_TOKEN", default=None, help="The server's admin token.")
@click.option(
    "--token-file",
    envvar="TAKES_ADMIN_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the server's admin token: keeps it off the command line.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be added (per thread: new takes and their first words; duplicates skipped) and write nothing.",
)
@user_errors
def add(files, input_format, include_private, bluesky_author, since, bluesky_api, index_dir, model, backend, lock_timeout, server, token, token_file, dry_run):
    """Add the takes in FILES to the index, without a rebuild.

    FILES may also be Bluesky post links (https://bsky.app/profile/NAME/post/ID):
    each adds its thread, fetched from the public API; --author adds a
    Bluesky account's posts.

    Takes already indexed (same id, or the same text from the same author) are
    skipped, and only new text is embedded: adding a file twice adds nothing
    and does not load the model. A server on the same index picks the new
    takes up within a second. Creates the index if there is none.
    """
    from embeddings import DEFAULT_MODEL
    from indexer.sources.bluesky_fetch import is_post_link
    from indexer.store import IndexWriter

    links = [name for name in files if is_post_link(name)]
    files = tuple(name for name in files if not is_post_link(name))
    if not files and not links and not bluesky_author:
        raise click.UsageError("give the files or Bluesky links to add, or --author HANDLE")
    if since and not bluesky_author:
        raise click.UsageError("--since goes with --author")
    if server and (links or bluesky_author):
        raise click.UsageError("Bluesky links and --author are fetched here: add them without --server")
    # Every file parses (and every link is fetched) before anything is written: one bad input adds nothing.
    if server:
        if token is None and token_file is not None:
            from search_api.settings import read_token_file

            token = read_token_file(token_file)
        added, skipped = _add_through_server(server, token, files, input_format, include_private)
        click.echo(f"added {added}, skipped {skipped} duplicates (through {server})")
        return
    takes = _read_inputs(files, input_format, include_private)
    if links or bluesky_author:
        takes += _fetch_bluesky(links, bluesky_author, since, bluesky_api)
    if dry_run:
        _print_dry_run(index_dir, takes)
        return
    with IndexWriter(index_dir, lock_timeout=lock_timeout) as writer:
        # An existing index keeps its model (a different --model is a ModelMismatch).
        model = model or (writer.manifest.model if writer.manifest else DEFAULT_MODEL)
        backend = _writer_backend(writer, backend)
        report = writer.add(takes, _embedder_factory(model, backend, index_dir), model=model, backend=backend, progress=True)
    click.echo(
        f"added {report.added}, skipped {report.skipped} duplicates "
        f"(generation {report.generation}, {report.embedded} embedded)"
    )


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--thread-id", "--thread", "thread_id", default=None, help="Remove every take of this thread.")
@index_dir_option
@lock_timeout_option
@click.option(
    "--server",
    envvar="TAKES_SERVER",
    default=None,
    help="Remove through a running `takes serve` at this URL (DELETE /takes/{id}) instead of writing the "
    "index here.",
)
@click.option("--token", envvar="TAKES_ADMIN_TOKEN", default=None, help="The server's admin token.")
@user_errors
def remove(ids, thread_id, index_dir, lock_timeout, server, token):
    """Remove takes by ID, or a whole thread with --thread-id.

    An unknown id removes nothing and is an error. Through --server each
    take is removed in its own generation, after every id was found.
    """
    from indexer.store import IndexWriter

    if not ids and thread_id is None:
        raise click.UsageError("give the ids of the takes to remove, or --thread-id THREAD_ID")
    if server:
        removed = _remove_through_server(server, token, ids, thread_id)
        click.echo(f"removed {removed} takes (through {server})")
        return
    _require_index(index_dir)
    with IndexWriter(index_dir, lock_timeout=lock_timeout) as writer:
        report = writer.remove(ids, thread_id=thread_id)
    click.echo(f"removed {report.removed} takes (generation {report.generation})")


@cli.command()
@index_dir_option
@model_option
@backend_option
@lock_timeout_option
@user_errors
def rebuild(index_dir, model, backend, lock_timeout):
    """Re-embed every take into a fresh generation (with --model: switch models).

    The current index keeps serving until the new one is committed. Text
    already embedded by the model comes from the embedding cache, so a rebuild
    with the same model embeds nothing and only rewrites the vectors.
    """
    from indexer.store import IndexWriter

    _require_index(index_dir)
    with IndexWriter(index_dir, lock_timeout=lock_timeout) as writer:
        if writer.manifest is None:
            from indexer.errors import IndexNotFound

            raise IndexNotFound(index_dir)
        model = model or writer.manifest.model
        backend = _writer_backend(writer, backend)
        report = writer.rebuild(_embedder_factory(model, backend, index_dir), model=model, backend=backend, progress=True)
    click.echo(
        f"rebuilt {report.added} takes with model {model}: {report.embedded} texts embedded, "
        f"the rest from the cache (generation {report.generation})"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same object as GET /authors).")
@index_dir_option
@user_errors
def authors(as_json, index_dir):
    """Every author in the index, with how many takes and threads (most takes first)."""
    from indexer.search import list_authors

    listing = _read_index(index_dir, list_authors)
    if as_json:
        click.echo(json.dumps({"authors": [author.to_dict() for author in listing]}, indent=2, ensure_ascii=False))
        return
    for author in listing:
        who = " ".join(part for part in (author.author, f"({author.handle})" if author.handle and author.author else author.handle) if part)
        click.echo(f"{author.takes:>6} takes  {author.threads:>4} threads  {who or 'unknown author'}")


@cli.command(name="list")
@click.option("--author", default=None, help="Only threads by this author: a word of the name, or the handle.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same object as GET /threads).")
@index_dir_option
@user_errors
def list_threads(author, as_json, index_dir):
    """Every thread in the index: id, author, date, size and first words (newest first)."""
    from indexer.search import Filters, list_threads

    filters = Filters(author=author)
    listing = _read_index(index_dir, lambda connection, generation: list_threads(connection, generation, filters))
    if as_json:
        click.echo(json.dumps({"threads": [thread.to_dict() for thread in listing]}, indent=2, ensure_ascii=False))
        return
    if not listing:
        click.echo("no threads match")
    for thread in listing:
        size = f"{thread.takes}/{thread.thread_size}" if thread.thread_size else str(thread.takes)
        who = thread.handle or thread.author or "unknown author"
        click.echo(f"{thread.thread_id}  {who}  {thread.date or '-'}  {size} takes  {thread.first_words}")


def _read_index(index_dir: Path, read):
    """``read(connection, generation)`` over the committed generation, without loading the model."""
    from indexer.store import open_index_database

    connection, manifest = open_index_database(index_dir)
    try:
        return read(connection, manifest.generation)
    finally:
        connection.close()


@cli.command()
@index_dir_option
@model_option
@backend_option
@user_errors
def mcp(index_dir, model, backend):
    """Serve the search as MCP tools on stdin/stdout (for Claude Desktop and other MCP clients).

    Stdout carries only the protocol; logs go to stderr. Runs offline.
    """
    try:
        from search_api.mcp_server import run_stdio
    except ImportError as error:
        raise click.ClickException(f"the MCP server needs the `mcp` package ({error}): pip install 'takes[mcp]'") from None
    # A client may start us in any folder: resolve the index before anything else.
    run_stdio(index_dir.resolve(), model=model, backend=backend)


@cli.command()
@index_dir_option
@user_errors
def check(index_dir):
    """Verify every file of the index: database pages, text index, segment and model checksums, caches.

    Prints one line per problem and exits 1 if there is any; `takes repair` fixes them.
    """
    from indexer.store import check_index

    problems, notes = check_index(index_dir)
    for note in notes:
        click.echo(f"note: {note}")
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        click.echo(f"{len(problems)} problems in {index_dir}: `takes repair --index-dir {index_dir}` fixes what can be fixed", err=True)
        return 1
    click.echo(f"{index_dir}: every file is intact")


@cli.command()
@index_dir_option
@lock_timeout_option
@user_errors
def repair(index_dir, lock_timeout):
    """Rebuild what `takes check` finds damaged from what is intact, and say what was lost.

    The takes' text in the database is the source of truth: vectors, the text
    index, caches and the model copy are derived from it. A damaged database
    is recovered with SQLite's own recovery (the damaged file is kept aside).
    """
    from indexer.store import repair_index

    actions, remaining = repair_index(
        index_dir, lambda model, backend: _embedder_factory(model, backend, index_dir), lock_timeout=lock_timeout
    )
    if not actions and not remaining:
        click.echo(f"{index_dir}: nothing to repair, every file is intact")
        return
    for action in actions:
        click.echo(action)
    for problem in remaining:
        click.echo(f"not repaired: {problem}")
    return 1 if remaining else None


@cli.command()
@index_dir_option
@lock_timeout_option
@user_errors
def compact(index_dir, lock_timeout):
    """Reclaim disk space: purge removed takes, merge the vector segments into one, VACUUM the database.

    Runs as a new generation with the same takes: searches keep working, and
    a crash leaves the previous generation whole.
    """
    from indexer.store import IndexWriter

    _require_index(index_dir)
    with IndexWriter(index_dir, lock_timeout=lock_timeout) as writer:
        report = writer.compact()
    click.echo(
        f"compacted {index_dir}: {report.bytes_before / 1024:.0f} kB -> {report.bytes_after / 1024:.0f} kB "
        f"({report.purged} removed takes purged, {report.segments_before} segments -> {report.segments_after}, "
        f"generation {report.generation})"
    )
    if report.not_vacuumed:
        click.echo(f"the database was not vacuumed ({report.not_vacuumed}): run `takes compact` again with more free space", err=True)


def _show_environment_variables(group: click.Group) -> None:
    # Every option that falls back to a variable says which in --help,
    # including options added later: no command can forget it.
    for command in group.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                param.show_envvar = True


_show_environment_variables(cli)


def main() -> None:
    cli(prog_name="takes")


if __name__ == "__main__":
    main()
