"""Reading catalog CSV files (three layouts) into entries, and importing them.

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
groups that are one language (``domain.isbn.language_of_isbn``: China/Taiwan/Hong Kong/Macau
→ ``zh``, Japan → ``ja``, …), the same rule the Library's ``Book.Published`` records.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from api.adapters.catalog.entries import (
    CatalogEntry,
    CatalogImportError,
    CsvFormat,
    ImportSummary,
    Rejection,
    UnknownCsvFormat,
    unique_tags,
)
from api.adapters.catalog.store import Catalog
from api.adapters.isbn import InvalidIsbn, isbn10_of, normalize_isbn
from domain.isbn import language_of_isbn

# Large introductions: the csv module's default limit is 128 KiB per field.
_FIELD_SIZE_LIMIT = 16 * 1024 * 1024
if csv.field_size_limit() < _FIELD_SIZE_LIMIT:
    csv.field_size_limit(_FIELD_SIZE_LIMIT)


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


def _language_of(isbn13: str) -> str | None:
    return language_of_isbn(isbn13) or None


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
        isbn10=isbn10_of(isbn),
        title=title,
        author=author,
        publisher=_text(row.get("press")),
        published_year=_year_in_text(row.get("press_year")),
        language=_language_of(isbn),
        tags=unique_tags(tags, ()),
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
        isbn10=isbn10_of(isbn),
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
        isbn10=isbn10_of(isbn),
        title=title,
        author=_text(row.get("author")),
        publisher=_text(row.get("publisher")),
        published_year=_year_number(row.get("published_year")),
        language=_text(row.get("language")) or _language_of(isbn),
        tags=unique_tags((t for t in tags if t), ()),
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
