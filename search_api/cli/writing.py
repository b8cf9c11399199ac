"""Commands that change the index: index, add, remove, rebuild, compact, and check/repair."""

from __future__ import annotations

from pathlib import Path

import click

from search_api.cli.options import (
    backend_option,
    cli,
    index_dir_option,
    lock_timeout_option,
    model_option,
    open_index,
    server_token_option,
    user_errors,
)

server_option = click.option(
    "--server",
    envvar="TAKES_SERVER",
    default=None,
    help="Add through a running `takes serve` at this URL (POST /takes) instead of writing the index here: "
    "no model load in this process.",
)


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
    from indexer import SEED_CORPUS

    served = open_index(index_dir, model=model, backend=backend)
    if if_missing and served.exists():
        click.echo(f"index already exists in {served.store.location}")
        return
    report = served.index(files or (SEED_CORPUS,), input_format, replace=replace, progress=True)
    click.echo(
        f"indexed {report.added} takes in {report.threads} threads into {served.store.location} "
        f"(model {served.model_choice().model}, {report.embedded} embedded, {report.skipped} duplicates skipped)"
    )


def _fetch_bluesky(links: list[str], author: str | None, since: str | None, api_url: str):
    """The takes of Bluesky thread links and of ``author``'s posts, from the public API."""
    from indexer.sources.bluesky_fetch import BlueskyFetcher

    fetcher = BlueskyFetcher(api_url, progress=True)
    takes = [take for link in links for take in fetcher.thread(link)]
    if author:
        takes.extend(fetcher.author_posts(author, since))
    return takes


def _check_add_inputs(files, links, bluesky_author, since, server) -> None:
    if not files and not links and not bluesky_author:
        raise click.UsageError("give the files or Bluesky links to add, or --author HANDLE")
    if since and not bluesky_author:
        raise click.UsageError("--since goes with --author")
    if server and (links or bluesky_author):
        raise click.UsageError("Bluesky links and --author are fetched here: add them without --server")


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
@server_option
@server_token_option
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
    from indexer.api import read_sources
    from indexer.sources.bluesky_fetch import is_post_link
    from search_api.cli.remote import add_through_server
    from search_api.cli.render import print_dry_run

    links = [name for name in files if is_post_link(name)]
    files = tuple(name for name in files if not is_post_link(name))
    _check_add_inputs(files, links, bluesky_author, since, server)
    # Every file parses (and every link is fetched) before anything is written: one bad input adds nothing.
    if server:
        if token is None and token_file is not None:
            from search_api.settings import read_token_file

            token = read_token_file(token_file)
        added, skipped = add_through_server(server, token, files, input_format, include_private)
        click.echo(f"added {added}, skipped {skipped} duplicates (through {server})")
        return
    takes = read_sources(files, input_format, include_private=include_private)
    if links or bluesky_author:
        takes += _fetch_bluesky(links, bluesky_author, since, bluesky_api)
    served = open_index(index_dir, model=model, backend=backend, lock_timeout=lock_timeout)
    if dry_run:
        print_dry_run(index_dir, takes, served.new_takes(takes))
        return
    report = served.add(takes, progress=True)
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
@server_token_option
@user_errors
def remove(ids, thread_id, index_dir, lock_timeout, server, token):
    """Remove takes by ID, or a whole thread with --thread-id.

    An unknown id removes nothing and is an error. Through --server each
    take is removed in its own generation, after every id was found.
    """
    from search_api.cli.remote import remove_through_server

    if not ids and thread_id is None:
        raise click.UsageError("give the ids of the takes to remove, or --thread-id THREAD_ID")
    if server:
        removed = remove_through_server(server, token, ids, thread_id)
        click.echo(f"removed {removed} takes (through {server})")
        return
    report = open_index(index_dir, lock_timeout=lock_timeout).remove(ids, thread_id=thread_id)
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
    served = open_index(index_dir, model=model, backend=backend, lock_timeout=lock_timeout)
    report = served.rebuild(progress=True)
    click.echo(
        f"rebuilt {report.added} takes with model {served.model_choice().model}: {report.embedded} texts embedded, "
        f"the rest from the cache (generation {report.generation})"
    )


@cli.command()
@index_dir_option
@lock_timeout_option
@user_errors
def compact(index_dir, lock_timeout):
    """Reclaim disk space: purge removed takes, merge the vector segments into one, VACUUM the database.

    Runs as a new generation with the same takes: searches keep working, and
    a crash leaves the previous generation whole.
    """
    served = open_index(index_dir, lock_timeout=lock_timeout)
    report = served.compact()
    click.echo(
        f"compacted {served.store.location}: {report.bytes_before / 1024:.0f} kB -> {report.bytes_after / 1024:.0f} kB "
        f"({report.purged} removed takes purged, {report.segments_before} segments -> {report.segments_after}, "
        f"generation {report.generation})"
    )
    if report.not_vacuumed:
        click.echo(f"the database was not vacuumed ({report.not_vacuumed}): run `takes compact` again with more free space", err=True)


@cli.command()
@index_dir_option
@user_errors
def check(index_dir):
    """Verify every file of the index: database pages, text index, segment and model checksums, caches.

    Prints one line per problem and exits 1 if there is any; `takes repair` fixes them.
    """
    problems, notes = open_index(index_dir).check()
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
    actions, remaining = open_index(index_dir, lock_timeout=lock_timeout).repair()
    if not actions and not remaining:
        click.echo(f"{index_dir}: nothing to repair, every file is intact")
        return
    for action in actions:
        click.echo(action)
    for problem in remaining:
        click.echo(f"not repaired: {problem}")
    return 1 if remaining else None


@cli.command("copy")
@click.option("--from", "source", required=True, help="The corpus to copy: an index folder or a postgresql:// URL.")
@click.option("--to", "target", required=True, help="Where to copy it: an index folder or a postgresql:// URL.")
@click.option("--replace", is_flag=True, help="Replace the takes the target already holds.")
@lock_timeout_option
@user_errors
def copy_corpus(source, target, replace, lock_timeout):
    """Copy a corpus between an index folder and a PostgreSQL database, vectors included (nothing is embedded)."""
    from indexer.postgres.copy import copy_corpus as copy

    click.echo(str(copy(source, target, replace=replace, lock_timeout=lock_timeout)))
