"""Catalog entries, import rejections and summaries, and how two entries of one ISBN merge."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import msgspec

CsvFormat = Literal["douban", "goodbooks", "csv"]


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


def unique_tags(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
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
        tags=unique_tags(old.tags, new.tags),
        cover_url=pick("cover_url"),
        summary=pick("summary"),
        updated_at=pick("updated_at"),
    )


def merge_by_isbn(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    merged: dict[str, CatalogEntry] = {}
    for entry in entries:
        seen = merged.get(entry.isbn)
        merged[entry.isbn] = entry if seen is None else merge_entries(seen, entry)
    return list(merged.values())
