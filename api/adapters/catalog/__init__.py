"""The local ISBN catalog: book metadata keyed by ISBN-13, imported from CSV files.

Used by ``GET /v1/isbn/{isbn}`` and to fill the fields a client leaves out of
``POST /v1/books`` (``publish_command``). ``entries`` holds the values, ``store`` the
``catalog_books`` table, ``importer`` the CSV layouts (douban, goodbooks-10k, generic).
"""

from api.adapters.catalog.entries import (
    CatalogEntry,
    CatalogImportError,
    ImportSummary,
    Rejection,
    UnknownCsvFormat,
    merge_entries,
)
from api.adapters.catalog.importer import CsvFormat, detect_format, import_csv, read_catalog_csv
from api.adapters.catalog.publish import PublishRefused, catalog_fields, publish_command
from api.adapters.catalog.store import Catalog

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
    "PublishRefused",
    "catalog_fields",
    "publish_command",
    "read_catalog_csv",
]
