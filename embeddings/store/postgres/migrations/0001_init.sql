-- citebot's PostgreSQL schema, version 1. Applied in one transaction by PostgresStore on start.
-- Every table is scoped by library_id: one database serves many libraries (one per Discord server).
-- Passage and sentence ids are numbered per library (libraries.next_*_id), like the local store's
-- SQLite AUTOINCREMENT, so the same ingests give the same ids in both stores and `migrate` can keep
-- them. Vectors are untyped `vector` columns: libraries may use models of different dimensions;
-- each library gets its own partial HNSW indexes, typed by a cast (see postgres.py).

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE libraries (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    spec jsonb,                      -- IndexSpec; NULL until the library is created
    dim integer,                     -- spec.dim, kept as a column for the index predicates
    generation bigint NOT NULL DEFAULT 0,
    next_passage_id bigint NOT NULL DEFAULT 1,
    next_sentence_id bigint NOT NULL DEFAULT 1,
    passage_count bigint NOT NULL DEFAULT 0,   -- BM25 statistics, kept by each write
    total_length bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE articles (
    library_id integer NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
    id text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,   -- insertion order, for "oldest first"
    key text NOT NULL,
    title text NOT NULL,
    byline text,
    date text,
    url text,
    source text,
    content_hash text NOT NULL,
    text text NOT NULL,
    paragraphs jsonb NOT NULL,
    passage_count integer NOT NULL,
    added_at text NOT NULL,
    PRIMARY KEY (library_id, id),
    UNIQUE (library_id, key)
);
CREATE INDEX articles_hash ON articles (library_id, content_hash, seq);
CREATE INDEX articles_order ON articles (library_id, added_at, seq);

CREATE TABLE passages (
    library_id integer NOT NULL,
    id bigint NOT NULL,
    article_id text NOT NULL,
    ordinal integer NOT NULL,
    paragraph integer NOT NULL,
    start integer NOT NULL,
    "end" integer NOT NULL,
    text text NOT NULL,
    length integer NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (library_id, id),
    FOREIGN KEY (library_id, article_id) REFERENCES articles (library_id, id) ON DELETE CASCADE
);
CREATE INDEX passages_article ON passages (library_id, article_id, ordinal);

CREATE TABLE sentences (
    library_id integer NOT NULL,
    id bigint NOT NULL,
    passage_id bigint NOT NULL,
    start integer NOT NULL,
    "end" integer NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (library_id, id),
    FOREIGN KEY (library_id, passage_id) REFERENCES passages (library_id, id) ON DELETE CASCADE
);
CREATE INDEX sentences_passage ON sentences (library_id, passage_id, id);

CREATE TABLE postings (
    library_id integer NOT NULL,
    term text NOT NULL,
    passage_id bigint NOT NULL,
    tf integer NOT NULL,
    length integer NOT NULL,          -- the passage's analysed length, copied to spare a join
    PRIMARY KEY (library_id, term, passage_id),
    FOREIGN KEY (library_id, passage_id) REFERENCES passages (library_id, id) ON DELETE CASCADE
);
CREATE INDEX postings_passage ON postings (library_id, passage_id);

CREATE TABLE feedback (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    library_id integer NOT NULL REFERENCES libraries (id) ON DELETE CASCADE,
    question text NOT NULL,
    passage_id bigint,
    article_id text,
    vote smallint NOT NULL,
    "user" text NOT NULL,
    created_at text NOT NULL,
    extra jsonb NOT NULL
);
CREATE INDEX feedback_library ON feedback (library_id, id);

CREATE TABLE cache (
    library_id integer NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
    article_id text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (library_id, kind, key),
    FOREIGN KEY (library_id, article_id) REFERENCES articles (library_id, id) ON DELETE CASCADE
);
CREATE INDEX cache_article ON cache (library_id, article_id);
