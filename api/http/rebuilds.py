"""Projection rebuilds started from the operator console (``POST /v1/ops/projections/{name}/
rebuild``), each in a thread of this process, with their progress.

A rebuild is ``projections.ops.rebuild`` (blue/green: a new version filled while the active
one serves, then an atomic switch), exactly what ``liudong projections rebuild`` runs; only
one rebuild of a projection runs at a time in the whole database (its advisory lock), so a
second one, from here or the CLI, is refused. The console shows ``done / total`` events of the
job this process runs; a rebuild run elsewhere (the CLI, another node) shows its progress from
the database instead (the new version's positions against the active one's,
``RebuildJobs.progress_of``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from projections import ops
from projections.read_model import ReadModelProjection
from projections.runner import ProjectionFailed
from projections.source import Source

log = logging.getLogger(__name__)


@dataclass
class RebuildJob:
    """One rebuild run by this process. ``state``: ``running``, ``done`` or ``failed``;
    ``done`` / ``total``: events processed / estimated (the total grows while the live
    version moves); ``result``: the summary once done; ``error``: why it failed."""

    projection: str
    started_at: float = field(default_factory=time.time)
    state: str = "running"
    done: int = 0
    total: int = 0
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def fraction(self) -> float:
        """0..1; 1 once done."""
        if self.state == "done":
            return 1.0
        return min(1.0, self.done / self.total) if self.total else 0.0


class RebuildJobs:
    """The rebuilds this process runs (the newest job per projection is kept)."""

    def __init__(self, database_url: str, sources: Callable[[], Mapping[str, Source]]) -> None:
        self.database_url = database_url
        self.sources = sources
        self._jobs: dict[str, RebuildJob] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> RebuildJob | None:
        return self._jobs.get(name)

    def start(self, projection: ReadModelProjection, *, page_size: int = 10_000) -> RebuildJob:
        """Start rebuilding ``projection`` in a thread. Raises ``ops.RebuildInProgress``
        when this process already runs one (another process's rebuild makes the job fail
        with that message a moment later: the database lock is taken in the thread)."""
        with self._lock:
            running = self._jobs.get(projection.name)
            if running is not None and running.state == "running":
                raise ops.RebuildInProgress(f"a rebuild of {projection.name} is already running")
            job = RebuildJob(projection.name)
            self._jobs[projection.name] = job
        threading.Thread(
            target=self._run,
            args=(job, projection, page_size),
            name=f"rebuild-{projection.name}",
            daemon=True,
        ).start()
        return job

    def _run(self, job: RebuildJob, projection: ReadModelProjection, page_size: int) -> None:
        def progress(done: int, total: int) -> None:
            job.done += done
            if total:
                job.total = max(total, job.done)

        try:
            result = ops.rebuild(
                self.database_url,
                projection,
                self.sources(),
                page_size=page_size,
                progress=progress,
            )
        except (ops.OpsError, ProjectionFailed) as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # reported on the console, and logged with its traceback
            log.exception("rebuild of %s failed", projection.name)
            job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
        else:
            job.total = max(job.total, job.done)
            job.result = {
                "old_schema": result.old_schema,
                "new_schema": result.new_schema,
                "events": result.events,
                "seconds": round(result.seconds, 3),
                "positions": result.positions,
                "dropped_old": result.dropped_old,
            }
            job.state = "done"
        job.finished_at = time.time()

    @staticmethod
    def progress_of(status: ops.ProjectionStatus) -> float | None:
        """How far a rebuild seen in the database is (0..1): its version's positions over
        the active version's; None when there is no rebuild version."""
        if status.rebuild is None:
            return None
        target = sum(s.position for s in status.sources)
        reached = sum(status.rebuild.positions.values())
        return min(1.0, reached / target) if target else 1.0


__all__ = ["RebuildJob", "RebuildJobs"]
