"""Imports go one way: search_api -> indexer -> embeddings, and inside indexer ranking above storage.

Read with ``ast`` from the source files (nothing is imported), so a new
import in the wrong direction fails here whether or not a test runs it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Ranking must reach a corpus only through indexer.storage's interfaces.
RANKING = ("indexer/search.py", "indexer/ranking.py")
# The only places that know SQLite's files and SQL.
SQLITE_OWNERS = ("indexer/index/", "indexer/postgres/")


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth (inside functions and TYPE_CHECKING too)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            # `from indexer import index` imports the module indexer.index.
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def imports_of(module: str, modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name == module or name.startswith(f"{module}."))


@pytest.mark.parametrize("package", ["indexer", "embeddings"])
def test_the_library_imports_no_web_or_cli_framework_and_not_search_api(package):
    offending = {
        relative(path): found
        for path in sources(package)
        if (found := [name for name in imported_modules(path) if name.split(".")[0] in {"fastapi", "starlette", "click", "uvicorn", "search_api"}])
    }
    assert offending == {}


def test_embeddings_imports_nothing_from_indexer():
    offending = {relative(path): imports_of("indexer", imported_modules(path)) for path in sources("embeddings")}
    assert {path: found for path, found in offending.items() if found} == {}


@pytest.mark.parametrize("module", RANKING)
def test_ranking_knows_no_store(module):
    modules = imported_modules(REPO / module)
    assert imports_of("indexer.index", modules) == []
    assert imports_of("indexer.postgres", modules) == []
    assert [name for name in modules if name.split(".")[0] in {"sqlite3", "faiss", "psycopg"}] == []


def test_only_the_stores_import_sqlite3():
    importers = [
        relative(path)
        for package in ("indexer", "embeddings", "search_api")
        for path in sources(package)
        if "sqlite3" in imported_modules(path)
        and not relative(path).startswith(SQLITE_OWNERS)
    ]
    assert importers == []


def test_the_front_ends_catch_database_failures_by_the_store_s_names():
    # search_api answers a damaged page or a full disk met by SQLite with one
    # line (507/503, or the CLI's message) through indexer.index.failures.DATABASE_ERRORS,
    # without naming a database driver itself.
    drivers = {
        relative(path): found
        for path in sources("search_api")
        if (found := [name for name in imported_modules(path) if name.split(".")[0] in {"sqlite3", "psycopg", "faiss"}])
    }
    assert drivers == {}


def test_the_check_sees_an_import_in_the_wrong_direction(tmp_path):
    # The checks above are only as good as imported_modules: it must see
    # imports inside functions and under TYPE_CHECKING.
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from indexer.index.reader import take\n"
        "def late():\n    import sqlite3\n    from indexer import index\n"
    )
    modules = imported_modules(source)
    assert {"sqlite3", "indexer.index.reader", "indexer.index"} <= modules
