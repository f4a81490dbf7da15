"""Set-wise pages for projections: load the rows a page touches, fold the page's events into
them in memory, write them back with a few statements.

A projection that supports it returns a ``Page`` from ``ReadModelProjection.fold_page``; the
runner then calls, in order:

1. ``page.load(conn)``: read the rows the page needs that it does not know yet (a few
   ``SELECT``s, one round trip);
2. ``page.fold()``: apply every event to those rows in memory, with exactly the effect the
   per-event ``apply`` has (same rows, same failures: an event that ``apply`` would reject
   raises here too, and the runner then finds it event by event);
3. ``page.statements()``: the writes, as ``(query, params)`` with the rows already encoded.

``carry``: the page before, of the same log and version, when the runner overlaps pages (it
writes one page while it loads and folds the next, ``ReadModelRunner._pipelined``): the
rows that page knew are taken from it (its final state, newer than the table's while it is
being written), the others are read from the table, where the pages before it are
committed. A ``cumulative`` table remembers every row of the pages before (up to
``CARRY_LIMIT`` rows in all), so a rebuild rarely reads back what it wrote.

A page changes the row dicts it took from the page before in place: that page's writes were
encoded when it was folded, and nothing reads its rows afterwards but the pages after it.

A ``Rows`` holds one table's rows of a page, keyed by ``key(value)`` (a UUID's 128-bit
integer: hashing a ``UUID`` runs Python code, an ``int`` hashes in C):

- ``want(key, value)`` asks for a row: taken from the carried page if it has it, else
  loaded by ``load_by(conn, column)`` (``SELECT`` by an array of values, one index probe a
  value however many there are and whatever the statistics of a fresh version say);
- ``insert(key, row)`` adds a row the page creates (``DuplicateRow`` if the key is known:
  what the per-event ``INSERT`` would have hit as a unique violation);
- ``change(key)`` returns a row to modify in place (``None`` if unknown, like an
  ``UPDATE`` that matches nothing) and remembers that an existing row changed;
- ``statements(schema)``: a binary ``COPY`` of the new rows (the cheapest insert for the
  server: two to three times cheaper than ``INSERT … SELECT FROM json_to_recordset``, which
  a few rows use: it is pipelined with the other statements, a ``COPY`` is not), one
  ``UPDATE … FROM json_to_recordset(%s)`` for the changed ones (rows as one JSON document
  encoded by msgspec: UUIDs and datetimes as strings, which PostgreSQL casts back exactly,
  timestamps to the microsecond).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Json, Jsonb, set_json_dumps

_encode = msgspec.json.Encoder().encode


class Copy(NamedTuple):
    """``COPY table (columns) FROM STDIN (FORMAT BINARY)`` of ``rows`` (value tuples)."""

    query: sql.Composed
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]


Statement = tuple[sql.Composable | str, tuple[Any, ...]] | Copy

COPY_MIN_ROWS = 500
"""Fewer new rows than this go in an ``INSERT … FROM json_to_recordset`` (pipelined with
the page's other statements) rather than a ``COPY``."""

CARRY_PAGES = 8
"""Pages carried one after the other before a fresh start: each page keeps the one before
(and its events) alive, so this bounds the memory of the chain. (Dropping each page as
soon as the next has what it needs costs more: the allocator then returns and takes back
the same memory page after page.)"""

CARRY_LIMIT = 100_000
"""Rows remembered across overlapped pages (up to about 3 kB each with their values: some
300 MB) before the runner waits for the page being written and starts afresh from the
tables."""
"""A write of a page: ``(query, params)`` or a ``Copy``."""


def execute_all(cur: psycopg.Cursor[Any], statements: Sequence[Statement]) -> None:
    """Run ``statements`` in order: the ``(query, params)`` ones between two ``COPY``s in
    pipeline mode (one round trip for all of them)."""
    batch: list[Statement] = []

    def flush() -> None:
        if batch:
            with cur.connection.pipeline():
                for statement in batch:
                    execute(cur, statement)
            batch.clear()

    for statement in statements:
        if isinstance(statement, Copy):
            flush()
            execute(cur, statement)
        else:
            batch.append(statement)
    flush()


def execute(cur: psycopg.Cursor[Any], statement: Statement) -> None:
    """Run one ``Statement`` (not in pipeline mode: a ``COPY`` cannot be)."""
    if isinstance(statement, Copy):
        set_json_dumps(_encode, context=cur)  # jsonb values: UUIDs and datetimes as strings
        with cur.copy(statement.query) as copy:
            copy.set_types(list(statement.types))
            write = copy.write_row
            for row in statement.rows:
                write(row)
    else:
        query, params = statement
        cur.execute(query, params)  # type: ignore[arg-type]


def key(value: Any) -> Any:
    """The fold's dictionary key for ``value`` (module docstring)."""
    return value.int if type(value) is UUID else value


def _same(data: bytes) -> bytes:
    return data


def as_json(value: Any) -> Json:
    """A ``json`` parameter encoded now by msgspec (later changes to ``value`` do not
    matter)."""
    return Json(_encode(value), dumps=_same)


def as_jsonb(value: Any) -> Jsonb:
    """A ``jsonb`` value (a parameter, or a ``Copy`` row's) encoded now by msgspec."""
    return Jsonb(_encode(value), dumps=_same)


class DuplicateRow(Exception):
    """The page inserts a row whose key exists (a unique violation, event by event)."""


class Table:
    """The shape of one table of a projection: ``columns`` maps every column to its SQL
    type; ``key`` names the key columns; ``mutable`` the columns an update may change (all
    the others by default)."""

    def __init__(
        self,
        name: str,
        columns: Mapping[str, str],
        key: Sequence[str] = ("id",),
        mutable: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.columns = dict(columns)
        self.key = tuple(key)
        self.mutable = (
            tuple(mutable)
            if mutable is not None
            else tuple(c for c in self.columns if c not in self.key)
        )
        self.types = tuple(self.columns.values())
        self._statements: dict[tuple[str, str], sql.Composed] = {}

    def key_of(self, row: Mapping[str, Any]) -> Any:
        if len(self.key) == 1:
            return key(row[self.key[0]])
        return tuple(key(row[k]) for k in self.key)

    def _cached(self, kind: str, schema: sql.Identifier, build: Any) -> sql.Composed:
        cache_key = (kind, schema.as_string(None))
        statement = self._statements.get(cache_key)
        if statement is None:
            statement = self._statements[cache_key] = build()
        return statement

    def select_by(self, schema: sql.Identifier, column: str) -> sql.Composed:
        """``SELECT`` the rows whose ``column`` is one of the values of the JSON array
        ``%s``: one index probe a value (a lateral subquery the planner cannot flatten)."""
        return self._cached(
            "select " + column,
            schema,
            lambda: sql.SQL(
                "SELECT t.* FROM json_array_elements_text(%s::json) AS k(v) CROSS JOIN LATERAL "
                "(SELECT {} FROM {}.{} t WHERE t.{} = k.v::{} OFFSET 0) t"
            ).format(
                sql.SQL(", ").join(map(sql.Identifier, self.columns)),
                schema,
                sql.Identifier(self.name),
                sql.Identifier(column),
                sql.SQL(self.columns[column]),
            ),
        )

    def _recordset(self, columns: Sequence[str]) -> sql.Composed:
        return sql.SQL("json_to_recordset(%s::json) AS s({})").format(
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(self.columns[c]))
                for c in columns
            )
        )

    def insert_sql(self, schema: sql.Identifier) -> sql.Composed:
        def build() -> sql.Composed:
            names = sql.SQL(", ").join(map(sql.Identifier, self.columns))
            return sql.SQL("INSERT INTO {}.{} ({}) SELECT {} FROM {}").format(
                schema, sql.Identifier(self.name), names, names, self._recordset(list(self.columns))
            )

        return self._cached("insert", schema, build)

    def copy_sql(self, schema: sql.Identifier) -> sql.Composed:
        return self._cached(
            "copy",
            schema,
            lambda: sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT BINARY)").format(
                schema,
                sql.Identifier(self.name),
                sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            ),
        )

    def update_sql(
        self, schema: sql.Identifier, columns: Sequence[str] | None = None
    ) -> sql.Composed:
        """``UPDATE`` of ``columns`` (default: every ``mutable`` one) from the JSON array
        ``%s`` of rows (their key columns and those ``columns``)."""
        changed = tuple(columns) if columns is not None else self.mutable

        def build() -> sql.Composed:
            return sql.SQL("UPDATE {}.{} t SET {} FROM {} WHERE {}").format(
                schema,
                sql.Identifier(self.name),
                sql.SQL(", ").join(
                    sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in changed
                ),
                self._recordset([*self.key, *changed]),
                sql.SQL(" AND ").join(
                    sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in self.key
                ),
            )

        return self._cached("update " + ",".join(changed), schema, build)


class Rows:
    """One table's rows touched by a page (module docstring)."""

    def __init__(
        self, table: Table, carry: Rows | None = None, *, cumulative: bool = False
    ) -> None:
        self.table = table
        self.rows: dict[Any, dict[str, Any]] = {}
        self.new: dict[Any, None] = {}
        self.dirty: dict[Any, None] = {}
        self.cumulative = cumulative
        self.carried: dict[Any, dict[str, Any]]
        if carry is None:
            self.carried = {}
        elif cumulative:
            self.carried = carry.carried  # every row the pages before knew (shared)
        else:
            self.carried = carry.rows  # the rows the page before knew
        self.wanted: dict[Any, Any] = {}
        self.changed_columns: tuple[str, ...] | None = None
        """The only columns this page's events change in existing rows, when the page
        knows them (``None``: any ``mutable`` column): its ``UPDATE`` then sets (and its
        JSON carries) those alone. Sound because every page writes the columns its own
        events changed, in log order."""

    def remember(self) -> None:
        """After the fold: the page's rows join the rows later pages may take (for a
        ``cumulative`` table; else only the next page takes them, from ``rows``)."""
        if self.cumulative:
            self.carried.update(self.rows)

    # -- reading ----------------------------------------------------------------------------

    def want(self, k: Any, value: Any) -> None:
        """Ask for the row of key ``k`` (``value`` is its key column's value)."""
        if k in self.rows or k in self.wanted:
            return
        row = self.carried.get(k)
        if row is not None:
            self.rows[k] = row  # shared: the page that had it is done with it
        else:
            self.wanted[k] = value

    def want_all(self, wanted: Mapping[Any, Any]) -> None:
        """``want(k, value)`` for each item of ``wanted``."""
        rows, carried, pending = self.rows, self.carried, self.wanted
        for k, value in wanted.items():
            if k in rows or k in pending:
                continue
            row = carried.get(k)
            if row is not None:
                rows[k] = row
            else:
                pending[k] = value

    def load_by(self, conn: psycopg.Connection[Any], schema: sql.Identifier, column: str) -> Any:
        """Send the ``SELECT`` of the wanted rows (by ``column``); returns the cursor whose
        rows ``loaded`` takes (``None`` if nothing is wanted)."""
        if not self.wanted:
            return None
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(self.table.select_by(schema, column), (as_json(list(self.wanted.values())),))
        self.wanted = {}
        return cur

    def loaded(self, rows: Iterable[Mapping[str, Any]] | Any) -> None:
        """Add rows read from the table: a key already known keeps its current row, and
        the carried page's row (newer than the stored one) wins over the row read; ``rows``
        may be a cursor from ``load_by`` (or ``None``)."""
        if rows is None:
            return
        if isinstance(rows, psycopg.Cursor):
            cursor, rows = rows, rows.fetchall()
            cursor.close()
        key_of = self.table.key_of
        known = self.rows
        carried = self.carried
        for row in rows:
            k = key_of(row)
            if k not in known:
                newer = carried.get(k)
                known[k] = dict(row) if newer is None else newer

    # -- folding ----------------------------------------------------------------------------

    def get(self, k: Any) -> dict[str, Any] | None:
        return self.rows.get(k)

    def __contains__(self, k: Any) -> bool:
        return k in self.rows

    def insert(self, k: Any, row: dict[str, Any]) -> None:
        if k in self.rows:
            raise DuplicateRow(f"{self.table.name}: {k} exists")
        self.rows[k] = row
        self.new[k] = None

    def change(self, k: Any) -> dict[str, Any] | None:
        row = self.rows.get(k)
        if row is not None and k not in self.new:
            self.dirty[k] = None
        return row

    # -- writing ----------------------------------------------------------------------------

    def statements(self, schema: sql.Identifier) -> list[Statement]:
        """The ``COPY`` of the new rows and the ``UPDATE`` of the changed ones (their
        values taken now)."""
        rows = self.rows
        out: list[Statement] = []
        if 0 < len(self.new) < COPY_MIN_ROWS:  # a COPY costs round trips of its own
            out.append((self.table.insert_sql(schema), (as_json([rows[k] for k in self.new]),)))
        elif self.new:
            columns = tuple(self.table.columns)
            out.append(
                Copy(
                    self.table.copy_sql(schema),
                    self.table.types,
                    [tuple(map(rows[k].__getitem__, columns)) for k in self.new],
                )
            )
        if self.dirty:
            updated = self.changed_columns or None  # (none known: all of them)
            if updated is None:
                changed = [rows[k] for k in self.dirty]
            else:
                keep = (*self.table.key, *updated)
                changed = [{c: rows[k][c] for c in keep} for k in self.dirty]
            out.append((self.table.update_sql(schema, updated), (as_json(changed),)))
        return out


class Page(ABC):
    """One page of one log folded in memory (module docstring)."""

    def __init__(
        self, schema: sql.Identifier, source: str, events: Sequence[Any], carry: Page | None
    ) -> None:
        self.schema = schema
        self.source = source
        self.events = events
        self.carry = carry

    @abstractmethod
    def load(self, conn: psycopg.Connection[Any]) -> None:
        """Read what the page needs and does not know (see the module docstring)."""

    @abstractmethod
    def fold(self) -> None:
        """Apply the events in memory; raise where ``apply`` would fail."""

    @abstractmethod
    def statements(self) -> list[Statement]:
        """The page's writes (encoded now)."""

    def remember(self) -> None:  # noqa: B027
        """After the fold, when a later page will carry this one: make its rows known to
        later pages (``Rows.remember``)."""

    def remembered(self) -> int:
        """How many rows later pages may take from this one and those before it (the
        runner starts afresh above ``CARRY_LIMIT``)."""
        return 0


__all__ = [
    "CARRY_LIMIT",
    "CARRY_PAGES",
    "COPY_MIN_ROWS",
    "Copy",
    "DuplicateRow",
    "Page",
    "Rows",
    "Statement",
    "Table",
    "as_json",
    "as_jsonb",
    "execute",
    "execute_all",
    "key",
]
