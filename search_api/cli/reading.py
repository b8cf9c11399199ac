"""Commands that read the index: search, stats, authors, list, eval."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.models import author_label
from indexer.query_limits import DEFAULT_K, DEFAULT_MODE, MAX_K, MAX_NEIGHBOURS, MODES
from search_api.cli.options import (
    backend_option,
    cli,
    index_dir_option,
    late_interaction_option,
    model_option,
    open_index,
    reranker_option,
    user_errors,
)
from search_api.cli.render import evaluation_json, print_evaluation, print_results


@cli.command()
@click.argument("query")
@click.option("-k", "--k", "k", type=int, default=DEFAULT_K, show_default=True, help=f"How many takes to return (1-{MAX_K}).")
@click.option("--mode", type=click.Choice(MODES), default=DEFAULT_MODE, show_default=True,
              help="Ranking: meaning and words, meaning only, or words only.")
@click.option("--author", default=None, help="Only takes by this author name or handle.")
@click.option("--handle", default=None, help="Only takes by this handle (with or without '@').")
@click.option("--thread-id", "--thread", "thread_id", default=None, help="Only takes of this thread id (the API's thread_id).")
@click.option("--since", default=None, help="Only takes on or after this ISO date (2023-01-31).")
@click.option("--until", default=None, help="Only takes on or before this ISO date.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None, help="Drop results scoring below this (0 to 1; 0.5 keeps strong matches only).")
@click.option("--context", "neighbours", type=click.IntRange(0, MAX_NEIGHBOURS), default=0, help="Show up to N neighbouring takes around each result.")
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
def search(query, k, mode, author, handle, thread_id, since, until, min_score, neighbours, group_by_thread, output_format, as_json, index_dir, model, backend, reranker, late_interaction):
    """Find the takes that answer QUERY."""
    import time

    from indexer.api import Takes, prompt_block

    # Bad input is refused before the model loads.
    Takes.check_query(query, k, author=author, handle=handle, thread_id=thread_id, since=since, until=until, min_score=min_score)
    served = open_index(index_dir, model=model, backend=backend, reranker=reranker, late_interaction=late_interaction).load()
    # Timed as the API times it: the search alone, not the model load.
    started = time.perf_counter()
    results = served.search(query, k, mode=mode, context=neighbours, author=author, handle=handle, thread_id=thread_id,
                            since=since, until=until, min_score=min_score)
    took_ms = round((time.perf_counter() - started) * 1000, 2)
    if as_json or output_format == "json":
        click.echo(json.dumps(_search_json(query, k, mode, results, group_by_thread, took_ms), indent=2, ensure_ascii=False))
    elif output_format == "context":
        click.echo(prompt_block(results, query.strip()), nl=False)
    else:
        print_results(results, group_by_thread=group_by_thread, took_ms=took_ms)


def _search_json(query, k, mode, results, group_by_thread: bool, took_ms: float) -> dict:
    """The object GET /search answers."""
    from indexer.models import group_by_thread as group
    from indexer.models import strong_matches

    return {
        "query": query,
        "k": k,
        "mode": mode,
        "results": [r.to_dict() for r in results],
        "strong_matches": strong_matches(results),
        "threads": [g.to_dict() for g in group(results)] if group_by_thread else None,
        "took_ms": took_ms,
    }


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same object as GET /stats).")
@index_dir_option
@user_errors
def stats(as_json, index_dir):
    """Counts, model and size of the index."""
    data = open_index(index_dir).stats()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            click.echo(f"{key:>12}: {value}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same object as GET /authors).")
@index_dir_option
@user_errors
def authors(as_json, index_dir):
    """Every author in the index, with how many takes and threads (most takes first)."""
    listing = open_index(index_dir).authors()
    if as_json:
        click.echo(json.dumps({"authors": [author.to_dict() for author in listing]}, indent=2, ensure_ascii=False))
        return
    for author in listing:
        who = author_label(author.author, author.handle)
        click.echo(f"{author.takes:>6} takes  {author.threads:>4} threads  {who or 'unknown author'}")


@cli.command(name="list")
@click.option("--author", default=None, help="Only threads by this author: a word of the name, or the handle.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same object as GET /threads).")
@index_dir_option
@user_errors
def list_threads(author, as_json, index_dir):
    """Every thread in the index: id, author, date, size and first words (newest first)."""
    listing = open_index(index_dir).threads(author=author)
    if as_json:
        click.echo(json.dumps({"threads": [thread.to_dict() for thread in listing]}, indent=2, ensure_ascii=False))
        return
    if not listing:
        click.echo("no threads match")
    for thread in listing:
        size = f"{thread.takes}/{thread.thread_size}" if thread.thread_size else str(thread.takes)
        who = thread.handle or thread.author or "unknown author"
        click.echo(f"{thread.thread_id}  {who}  {thread.date or '-'}  {size} takes  {thread.first_words}")


def _configuration(spec: str, late_interaction: bool, index_dir: Path) -> tuple[str, bool, Path]:
    """(mode, late interaction, index) of a --compare side: MODE, MODE+late, either @INDEX_DIR."""
    mode, _, directory = spec.partition("@")
    mode, plus, option = mode.partition("+")
    if mode not in MODES or (plus and option != "late"):
        raise click.BadParameter(
            f"{spec!r}: expected MODE, MODE+late, or either @INDEX_DIR, with MODE one of {', '.join(MODES)}",
            param_hint="--compare",
        )
    return mode, late_interaction or bool(plus), Path(directory) if directory else index_dir


@cli.command(name="eval")
@click.argument("judgments", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    "modes",
    type=click.Choice(MODES),
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
    from indexer.evaluation import load_judgments, paired_difference

    judged = load_judgments(judgments)
    opened = {}

    def takes_for(directory: Path, late: bool):
        if (directory, late) not in opened:
            opened[directory, late] = open_index(
                directory, model=model if directory == index_dir else None, backend=backend, reranker=reranker, late_interaction=late
            )
        return opened[directory, late]

    labels = list(compare) if compare else list(modes or MODES)
    configurations = [_configuration(label, late_interaction, index_dir) for label in labels]
    scores = {
        label: run_evaluation(
            judged,
            lambda query, k, mode=mode, late=late, directory=directory: [
                r.take.text for r in takes_for(directory, late).search(query, k, mode=mode)
            ],
        )
        for label, (mode, late, directory) in zip(labels, configurations)
    }
    difference = paired_difference(scores[labels[0]], scores[labels[1]]) if compare else None
    if as_json:
        click.echo(json.dumps(evaluation_json(scores, difference), indent=2))
        return
    print_evaluation(judged, labels, scores, difference)
