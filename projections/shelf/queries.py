"""``ShelfQueries``: what the API reads of the shelf (views in schema ``shelf``): search,
book and loan details, a reader's books and loans, ISBN availability."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

from projections.paging import decode_cursor, encode_cursor


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_BOOK_COLUMNS = """
    b.id, b.owner_id, b.isbn, b.title, b.author, b.publisher, b.tags, b.cover_url, b.summary,
    b.status, b.loan_id, b.borrower_id, b.published_at, b.updated_at, b.pub_seq,
    o.nickname AS owner_nickname, o.avatar_url AS owner_avatar_url,
    br.nickname AS borrower_nickname, br.avatar_url AS borrower_avatar_url
"""
_BOOK_FROM = """
    FROM shelf.books b
    LEFT JOIN shelf.readers o ON o.id = b.owner_id
    LEFT JOIN shelf.readers br ON br.id = b.borrower_id
"""
_LOAN_COLUMNS = """
    l.*, b.title AS book_title, b.isbn AS book_isbn, b.cover_url AS book_cover_url,
    b.status AS book_status,
    bo.nickname AS borrower_nickname, bo.avatar_url AS borrower_avatar_url,
    le.nickname AS lender_nickname, le.avatar_url AS lender_avatar_url
"""
_LOAN_FROM = """
    FROM shelf.loans l
    JOIN shelf.books b ON b.id = l.book_id
    LEFT JOIN shelf.readers bo ON bo.id = l.borrower_id
    LEFT JOIN shelf.readers le ON le.id = l.lender_id
"""


class ShelfQueries:
    """Reads of the shelf read model. Rows are dicts; pages are ``(rows, next_cursor)``."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def _all(self, query: str, params: Any) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            return list(conn.execute(query, params).fetchall())  # type: ignore[arg-type]

    def _one(self, query: str, params: Any) -> dict[str, Any] | None:
        rows = self._all(query, params)
        return rows[0] if rows else None

    def using_picture(self, media_id: str) -> tuple[list[dict[str, Any]], list[UUID]]:
        """``(books, readers)`` showing the uploaded picture ``media_id``: the books whose
        ``cover_url`` is its URL (``{"id", "owner_id"}``) and the readers whose avatar it is
        (``…/v1/media/<id>``, whatever the URL prefix)."""
        suffix = "%/v1/media/" + _like_pattern(media_id).strip("%")
        books = self._all(
            "SELECT id, owner_id FROM shelf.books WHERE cover_url LIKE %s ORDER BY id", (suffix,)
        )
        readers = self._all(
            "SELECT id FROM shelf.readers WHERE avatar_url LIKE %s ORDER BY id", (suffix,)
        )
        return books, [r["id"] for r in readers]

    def reader(self, reader_id: UUID) -> dict[str, Any] | None:
        return self._one(
            "SELECT id, nickname, avatar_url FROM shelf.readers WHERE id = %s", (reader_id,)
        )

    def readers_named(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        """Readers whose nickname contains ``text`` (case-insensitive), or whose id is
        ``text``; at most ``limit``, by nickname (an operator looking someone up)."""
        try:
            exact: UUID | None = UUID(text.strip())
        except ValueError:
            exact = None
        return self._all(
            "SELECT id, nickname, avatar_url FROM shelf.readers "
            "WHERE id = %s OR nickname ILIKE %s "
            "ORDER BY nickname, id LIMIT %s",
            (exact, _like_pattern(text.strip()), limit),
        )

    def book(self, book_id: UUID) -> dict[str, Any] | None:
        return self._one(f"SELECT {_BOOK_COLUMNS} {_BOOK_FROM} WHERE b.id = %s", (book_id,))

    def search_books(  # noqa: PLR0913
        self,
        *,
        q: str | None = None,
        tag: str | None = None,
        isbn: str | None = None,
        owner_id: UUID | None = None,
        borrower_id: UUID | None = None,
        available: bool | None = None,
        include_withdrawn: bool = False,
        cursor: str | None = None,
        limit: int = 20,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Books newest first. ``q`` matches a substring of title, author or ISBN
        (case-insensitive; Chinese substrings too). Raises ``InvalidCursor``."""
        where = ["true"]
        params: list[Any] = []
        if q:
            pattern = _like_pattern(q.strip())
            where.append("(b.title ILIKE %s OR b.author ILIKE %s OR b.isbn LIKE %s)")
            params += [pattern, pattern, pattern]
        if tag:
            where.append("b.tags @> ARRAY[%s]::text[]")
            params.append(tag)
        if isbn:
            where.append("b.isbn = %s")
            params.append(isbn)
        if owner_id:
            where.append("b.owner_id = %s")
            params.append(owner_id)
        if borrower_id:
            where.append("b.borrower_id = %s")
            params.append(borrower_id)
        if available is True:
            where.append("b.status = 'available'")
        elif available is False:
            where.append("b.status = 'on_loan'")
        elif not include_withdrawn:
            where.append("b.status <> 'withdrawn'")
        if cursor:
            where.append("b.pub_seq < %s")
            params.append(decode_cursor(cursor))
        params.append(limit + 1)
        rows = self._all(
            f"SELECT {_BOOK_COLUMNS} {_BOOK_FROM} WHERE {' AND '.join(where)} "
            "ORDER BY b.pub_seq DESC LIMIT %s",
            params,
        )
        next_cursor = encode_cursor(rows[limit - 1]["pub_seq"]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def availability(self, isbn: str) -> dict[str, int]:
        """``{"free": copies available now, "total": copies not withdrawn}``."""
        row = self._one(
            "SELECT count(*) FILTER (WHERE status = 'available') AS free, "
            "count(*) FILTER (WHERE status <> 'withdrawn') AS total "
            "FROM shelf.books WHERE isbn = %s",
            (isbn,),
        )
        assert row is not None
        return {"free": int(row["free"]), "total": int(row["total"])}

    def loan(self, loan_id: UUID) -> dict[str, Any] | None:
        return self._one(f"SELECT {_LOAN_COLUMNS} {_LOAN_FROM} WHERE l.id = %s", (loan_id,))

    def loans_of(
        self,
        reader_id: UUID,
        *,
        role: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Loans where the reader is borrower (``role="borrower"``), lender, or either;
        newest first. Raises ``InvalidCursor``."""
        params: list[Any] = []
        if role == "borrower":
            where = ["l.borrower_id = %s"]
            params.append(reader_id)
        elif role == "lender":
            where = ["l.lender_id = %s"]
            params.append(reader_id)
        else:
            where = ["(l.borrower_id = %s OR l.lender_id = %s)"]
            params += [reader_id, reader_id]
        if status:
            where.append("l.status = %s")
            params.append(status)
        if cursor:
            where.append("l.seq < %s")
            params.append(decode_cursor(cursor))
        params.append(limit + 1)
        rows = self._all(
            f"SELECT {_LOAN_COLUMNS} {_LOAN_FROM} WHERE {' AND '.join(where)} "
            "ORDER BY l.seq DESC LIMIT %s",
            params,
        )
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return rows[:limit], next_cursor
