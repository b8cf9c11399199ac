"""The project's own failures: one base class, a few named subclasses.

The CLI prints ``str(error)`` on one line and exits non-zero; the API maps each
class to a 4xx status. Messages are written for the person who has to act.
"""

from __future__ import annotations

from pathlib import Path

from embeddings.base import EmbeddingError, ProjectError  # noqa: F401 - one import for every project error


class TakesError(ProjectError):
    """Base class for every failure of the index or a query that the user can act on.

    ``ProjectError`` (embeddings/base.py) is the root of both this and the
    model's ``EmbeddingError``: front ends catch ``ProjectError``.
    """


class IndexNotFound(TakesError):
    """No index has been built in the directory."""

    def __init__(self, index_dir: Path | str):
        self.index_dir = Path(index_dir)
        super().__init__(
            f"no index in {self.index_dir}: build one with `takes index` "
            f"(or point --index-dir / TAKES_INDEX_DIR at an existing index)"
        )


class ModelMismatch(TakesError):
    """The index was built by a different model (or dimension) than the one asked for."""

    def __init__(self, index_model: str, index_dim: int, model: str, dim: int | None = None):
        self.index_model, self.index_dim, self.model, self.dim = index_model, index_dim, model, dim
        asked = f"{model!r}" + (f" (dim {dim})" if dim is not None else "")
        super().__init__(
            f"index was built with model {index_model!r} (dim {index_dim}) but {asked} was "
            f"requested: search with --model {index_model!r}, or re-embed with "
            f"`takes rebuild --model {model}`"
        )


class IndexCorrupt(TakesError):
    """The files of an index disagree with each other, with the manifest or with their checksums."""


class IndexLocked(TakesError):
    """Another writer holds the index lock."""


class IndexConflict(IndexLocked):
    """Another writer committed while this one was preparing its generation; nothing was changed."""


class NotAnIndex(TakesError):
    """The folder holds files that are not a takes index: nothing is written there."""


class IndexReadOnly(TakesError):
    """The index can be searched but not changed (read-only mount or no write permission)."""


class IndexWriteFailed(TakesError):
    """A write could not finish (disk full, I/O error); the previous generation is intact."""


class DiskFull(IndexWriteFailed):
    """No space left on the index's device; nothing was changed."""


class ParseError(TakesError):
    """An input file is not in the expected format; names the file and line."""

    def __init__(self, source: str | Path, line: int | None, problem: str):
        self.source, self.line, self.problem = str(source), line, problem
        where = f"{self.source}:{line}" if line is not None else self.source
        super().__init__(f"{where}: {problem}")


class InvalidQuery(TakesError):
    """A query or search parameter is outside what the search accepts."""


class TakeNotFound(TakesError):
    """No take (or thread) has the requested id."""


__all__ = [name for name, value in globals().items() if isinstance(value, type) and issubclass(value, ProjectError)]
