"""What the commands print for people (``--json`` prints the API's objects instead)."""

from __future__ import annotations

import textwrap

import click

from indexer.models import author_label


def print_results(results, *, group_by_thread: bool, took_ms: float) -> None:
    """Ranked results (or grouped by thread), with their neighbours, and the time taken."""
    from indexer.models import group_by_thread as group

    if not results:
        click.echo(f"no takes match ({took_ms} ms)")
        return
    if not any(result.match == "strong" for result in results):
        click.echo(click.style("No strong matches; the closest takes are:", bold=True) + "\n")
    if group_by_thread:
        for thread in group(results):
            click.echo(click.style(f"thread {thread.thread_id}  (best {thread.score:.3f})", bold=True))
            for result in thread.results:
                print_result(result, indent="  ")
    else:
        for rank, result in enumerate(results, start=1):
            print_result(result, rank=rank)
    click.echo(f"{len(results)} takes in {took_ms} ms")


def print_result(result, rank: int | None = None, indent: str = "") -> None:
    take = result.take
    size = f"/{take.thread_size}" if take.thread_size else ""
    label = f"{rank:>2}. " if rank is not None else ""
    click.echo(indent + click.style(f"{label}{result.score:.3f} {result.match:<6}  ", bold=True, dim=result.match == "weak")
               + f"{author_label(take.author, take.handle)}  {take.date or ''}  thread {take.thread_id} #{take.position}{size}")
    before, after = result.context or ((), ())

    def neighbours(takes) -> None:
        for neighbour in takes:
            click.echo(click.style(textwrap.indent(f"#{neighbour.position}: {neighbour.text}", indent + "    "), dim=True))

    neighbours(before)
    click.echo(textwrap.indent(take.text, indent + "    "))
    neighbours(after)
    click.echo()


def print_dry_run(index_dir, takes, fresh) -> None:
    """What `takes add` would add: per thread, the new takes and their first words; nothing is written."""
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


def print_evaluation(judged, labels, scores, difference) -> None:
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


def evaluation_json(scores, difference) -> dict:
    """The object of `takes eval --json`: means, intervals and per-query scores per configuration."""
    from indexer.evaluation import summary

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
    return payload
