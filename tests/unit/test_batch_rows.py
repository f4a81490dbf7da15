"""``projections.batch.Rows``: a page's UPDATE of existing rows carries every mutable
column, or only the ``changed_columns`` the page names (its JSON too)."""

from __future__ import annotations

import json

from psycopg import sql

from projections.batch import Rows, Table

BOOKS = Table("books", {"id": "bigint", "title": "text", "status": "text", "version": "integer"})
SCHEMA = sql.Identifier("shelf_v1")


def _update(rows: Rows) -> tuple[str, list[dict[str, object]]]:
    (statement,) = rows.statements(SCHEMA)
    assert isinstance(statement, tuple)
    query, (param,) = statement
    assert isinstance(query, sql.Composed)
    return query.as_string(None), json.loads(param.obj)


def _changed_book(columns: tuple[str, ...] | None) -> Rows:
    rows = Rows(BOOKS)
    rows.loaded([{"id": 1, "title": "三体", "status": "available", "version": 1}])
    rows.changed_columns = columns
    row = rows.change(1)
    assert row is not None
    row["status"] = "on_loan"
    row["version"] = 2
    return rows


def test_every_mutable_column_by_default() -> None:
    query, params = _update(_changed_book(None))
    assert '"title" = s."title"' in query
    assert params == [{"id": 1, "title": "三体", "status": "on_loan", "version": 2}]


def test_only_the_changed_columns_when_the_page_names_them() -> None:
    query, params = _update(_changed_book(("status", "version")))
    assert '"title"' not in query
    assert '"status" = s."status", "version" = s."version"' in query
    assert params == [{"id": 1, "status": "on_loan", "version": 2}]


def test_no_column_named_means_all_of_them() -> None:
    query, params = _update(_changed_book(()))
    assert '"title" = s."title"' in query
    assert params[0]["title"] == "三体"


def test_every_shelf_event_that_changes_a_row_names_the_columns_it_changes() -> None:
    """A folded shelf page UPDATEs only the columns its events' kinds name (``_CHANGES``): a
    kind the fold applies to existing rows but ``_CHANGES`` left out would lose its changes.
    Only the creating kinds (their rows go whole by COPY) may be absent."""
    from projections.shelf.projection import _CHANGES, _TABLE_OF

    creating = {"Reader.Registered", "Book.Published", "Loan.Requested"}
    assert set(_TABLE_OF) - creating == set(_CHANGES)
    assert all(_CHANGES[kind][0] == _TABLE_OF[kind] for kind in _CHANGES)
