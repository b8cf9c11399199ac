"""The shared store: a corpus in PostgreSQL with pgvector, for several servers and writers.

One database holds the takes, their text search (a ``tsvector`` column, GIN
index), their vectors (a float32 ``vector`` column, an HNSW index over half
precision copies), the embedding cache and the corpus row (model, dimension,
backend, generation, count). Schema: ``indexer/postgres/schema.py``.

Consistency is the embedded store's, by the same means: every write is one
transaction that makes the next generation; rows are never changed in place
but marked with the generation that added and the one that removed them, so a
reader that loaded generation G answers from exactly G (``visible``) while
later ones commit, and a removed take leaves text and vector search together
at the commit that removes it. A crash before the commit leaves nothing: the
server rolls the transaction back when the connection drops.

Writers exclude each other with a session advisory lock held while the writer
is open (any machine: the lock lives in the server), and each commit checks
that the generation is still the one the writer started from. A writer embeds
before it opens its transaction, so the lock on the corpus row is held for
the inserts only.

Readers poll ``current_generation`` (one primary-key read); every commit also
sends ``NOTIFY takes_generation`` for those that listen.

The password in a database URL never reaches a message: ``location`` and every
error carry the URL without it (``redact``).

Crash tests stop a writer at a named point like the embedded store's: with
``TAKES_TEST_PAUSE_AT`` set to one of ``PAUSE_POINTS`` the writer touches
``TAKES_TEST_PAUSE_FILE`` there and sleeps, so a test can ``kill -9`` it.
"""


from __future__ import annotations

import contextlib
import threading
import urllib.parse
from typing import Sequence

from indexer.models import Take
from indexer.postgres import schema
from indexer.errors import TakesError
from indexer.postgres.connection import DatabaseEmpty, DatabaseUnavailable, database_error, password, redact
from indexer.postgres.corpus import NOTIFY_CHANNEL, CorpusRow, existing_values, read_corpus
from indexer.postgres.generation import PostgresGeneration
from indexer.postgres.writer import PostgresWriter


class PostgresStore:
    """A corpus in one PostgreSQL database (``Store``); safe to share between threads."""

    def __init__(self, url: str, *, application: str = "takes", store_token_vectors: bool = True):
        # Whether writers keep each new take's token vectors (indexer/token_vectors.py).
        self.store_token_vectors = store_token_vectors
        try:
            import pgvector  # noqa: F401
            import psycopg  # noqa: F401
        except ImportError:
            raise TakesError(
                "a database URL needs the PostgreSQL driver: pip install 'takes[postgres]' (psycopg and pgvector)"
            ) from None
        self.url = url
        self.location = redact(url)
        self._secret = password(url)
        self._application = application
        self._local = threading.local()
        self._connections: list = []
        self._connections_lock = threading.Lock()

    # -- connections ----------------------------------------------------------

    def scrub(self, message: str) -> str:
        """``message`` with the password (and any URL carrying it) taken out."""
        message = message.replace(self.url, self.location)
        if self._secret:
            message = message.replace(self._secret, "***")
            quoted = urllib.parse.quote(self._secret, safe="")
            if quoted != self._secret:
                message = message.replace(quoted, "***")
        return message

    def unavailable(self, error: Exception, doing: str) -> TakesError:
        """The one-line error for a database failure met while ``doing`` something."""
        text = self.scrub(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        return database_error(error, doing, self.location, text)

    def connect(self, *, autocommit: bool = True, application: str | None = None, register: bool = True):
        """A new connection with the vector types registered (when the extension is there)."""
        import psycopg

        try:
            connection = psycopg.connect(
                self.url, autocommit=autocommit, application_name=application or self._application, connect_timeout=10
            )
        except psycopg.Error as error:
            raise self.unavailable(error, "connect to") from None
        if register:
            self._register_vector(connection)
        return connection

    @staticmethod
    def _register_vector(connection) -> bool:
        from pgvector.psycopg import register_vector

        try:
            register_vector(connection)
            return True
        except Exception:
            # No extension yet (a new database): the first writer creates it.
            if not connection.autocommit:
                connection.rollback()
            return False

    def reader(self):
        """This thread's reading connection (autocommit), opened once."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and connection.closed:
            connection = None
        if connection is None:
            connection = self.connect(register=False)
            connection.execute("SET hnsw.iterative_scan = relaxed_order")
            self._local.connection = connection
            self._local.registered = self._register_vector(connection)
            self._local.ef_search = None
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextlib.contextmanager
    def reading(self, doing: str = "read"):
        """This thread's connection, with database failures turned into one-line errors."""
        import psycopg

        try:
            yield self.reader()
        except psycopg.OperationalError as error:
            # A dropped connection: the next call opens a new one.
            self._local.connection = None
            raise self.unavailable(error, doing) from None
        except psycopg.Error as error:
            raise self.unavailable(error, doing) from None

    def set_ef_search(self, connection, value: int) -> None:
        if getattr(self._local, "ef_search", None) != value:
            connection.execute(f"SET hnsw.ef_search = {int(value)}")
            self._local.ef_search = value

    # -- Store ------------------------------------------------------------------

    def _corpus(self) -> CorpusRow | None:
        with self.reading("read the corpus in") as connection:
            if schema.schema_version(connection) == 0:
                return None
            return read_corpus(connection)

    def exists(self) -> bool:
        return self._corpus() is not None

    def committed_info(self) -> CorpusRow | None:
        """What the committed generation is, without loading it; None when nothing was written."""
        return self._corpus()

    def lookup(self) -> "PostgresGeneration":
        """The committed generation's takes (listing, stats): loading one costs a read here."""
        return self.load()

    def not_found(self) -> DatabaseEmpty:
        return DatabaseEmpty(self.location)

    def current_generation(self) -> int:
        """The committed generation (one primary-key read); 0 when empty."""
        import psycopg

        with self.reading("read the corpus in") as connection:
            try:
                row = connection.execute("SELECT generation FROM takes_corpus").fetchone()
            except psycopg.errors.UndefinedTable:
                return 0  # a database takes has not written yet
            return row[0] if row else 0

    def load(self, previous: "PostgresGeneration | None" = None) -> "PostgresGeneration":
        """The current generation, for reading; DatabaseEmpty when nothing was written."""
        with self.reading("read the corpus in") as connection:
            version = schema.schema_version(connection)
            if version > schema.LATEST_VERSION:
                raise DatabaseUnavailable(
                    f"{self.location} has schema version {version}, newer than this takes knows "
                    f"({schema.LATEST_VERSION}): upgrade takes"
                )
            info = read_corpus(connection) if version else None
        if info is None:
            raise DatabaseEmpty(self.location)
        if not getattr(self._local, "registered", False):
            # A connection opened before the first writer created the extension.
            self._local.registered = self._register_vector(self.reader())
        if previous is not None and previous.info == info:
            return previous
        return PostgresGeneration(self, info, previous)

    def writer(self, *, lock_timeout: float = 30.0) -> "PostgresWriter":
        return PostgresWriter(self, lock_timeout=lock_timeout)

    def new_takes(self, takes: Sequence[Take]) -> list[Take]:
        """The takes an add would store (a dry run: nothing is written, no lock is taken)."""
        from indexer.index.layout import first_of_each as _first_of_each, text_key

        keys = [text_key(take.text, take.author) for take in takes]
        with self.reading("read") as connection:
            if schema.schema_version(connection) == 0:
                return _first_of_each(takes, keys, set(), set())
            return _first_of_each(
                takes, keys, existing_values(connection, "id", [take.id for take in takes]), existing_values(connection, "text_key", keys)
            )

    def listen(self):
        """A connection LISTENing for new generations: ``connection.notifies()`` yields one per commit."""
        connection = self.connect()
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return connection

    def close(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"
