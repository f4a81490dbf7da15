"""What a new user sees from the command line before anything runs: one clear line when the
configured database is not migrated, and no log chatter unless asked for (``-v``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.cli import main


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    name = f"liudong_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_serve_on_a_database_not_migrated_names_liudong_migrate(empty_database: str) -> None:
    result = CliRunner().invoke(main, ["serve"], env={"DATABASE_URL": empty_database})

    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()], (
        "one line, not a traceback"
    )
    assert "run `liudong migrate` first" in result.output and "Traceback" not in result.output

    migrated = CliRunner().invoke(main, ["migrate"], env={"DATABASE_URL": empty_database})
    assert migrated.exit_code == 0 and "applied" in migrated.output


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_commands_on_the_embedded_default_are_quiet_unless_verbose(tmp_path: Path) -> None:
    env = {"LIUDONG_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": "", "NATS_URL": ""}

    quiet = run_cli("migrate", env=env)

    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith("applied ")
    assert quiet.stderr == "", "no RuntimeDirWarning, no embedded-server INFO lines"

    verbose = run_cli("-v", "migrate", env=env)
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stdout.startswith("applied 0 migration(s)")
    assert " INFO " in verbose.stderr
