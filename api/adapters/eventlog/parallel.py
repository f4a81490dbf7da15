"""Exporting a large log on worker processes: chunks of whole pages, encoded in the workers,
written in log order by the caller."""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import multiprocessing
import multiprocessing.util
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from api.adapters.eventlog.formats import ENCODERS
from api.adapters.eventlog.reader import SEEK_MARGIN, LogReader
from projections.source import gc_paused

PARALLEL_MIN_EVENTS = 50_000
"""Below this many events to scan, worker processes cost more than they save (each starts
an interpreter and both Applications: about 0.3 s of CPU)."""
MAX_JOBS = 4


@dataclass(frozen=True)
class ExportTask:
    """One chunk of a context's log for a worker: positions ``after`` < id ≤ ``stop``."""

    database_url: str
    context: str
    after: int
    stop: int
    fmt: str
    types: tuple[str, ...] = ()
    page_size: int = 5000
    include_contact: bool = False
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class ExportChunk:
    """What a worker made of an ``ExportTask``: the encoded pages (``ENCODERS[task.fmt]``),
    in order, and its counts; ``past_until``: it met a page recorded wholly after ``until``
    (plus ``SEEK_MARGIN``), so later chunks of that context hold nothing to export."""

    task: ExportTask
    payloads: list[bytes]
    written: int
    scanned: int
    past_until: bool


def export_jobs(jobs: int | None, events: int) -> int:
    """How many worker processes an export of ``events`` (to scan) uses: ``jobs`` when
    given, else the CPUs this process may run on (at most ``MAX_JOBS``) from
    ``PARALLEL_MIN_EVENTS`` on; 1 means decoding in this process."""
    if jobs is not None:
        return jobs
    if events < PARALLEL_MIN_EVENTS:
        return 1
    return max(1, min(MAX_JOBS, len(os.sched_getaffinity(0))))


def export_tasks(
    database_url: str,
    plans: Sequence[tuple[str, int, int]],
    fmt: str,
    *,
    jobs: int,
    page_size: int = 5000,
    **options: Any,
) -> list[ExportTask]:
    """``plans`` (``(context, after, stop)`` in export order) cut into chunks of whole pages
    (``page_size`` positions each): at least four per worker, at most four pages each (the
    last chunks finish about together)."""
    total = sum(max(0, stop - after) for _, after, stop in plans)
    pages = max(1, min(4, total // (page_size * jobs * 4)))
    size = page_size * pages
    tasks = []
    for context, after, stop in plans:
        for low in range(after, stop, size):
            tasks.append(
                ExportTask(
                    database_url,
                    context,
                    low,
                    min(low + size, stop),
                    fmt,
                    page_size=page_size,
                    **options,
                )
            )
    return tasks


def export_parallel(
    tasks: Sequence[ExportTask], jobs: int, env: Mapping[str, str]
) -> Iterator[ExportChunk]:
    """Run ``tasks`` on ``jobs`` worker processes (started fresh: ``spawn``), each opening the
    logs with the eventsourcing environment ``env``, and yield their
    chunks in the order of ``tasks``; at most two chunks per worker are in flight or waiting,
    so memory stays bounded whatever the log's size. Once a chunk is ``past_until``, the
    later chunks of its context are dropped. Raises what a worker raises."""
    context = multiprocessing.get_context("spawn")
    database_url = tasks[0].database_url if tasks else ""
    todo = iter(tasks)
    window: collections.deque[Future[ExportChunk]] = collections.deque()
    done: set[str] = set()
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_worker, initargs=(database_url, dict(env))
    ) as pool:
        try:
            for task in itertools.islice(todo, 2 * jobs):
                window.append(pool.submit(_export_chunk, task))
            while window:
                chunk = window.popleft().result()
                for task in todo:
                    if task.context not in done:
                        window.append(pool.submit(_export_chunk, task))
                        break
                if chunk.task.context in done:
                    continue
                if chunk.past_until:
                    done.add(chunk.task.context)
                yield chunk
        finally:
            for future in window:
                future.cancel()


_worker: dict[str, Any] = {}


def _start_worker(database_url: str, env: dict[str, str]) -> None:
    """A worker's own Applications (for their mappers) and connection, for its life."""
    from projections.registry import open_sources

    stack = contextlib.ExitStack()
    sources = stack.enter_context(open_sources(env))
    conn = stack.enter_context(
        psycopg.connect(database_url, autocommit=True, application_name="liudong events export")
    )
    _worker.update(readers={name: LogReader(conn, source) for name, source in sources.items()})
    # a pool's worker ends with os._exit (no atexit): multiprocessing's own exit hook
    multiprocessing.util.Finalize(None, stack.close, exitpriority=0)
    gc.freeze()  # what start-up made is kept: collections between chunks need not scan it


def _export_chunk(task: ExportTask) -> ExportChunk:
    reader: LogReader = _worker["readers"][task.context]
    encode = ENCODERS[task.fmt]
    payloads = []
    written = scanned = 0
    past_until = False
    with gc_paused():  # as in LogReader.pages
        for rows in reader.rows(
            after=task.after, types=task.types, page_size=task.page_size, stop=task.stop
        ):
            page = reader.decode_page(rows, include_contact=task.include_contact)
            chosen = page.between(task.since, task.until)
            if chosen:
                payloads.append(encode(chosen))
            written += len(chosen)
            scanned += page.scanned
            if task.until and page and min(page.recorded_at) >= task.until + SEEK_MARGIN:
                past_until = True
                break
    return ExportChunk(task, payloads, written, scanned, past_until)
