import psycopg

from api.bootstrap.db import migrate, pending_migrations


def test_migrations_create_the_event_store_tables(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
            )
        }
    assert {"library_events", "chat_events", "chat_snapshots", "projection_tracking"} <= tables


def test_migrate_is_idempotent(database_url: str) -> None:
    assert pending_migrations(database_url) == []
    assert migrate(database_url) == []


def test_0013_gives_existing_read_model_versions_their_picture_column(server_url: str) -> None:
    """Versions of the inbox and rooms made before pictures get ``messages.media`` (and the
    inbox ``removed_media``), and the active ones' views show them; run twice, no harm."""
    from pathlib import Path
    from uuid import uuid4

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"liudong_test_0013_{uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    try:
        migrate(url)
        text = (Path(__file__).parents[2] / "migrations" / "0013_media_checks.sql").read_text()
        upgrade = text[text.index("DO $$") :]
        with psycopg.connect(url, autocommit=True) as conn:
            for projection in ("inbox", "rooms"):
                schema = f"{projection}_v1"
                conn.execute(f"CREATE SCHEMA {schema}")
                conn.execute(f"CREATE TABLE {schema}.messages (message_id uuid, text text)")
                conn.execute(f"CREATE SCHEMA {projection}")
                conn.execute(
                    f"CREATE VIEW {projection}.messages AS SELECT * FROM {schema}.messages"
                )
                conn.execute(
                    "INSERT INTO projection_versions (projection, version, schema_name, active) "
                    "VALUES (%s, 1, %s, true)",
                    (projection, schema),
                )
            conn.execute(upgrade)
            conn.execute(upgrade)
            for projection in ("inbox", "rooms"):
                columns = [
                    row[0]
                    for row in conn.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = %s AND table_name = 'messages' "
                        "ORDER BY ordinal_position",
                        (projection,),
                    )
                ]
                assert columns == ["message_id", "text", "media"]
            row = conn.execute("SELECT count(*) FROM inbox.removed_media").fetchone()
            assert row is not None and row[0] == 0
            media = {
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = 'media'"
                )
            }
            assert {"check_trace_id", "check_status", "removed_at", "removed_reason"} <= media
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
