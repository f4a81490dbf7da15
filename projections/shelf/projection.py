"""The shelf read model's tables (DDL) and ``ShelfProjection``, which writes them from the
Library log, event by event or folded a page at a time (``ShelfPage``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from domain.loan import ENDED_STATUSES
from domain.reader import FORGOTTEN_NICKNAME
from projections.batch import Page, Rows, Statement, Table
from projections.read_model import Cursor, ReadModelProjection
from projections.records import Record, event_type

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
CREATE INDEX IF NOT EXISTS books_owner_idx ON {schema}.books (owner_id, pub_seq DESC);
CREATE INDEX IF NOT EXISTS books_isbn_idx ON {schema}.books (isbn);
CREATE INDEX IF NOT EXISTS books_tags_idx ON {schema}.books USING gin (tags);
CREATE INDEX IF NOT EXISTS books_borrower_idx ON {schema}.books (borrower_id)
    WHERE borrower_id IS NOT NULL;
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
CREATE INDEX IF NOT EXISTS loans_borrower_idx ON {schema}.loans (borrower_id, seq DESC);
CREATE INDEX IF NOT EXISTS loans_lender_idx ON {schema}.loans (lender_id, seq DESC);
CREATE INDEX IF NOT EXISTS loans_book_idx ON {schema}.loans (book_id);
"""

_READER_COLUMNS = {
    "id": "uuid",
    "nickname": "text",
    "avatar_url": "text",
    "registered_at": "timestamptz",
    "updated_at": "timestamptz",
}
_BOOK_COLUMNS_TYPES = {
    "id": "uuid",
    "owner_id": "uuid",
    "isbn": "text",
    "title": "text",
    "author": "text",
    "publisher": "text",
    "tags": "text[]",
    "cover_url": "text",
    "summary": "text",
    "status": "text",
    "loan_id": "uuid",
    "borrower_id": "uuid",
    "published_at": "timestamptz",
    "updated_at": "timestamptz",
    "pub_seq": "bigint",
    "version": "integer",
}
_LOAN_COLUMNS_TYPES = {
    "id": "uuid",
    "book_id": "uuid",
    "borrower_id": "uuid",
    "lender_id": "uuid",
    "status": "text",
    "note": "text",
    "contact": "jsonb",
    "decline_reason": "text",
    "requested_at": "timestamptz",
    "approved_at": "timestamptz",
    "declined_at": "timestamptz",
    "cancelled_at": "timestamptz",
    "return_started_at": "timestamptz",
    "returned_at": "timestamptz",
    "updated_at": "timestamptz",
    "seq": "bigint",
    "version": "integer",
}
_REVISABLE = ("title", "author", "publisher", "tags", "cover_url", "summary")
_BOOK_STATUS = {"Book.Withdrawn": "withdrawn", "Book.Relisted": "available"}

ENDED = frozenset(ENDED_STATUSES)

_LOAN_TIMESTAMP = {
    "Loan.Approved": ("approved", "approved_at"),
    "Loan.Declined": ("declined", "declined_at"),
    "Loan.Cancelled": ("cancelled", "cancelled_at"),
    "Loan.ReturnStarted": ("returning", "return_started_at"),
    "Loan.ReturnConfirmed": ("returned", "returned_at"),
}


class ShelfProjection(ReadModelProjection):
    """Library log → ``readers``, ``books``, ``loans``.

    Two ways to apply events, which leave the same rows: ``apply`` (one statement an
    event, for small live pages and to isolate a failing event) and ``fold_page``
    (``ShelfPage``: a page folded in memory over the rows it touches, loaded first with one
    ``SELECT`` a table, then written back with an ``INSERT`` and an ``UPDATE`` a table)."""

    name = "shelf"
    sources = ("library",)
    ddl = DDL
    tables = ("readers", "books", "loans")
    records = True
    batch_min = 100  # below, one statement an event (pipelined) is quicker
    durable_pages = False  # a function of the Library log, no side effect (see ReadModelProjection)
    deferred_indexes = (
        "books_owner_idx",
        "books_isbn_idx",
        "books_tags_idx",
        "books_borrower_idx",
        "loans_borrower_idx",
        "loans_lender_idx",
        "loans_book_idx",
    )

    def __init__(self) -> None:
        self._handlers: dict[str, Callable[..., None]] = {
            "Reader.Registered": self._registered,
            "Reader.ProfileChanged": self._profile_changed,
            "Reader.Forgotten": self._forgotten,
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
        handler = self._handlers.get(event_type(event))
        if handler is not None:
            handler(cur, schema, position, event)

    # -- a page at once ---------------------------------------------------------------------

    def fold_page(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> ShelfPage | None:
        if any(e.type == "Reader.Forgotten" for e in events):
            return None  # rare: event by event (``apply``), and the next page starts afresh
        return ShelfPage(schema, source, events, carry)

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

    def _forgotten(self, cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
        """Erasure: the neutral nickname, no avatar; the note and contact of the reader's
        loan requests are gone (their events now read so too: ``domain.personal``)."""
        cur.execute(
            sql.SQL(
                "UPDATE {}.readers SET nickname = %s, avatar_url = '', updated_at = %s "
                "WHERE id = %s"
            ).format(s),
            (FORGOTTEN_NICKNAME, e.timestamp, e.originator_id),
        )
        cur.execute(
            sql.SQL("UPDATE {}.loans SET note = '', contact = NULL WHERE borrower_id = %s").format(
                s
            ),
            (e.originator_id,),
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
                e.originator_id,
                e.owner_id,
                e.isbn,
                e.title,
                e.author,
                e.publisher,
                list(e.tags),
                e.cover_url,
                e.summary,
                e.timestamp,
                e.timestamp,
                pos,
                e.originator_version,
            ),
        )

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
                e.originator_id,
                e.book_id,
                e.borrower_id,
                e.lender_id,
                e.note,
                Jsonb(e.contact) if e.contact else None,
                e.timestamp,
                e.timestamp,
                pos,
                e.originator_version,
            ),
        )

    @staticmethod
    def _loan_transition(status: str, column: str) -> Callable[..., None]:
        def handle(cur: Cursor, s: sql.Identifier, pos: int, e: Any) -> None:
            extra = sql.SQL("")
            params: tuple[Any, ...] = ()
            if status == "declined":
                extra = sql.SQL(", decline_reason = %s")
                params = (getattr(e, "reason", "") or None,)
            if status in ENDED:  # the lender no longer sees the borrower's contact
                extra = sql.SQL("{}, contact = NULL").format(extra)
            cur.execute(
                sql.SQL(
                    "UPDATE {}.loans SET status = %s, {} = %s, updated_at = %s, version = %s{} "
                    "WHERE id = %s"
                ).format(s, sql.Identifier(column), extra),
                (status, e.timestamp, e.timestamp, e.originator_version, *params, e.originator_id),
            )

        return handle


_type_of = attrgetter("type")
_READERS = Table("readers", _READER_COLUMNS)
_BOOKS = Table("books", _BOOK_COLUMNS_TYPES)
_LOANS = Table("loans", _LOAN_COLUMNS_TYPES)
_TABLE_OF = {
    kind: {"Reader": 0, "Book": 1, "Loan": 2}[kind.partition(".")[0]]
    for kind in (
        "Reader.Registered",
        "Reader.ProfileChanged",
        "Book.Published",
        "Book.DetailsRevised",
        *_BOOK_STATUS,
        "Book.Lent",
        "Book.Returned",
        "Loan.Requested",
        *_LOAN_TIMESTAMP,
    )
}

_CHANGES: dict[str, tuple[int, tuple[str, ...]]] = {
    # event type -> (table: 0 readers, 1 books, 2 loans; the columns ``_fold`` may change in
    # an existing row)
    "Reader.ProfileChanged": (0, ("nickname", "avatar_url", "updated_at")),
    "Book.DetailsRevised": (1, (*_REVISABLE, "updated_at", "version")),
    **{kind: (1, ("status", "updated_at", "version")) for kind in _BOOK_STATUS},
    "Book.Lent": (1, ("status", "loan_id", "borrower_id", "updated_at", "version")),
    "Book.Returned": (1, ("status", "loan_id", "borrower_id", "updated_at", "version")),
    **{
        kind: (
            2,
            (
                "status",
                column,
                "updated_at",
                "version",
                *(("decline_reason",) if status == "declined" else ()),
                *(("contact",) if status in ENDED else ()),
            ),
        )
        for kind, (status, column) in _LOAN_TIMESTAMP.items()
    },
}


def _changed_columns(table: Table, kinds: set[str], which: int) -> tuple[str, ...]:
    """The columns of ``table`` (number ``which`` in ``_CHANGES``) that events of ``kinds``
    change in existing rows, in the table's order."""
    changed = {c for kind in kinds if (t := _CHANGES.get(kind)) and t[0] == which for c in t[1]}
    return tuple(c for c in table.mutable if c in changed)


class ShelfPage(Page):
    """A page of the Library log folded over the ``readers``, ``books`` and ``loans`` rows
    it touches (``projections.batch``); the same effect as ``ShelfProjection.apply`` event
    by event."""

    def __init__(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Any
    ) -> None:
        super().__init__(schema, source, events, carry)
        self.readers = Rows(_READERS, carry.readers if carry else None, cumulative=True)
        self.books = Rows(_BOOKS, carry.books if carry else None, cumulative=True)
        self.loans = Rows(_LOANS, carry.loans if carry else None, cumulative=True)
        touched: tuple[dict[int, UUID], ...] = ({}, {}, {})
        table_of = _TABLE_OF
        for e in events:
            which = table_of.get(e.type)
            if which is not None:
                uuid = e.originator_id
                touched[which][uuid.int] = uuid
        kinds = set(map(_type_of, events))
        for which, (table, wanted) in enumerate(
            zip((self.readers, self.books, self.loans), touched, strict=True)
        ):
            table.want_all(wanted)
            # an UPDATE of the columns this page changes, not of every column
            table.changed_columns = _changed_columns(table.table, kinds, which)

    def load(self, conn: psycopg.Connection[Any]) -> None:
        tables = (self.readers, self.books, self.loans)
        with conn.pipeline():
            cursors = [t.load_by(conn, self.schema, "id") for t in tables]
        for table, cur in zip(tables, cursors, strict=True):
            table.loaded(cur)

    def fold(self) -> None:
        fold = self._fold
        readers, books, loans = self.readers, self.books, self.loans
        for e in self.events:
            fold(readers, books, loans, e)

    def statements(self) -> list[Statement]:
        return [
            *self.readers.statements(self.schema),
            *self.books.statements(self.schema),
            *self.loans.statements(self.schema),
        ]

    def remember(self) -> None:
        for table in (self.readers, self.books, self.loans):
            table.remember()

    def remembered(self) -> int:
        return len(self.readers.carried) + len(self.books.carried) + len(self.loans.carried)

    @staticmethod
    def _fold(readers: Rows, books: Rows, loans: Rows, e: Record) -> None:  # noqa: C901, PLR0912
        kind = e.type
        d = e.data
        at = e.timestamp
        uuid = e.originator_id
        key = uuid.int
        if kind == "Reader.Registered":
            if key not in readers:  # ON CONFLICT (id) DO NOTHING
                readers.insert(
                    key,
                    {
                        "id": uuid,
                        "nickname": d["nickname"],
                        "avatar_url": d["avatar_url"],
                        "registered_at": at,
                        "updated_at": at,
                    },
                )
        elif kind == "Reader.ProfileChanged":
            row = readers.change(key)
            if row is not None:
                row["nickname"] = d["nickname"]
                row["avatar_url"] = d["avatar_url"]
                row["updated_at"] = at
        elif kind == "Book.Published":
            books.insert(
                key,
                {
                    "id": uuid,
                    "owner_id": d["owner_id"],
                    "isbn": d["isbn"],
                    "title": d["title"],
                    "author": d["author"],
                    "publisher": d["publisher"],
                    "tags": list(d["tags"]),
                    "cover_url": d["cover_url"],
                    "summary": d["summary"],
                    "status": "available",
                    "loan_id": None,
                    "borrower_id": None,
                    "published_at": at,
                    "updated_at": at,
                    "pub_seq": e.position,
                    "version": e.originator_version,
                },
            )
        elif kind == "Book.DetailsRevised":
            changes = {k: v for k, v in d["changes"].items() if k in _REVISABLE}
            if changes and (row := books.change(key)) is not None:
                row.update(changes)
                row["updated_at"] = at
                row["version"] = e.originator_version
        elif kind in _BOOK_STATUS:
            if (row := books.change(key)) is not None:
                row["status"] = _BOOK_STATUS[kind]
                row["updated_at"] = at
                row["version"] = e.originator_version
        elif kind == "Book.Lent":
            if (row := books.change(key)) is not None:
                row["status"] = "on_loan"
                row["loan_id"] = d["loan_id"]
                row["borrower_id"] = d["borrower_id"]
                row["updated_at"] = at
                row["version"] = e.originator_version
        elif kind == "Book.Returned":
            if (row := books.change(key)) is not None:
                row["status"] = "available"
                row["loan_id"] = None
                row["borrower_id"] = None
                row["updated_at"] = at
                row["version"] = e.originator_version
        elif kind == "Loan.Requested":
            contact = d["contact"]
            loans.insert(
                key,
                {
                    "id": uuid,
                    "book_id": d["book_id"],
                    "borrower_id": d["borrower_id"],
                    "lender_id": d["lender_id"],
                    "status": "requested",
                    "note": d["note"],
                    "contact": contact if contact else None,
                    "decline_reason": None,
                    "requested_at": at,
                    "approved_at": None,
                    "declined_at": None,
                    "cancelled_at": None,
                    "return_started_at": None,
                    "returned_at": None,
                    "updated_at": at,
                    "seq": e.position,
                    "version": e.originator_version,
                },
            )
        elif kind in _LOAN_TIMESTAMP:  # noqa: SIM102 - one branch an event type
            if (row := loans.change(key)) is not None:
                status, column = _LOAN_TIMESTAMP[kind]
                row["status"] = status
                row[column] = at
                row["updated_at"] = at
                row["version"] = e.originator_version
                if status == "declined":
                    row["decline_reason"] = d.get("reason", "") or None
                if status in ENDED:
                    row["contact"] = None


# -- queries ------------------------------------------------------------------------------------
