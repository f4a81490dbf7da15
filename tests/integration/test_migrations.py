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
