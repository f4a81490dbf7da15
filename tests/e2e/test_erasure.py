"""Erasure by design (crypto-shredding), end to end with real processes: a ``liudong serve``
subprocess on its own PostgreSQL database and its own embedded nats-server (JetStream file
store in this test's folder).

A borrower with a profile asks for a book with a phone number (in the contact and the note),
the lender sees it live on the WebSocket and over HTTP; the borrower is forgotten
(``DELETE /v1/me``); then every projection is rebuilt, the logs are replayed, and exported
in every format (contact details included: the worst case) and shown; and then every row of
every table of the database (``row::text``: bytea as hex too) and every file under the data
folder, the exports, the command outputs, the server's log and the NATS store dir is searched
for the phone number's bytes (and the WeChat id, nickname and avatar URL): 0 hits. Before the
erasure the same search finds the phone (the search can fail)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api.bootstrap.db import migrate
from api.bootstrap.embedded import EmbeddedNats
from domain.reader import FORGOTTEN_NICKNAME
from tests.conftest import wait_until
from tests.e2e.nodes import ROOT, Node
from tests.e2e.realtime_helpers import Ws, auth
from tests.e2e.test_multinode import _start, _wait_ready

pytestmark = pytest.mark.slow

PHONE = "13955501234"
WECHAT_ID = "wx_erase_me_0427"
NICKNAME = "借书的王小明"
AVATAR = "https://img.example/wang-xiaoming.png"
SECRETS = {
    "phone": PHONE.encode(),
    "phone (hex)": PHONE.encode().hex().encode(),
    "wechat id": WECHAT_ID.encode(),
    "nickname": NICKNAME.encode(),
    "nickname (\\u escaped)": NICKNAME.encode("unicode_escape"),
    "avatar url": AVATAR.encode(),
}


@dataclass
class World:
    database_url: str
    nats_dir: Path
    tmp: Path
    node: Node
    env: dict[str, str]
    runs: int = 0

    def cli(self, *args: str) -> str:
        """Run ``liudong ARGS`` as its own process; its output is kept as a file too."""
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, (
            args,
            done.returncode,
            done.stdout[-2000:],
            done.stderr[-3000:],
        )  # noqa: E501
        text = done.stdout.decode() + done.stderr.decode()
        (self.tmp / "outputs").mkdir(exist_ok=True)
        self.runs += 1
        name = re.sub(r"[^A-Za-z0-9]+", "_", " ".join(args[:3]))[:60]
        (self.tmp / "outputs" / f"{self.runs:02d}-{name}.txt").write_text(text)
        return text


@pytest.fixture(scope="module")
def world(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("erasure")
    name = f"liudong_erasure_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    nats = EmbeddedNats(tmp / "nats-home")
    node = None
    try:
        migrate(url)
        nats_url = nats.start()
        node = _start("node", url, nats_url, tmp)
        _wait_ready(node)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "NATS_URL": nats_url,
            "LIUDONG_ENV": "test",
            "LIUDONG_DATA_DIR": str(tmp / "node"),
        }
        yield World(url, nats.dir, tmp, node, env)
    finally:
        if node is not None:
            node.stop()
        nats.stop()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def database_hits(database_url: str, where: dict[str, int] | None = None) -> dict[str, int]:
    """Per secret, how many times the rows of every table (every schema but the catalogs)
    hold it; ``where`` gets the hits per table."""
    hits = dict.fromkeys(SECRETS, 0)
    where = {} if where is None else where
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert len(tables) > 10, tables
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            for (row,) in conn.execute(query):
                data = row.encode()
                for label, secret in SECRETS.items():
                    found = data.count(secret)
                    hits[label] += found
                    if found:
                        where[f"{schema}.{table}"] = where.get(f"{schema}.{table}", 0) + found
    return hits


def file_hits(*folders: Path) -> tuple[dict[str, int], int]:
    """Per secret, its occurrences in every file under ``folders``; and how many files."""
    hits = dict.fromkeys(SECRETS, 0)
    files = 0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                files += 1
                data = path.read_bytes()
                for label, secret in SECRETS.items():
                    hits[label] += data.count(secret)
    return hits, files


async def test_a_forgotten_reader_leaves_no_byte_of_their_phone_anywhere(world: World) -> None:
    url = world.node.url
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def login(name: str) -> tuple[str, dict[str, Any]]:
            r = await http.post("/v1/auth/login", json={"code": f"dev:{name}"})
            assert r.status_code == 200, r.text
            return r.json()["token"], r.json()["reader"]

        lender_token, lender = await login(f"lender{uuid.uuid4().hex[:6]}")
        borrower_name = f"borrower{uuid.uuid4().hex[:6]}"
        borrower_token, borrower = await login(borrower_name)
        r = await http.patch(
            "/v1/me",
            json={"nickname": NICKNAME, "avatar_url": AVATAR},
            headers=auth(borrower_token),
        )
        assert r.status_code == 200, r.text
        r = await http.post(
            "/v1/books",
            json={"isbn": "9787020002207", "title": "红楼梦"},
            headers=auth(lender_token),
        )
        assert r.status_code == 201, r.text
        book = r.json()

        lender_ws = await Ws.open(url, lender_token)
        try:
            await lender_ws.recv_type("hello")
            r = await http.post(
                f"/v1/books/{book['id']}/loans",
                json={
                    "note": f"周末方便，电话 {PHONE}",
                    "contact": {"wechat_id": WECHAT_ID, "phone": PHONE},
                },
                headers={**auth(borrower_token), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 201, r.text
            loan = r.json()
            # live, the lender's socket gets the request with the contact (read from the
            # inbox: JetStream carried it without its personal fields)
            pushed = await lender_ws.recv_until(
                lambda f: f.get("type") == "event" and f.get("kind") == "loan.requested"
            )
            assert pushed["data"]["contact"] == {"wechat_id": WECHAT_ID, "phone": PHONE}
            assert pushed["data"]["borrower"]["nickname"] == NICKNAME
        finally:
            await lender_ws.close()
        r = await http.post(
            f"/v1/loans/{loan['id']}/approve",
            headers={**auth(lender_token), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 200, r.text
        assert r.json()["contact"]["phone"] == PHONE  # the lender's stored response has it
        r = await http.get(f"/v1/loans/{loan['id']}", headers=auth(lender_token))
        assert r.json()["contact"]["phone"] == PHONE

        before = database_hits(world.database_url)
        assert before["phone"] > 0 and before["nickname"] > 0, before  # the search finds it
        # JetStream's file store holds the note's chat message (the fan-out of every item)
        wait_until(lambda: file_hits(world.nats_dir)[0]["phone"] > 0)

        borrower_ws = await Ws.open(url, borrower_token)
        await borrower_ws.recv_type("hello")
        r = await http.delete("/v1/me", headers=auth(borrower_token))
        assert r.status_code == 204, r.text
        code, _reason = await borrower_ws.closed()
        assert code == 4401  # every session ends, its sockets too
        r = await http.get("/v1/me", headers=auth(borrower_token))
        assert r.status_code == 401, r.text
        r = await http.post("/v1/auth/login", json={"code": f"dev:{borrower_name}"})
        assert (r.status_code, r.json()["code"]) == (403, "reader_forgotten"), r.text

        # the lender now sees a neutral reader, without note or contact
        shown = (await http.get(f"/v1/loans/{loan['id']}", headers=auth(lender_token))).json()
        assert shown["contact"] is None and shown["note"] == ""
        assert shown["borrower"] == {
            "id": borrower["id"],
            "nickname": FORGOTTEN_NICKNAME,
            "avatar_url": "",
        }

        async def inbox_neutral() -> bool:
            r = await http.get("/v1/inbox", headers=auth(lender_token))
            items = [i for i in r.json()["items"] if i["data"].get("loan_id") == loan["id"]]
            return bool(items) and all(
                i["data"]["borrower"]["nickname"] == FORGOTTEN_NICKNAME
                and i["data"].get("contact") is None
                and not i["data"].get("note")
                for i in items
            )

        for _ in range(200):  # the inbox may lag the shelf the response waited for
            if await inbox_neutral():
                break
            await asyncio.sleep(0.05)
        assert await inbox_neutral()

    # every projection rebuilt, the logs replayed, exported in every format, shown
    for projection in ("shelf", "inbox", "rooms"):
        world.cli("projections", "rebuild", projection)
    until = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    world.cli("replay", "--until", until, "--schema", "analyst_erasure", "--projection", "all")
    exports = world.tmp / "exports"
    exports.mkdir()
    for fmt in ("ndjson", "csv", "parquet"):
        for contact in (False, True):
            out = exports / f"events{'-contact' if contact else ''}.{fmt}"
            args = ["events", "export", "--format", fmt, "--out", str(out)]
            world.cli(*args, *(["--include-contact"] if contact else []))
            assert out.stat().st_size > 0
    for aggregate in (loan["id"], borrower["id"]):
        world.cli("events", "show", aggregate, "--include-contact", "--version", "1")
    ndjson = (exports / "events-contact.ndjson").read_text()
    assert "Reader.Forgotten" in ndjson and '"contact":null' in ndjson

    # the API after the rebuild still shows the neutral reader
    with httpx.Client(base_url=url, timeout=30) as http2:
        shown = http2.get(f"/v1/loans/{loan['id']}", headers=auth(lender_token)).json()
        assert shown["borrower"]["nickname"] == FORGOTTEN_NICKNAME and shown["contact"] is None

    world.node.stop()  # the server's log and JetStream's files are complete
    tables: dict[str, int] = {}
    in_database = database_hits(world.database_url, tables)
    in_files, files = file_hits(world.tmp, world.nats_dir)
    print(
        f"\nerasure: phone bytes found after erasure: database {in_database['phone']}, "
        f"files {in_files['phone']} ({files} files searched, incl. {world.nats_dir}); "
        f"before erasure the database held it {before['phone']} times"
    )
    assert in_database == dict.fromkeys(SECRETS, 0), (in_database, tables)
    assert in_files == dict.fromkeys(SECRETS, 0), in_files
    assert files > 10  # the exports, outputs, the server log, the JetStream store
