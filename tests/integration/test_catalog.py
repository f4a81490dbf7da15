"""The ISBN catalog against a real PostgreSQL: CSV import of the three layouts, merging,
lookup, the ``catalog`` CLI group, and (when ``../shared/data`` exists) the real files."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg_pool import ConnectionPool

from api.adapters.catalog import (
    Catalog,
    CatalogEntry,
    CatalogImportError,
    UnknownCsvFormat,
    import_csv,
    read_catalog_csv,
)
from api.adapters.isbn import InvalidIsbn
from api.bootstrap.db import make_pool
from api.cli.catalog import catalog as catalog_group

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DOUBAN_FILE = SHARED_DATA / "douban" / "douban_books.csv"
GOODBOOKS_FILE = SHARED_DATA / "goodbooks-10k" / "books.csv"

DOUBAN_HEADER = [
    "ISBN",
    "book_name",
    "author_name",
    "press",
    "press_year",
    "pages",
    "price",
    "score",
    "number_reviewers",
    "category",
    "tag",
    "book_img",
    "introduction",
]
GOODBOOKS_HEADER = [
    "book_id",
    "goodreads_book_id",
    "best_book_id",
    "work_id",
    "books_count",
    "isbn",
    "isbn13",
    "authors",
    "original_publication_year",
    "original_title",
    "title",
    "language_code",
    "average_rating",
    "ratings_count",
    "work_ratings_count",
    "work_text_reviews_count",
    "ratings_1",
    "ratings_2",
    "ratings_3",
    "ratings_4",
    "ratings_5",
    "image_url",
    "small_image_url",
]


@pytest.fixture(scope="module")
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = make_pool(database_url, size=2, name="test-catalog")
    yield pool
    pool.close()


@pytest.fixture
def catalog(pool: ConnectionPool) -> Catalog:
    with pool.connection() as conn:
        conn.execute("TRUNCATE catalog_books")
    return Catalog(pool)


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, bom: bool = False) -> Path:
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def douban_row(
    isbn: str, title: str, *, tag: str, category: str = "文学", year: str = "2021-1", intro=""
) -> list[str]:
    return [
        isbn,
        title,
        "[德]埃里希·玛丽亚·雷马克/",
        "上海文艺出版社",
        year,
        "256",
        "49.00元",
        "9.5",
        "15884",
        category,
        tag,
        "https://img1.doubanio.com/view/subject/s/public/s33779178.jpg",
        intro,
    ]


INTRO = '第一行，带逗号, "引号" 和\n第二行\n\n“中文引号”'


@pytest.fixture
def douban_csv(tmp_path: Path) -> Path:
    rows = [
        douban_row("9787532178377", "西线无战事", tag="二战", category="文化", intro=INTRO),
        douban_row("9787020176540", "动物园长夫人", tag="二战", year="2023年2月第一版"),
        douban_row("9787532178377", "西线无战事", tag="小说", year="2021-1"),  # same ISBN
        douban_row("9787532178377", "西线无战事", tag="二战", category="文化"),  # again
        douban_row("9787532178378", "错的校验位", tag="小说"),  # bad checksum
        douban_row("", "没有书号", tag="小说"),
        douban_row("9787521709681", "", tag="二战"),  # no title
        douban_row("97875217096", "太短", tag="二战"),
    ]
    return write_csv(tmp_path / "douban.csv", DOUBAN_HEADER, rows, bom=True)


def goodbooks_row(
    isbn: str, title: str, *, year: str = "2008.0", lang: str = "eng", image: str = ""
) -> list[str]:
    values = dict.fromkeys(GOODBOOKS_HEADER, "1")
    values.update(
        isbn=isbn,
        isbn13="9.78043902348e+12",  # lossy: must never be used
        authors="Suzanne Collins, Someone Else",
        original_publication_year=year,
        original_title="",
        title=title,
        language_code=lang,
        image_url=image or "https://images.gr-assets.com/books/1447303603m/2767052.jpg",
    )
    return [values[h] for h in GOODBOOKS_HEADER]


@pytest.fixture
def goodbooks_csv(tmp_path: Path) -> Path:
    nophoto = (
        "https://s.gr-assets.com/assets/nophoto/book/111x148-bcc042a9c91a29c1d680899eff700a03.png"
    )
    rows = [
        goodbooks_row("439023483", "The Hunger Games (The Hunger Games, #1)"),  # 0439023483
        goodbooks_row("80442957X", "Hitchhiker", year="-720.0", lang="", image=nophoto),
        goodbooks_row("306406152", "Leading zero"),  # 0306406152
        goodbooks_row("", "No ISBN at all"),
        goodbooks_row("439023484", "Bad checksum after padding"),
        goodbooks_row("9780306406157", "Already thirteen", year=""),
    ]
    return write_csv(tmp_path / "books.csv", GOODBOOKS_HEADER, rows)


@pytest.fixture
def generic_csv(tmp_path: Path) -> Path:
    header = ["isbn", "title", "author", "publisher", "tags", "cover_url", "summary"]
    rows = [
        ["978-7-5321-7837-7", "西线无战事", "雷马克", "上海文艺", "小说| 战争 |小说|", "", "短"],
        ["0-8044-2957-X", "Hitchhiker", "Adams", "", "", "ftp://nope", ""],
        ["979-10-90636-07-1", "Un livre", "", "", "roman", "https://x.example/c.jpg", ""],
        ["9790306406157", "wrong", "", "", "", "", ""],  # checksum for a 979
        ["12345", "short", "", "", "", "", ""],
        ["0306406152", "  ", "", "", "", "", ""],
        ["ISBN0306406152", "letters", "", "", "", "", ""],  # label accepted
        ["03O6406152", "letter O", "", "", "", "", ""],
    ]
    return write_csv(tmp_path / "generic.csv", header, rows)


# ---------------------------------------------------------------- layouts and rejections


def test_douban_import_merges_tags_and_rejects_with_reasons(
    catalog: Catalog, douban_csv: Path
) -> None:
    summary = import_csv(douban_csv, catalog, progress=False)

    assert summary.format == "douban"
    assert summary.rows_read == 8
    assert summary.imported == 4
    assert summary.distinct_isbns == 2
    assert summary.rejected == {
        "invalid isbn checksum": 1,
        "missing isbn": 1,
        "missing title": 1,
        "invalid isbn length": 1,
    }
    # physical line numbers: the first row's introduction spans lines 2-5
    assert [(r.line, r.reason) for r in summary.samples] == [
        (9, "invalid isbn checksum"),
        (10, "missing isbn"),
        (11, "missing title"),
        (12, "invalid isbn length"),
    ]
    assert catalog.count() == 2

    entry = catalog.lookup("9787532178377")
    assert entry is not None
    assert entry.title == "西线无战事"
    assert entry.isbn10 == "7532178374"
    assert entry.tags == ("文化", "二战", "文学", "小说")  # union, first-seen order
    assert entry.author == "[德]埃里希·玛丽亚·雷马克"  # trailing "/" removed
    assert entry.publisher == "上海文艺出版社"
    assert entry.published_year == 2021
    assert entry.language == "zh"
    assert entry.source == "douban"
    assert entry.summary == INTRO.strip()  # newlines and quotes survive the CSV round trip
    assert entry.cover_url and entry.cover_url.startswith("https://img1.doubanio.com/")
    assert entry.updated_at is not None

    other = catalog.lookup("9787020176540")
    assert other is not None and other.published_year == 2023


def test_tags_merge_across_batches_and_reimports(catalog: Catalog, douban_csv: Path) -> None:
    first = import_csv(douban_csv, catalog, batch_size=1, progress=False)
    again = import_csv(douban_csv, catalog, batch_size=1, progress=False)
    assert first.imported == again.imported == 4
    assert catalog.count() == 2
    entry = catalog.lookup("9787532178377")
    assert entry is not None and entry.tags == ("文化", "二战", "文学", "小说")


def test_goodbooks_import_pads_isbns_and_ignores_isbn13_column(
    catalog: Catalog, goodbooks_csv: Path
) -> None:
    summary = import_csv(goodbooks_csv, catalog, progress=False)

    assert summary.format == "goodbooks"
    assert summary.rows_read == 6
    assert summary.imported == 4
    assert summary.rejected == {"missing isbn": 1, "invalid isbn checksum": 1}

    hunger = catalog.lookup("0439023483")
    assert hunger is not None
    assert hunger.isbn == "9780439023481"
    assert hunger.isbn10 == "0439023483"
    assert hunger.author == "Suzanne Collins, Someone Else"
    assert hunger.published_year == 2008
    assert hunger.language == "eng"
    assert hunger.tags == ()
    assert hunger.source == "goodbooks"
    assert hunger.cover_url == "https://images.gr-assets.com/books/1447303603m/2767052.jpg"

    hitchhiker = catalog.lookup("080442957X")
    assert hitchhiker is not None
    assert hitchhiker.isbn10 == "080442957X"
    assert hitchhiker.published_year == -720  # goodbooks keeps ancient works' years
    assert hitchhiker.language is None
    assert hitchhiker.cover_url is None  # Goodreads "nophoto" placeholder dropped

    assert catalog.lookup("0306406152") is not None
    # the same ISBN written as 10 then as 13 digits: one entry, the later row wins
    same = catalog.lookup("9780306406157")
    assert same is not None and same.title == "Already thirteen"
    assert same.published_year == 2008  # the later row had no year: the earlier one stays
    assert summary.distinct_isbns == 3
    assert catalog.count() == 3


def test_generic_import(catalog: Catalog, generic_csv: Path) -> None:
    summary = import_csv(generic_csv, catalog, progress=False)

    assert summary.format == "csv"
    assert summary.rows_read == 8
    assert summary.imported == 4
    assert summary.rejected == {
        "invalid isbn checksum": 1,
        "invalid isbn length": 1,
        "missing title": 1,
        "invalid isbn characters": 1,
    }

    entry = catalog.lookup("9787532178377")
    assert entry is not None
    assert entry.tags == ("小说", "战争")
    assert (entry.author, entry.publisher, entry.summary) == ("雷马克", "上海文艺", "短")
    assert entry.cover_url is None and entry.language == "zh"  # inferred from group 7
    assert entry.source == "csv"

    hitch = catalog.lookup("9780804429573")
    assert hitch is not None
    assert hitch.cover_url is None  # not an http(s) URL
    assert hitch.summary is None and hitch.publisher is None and hitch.tags == ()
    assert hitch.language == "en"

    french = catalog.lookup("9791090636071")
    assert french is not None
    assert french.isbn10 is None
    assert french.tags == ("roman",)
    assert french.cover_url == "https://x.example/c.jpg"

    labelled = catalog.lookup("0306406152")
    assert labelled is not None and labelled.title == "letters"


def test_unknown_header_is_a_clear_error(catalog: Catalog, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", ["code", "name"], [["9780306406157", "x"]])
    with pytest.raises(UnknownCsvFormat, match="unknown CSV layout.*code, name.*douban"):
        import_csv(path, catalog, progress=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UnknownCsvFormat, match="empty"):
        import_csv(empty, catalog, progress=False)
    assert catalog.count() == 0


def test_rows_with_a_wrong_number_of_fields_are_rejected(catalog: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(
        "isbn,title\n9780306406157,Good\n\n9780804429573,Extra,field\n9787532178377\n",
        encoding="utf-8",
    )
    summary = import_csv(path, catalog, progress=False)
    assert summary.rows_read == 3  # the blank line is not a row
    assert summary.imported == 1
    assert summary.rejected == {"wrong number of fields": 2}
    assert [r.line for r in summary.samples] == [4, 5]


def test_non_utf8_file_is_a_clear_error(catalog: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("isbn,title\n9787532178377,西线无战事\n".encode("gbk"))
    with pytest.raises(CatalogImportError, match="not UTF-8"):
        import_csv(path, catalog, progress=False)


def test_reader_streams_entries_and_rejections(douban_csv: Path) -> None:
    with open(douban_csv, encoding="utf-8-sig", newline="") as f:
        items = list(read_catalog_csv(f))
    assert len(items) == 8
    assert isinstance(items[0], CatalogEntry)
    assert items[0].tags == ("文化", "二战")


# ---------------------------------------------------------------- Catalog


def test_upsert_many_merges_duplicates_and_keeps_known_fields(catalog: Catalog) -> None:
    first = CatalogEntry(
        isbn="9780306406157", title="Old", source="a", author="Someone", tags=("x", "y")
    )
    second = CatalogEntry(isbn="9780306406157", title="New", source="b", tags=("y", "z"))
    assert catalog.upsert_many([first, second]) == 1
    entry = catalog.lookup("9780306406157")
    assert entry is not None
    assert (entry.title, entry.source, entry.author, entry.tags) == (
        "New",
        "b",
        "Someone",
        ("x", "y", "z"),
    )

    third = CatalogEntry(isbn="9780306406157", title="Newest", source="c", tags=("w", "x"))
    assert catalog.upsert_many([third]) == 1
    entry = catalog.lookup("9780306406157")
    assert entry is not None
    assert (entry.title, entry.author, entry.tags) == ("Newest", "Someone", ("x", "y", "z", "w"))
    assert catalog.upsert_many([]) == 0


def test_lookup_unknown_and_invalid(catalog: Catalog) -> None:
    assert catalog.lookup("9780306406157") is None
    with pytest.raises(InvalidIsbn):
        catalog.lookup("9780306406158")


# ---------------------------------------------------------------- CLI


def test_cli_import_and_lookup(database_url: str, catalog: Catalog, douban_csv: Path) -> None:
    runner = CliRunner(env={"DATABASE_URL": database_url})

    result = runner.invoke(catalog_group, ["import", str(douban_csv), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "rows read:      8" in result.output
    assert "4 rows → 2 distinct ISBNs" in result.output
    assert "rejected:       4" in result.output
    assert "invalid isbn checksum: 1" in result.output
    assert "rows/s" in result.output

    result = runner.invoke(catalog_group, ["lookup", "978-7-5321-7837-7"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["isbn"] == "9787532178377"
    assert data["title"] == "西线无战事"
    assert data["tags"] == ["文化", "二战", "文学", "小说"]

    result = runner.invoke(catalog_group, ["lookup", "9780306406157"])
    assert result.exit_code == 1
    assert "not found" in result.output

    result = runner.invoke(catalog_group, ["lookup", "9780306406158"])
    assert result.exit_code == 2
    assert "check digit" in result.output


def test_cli_errors(database_url: str, tmp_path: Path) -> None:
    runner = CliRunner(env={"DATABASE_URL": database_url})
    bad = write_csv(tmp_path / "bad.csv", ["foo"], [["bar"]])
    result = runner.invoke(catalog_group, ["import", str(bad), "--no-progress"])
    assert result.exit_code == 1
    assert "unknown CSV layout" in result.output

    result = runner.invoke(catalog_group, ["import", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2

    result = runner.invoke(catalog_group, ["import", str(bad), "--batch-size", "0"])
    assert result.exit_code == 2


def test_cli_reports_an_unmigrated_database(server_url: str, tmp_path: Path) -> None:
    import uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"liudong_test_bare_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
        result = CliRunner(env={"DATABASE_URL": url}).invoke(
            catalog_group, ["lookup", "9780306406157"]
        )
        assert result.exit_code == 1
        assert "liudong migrate" in result.output
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- the real files


def _report(summary) -> None:  # type: ignore[no-untyped-def]
    print(
        f"\n{Path(summary.path).name}: {summary.rows_read} rows, {summary.imported} imported, "
        f"{summary.distinct_isbns} distinct, rejected {summary.rejected}, "
        f"{summary.seconds:.2f} s, {summary.rows_per_second:,.0f} rows/s"
    )


@pytest.mark.skipif(not DOUBAN_FILE.exists(), reason=f"{DOUBAN_FILE} not present")
def test_real_douban_file(catalog: Catalog) -> None:
    summary = import_csv(DOUBAN_FILE, catalog, progress=False)
    _report(summary)

    assert summary.format == "douban"
    assert summary.rows_read == 5015
    assert summary.imported == 5015
    assert summary.rejected == {}
    assert summary.distinct_isbns == 3722
    assert catalog.count() == 3722

    # every repeated ISBN carries the union of its rows' tags
    expected: dict[str, set[str]] = defaultdict(set)
    with open(DOUBAN_FILE, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            expected[row["ISBN"]].update(t for t in (row["category"], row["tag"]) if t)
    repeated = [isbn for isbn, tags in expected.items() if len(tags) > 2]
    assert repeated
    for isbn in repeated[:50]:
        entry = catalog.lookup(isbn)
        assert entry is not None
        assert set(entry.tags) == expected[isbn]


@pytest.mark.skipif(not GOODBOOKS_FILE.exists(), reason=f"{GOODBOOKS_FILE} not present")
def test_real_goodbooks_file(catalog: Catalog) -> None:
    summary = import_csv(GOODBOOKS_FILE, catalog, progress=False)
    _report(summary)

    assert summary.format == "goodbooks"
    assert summary.rows_read == 10_000
    assert 9_200 <= summary.imported <= 9_300
    assert 650 <= summary.rejected["missing isbn"] <= 750
    assert summary.rejected.get("invalid isbn checksum", 0) < 50
    assert summary.distinct_isbns == catalog.count() == summary.imported

    hunger = catalog.lookup("439023483".zfill(10))  # stored without its leading zero
    assert hunger is not None and hunger.title.startswith("The Hunger Games")
    assert hunger.isbn == "9780439023481"
