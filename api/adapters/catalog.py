"""The local ISBN catalog: book metadata keyed by ISBN-13, imported from CSV files.

Used by ``GET /v1/isbn/{isbn}`` and to fill the fields a client leaves out of
``POST /v1/books``. Stored in the ``catalog_books`` table (migration ``0005_catalog``).

Three CSV layouts are read, recognised from the header row (names compared
case-insensitively, UTF-8 with or without BOM, parsed by the ``csv`` module so quoted fields
may hold commas, quotes and newlines):

``douban``
    ``ISBN, book_name, author_name, press, press_year, pages, price, score,
    number_reviewers, category, tag, book_img, introduction``. The same ISBN appears once per
    shelf tag: the rows are merged into one entry whose tags are the union of every row's
    ``category`` and ``tag``. ``press_year`` is free text (``2016-9``, ``2019年3月``…): its
    first four-digit year is kept.
``goodbooks`` (goodbooks-10k ``books.csv``)
    ``isbn`` lost its leading zeros and is left-padded to 10 digits; the ``isbn13`` column is
    in lossy scientific notation and is never read. ``authors``, ``title``,
    ``original_publication_year``, ``language_code``, ``image_url`` (Goodreads "nophoto"
    placeholders are dropped).
``csv`` (generic)
    ``isbn, title`` and optionally ``author, publisher, published_year, language, tags,
    cover_url, summary``; ``tags`` are separated by ``|``.

ISBNs are validated and normalised by ``api.adapters.isbn.normalize_isbn`` (ISO 2108). Each row
becomes a ``CatalogEntry`` or a ``Rejection`` whose ``reason`` is one of: ``missing isbn``,
``invalid isbn checksum``, ``invalid isbn length``, ``invalid isbn characters``,
``invalid isbn prefix``, ``invalid isbn placeholder``, ``missing title``,
``wrong number of fields``.

When a source gives no language, it is inferred from the ISBN registration group for the
groups that are one language (China/Taiwan/Hong Kong/Macau → ``zh``, Japan → ``ja``, …).
"""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO, cast

import isbnlib  # type: ignore[import-untyped]
import msgspec
from psycopg_pool import ConnectionPool

from api.adapters.isbn import InvalidIsbn, normalize_isbn

__all__ = [
    "Catalog",
    "CatalogEntry",
    "CatalogImportError",
    "CsvFormat",
    "ImportSummary",
    "Rejection",
    "UnknownCsvFormat",
    "detect_format",
    "import_csv",
    "merge_entries",
    "read_catalog_csv",
]

CsvFormat = Literal["douban", "goodbooks", "csv"]

# Large introductions: the csv module's default limit is 128 KiB per field.
_FIELD_SIZE_LIMIT = 16 * 1024 * 1024
if csv.field_size_limit() < _FIELD_SIZE_LIMIT:
    csv.field_size_limit(_FIELD_SIZE_LIMIT)


class CatalogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """Metadata of one book edition. ``isbn`` is the canonical ISBN-13 (13 digits).

    ``tags`` keep their first-seen order; ``source`` names where the entry came from
    (``douban``, ``goodbooks``, ``csv``, …); ``updated_at`` is set on entries read back from
    the database and ``None`` on entries not yet stored."""

    isbn: str
    title: str
    source: str
    isbn10: str | None = None
    author: str | None = None
    publisher: str | None = None
    published_year: int | None = None
    language: str | None = None
    tags: tuple[str, ...] = ()
    cover_url: str | None = None
    summary: str | None = None
    updated_at: datetime | None = None


class Rejection(msgspec.Struct, frozen=True):
    """A CSV row that did not become an entry: its first physical ``line`` in the file (the
    header is line 1), a stable ``reason`` (see the module docstring) and a human ``detail``."""

    line: int
    reason: str
    detail: str


class ImportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What ``import_csv`` did.

    ``rows_read``: data rows in the file (blank lines not counted); ``imported``: rows that
    became entries and were written (rows repeating an ISBN are merged into one catalog
    entry); ``rejected``: reason → number of rows; ``distinct_isbns``: catalog entries the
    imported rows produced; ``seconds``: wall time; ``samples``: the first rejections of each
    reason (at most three per reason), with line numbers, to help fix the file."""

    path: str
    format: CsvFormat
    rows_read: int
    imported: int
    rejected: dict[str, int]
    distinct_isbns: int
    seconds: float
    samples: tuple[Rejection, ...] = ()

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else float("inf")


class CatalogImportError(ValueError):
    """A CSV file cannot be imported at all (unreadable encoding, broken CSV quoting…)."""


class UnknownCsvFormat(CatalogImportError):
    """The header row matches none of the known layouts; the message lists them."""


# --------------------------------------------------------------------------- merging


def _union(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))


def merge_entries(old: CatalogEntry, new: CatalogEntry) -> CatalogEntry:
    """``new`` over ``old`` for the same ISBN: ``new``'s non-empty fields win, tags are the
    union (``old``'s first). This is also what ``Catalog.upsert_many`` does with a stored
    entry. Raises ``ValueError`` if the ISBNs differ."""
    if old.isbn != new.isbn:
        raise ValueError(f"cannot merge entries of {old.isbn} and {new.isbn}")

    def pick(name: str) -> Any:
        value = getattr(new, name)
        return getattr(old, name) if value is None else value

    return CatalogEntry(
        isbn=new.isbn,
        title=new.title,
        source=new.source,
        isbn10=pick("isbn10"),
        author=pick("author"),
        publisher=pick("publisher"),
        published_year=pick("published_year"),
        language=pick("language"),
        tags=_union(old.tags, new.tags),
        cover_url=pick("cover_url"),
        summary=pick("summary"),
        updated_at=pick("updated_at"),
    )


def _merge_by_isbn(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    merged: dict[str, CatalogEntry] = {}
    for entry in entries:
        seen = merged.get(entry.isbn)
        merged[entry.isbn] = entry if seen is None else merge_entries(seen, entry)
    return list(merged.values())


# --------------------------------------------------------------------------- database

_COLUMNS = (
    "isbn13, isbn10, title, author, publisher, published_year, language, tags, cover_url,"
    " summary, source, updated_at"
)

_LOAD_TABLE = """
CREATE TEMP TABLE catalog_books_load (
    isbn13 text, isbn10 text, title text, author text, publisher text, published_year integer,
    language text, tags text[], cover_url text, summary text, source text
) ON COMMIT DROP
"""

_LOAD_COLUMNS = (
    "isbn13, isbn10, title, author, publisher, published_year, language, tags, cover_url,"
    " summary, source"
)
_LOAD_TYPES = [
    "text", "text", "text", "text", "text", "int4", "text", "text[]", "text", "text", "text",
]  # fmt: skip

# Rows are merged by ISBN before the COPY, so no row is affected twice.
_UPSERT = f"""
INSERT INTO catalog_books ({_COLUMNS})
SELECT {_LOAD_COLUMNS}, now() FROM catalog_books_load
ON CONFLICT (isbn13) DO UPDATE SET
    isbn10 = COALESCE(EXCLUDED.isbn10, catalog_books.isbn10),
    title = EXCLUDED.title,
    author = COALESCE(EXCLUDED.author, catalog_books.author),
    publisher = COALESCE(EXCLUDED.publisher, catalog_books.publisher),
    published_year = COALESCE(EXCLUDED.published_year, catalog_books.published_year),
    language = COALESCE(EXCLUDED.language, catalog_books.language),
    tags = ARRAY(
        SELECT u.tag
        FROM unnest(catalog_books.tags || EXCLUDED.tags) WITH ORDINALITY AS u(tag, n)
        GROUP BY u.tag
        ORDER BY min(u.n)
    ),
    cover_url = COALESCE(EXCLUDED.cover_url, catalog_books.cover_url),
    summary = COALESCE(EXCLUDED.summary, catalog_books.summary),
    source = EXCLUDED.source,
    updated_at = now()
"""


def _params(e: CatalogEntry) -> tuple[Any, ...]:
    return (
        e.isbn,
        e.isbn10,
        e.title,
        e.author,
        e.publisher,
        e.published_year,
        e.language,
        list(e.tags),
        e.cover_url,
        e.summary,
        e.source,
    )


def _entry_of_row(row: dict[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        isbn=row["isbn13"],
        isbn10=row["isbn10"],
        title=row["title"],
        author=row["author"],
        publisher=row["publisher"],
        published_year=row["published_year"],
        language=row["language"],
        tags=tuple(row["tags"] or ()),
        cover_url=row["cover_url"],
        summary=row["summary"],
        source=row["source"],
        updated_at=row["updated_at"],
    )


class Catalog:
    """The ``catalog_books`` table, through a psycopg pool whose connections return dict rows
    (``api.bootstrap.db.make_pool``). Methods are synchronous; psycopg errors propagate (e.g.
    ``psycopg.errors.UndefinedTable`` when migration ``0005_catalog`` was not applied)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def lookup(self, isbn13: str) -> CatalogEntry | None:
        """The entry of an ISBN (any form ``normalize_isbn`` accepts), or ``None``.

        Raises ``InvalidIsbn`` if ``isbn13`` is not a valid ISBN."""
        key = normalize_isbn(isbn13)
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM catalog_books WHERE isbn13 = %s", (key,)
            ).fetchone()
        return None if row is None else _entry_of_row(cast(dict[str, Any], row))

    def upsert_many(self, entries: Iterable[CatalogEntry]) -> int:
        """Insert or update entries in one transaction; returns the number of distinct ISBNs
        written.

        Entries repeating an ISBN (in ``entries`` or already stored) are merged as by
        ``merge_entries``: the newer non-null fields win, tags are unioned (first-seen
        order), so importing the same file twice changes nothing but ``updated_at``.
        The rows are sent with ``COPY`` to a temporary table (dropped at commit), then
        upserted with one ``INSERT … ON CONFLICT (isbn13) DO UPDATE``."""
        merged = _merge_by_isbn(entries)
        if not merged:
            return 0
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(_LOAD_TABLE)
            with cur.copy(f"COPY catalog_books_load ({_LOAD_COLUMNS}) FROM STDIN") as copy:
                copy.set_types(_LOAD_TYPES)
                for entry in merged:
                    copy.write_row(_params(entry))
            cur.execute(_UPSERT)
        return len(merged)

    def count(self) -> int:
        """Number of entries in the catalog."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT count(*) AS n FROM catalog_books").fetchone()
        return int(cast(dict[str, Any], row)["n"]) if row else 0


# --------------------------------------------------------------------------- CSV reading

_DOUBAN_REQUIRED = ("isbn", "book_name", "author_name", "press", "press_year", "tag")
_GOODBOOKS_REQUIRED = ("isbn", "isbn13", "authors", "title", "original_publication_year")
_GENERIC_REQUIRED = ("isbn", "title")
_GENERIC_OPTIONAL = (
    "author",
    "publisher",
    "published_year",
    "language",
    "tags",
    "cover_url",
    "summary",
)

_LANGUAGE_OF_GROUP = {
    "China, People's Republic": "zh",
    "Taiwan": "zh",
    "Hong Kong, China": "zh",
    "Macau": "zh",
    "Japan": "ja",
    "Korea, Republic": "ko",
    "English language": "en",
    "French language": "fr",
    "German language": "de",
}

_YEAR = re.compile(r"(?<!\d)(\d{4})")
_SHORT_ISBN10 = re.compile(r"^[0-9]{0,8}[0-9Xx]$")


def detect_format(header: Sequence[str]) -> CsvFormat:
    """Which layout a header row is (see the module docstring).

    Raises ``UnknownCsvFormat`` naming the columns each layout needs."""
    names = {h.strip().lower() for h in header}
    if all(n in names for n in _DOUBAN_REQUIRED):
        return "douban"
    if all(n in names for n in _GOODBOOKS_REQUIRED):
        return "goodbooks"
    if all(n in names for n in _GENERIC_REQUIRED):
        return "csv"
    shown = ", ".join(h.strip() for h in header) or "(empty)"
    raise UnknownCsvFormat(
        f"unknown CSV layout; header was: {shown}. Expected one of: "
        f"douban ({', '.join(_DOUBAN_REQUIRED)}, …); "
        f"goodbooks-10k ({', '.join(_GOODBOOKS_REQUIRED)}, …); "
        f"generic ({', '.join(_GENERIC_REQUIRED)} [, {', '.join(_GENERIC_OPTIONAL)}])"
    )


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _year_in_text(value: str | None) -> int | None:
    match = _YEAR.search(value or "")
    if not match:
        return None
    year = int(match.group(1))
    return year if 1000 <= year <= 2200 else None


def _year_number(value: str | None) -> int | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        return _year_in_text(text)


def _url(value: str | None) -> str | None:
    text = _text(value)
    if text is None or not text.lower().startswith(("http://", "https://")):
        return None
    return text


def _isbn10(isbn13: str) -> str | None:
    """``api.adapters.isbn.isbn10_of`` for an ISBN-13 already normalised."""
    return (str(isbnlib.to_isbn10(isbn13)) or None) if isbn13.startswith("978") else None


def _language_of(isbn13: str) -> str | None:
    try:
        return _LANGUAGE_OF_GROUP.get(str(isbnlib.info(isbn13)))
    except Exception:  # isbnlib raises its own errors on odd input; a guess is optional
        return None


class _Row:
    """One CSV record seen through the header's column names (lower-cased)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: list[str]) -> None:
        self._index = index
        self._values = values

    def get(self, name: str) -> str | None:
        i = self._index.get(name)
        return None if i is None else self._values[i]


def _isbn_or_rejection(raw: str | None, line: int) -> str | Rejection:
    if raw is None or not raw.strip():
        return Rejection(line, "missing isbn", "the isbn field is empty")
    try:
        return normalize_isbn(raw)
    except InvalidIsbn as exc:
        reason = "missing isbn" if exc.problem == "empty" else f"invalid isbn {exc.problem}"
        return Rejection(line, reason, str(exc))


def _douban(row: _Row, line: int) -> CatalogEntry | Rejection:
    isbn = _isbn_or_rejection(row.get("isbn"), line)
    if isinstance(isbn, Rejection):
        return isbn
    title = _text(row.get("book_name"))
    if title is None:
        return Rejection(line, "missing title", f"{isbn}: book_name is empty")
    author = _text(row.get("author_name"))
    if author is not None:
        author = author.strip("/ ").strip() or None
    tags = tuple(t for t in (_text(row.get("category")), _text(row.get("tag"))) if t)
    return CatalogEntry(
        isbn=isbn,
        isbn10=_isbn10(isbn),
        title=title,
        author=author,
        publisher=_text(row.get("press")),
        published_year=_year_in_text(row.get("press_year")),
        language=_language_of(isbn),
        tags=_union(tags, ()),
        cover_url=_url(row.get("book_img")),
        summary=_text(row.get("introduction")),
        source="douban",
    )


def _goodbooks(row: _Row, line: int) -> CatalogEntry | Rejection:
    raw = _text(row.get("isbn"))
    # the isbn column went through a spreadsheet as a number: leading zeros were lost
    if raw is not None and len(raw) < 10 and _SHORT_ISBN10.match(raw):
        raw = raw.zfill(10)
    isbn = _isbn_or_rejection(raw, line)
    if isinstance(isbn, Rejection):
        return isbn
    title = _text(row.get("title")) or _text(row.get("original_title"))
    if title is None:
        return Rejection(line, "missing title", f"{isbn}: title is empty")
    cover = _url(row.get("image_url"))
    if cover is not None and "/nophoto/" in cover:
        cover = None
    return CatalogEntry(
        isbn=isbn,
        isbn10=_isbn10(isbn),
        title=title,
        author=_text(row.get("authors")),
        published_year=_year_number(row.get("original_publication_year")),
        language=_text(row.get("language_code")),
        cover_url=cover,
        source="goodbooks",
    )


def _generic(row: _Row, line: int) -> CatalogEntry | Rejection:
    isbn = _isbn_or_rejection(row.get("isbn"), line)
    if isinstance(isbn, Rejection):
        return isbn
    title = _text(row.get("title"))
    if title is None:
        return Rejection(line, "missing title", f"{isbn}: title is empty")
    tags = [t.strip() for t in (row.get("tags") or "").split("|")]
    return CatalogEntry(
        isbn=isbn,
        isbn10=_isbn10(isbn),
        title=title,
        author=_text(row.get("author")),
        publisher=_text(row.get("publisher")),
        published_year=_year_number(row.get("published_year")),
        language=_text(row.get("language")) or _language_of(isbn),
        tags=_union((t for t in tags if t), ()),
        cover_url=_url(row.get("cover_url")),
        summary=_text(row.get("summary")),
        source="csv",
    )


_PARSERS: dict[CsvFormat, Callable[[_Row, int], CatalogEntry | Rejection]] = {
    "douban": _douban,
    "goodbooks": _goodbooks,
    "csv": _generic,
}


@dataclass
class _Reading:
    format: CsvFormat
    rows: Iterator[CatalogEntry | Rejection]


def _decode_error(name: str, line: int, exc: UnicodeDecodeError) -> CatalogImportError:
    encoding = exc.encoding.upper()
    return CatalogImportError(
        f"{name}, near line {line}: not {encoding} text ({exc.reason}); "
        f"save the file as {encoding} (spreadsheet programs: CSV UTF-8)"
    )


def _open_rows(stream: TextIO, *, name: str = "<stream>") -> _Reading:
    reader = csv.reader(stream)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise CatalogImportError(f"{name}: cannot read the header row: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise _decode_error(name, 1, exc) from exc
    if header is None:
        raise UnknownCsvFormat(f"{name}: the file is empty (no header row)")
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    fmt = detect_format(header)
    index: dict[str, int] = {}
    for i, h in enumerate(header):
        index.setdefault(h.strip().lower(), i)
    parse = _PARSERS[fmt]
    width = len(header)

    def rows() -> Iterator[CatalogEntry | Rejection]:
        while True:
            line = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise CatalogImportError(f"{name}, line {line}: broken CSV: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise _decode_error(name, line, exc) from exc
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # blank line
            if len(values) != width:
                yield Rejection(
                    line,
                    "wrong number of fields",
                    f"{len(values)} fields where the header has {width}",
                )
                continue
            yield parse(_Row(index, values), line)

    return _Reading(fmt, rows())


def read_catalog_csv(
    stream: TextIO, *, name: str = "<stream>"
) -> Iterator[CatalogEntry | Rejection]:
    """Stream the rows of a catalog CSV (opened with ``newline=""``) as entries or
    rejections, in file order. The layout is detected from the header row.

    Raises ``UnknownCsvFormat`` (at the first ``next``) for an unknown or missing header and
    ``CatalogImportError`` for text that is not valid CSV / not decodable."""
    reading = _open_rows(stream, name=name)
    yield from reading.rows


# --------------------------------------------------------------------------- import


class _ProgressReader(io.RawIOBase):
    """A binary file that reports the bytes read to a tqdm bar."""

    def __init__(self, raw: io.BufferedReader, bar: Any) -> None:
        self._raw = raw
        self._bar = bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self._bar.update(n)
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def import_csv(
    path: str | Path,
    catalog: Catalog,
    *,
    batch_size: int = 1000,
    progress: bool = True,
    encoding: str = "utf-8-sig",
) -> ImportSummary:
    """Import a catalog CSV (douban, goodbooks-10k or generic layout) into ``catalog``.

    The file is streamed: entries are written every ``batch_size`` valid rows, each batch in
    its own transaction (an interrupted import keeps the batches written; importing again is
    harmless, see ``Catalog.upsert_many``). A ``tqdm`` progress bar (bytes read) is shown on
    stderr when ``progress`` is true and stderr is a terminal.

    Raises ``FileNotFoundError``/``OSError`` for an unreadable file, ``UnknownCsvFormat`` for
    an unknown header, ``CatalogImportError`` for a file that is not valid CSV or not in
    ``encoding``, and psycopg errors from the database."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    path = Path(path)
    size = path.stat().st_size
    started = time.perf_counter()
    rows_read = imported = 0
    rejected: Counter[str] = Counter()
    samples: list[Rejection] = []
    distinct: set[str] = set()
    batch: list[CatalogEntry] = []
    disable = not progress or not sys.stderr.isatty()
    with (
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"import {path.name}",
            disable=disable,
            leave=False,
        ) as bar,
        open(path, "rb") as raw,
        io.TextIOWrapper(
            io.BufferedReader(_ProgressReader(raw, bar)), encoding=encoding, newline=""
        ) as text,
    ):
        reading = _open_rows(text, name=str(path))
        for item in reading.rows:
            rows_read += 1
            if isinstance(item, Rejection):
                if rejected[item.reason] < 3:
                    samples.append(item)
                rejected[item.reason] += 1
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                catalog.upsert_many(batch)
                imported += len(batch)
                distinct.update(e.isbn for e in batch)
                batch = []
                bar.set_postfix(rows=rows_read, refresh=False)
        if batch:
            catalog.upsert_many(batch)
            imported += len(batch)
            distinct.update(e.isbn for e in batch)
    return ImportSummary(
        path=str(path),
        format=reading.format,
        rows_read=rows_read,
        imported=imported,
        rejected=dict(rejected.most_common()),
        distinct_isbns=len(distinct),
        seconds=time.perf_counter() - started,
        samples=tuple(samples),
    )
