"""The ``catalog_books`` table (migration ``0005_catalog``): look-ups and bulk upserts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from psycopg_pool import ConnectionPool

from api.adapters.catalog.entries import CatalogEntry, merge_by_isbn
from api.adapters.isbn import normalize_isbn

# --------------------------------------------------------------------------- database

_COLUMNS = (
    "isbn13, isbn10, title, author, publisher, published_year, language, tags, cover_url,"
    " summary, source, updated_at"
)

_LOAD_TABLE = """
CREATE TEMP TABLE catalog_books_load (
    isbn13 text, isbn10 text, title text, author text, publisher text, published_year integer,
    language text, tags text[], cover_url text, summary text, source text
) ON COMMIT DROP
"""

_LOAD_COLUMNS = (
    "isbn13, isbn10, title, author, publisher, published_year, language, tags, cover_url,"
    " summary, source"
)
_LOAD_TYPES = [
    "text",
    "text",
    "text",
    "text",
    "text",
    "int4",
    "text",
    "text[]",
    "text",
    "text",
    "text",
]

# Rows are merged by ISBN before the COPY, so no row is affected twice.
_UPSERT = f"""
INSERT INTO catalog_books ({_COLUMNS})
SELECT {_LOAD_COLUMNS}, now() FROM catalog_books_load
ON CONFLICT (isbn13) DO UPDATE SET
    isbn10 = COALESCE(EXCLUDED.isbn10, catalog_books.isbn10),
    title = EXCLUDED.title,
    author = COALESCE(EXCLUDED.author, catalog_books.author),
    publisher = COALESCE(EXCLUDED.publisher, catalog_books.publisher),
    published_year = COALESCE(EXCLUDED.published_year, catalog_books.published_year),
    language = COALESCE(EXCLUDED.language, catalog_books.language),
    tags = ARRAY(
        SELECT u.tag
        FROM unnest(catalog_books.tags || EXCLUDED.tags) WITH ORDINALITY AS u(tag, n)
        GROUP BY u.tag
        ORDER BY min(u.n)
    ),
    cover_url = COALESCE(EXCLUDED.cover_url, catalog_books.cover_url),
    summary = COALESCE(EXCLUDED.summary, catalog_books.summary),
    source = EXCLUDED.source,
    updated_at = now()
"""


def _params(e: CatalogEntry) -> tuple[Any, ...]:
    return (
        e.isbn,
        e.isbn10,
        e.title,
        e.author,
        e.publisher,
        e.published_year,
        e.language,
        list(e.tags),
        e.cover_url,
        e.summary,
        e.source,
    )


def _entry_of_row(row: dict[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        isbn=row["isbn13"],
        isbn10=row["isbn10"],
        title=row["title"],
        author=row["author"],
        publisher=row["publisher"],
        published_year=row["published_year"],
        language=row["language"],
        tags=tuple(row["tags"] or ()),
        cover_url=row["cover_url"],
        summary=row["summary"],
        source=row["source"],
        updated_at=row["updated_at"],
    )


class Catalog:
    """The ``catalog_books`` table, through a psycopg pool whose connections return dict rows
    (``api.bootstrap.db.make_pool``). Methods are synchronous; psycopg errors propagate (e.g.
    ``psycopg.errors.UndefinedTable`` when migration ``0005_catalog`` was not applied)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def lookup(self, isbn13: str) -> CatalogEntry | None:
        """The entry of an ISBN (any form ``normalize_isbn`` accepts), or ``None``.

        Raises ``InvalidIsbn`` if ``isbn13`` is not a valid ISBN."""
        key = normalize_isbn(isbn13)
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM catalog_books WHERE isbn13 = %s", (key,)
            ).fetchone()
        return None if row is None else _entry_of_row(cast(dict[str, Any], row))

    def upsert_many(self, entries: Iterable[CatalogEntry]) -> int:
        """Insert or update entries in one transaction; returns the number of distinct ISBNs
        written.

        Entries repeating an ISBN (in ``entries`` or already stored) are merged as by
        ``merge_entries``: the newer non-null fields win, tags are unioned (first-seen
        order), so importing the same file twice changes nothing but ``updated_at``.
        The rows are sent with ``COPY`` to a temporary table (dropped at commit), then
        upserted with one ``INSERT … ON CONFLICT (isbn13) DO UPDATE``."""
        merged = merge_by_isbn(entries)
        if not merged:
            return 0
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(_LOAD_TABLE)
            with cur.copy(f"COPY catalog_books_load ({_LOAD_COLUMNS}) FROM STDIN") as copy:
                copy.set_types(_LOAD_TYPES)
                for entry in merged:
                    copy.write_row(_params(entry))
            cur.execute(_UPSERT)
        return len(merged)

    def count(self) -> int:
        """Number of entries in the catalog."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT count(*) AS n FROM catalog_books").fetchone()
        return int(cast(dict[str, Any], row)["n"]) if row else 0
