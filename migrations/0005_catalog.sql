-- depends: 0003_idempotency
-- Local ISBN catalog: book metadata imported from CSV (`liudong catalog import`), used by
-- GET /v1/isbn/{isbn} and to fill the fields a client leaves out of POST /v1/books.
-- Keyed by the canonical ISBN-13 (13 digits, ISO 2108); tags of repeated rows are merged.

CREATE TABLE catalog_books (
    isbn13 text PRIMARY KEY CHECK (isbn13 ~ '^97[89][0-9]{10}$'),
    isbn10 text CHECK (isbn10 ~ '^[0-9]{9}[0-9X]$'),
    title text NOT NULL,
    author text,
    publisher text,
    published_year integer,
    language text,
    tags text[] NOT NULL DEFAULT '{}',
    cover_url text,
    summary text,
    source text NOT NULL,
    updated_at timestamptz DEFAULT now()
);
