"""The shelf read model: readers, books and loans as the mini-program lists them.

Written only by ``ShelfProjection`` (from the Library log); read only through
``ShelfQueries`` (views in schema ``shelf``). No read touches an aggregate.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from projections.framework import Cursor, Projection

DDL = """
CREATE TABLE {schema}.readers (
    id uuid PRIMARY KEY,
    nickname text NOT NULL,
    avatar_url text NOT NULL DEFAULT '',
    registered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE {schema}.books (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    isbn text NOT NULL,
    title text NOT NULL,
    author text NOT NULL DEFAULT '',
    publisher text NOT NULL DEFAULT '',
    tags text[] NOT NULL DEFAULT '{{}}',
    cover_url text NOT NULL DEFAULT '',
    summary text NOT NULL DEFAULT '',
    status text NOT NULL,
    loan_id uuid,
    borrower_id uuid,
    published_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    pub_seq bigint NOT NULL UNIQUE,
    version integer NOT NULL
);
CREATE INDEX ON {schema}.books (owner_id, pub_seq DESC);
CREATE INDEX ON {schema}.books (isbn);
CREATE INDEX ON {schema}.books USING gin (tags);
CREATE INDEX ON {schema}.books (borrower_id) WHERE borrower_id IS NOT NULL;
CREATE TABLE {schema}.loans (
    id uuid PRIMARY KEY,
    book_id uuid NOT NULL,
    borrower_id uuid NOT NULL,
    lender_id uuid NOT NULL,
    status text NOT NULL,
    note text NOT NULL DEFAULT '',
    contact jsonb,
    decline_reason text,
    requested_at timestamptz NOT NULL,
    approved_at timestamptz,
    declined_at timestamptz,
    cancelled_at timestamptz,
    return_started_at timestamptz,
    returned_at timestamptz,
    updated_at timestamptz NOT NULL,
    seq bigint NOT NULL UNIQUE,
    version integer NOT NULL
);
CREATE INDEX ON {schema}.loans (borrower_id, seq DESC);
CREATE INDEX ON {schema}.loans (lender_id, seq DESC);
CREATE INDEX ON {schema}.loans (book_id);
"""

_LOAN_TIMESTAMP = {
    "Loan.Approved": ("approved", "approved_at"),
    "Loan.Declined": ("declined", "declined_at"),
    "Loan.Cancelled": ("cancelled", "cancelled_at"),
    "Loan.ReturnStarted": ("returning", "return_started_at"),
    "Loan.ReturnConfirmed": ("returned", "returned_at"),
}


class ShelfProjection(Projection):
    """Library log → ``readers``, ``books``, ``loans``."""

    name = "shelf"
    sources = ("library",)
    ddl = DDL
    tables = ("readers", "books", "loans")

    def __init__(self) -> None:
        self._handlers: dict[str, Callable[..., None]] = {
            "Reader.Registered": self._registered,
            "Reader.ProfileChanged": self._profile_changed,
            "Book.Published": self._published,
            "Book.DetailsRevised": self._revised,
            "Book.Withdrawn": self._book_status("withdrawn"),
            "Book.Relisted": self._book_status("available"),
            "Book.Lent": self._lent,
            "Book.Returned": self._returned,
            "Loan.Requested": self._requested,
        }
        for name, (status, column) in _LOAN_TIMESTAMP.items():
            self._handlers[name] = self._loan_transition(status, column)

    def apply(
        self, cur: Cursor, schema: sql.Identifier, source: str, position: int, event: Any
    ) -> None:
        handler = self._handlers.get(type(event).__qualname__)
        if handler is not None:
            handler(cur, schema, position, event)

    # readers

    def _registered(self, cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.readers (id, nickname, avatar_url, registered_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
            ).format(s),
            (e.originator_id, e.nickname, e.avatar_url, e.timestamp, e.timestamp),
        )

    def _profile_changed(self, cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "UPDATE {}.readers SET nickname = %s, avatar_url = %s, updated_at = %s "
                "WHERE id = %s"
            ).format(s),
            (e.nickname, e.avatar_url, e.timestamp, e.originator_id),
        )

    # books

    def _published(self, cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.books (id, owner_id, isbn, title, author, publisher, tags, "
                "cover_url, summary, status, published_at, updated_at, pub_seq, version) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'available', %s, %s, %s, %s)"
            ).format(s),
            (
                e.originator_id, e.owner_id, e.isbn, e.title, e.author, e.publisher,
                list(e.tags), e.cover_url, e.summary, e.timestamp, e.timestamp, pos,
                e.originator_version,
            ),
        )  # fmt: skip

    def _revised(self, cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
        allowed = ("title", "author", "publisher", "tags", "cover_url", "summary")
        changes = {k: v for k, v in e.changes.items() if k in allowed}
        if not changes:
            return
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(k)) for k in changes
        )
        cur.execute(
            sql.SQL("UPDATE {}.books SET {}, updated_at = %s, version = %s WHERE id = %s").format(
                s, assignments
            ),
            (*changes.values(), e.timestamp, e.originator_version, e.originator_id),
        )

    @staticmethod
    def _book_status(status: str) -> Callable[..., None]:
        def handle(cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
            cur.execute(
                sql.SQL(
                    "UPDATE {}.books SET status = %s, updated_at = %s, version = %s WHERE id = %s"
                ).format(s),
                (status, e.timestamp, e.originator_version, e.originator_id),
            )

        return handle

    def _lent(self, cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "UPDATE {}.books SET status = 'on_loan', loan_id = %s, borrower_id = %s, "
                "updated_at = %s, version = %s WHERE id = %s"
            ).format(s),
            (e.loan_id, e.borrower_id, e.timestamp, e.originator_version, e.originator_id),
        )

    def _returned(self, cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "UPDATE {}.books SET status = 'available', loan_id = NULL, borrower_id = NULL, "
                "updated_at = %s, version = %s WHERE id = %s"
            ).format(s),
            (e.timestamp, e.originator_version, e.originator_id),
        )

    # loans

    def _requested(self, cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {}.loans (id, book_id, borrower_id, lender_id, status, note, "
                "contact, requested_at, updated_at, seq, version) "
                "VALUES (%s, %s, %s, %s, 'requested', %s, %s, %s, %s, %s, %s)"
            ).format(s),
            (
                e.originator_id, e.book_id, e.borrower_id, e.lender_id, e.note,
                Jsonb(e.contact) if e.contact else None, e.timestamp, e.timestamp, pos,
                e.originator_version,
            ),
        )  # fmt: skip

    @staticmethod
    def _loan_transition(status: str, column: str) -> Callable[..., None]:
        def handle(cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
            extra = sql.SQL("")
            params: tuple[Any, ...] = ()
            if status == "declined":
                extra = sql.SQL(", decline_reason = %s")
                params = (getattr(e, "reason", "") or None,)
            cur.execute(
                sql.SQL(
                    "UPDATE {}.loans SET status = %s, {} = %s, updated_at = %s, version = %s{} "
                    "WHERE id = %s"
                ).format(s, sql.Identifier(column), extra),
                (status, e.timestamp, e.timestamp, e.originator_version, *params,
                 e.originator_id),
            )  # fmt: skip

        return handle


# -- queries ------------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    """A page cursor that this server did not issue."""


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(f"s:{value}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Raises ``InvalidCursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = raw.split(":", 1)
        if prefix != "s":
            raise ValueError(prefix)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not one this server issued") from exc


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

    def reader(self, reader_id: UUID) -> dict[str, Any] | None:
        return self._one(
            "SELECT id, nickname, avatar_url FROM shelf.readers WHERE id = %s", (reader_id,)
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
