"""The PostgreSQL schema of a corpus, created and migrated by numbered migrations.

``takes_schema_version`` holds the migrations applied. ``migrate`` applies the
missing ones in order, each in its own transaction, under an advisory lock so
two processes starting at once never run the same migration twice; running it
again changes nothing. Readers never migrate (a read-only role cannot): they
check the version and say what to run.

The HNSW index is not here: its column type carries the model's dimension,
which the first write learns (``ensure_vector_index``).
"""

from __future__ import annotations

# Advisory lock keys, fixed so that every process of every version agrees.
# (Two int4 keys: the first names takes, the second the purpose.)
LOCK_NAMESPACE = 0x74616B65  # "take"
MIGRATION_LOCK = 1
WRITER_LOCK = 2

# FTS5's unicode61 tokenizer splits on every ASCII punctuation mark, where
# PostgreSQL's parser keeps URLs, hosts, hyphenated words and version numbers
# whole: blanking the punctuation first gives both stores the same words, the
# same document lengths and so the same BM25. The porter stemmer is the one
# FTS5's porter tokenizer runs; no stop words (FTS5 has none either).
_PUNCTUATION = "!\"#$%&''()*+,-./:;<=>?@[\\]^_`{|}~"

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "takes, their text and vectors, the corpus row, the embedding cache",
        f"""
CREATE TEXT SEARCH DICTIONARY takes_porter (TEMPLATE = snowball, Language = porter);
CREATE TEXT SEARCH CONFIGURATION takes_porter (COPY = english);
ALTER TEXT SEARCH CONFIGURATION takes_porter
    ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, hword_part, hword_asciipart, hword_numpart,
        int, uint, float, sfloat, version
    WITH takes_porter;

-- The words of a text as the lexical side indexes them (see _PUNCTUATION).
CREATE FUNCTION takes_document(body text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_tsvector('takes_porter'::regconfig,
                       translate(body, '{_PUNCTUATION}', repeat(' ', {len(_PUNCTUATION) - 1})));

-- How many words a document holds: BM25's document length.
CREATE FUNCTION takes_document_length(document tsvector) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (SELECT coalesce(sum(coalesce(array_length(positions, 1), 1)), 0)::integer FROM unnest(document));

-- The corpus: one row, updated by every write; its generation is what readers poll.
CREATE TABLE takes_corpus (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model text NOT NULL,
    dim integer NOT NULL CHECK (dim > 0),
    backend text NOT NULL,
    generation bigint NOT NULL,
    count bigint NOT NULL,
    -- Words in the live takes: BM25's average document length is this / count.
    total_length bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Rows are never changed in place: a removal records the generation that
-- removed the row, so a reader of generation G sees the rows added by G and
-- not removed by G while later generations are written.
CREATE TABLE takes (
    row_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL,
    text text NOT NULL,
    author text,
    handle text,
    date text,
    thread_id text NOT NULL,
    position integer NOT NULL,
    thread_size integer,
    url text,
    source text NOT NULL,
    text_key text NOT NULL,
    added_generation bigint NOT NULL,
    removed_generation bigint,
    document tsvector GENERATED ALWAYS AS (takes_document(text)) STORED,
    length integer GENERATED ALWAYS AS (takes_document_length(takes_document(text))) STORED,
    -- float32 as embedded (exact inner products, lossless copies); the HNSW
    -- index holds half-precision copies (ensure_vector_index).
    embedding vector NOT NULL
);
CREATE UNIQUE INDEX takes_live_id ON takes (id) WHERE removed_generation IS NULL;
CREATE INDEX takes_live_text_key ON takes (text_key) WHERE removed_generation IS NULL;
CREATE INDEX takes_thread ON takes (thread_id, position);
CREATE INDEX takes_removed ON takes (removed_generation) WHERE removed_generation IS NOT NULL;
CREATE INDEX takes_document_index ON takes USING gin (document);

-- Vectors by (model, text hash): re-embedding known text is free.
CREATE TABLE takes_embedding_cache (
    model text NOT NULL,
    text_hash text NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (model, text_hash)
);
""",
    ),
    (
        2,
        "postings: each take's words with their counts, for BM25 without reading whole documents",
        """
-- BM25 over the tsvector alone unnests every matching document: 1 to 5 s a
-- query at 100k takes when a word is common (measured, docs/PERFORMANCE.md).
-- One row per (word, take) with its count and the take's length is an
-- inverted index like FTS5's: a query reads only its words' postings.
-- Rows are immutable; a take's removal is read from takes (few rows removed
-- at any time: they are purged by the next write but one).
CREATE TABLE takes_postings (
    lexeme text NOT NULL,
    row_id bigint NOT NULL,
    tf integer NOT NULL,
    length integer NOT NULL,
    added_generation bigint NOT NULL
);
INSERT INTO takes_postings
    SELECT u.lexeme, t.row_id, coalesce(array_length(u.positions, 1), 1), t.length, t.added_generation
    FROM takes t, unnest(t.document) AS u;
CREATE UNIQUE INDEX takes_postings_lexeme ON takes_postings (lexeme, row_id) INCLUDE (tf, length, added_generation);
CREATE INDEX takes_postings_row ON takes_postings (row_id);
""",
    ),
    (
        3,
        "token vectors: each take's, kept at indexing for late interaction",
        """
-- The take's token vectors as the model made them, int8 with a scale per
-- token and a checksum (indexer/token_vectors.py, the same bytes as the
-- embedded store's): late interaction reads them instead of running the
-- model for every candidate. NULL for takes written before: computed at
-- query time. Adding a nullable column rewrites no row.
ALTER TABLE takes ADD COLUMN token_vectors bytea;
ALTER TABLE takes_embedding_cache ADD COLUMN token_vectors bytea;
""",
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS takes_schema_version (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def schema_version(connection) -> int:
    """The highest migration applied, 0 for a database takes has never written."""
    exists = connection.execute("SELECT to_regclass('takes_schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return connection.execute("SELECT coalesce(max(version), 0) FROM takes_schema_version").fetchone()[0]


def migrate(connection) -> list[int]:
    """Apply the missing migrations in order; returns the versions applied (none when current).

    ``connection`` must not be in a transaction. Each migration commits with
    its version row, so a crash between two leaves a consistent, older schema.
    """
    applied = []
    if schema_version(connection) >= LATEST_VERSION:
        # Nothing to do, and no DDL: a role without CREATE rights gets this far.
        return applied
    with connection.transaction():
        # The extension first: a role that may not create it finds it installed by a DBA.
        installed = connection.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if installed is None:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for version, description, script in MIGRATIONS:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, MIGRATION_LOCK))
            connection.execute(_VERSION_TABLE)
            done = connection.execute("SELECT 1 FROM takes_schema_version WHERE version = %s", (version,)).fetchone()
            if done:
                continue
            connection.execute(script)
            connection.execute(
                "INSERT INTO takes_schema_version (version, description) VALUES (%s, %s)", (version, description)
            )
            applied.append(version)
    return applied


def vector_index_name(dim: int) -> str:
    return f"takes_embedding_hnsw_{dim}"


def ensure_vector_index(connection, dim: int) -> None:
    """Create the HNSW index for ``dim``-dimensional vectors if missing; drop those of other dimensions.

    Half precision halves the index (what must sit in memory for speed) and
    measured the same recall and nDCG as full precision (docs/PERFORMANCE.md);
    ranking reads exact inner products from the float32 column. Partial on the
    dimension: the rows of a replaced model may still be there until purged.
    """
    name = vector_index_name(dim)
    existing = [
        row[0]
        for row in connection.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'takes' AND indexname LIKE 'takes_embedding_hnsw_%'"
        )
    ]
    for other in existing:
        if other != name:
            connection.execute(f'DROP INDEX IF EXISTS "{other}"')
    if name not in existing:
        connection.execute(
            f'CREATE INDEX "{name}" ON takes USING hnsw ((embedding::halfvec({int(dim)})) halfvec_ip_ops) '
            f"WITH (m = 16, ef_construction = 64) WHERE vector_dims(embedding) = {int(dim)}"
        )
