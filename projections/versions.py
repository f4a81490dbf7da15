"""Versions of a read model, each in its own PostgreSQL schema (blue/green).

Each *version* of a projection's tables lives in its own schema (``shelf_v1``,
``shelf_v2`` …); the registry table ``projection_versions`` names the active one, and views
in a schema named after the projection (``shelf.books`` → ``shelf_v1.books``) are what
queries read, so a rebuild can fill a new version while the old keeps serving, then switch
atomically (``switch_to``: registry and views change in one transaction). Each version has
its own tracking rows (``projection_tracking``: one position per log it follows).

Rebuilds (``projections.ops``) create the next version (``create_version``, without its
``deferred_indexes``), fill it through the runner's ``catch_up(schema=...)`` without side
effects, create the deferred indexes, then switch under the live version's tracking-row
locks (``projections.runner``). The advisory-lock keys of a projection derive from
``lock_key``: the runner's (one active runner per projection), ``+ 1`` for registry changes
(``ensure_active_version``), ``+ 2`` for a rebuild (``projections.ops``).
"""

from __future__ import annotations

import zlib
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from projections.read_model import ReadModelProjection


def lock_key(projection: str) -> int:
    """The advisory-lock key of a projection (stable across processes)."""
    return zlib.crc32(f"liudong.projection.{projection}".encode()) - 2**31


def schema_for(projection: str, version: int) -> str:
    return f"{projection}_v{version}"


def active_schema(conn: psycopg.Connection[Any], projection: str) -> str | None:
    row = conn.execute(
        "SELECT schema_name FROM projection_versions WHERE projection = %s AND active",
        (projection,),
    ).fetchone()
    if row is None:
        return None
    return str(row["schema_name"] if isinstance(row, dict) else row[0])


def _ddl_statements(projection: ReadModelProjection) -> list[tuple[str | None, str]]:
    """``ddl`` split into statements: ``(index name or None, statement)``."""
    statements = []
    for statement in projection.ddl.split(";"):
        if not statement.strip():
            continue
        words = statement.split()
        name = None
        if [w.upper() for w in words[:5]] == ["CREATE", "INDEX", "IF", "NOT", "EXISTS"]:
            name = words[5]
        statements.append((name, statement))
    return statements


def _execute_ddl(conn: psycopg.Connection[Any], statement: str, schema: str) -> None:
    conn.execute(sql.SQL(statement.replace("{schema}", "{0}")).format(sql.Identifier(schema)))


def create_version(
    conn: psycopg.Connection[Any],
    projection: ReadModelProjection,
    *,
    activate: bool,
    defer_indexes: bool = False,
) -> str:
    """Create the next version's schema and tables (in the caller's transaction).

    ``defer_indexes``: leave out the projection's ``deferred_indexes`` (a rebuild creates
    them with ``create_deferred_indexes`` once the version is filled). Returns the new
    schema name."""
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 AS v FROM projection_versions WHERE projection=%s",
        (projection.name,),
    ).fetchone()
    version = int(row["v"] if isinstance(row, dict) else row[0])  # type: ignore[index]
    schema = schema_for(projection.name, version)
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    if defer_indexes and projection.deferred_indexes:
        deferred = set(projection.deferred_indexes)
        for name, statement in _ddl_statements(projection):
            if name not in deferred:
                _execute_ddl(conn, statement, schema)
    else:
        _execute_ddl(conn, projection.ddl, schema)
    conn.execute(
        "INSERT INTO projection_versions (projection, version, schema_name, active) "
        "VALUES (%s, %s, %s, false)",
        (projection.name, version, schema),
    )
    for source in projection.sources:
        conn.execute(
            "INSERT INTO projection_tracking (schema_name, source, position) VALUES (%s, %s, 0)",
            (schema, source),
        )
    if activate:
        switch_to(conn, projection, schema)
    return schema


def create_deferred_indexes(
    conn: psycopg.Connection[Any], projection: ReadModelProjection, schema: str
) -> None:
    """Create the ``deferred_indexes`` of ``schema`` that do not exist yet."""
    deferred = set(projection.deferred_indexes)
    for name, statement in _ddl_statements(projection):
        if name is not None and name in deferred:
            _execute_ddl(conn, statement, schema)


def switch_to(conn: psycopg.Connection[Any], projection: ReadModelProjection, schema: str) -> None:
    """Make ``schema`` the active version: registry and views change in the caller's
    transaction, so readers see either the old or the new version, never a mix."""
    # the old row first: the one-active unique index is checked row by row, not at the end
    # of the statement, so a single UPDATE that met the new row first would fail
    conn.execute(
        "UPDATE projection_versions SET active = false "
        "WHERE projection = %s AND active AND schema_name <> %s",
        (projection.name, schema),
    )
    conn.execute(
        "UPDATE projection_versions SET active = true WHERE projection = %s AND schema_name = %s",
        (projection.name, schema),
    )
    view_schema = sql.Identifier(projection.name)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(view_schema))
    for table in projection.tables:
        conn.execute(
            sql.SQL("DROP VIEW IF EXISTS {}.{}").format(view_schema, sql.Identifier(table))
        )
        conn.execute(
            sql.SQL("CREATE VIEW {}.{} AS SELECT * FROM {}.{}").format(
                view_schema, sql.Identifier(table), sql.Identifier(schema), sql.Identifier(table)
            )
        )


def ensure_active_version(database_url: str, projection: ReadModelProjection) -> str:
    """The active schema of ``projection``, creating version 1 on first use."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(projection.name) + 1,))
        schema = active_schema(conn, projection.name)
        if schema is None:
            schema = create_version(conn, projection, activate=True)
        return schema
