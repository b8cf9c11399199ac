"""The shared store: PostgreSQL with pgvector (``pip install 'takes[postgres]'``).

Imported only when a database URL is given: the embedded store needs no driver.
"""

from indexer.postgres.connection import DatabaseEmpty, DatabaseUnavailable, is_database_url, redact
from indexer.postgres.store import PostgresStore

__all__ = ["DatabaseEmpty", "DatabaseUnavailable", "PostgresStore", "is_database_url", "redact"]
