"""``liudong demo seed`` against the real PostgreSQL: the summary it prints agrees with what
the shelf read model shows afterwards (books, owners, loan statuses)."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner

from api.adapters.catalog import CatalogEntry, read_catalog_csv
from api.adapters.wechat import DevLoginProvider
from api.bootstrap.db import make_pool
from api.cli import main
from domain.reader import reader_id_for
from projections.shelf import ShelfQueries

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DOUBAN_FILE = SHARED_DATA / "douban" / "douban_books.csv"


def isbn13(body: str) -> str:
    """``body`` (12 digits) with its ISBN-13 check digit."""
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def demo_readers(n: int) -> set[UUID]:
    return {reader_id_for(DevLoginProvider.open_id_for(f"demo-{i}")) for i in range(n)}


@pytest.fixture(scope="module")
def shelf(database_url: str) -> Iterator[ShelfQueries]:
    pool = make_pool(database_url, size=2)
    yield ShelfQueries(pool)
    pool.close()


def seed(database_url: str, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        ["demo", "seed", *args, "--no-progress"],
        env={"DATABASE_URL": database_url, "LIUDONG_RUN_PROJECTIONS": None},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("books published:") for line in lines)
    assert any("books/s" in line and "commands/s" in line for line in lines)
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def shelf_books(shelf: ShelfQueries, isbns: set[str], owners: set[UUID]) -> list[dict[str, Any]]:
    books = []
    for isbn in isbns:
        rows, cursor = shelf.search_books(isbn=isbn, include_withdrawn=True, limit=100)
        assert cursor is None
        books += [r for r in rows if r["owner_id"] in owners]
    return books


def shelf_loans(
    shelf: ShelfQueries, owners: set[UUID], book_ids: set[UUID]
) -> list[dict[str, Any]]:
    loans = []
    for owner in owners:
        cursor = None
        while True:
            rows, cursor = shelf.loans_of(owner, role="lender", cursor=cursor, limit=100)
            loans += [r for r in rows if r["book_id"] in book_ids]
            if cursor is None:
                break
    return loans


def check_consistent(
    summary: dict[str, Any], books: list[dict[str, Any]], loans: list[dict[str, Any]], readers: int
) -> None:
    """The summary's arithmetic, and the shelf showing exactly what the summary says."""
    s = summary
    assert s["readers"] == s["readers_created"] + s["readers_existing"] == readers
    answered = s["loans_approved"] + s["loans_declined"] + s["loans_cancelled"]
    assert s["loans_requested"] == answered + s["loans_pending"]
    assert s["loans_returned"] + s["loans_returning"] <= s["loans_approved"]
    assert s["books_on_loan"] == s["loans_approved"] - s["loans_returned"]
    assert s["commands_total"] == (
        readers
        + s["books_published"]
        + s["loans_requested"]
        + answered
        + s["loans_returned"]
        + s["loans_returning"]
        + s["loans_returned"]
    )
    assert s["commands_refused"] == {}
    assert s["rejected_rows"] == sum(s["rejected"].values())
    assert s["books_per_second"] > 0 and s["commands_per_second"] > 0
    assert s["projection_catchup_seconds"] is not None and s["projection_catchup_seconds"] >= 0
    assert s["elapsed_seconds"] >= s["commands_seconds"] > 0

    owners = demo_readers(readers)
    assert len(books) == s["books_published"]
    assert {b["owner_id"] for b in books} <= owners
    assert all(b["owner_nickname"].startswith("demo-") for b in books)
    statuses = Counter(b["status"] for b in books)
    assert statuses["on_loan"] == s["books_on_loan"]
    assert statuses["available"] == s["books_published"] - s["books_on_loan"]
    for b in books:
        if b["status"] == "on_loan":
            assert b["borrower_id"] in owners and b["borrower_id"] != b["owner_id"]

    assert len(loans) == s["loans_requested"]
    expected = {
        "requested": s["loans_pending"],
        "approved": s["loans_approved"] - s["loans_returned"] - s["loans_returning"],
        "returning": s["loans_returning"],
        "returned": s["loans_returned"],
        "declined": s["loans_declined"],
        "cancelled": s["loans_cancelled"],
    }
    assert Counter(loan["status"] for loan in loans) == {k: v for k, v in expected.items() if v}
    for loan in loans:
        assert loan["borrower_id"] in owners and loan["borrower_id"] != loan["lender_id"]
    lent = {b["loan_id"] for b in books if b["status"] == "on_loan"}
    assert lent == {loan["id"] for loan in loans if loan["status"] in ("approved", "returning")}


def test_seed_generic_csv(database_url: str, shelf: ShelfQueries, tmp_path: Path) -> None:
    isbns = [isbn13(f"97910990{i:04d}") for i in range(27)]
    rows = [
        [isbn, f"测试书 {i}", f"作者 {i % 4}", "流动出版社", "2020", "小说|测试"]
        for i, isbn in enumerate(isbns[:25])
    ]
    rows.append([isbns[3], "测试书 3", "作者 3", "流动出版社", "2020", "另一个标签"])  # a copy
    rows.append([isbns[25], "T" * 301, "", "", "", ""])  # cut to 300, as POST /v1/books does
    bad = isbns[26][:-1] + str((int(isbns[26][-1]) + 1) % 10)
    rows.append([bad, "校验位错误", "", "", "", ""])
    rows.append(["9780306406158", "Also wrong checksum", "", "", "", ""])
    rows.append(["", "没有 ISBN", "", "", "", ""])
    assert len(rows) == 30
    path = tmp_path / "books.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["isbn", "title", "author", "publisher", "published_year", "tags"])
        writer.writerows(rows)

    summary = seed(
        database_url, str(path), "--readers", "5", "--borrow-ratio", "0.5", "--seed", "7"
    )

    assert summary["format"] == "csv"
    assert summary["rows_read"] == 30
    assert summary["readers"] == 5
    # one fill-in rule with the API (api.adapters.catalog.publish): a catalog title over
    # 300 characters is cut, not refused
    assert summary["books_published"] == 27
    assert summary["rejected"] == {"invalid isbn checksum": 2, "missing isbn": 1}
    assert summary["rejected_rows"] == 3
    assert summary["catalog_isbns"] == 26
    assert summary["loans_requested"] == 14
    books = shelf_books(shelf, set(isbns[:26]), demo_readers(5))
    loans = shelf_loans(shelf, demo_readers(5), {b["id"] for b in books})
    check_consistent(summary, books, loans, readers=5)
    # ISBN only was sent: every field came from the catalog (tags of both rows merged)
    copies = [b for b in books if b["isbn"] == isbns[3]]
    assert len(copies) == 2
    for b in copies:
        assert (b["title"], b["author"], b["publisher"]) == ("测试书 3", "作者 3", "流动出版社")
        assert b["tags"] == ["小说", "测试", "另一个标签"]


@pytest.mark.skipif(not DOUBAN_FILE.exists(), reason="../shared/data/douban is not present")
def test_seed_300_douban_books(database_url: str, shelf: ShelfQueries) -> None:
    started = time.monotonic()
    summary = seed(database_url, str(DOUBAN_FILE), "--readers", "30", "--books", "300")
    assert time.monotonic() - started < 30

    with DOUBAN_FILE.open(newline="", encoding="utf-8-sig") as f:
        entries = [e for e in read_catalog_csv(f) if isinstance(e, CatalogEntry)][:300]
    assert summary["format"] == "douban"
    assert summary["books_published"] == 300
    assert summary["rejected_rows"] == 0
    assert summary["catalog_isbns"] == len({e.isbn for e in entries})
    assert summary["loans_requested"] == 90  # --borrow-ratio 0.3
    owners = demo_readers(30)
    books = shelf_books(shelf, {e.isbn for e in entries}, owners)
    loans = shelf_loans(shelf, owners, {b["id"] for b in books})
    check_consistent(summary, books, loans, readers=30)
    assert len({b["owner_id"] for b in books}) > 20  # spread over the readers
    titles = {e.isbn: e.title for e in entries}
    assert all(b["title"] == titles[b["isbn"]] for b in books)
