"""The group, the shared options and the one-line error handling of the ``takes`` command line.

Options fall back to the ``TAKES_*`` variables with ``Settings``' defaults
(search_api/settings.py); each command builds its ``Settings`` from them and
reaches the index only through ``Takes`` (indexer/api.py).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from search_api.settings import Settings

DEFAULTS = Settings.model_fields


def default(field: str):
    """``Settings``' default for ``field``: the option and the server cannot drift apart."""
    return DEFAULTS[field].default


_index_dir_option = click.option(
    "--index-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TAKES_INDEX_DIR",
    default=default("index_dir"),
    show_default=True,
    help="Index directory.",
)


def _remember_database_url(context: click.Context, parameter, value):
    if value:
        context.meta["takes.database_url"] = value
    return value


_database_url_option = click.option(
    "--database-url",
    envvar="TAKES_DATABASE_URL",
    default=None,
    expose_value=False,
    callback=_remember_database_url,
    help="postgresql://... : use this PostgreSQL database (pgvector) instead of --index-dir. "
    "Its password is never printed.",
)


def index_dir_option(command):
    """``--index-dir`` and ``--database-url``: where the corpus is, a folder or a database."""
    return _index_dir_option(_database_url_option(command))


def database_url_setting() -> dict:
    """``{"database_url": ...}`` when the command was given a database URL, else nothing (Settings reads the environment)."""
    context = click.get_current_context(silent=True)
    url = context.meta.get("takes.database_url") if context is not None else None
    return {"database_url": url} if url else {}


model_option = click.option(
    "--model",
    envvar="TAKES_MODEL",
    default=default("model"),
    help="sentence-transformers model name or path. Default: the index's model, "
    "or all-MiniLM-L6-v2 for a new index.",
)
backend_option = click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    envvar="TAKES_BACKEND",
    default=default("backend"),
    help="Embedding backend: onnx (int8, faster) or torch (fp32). Default: the "
    "backend that built the index, or onnx for a new index.",
)
reranker_option = click.option(
    "--reranker",
    envvar="TAKES_RERANKER",
    default=default("reranker"),
    type=click.Path(file_okay=False, path_type=Path),
    help="Re-score the top takes with this local cross-encoder folder; off by default. "
    "Slower per query: docs/PERFORMANCE.md.",
)
late_interaction_option = click.option(
    "--late-interaction/--no-late-interaction",
    envvar="TAKES_LATE_INTERACTION",
    default=default("late_interaction"),
    show_default=True,
    help="Score takes by token-level similarity with the same model too (the default ranking); "
    "--no-late-interaction: pooled vectors and BM25 only (docs/QUALITY.md).",
)
lock_timeout_option = click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    envvar="TAKES_LOCK_TIMEOUT",
    default=default("lock_timeout"),
    show_default=True,
    help="Seconds to wait for another writer to finish before giving up.",
)
server_token_option = click.option("--token", envvar="TAKES_ADMIN_TOKEN", default=None, help="The server's admin token.")


def open_index(index_dir: Path, **settings):
    """The ``Takes`` for a command: ``Settings`` (the environment) plus the command's options."""
    from search_api.settings import open_takes

    return open_takes(Settings(index_dir=index_dir, **database_url_setting(), **settings), notify=lambda line: click.echo(line, err=True))


def user_errors(command):
    """Turn the project's own errors into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from indexer.errors import ProjectError
        from indexer.index.failures import DATABASE_ERRORS, database_damaged

        try:
            return command(*args, **kwargs)
        except ProjectError as error:
            raise click.ClickException(str(error)) from None
        except DATABASE_ERRORS as error:
            if not database_damaged(error):
                raise
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


def show_environment_variables(group: click.Group) -> None:
    # Every option that falls back to a variable says which in --help,
    # including options added later: no command can forget it.
    for command in group.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                param.show_envvar = True
