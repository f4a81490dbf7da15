"""``GET /metrics``: Prometheus text exposition.

Projection figures are read from the database at each scrape (``projections.ops.status``),
so every API node reports the same numbers whichever node runs the projections::

    liudong_projection_status_up                         0 when the database did not answer
    liudong_projection_position{projection, source}      tracking position of the active version
    liudong_event_log_head{source}                       largest notification id of the log
    liudong_projection_lag_events{projection, source}    head − position
    liudong_projection_lag_seconds{projection, source}   age of the oldest unprocessed event
    liudong_projection_state{projection, state}          1 for the current state, else 0
                                                         (running, stopped, failed, missing)
    liudong_projection_failures{projection}              unskipped failures blocking it
    liudong_projection_rebuilding{projection}            1 while a rebuild runs
    liudong_projection_runner_state{projection, state}   this process's runner (starting,
                                                         standby, running, failed, stopped)

plus whatever is registered on prometheus-client's default registry (process, GC, and the
other modules' own metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from api.bootstrap.container import Container
from api.http.controllers.common import container_of
from projections import ops
from projections.registry import all_projections, sources_from_apps
from projections.runner import ReadModelRunner

log = logging.getLogger(__name__)

DB_STATES = ("running", "stopped", "failed", "missing")
RUNNER_STATES = ("starting", "standby", "running", "failed", "stopped")


def projection_statuses(container: Container) -> list[ops.ProjectionStatus]:
    """The database-wide status of every registered projection (``projections.ops``)."""
    sources = sources_from_apps(container.library, getattr(container, "chat", None))
    return ops.status(container.database_url, all_projections(), sources)


class ProjectionCollector(Collector):
    """One scrape's projection figures (see the module docstring)."""

    def __init__(
        self,
        statuses: Sequence[ops.ProjectionStatus] | None,
        runners: Sequence[ReadModelRunner],
    ) -> None:
        self.statuses = statuses or []
        self.ok = statuses is not None
        self.runners = runners

    def collect(self) -> Iterator[Metric]:
        position = GaugeMetricFamily(
            "liudong_projection_position",
            "Tracking position of the active version.",
            labels=["projection", "source"],
        )
        head = GaugeMetricFamily(
            "liudong_event_log_head", "Largest notification id of the log.", labels=["source"]
        )
        lag_events = GaugeMetricFamily(
            "liudong_projection_lag_events",
            "Log head minus tracking position.",
            labels=["projection", "source"],
        )
        lag_seconds = GaugeMetricFamily(
            "liudong_projection_lag_seconds",
            "Seconds since the oldest event the projection has not processed (0: caught up).",
            labels=["projection", "source"],
        )
        state = GaugeMetricFamily(
            "liudong_projection_state",
            "1 for the projection's current state.",
            labels=["projection", "state"],
        )
        failures = GaugeMetricFamily(
            "liudong_projection_failures",
            "Unskipped failures stopping the projection.",
            labels=["projection"],
        )
        rebuilding = GaugeMetricFamily(
            "liudong_projection_rebuilding",
            "1 while a rebuild of the projection runs.",
            labels=["projection"],
        )
        runner_state = GaugeMetricFamily(
            "liudong_projection_runner_state",
            "1 for this process's runner's state.",
            labels=["projection", "state"],
        )
        up = GaugeMetricFamily(
            "liudong_projection_status_up", "1 if the projection status could be read."
        )
        up.add_metric([], 1.0 if self.ok else 0.0)
        heads: dict[str, int] = {}
        for st in self.statuses:
            for src in st.sources:
                position.add_metric([st.name, src.source], src.position)
                lag_events.add_metric([st.name, src.source], src.lag_events)
                lag_seconds.add_metric([st.name, src.source], src.lag_seconds)
                heads[src.source] = src.head
            for name in DB_STATES:
                state.add_metric([st.name, name], 1.0 if st.state == name else 0.0)
            failures.add_metric([st.name], len(st.failures))
            rebuilding.add_metric([st.name], 1.0 if st.rebuilding else 0.0)
        for source, value in sorted(heads.items()):
            head.add_metric([source], value)
        for runner in self.runners:
            for name in RUNNER_STATES:
                value = 1.0 if runner.status.state == name else 0.0
                runner_state.add_metric([runner.projection.name, name], value)
        yield from (
            up,
            position,
            head,
            lag_events,
            lag_seconds,
            state,
            failures,
            rebuilding,
            runner_state,
        )


# Litestar adds the charset to a text/* media type itself.
MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")


@get(
    "/metrics",
    operation_id="metrics",
    tags=["operations"],
    sync_to_thread=True,
    media_type=MEDIA_TYPE,
    include_in_schema=True,
)
def metrics(request: Request[Any, Any, Any]) -> Response[str]:
    """Prometheus text exposition format (``text/plain``)."""
    container = container_of(request)
    try:
        statuses: list[ops.ProjectionStatus] | None = projection_statuses(container)
    except Exception:  # the database does not answer: say so in the figures
        log.warning("metrics: projection status unavailable", exc_info=True)
        statuses = None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProjectionCollector(statuses, container.runners))
    body = generate_latest(REGISTRY) + generate_latest(registry)
    return Response(body.decode(), media_type=MEDIA_TYPE)


__all__ = ["ProjectionCollector", "metrics", "projection_statuses"]
