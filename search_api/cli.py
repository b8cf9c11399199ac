"""The ``takes`` command line.

Options fall back to ``TAKES_*`` environment variables. Heavy imports (torch,
FAISS, FastAPI) happen inside commands, so ``takes --help`` is instant. User
errors print one line and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from search_api.settings import DEFAULT_INDEX_DIR

index_dir_option = click.option(
    "--index-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TAKES_INDEX_DIR",
    default=DEFAULT_INDEX_DIR,
    show_default=True,
    help="Index directory (env TAKES_INDEX_DIR).",
)
model_option = click.option(
    "--model",
    envvar="TAKES_MODEL",
    default=None,
    help="sentence-transformers model name or path (env TAKES_MODEL). Default: the index's model, "
    "or all-MiniLM-L6-v2 for a new index.",
)
backend_option = click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    envvar="TAKES_BACKEND",
    default="torch",
    show_default=True,
    help="Embedding backend (env TAKES_BACKEND).",
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

        click.echo(f"loading model {model} ({backend})...", err=True)
        return load_embedder(model, backend, cache_dir=str(index_dir))

    return create


def _read_inputs(files: tuple[Path, ...], input_format: str | None):
    from indexer.sources import read_takes

    takes = []
    for path in files:
        takes.extend(read_takes(path, input_format))
    return takes


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "input_format", default=None, help="Force the input format instead of detecting it.")
@index_dir_option
@model_option
@backend_option
@click.option("--if-missing", is_flag=True, help="Do nothing when an index already exists.")
@user_errors
def index(files, input_format, index_dir, model, backend, if_missing):
    """Build the index from FILES (default: the bundled seed thread).

    Replaces whatever the index held; use `takes add` to add to it.
    """
    from embeddings import DEFAULT_MODEL
    from indexer.store import IndexWriter, database_path

    if if_missing and database_path(index_dir).exists():
        click.echo(f"index already exists in {index_dir}")
        return
    from indexer import SEED_CORPUS

    takes = _read_inputs(files or (SEED_CORPUS,), input_format)
    model = model or DEFAULT_MODEL
    with IndexWriter(index_dir) as writer:
        report = writer.replace_all(takes, _embedder_factory(model, backend, index_dir), model=model, progress=True)
    click.echo(
        f"indexed {report.added} takes in {report.threads} threads into {index_dir} "
        f"(model {model}, {report.embedded} embedded, {report.skipped} duplicates skipped)"
    )


@cli.command()
@click.argument("query")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True, help="How many takes to return (1-100).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON objects.")
@index_dir_option
@model_option
@backend_option
@user_errors
def search(query, k, as_json, index_dir, model, backend):
    """Find the takes nearest in meaning to QUERY."""
    from indexer.search import Searcher, validate_query

    validate_query(query, k)
    searcher = Searcher(index_dir, model=model, backend=backend)
    results = searcher.search(query, k)
    if as_json:
        click.echo(json.dumps([result.to_dict() for result in results], indent=2, ensure_ascii=False))
        return
    if not results:
        click.echo("no takes match")
    for rank, result in enumerate(results, start=1):
        take = result.take
        size = f"/{take.thread_size}" if take.thread_size else ""
        who = " ".join(part for part in (take.author, f"({take.handle})" if take.handle else None) if part)
        click.echo(click.style(f"{rank:>2}. {result.score:.3f}  ", bold=True) + f"{who}  {take.date or ''}  "
                   f"thread {take.thread_id} #{take.position}{size}")
        click.echo(f"    {take.text}\n")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same object as GET /stats).")
@index_dir_option
@user_errors
def stats(as_json, index_dir):
    """Counts, model and size of the index."""
    from indexer.store import open_index_database
    from indexer.search import index_bytes

    connection, manifest = open_index_database(index_dir)
    with connection:
        threads = connection.execute(
            "SELECT count(DISTINCT thread_id) FROM takes WHERE removed_generation IS NULL"
        ).fetchone()[0]
    connection.close()
    data = {
        "takes": manifest.count,
        "threads": threads,
        "model": manifest.model,
        "dim": manifest.dim,
        "index_bytes": index_bytes(index_dir),
        "index_type": manifest.index_type,
        "generation": manifest.generation,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            click.echo(f"{key:>12}: {value}")


@cli.command()
@click.option("--host", envvar="TAKES_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="TAKES_PORT", type=int, default=8000, show_default=True)
@index_dir_option
@model_option
@backend_option
@user_errors
def serve(host, port, index_dir, model, backend):
    """Serve the HTTP API (docs at /docs)."""
    import uvicorn

    from indexer.search import Searcher
    from search_api.app import create_app
    from search_api.settings import Settings

    # Load before binding the port, so a missing index is one clear line.
    searcher = Searcher(index_dir, model=model, backend=backend)
    settings = Settings(index_dir=index_dir, model=model, backend=backend, host=host, port=port)
    click.echo(f"serving {searcher.manifest.count} takes from {index_dir} on http://{host}:{port}", err=True)
    uvicorn.run(create_app(settings, searcher), host=host, port=port, log_level="warning")


@cli.command(name="eval")
@click.argument("judgments", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print scores as JSON.")
@index_dir_option
@model_option
@backend_option
@user_errors
def evaluate(judgments, as_json, index_dir, model, backend):
    """Score ranking against graded JUDGMENTS (nDCG@10, recall@10, MRR)."""
    from indexer.evaluation import evaluate as run_evaluation
    from indexer.evaluation import load_judgments, mean
    from indexer.search import Searcher

    judged = load_judgments(judgments)
    searcher = Searcher(index_dir, model=model, backend=backend)
    scores = run_evaluation(judged, lambda query, k: [r.take.text for r in searcher.search(query, k)])
    averages = mean(scores)
    if as_json:
        click.echo(json.dumps({"mean": averages, "queries": [vars(s) for s in scores]}, indent=2))
        return
    width = max(len(s.query) for s in scores)
    click.echo(f"{'query':<{width}}  nDCG@10  recall@10   MRR")
    for s in scores:
        click.echo(f"{s.query:<{width}}  {s.ndcg:7.3f}  {s.recall:9.3f}  {s.reciprocal_rank:5.3f}")
    click.echo(f"{'mean':<{width}}  {averages['ndcg@10']:7.3f}  {averages['recall@10']:9.3f}  {averages['mrr']:5.3f}")


def main() -> None:
    cli(prog_name="takes")


if __name__ == "__main__":
    main()
