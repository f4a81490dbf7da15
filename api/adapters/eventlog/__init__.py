"""Reading the event logs for people: export (NDJSON / CSV / Parquet), history, live tail.

``reader`` pages and decodes the logs, ``formats`` encodes and writes pages, ``parallel``
runs a large export on worker processes. See ``reader`` for the exported shape."""

from api.adapters.eventlog.formats import (
    ENCODERS,
    CsvWriter,
    NdjsonWriter,
    ParquetWriter,
    WriteBehind,
    Writer,
    arrow_batch,
    arrow_bytes,
    csv_bytes,
    ndjson_bytes,
    parquet_schema,
)
from api.adapters.eventlog.parallel import (
    MAX_JOBS,
    PARALLEL_MIN_EVENTS,
    ExportChunk,
    ExportTask,
    export_jobs,
    export_parallel,
    export_tasks,
)
from api.adapters.eventlog.reader import (
    COLUMNS,
    PERSONAL_FIELDS,
    SEEK_MARGIN,
    LogEvent,
    LogPage,
    LogReader,
    event_type_of,
    format_event,
)

__all__ = [
    "COLUMNS",
    "ENCODERS",
    "MAX_JOBS",
    "PARALLEL_MIN_EVENTS",
    "PERSONAL_FIELDS",
    "SEEK_MARGIN",
    "CsvWriter",
    "ExportChunk",
    "ExportTask",
    "LogEvent",
    "LogPage",
    "LogReader",
    "NdjsonWriter",
    "ParquetWriter",
    "WriteBehind",
    "Writer",
    "arrow_batch",
    "arrow_bytes",
    "csv_bytes",
    "event_type_of",
    "export_jobs",
    "export_parallel",
    "export_tasks",
    "format_event",
    "ndjson_bytes",
    "parquet_schema",
]
