"""``/metrics`` (Prometheus text) and the lag figures in ``/readyz``, over real HTTP."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until
from tests.e2e.conftest import OPERATOR, LiveServer


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_expose_positions_lag_and_state(live_server: LiveServer) -> None:
    token, _ = live_server.login()
    with live_server.client(token) as http:
        published = http.post("/v1/books", json={"isbn": "9787536692930", "title": "度量"})
        assert published.status_code == 201, published.text

        def caught_up() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            response = http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            found = _samples(response.text)
            lag = found[
                ("liudong_projection_lag_events", (("projection", "shelf"), ("source", "library")))
            ]
            return found if lag == 0 else None

        found = wait_until(caught_up, timeout=15)
    shelf = (("projection", "shelf"), ("source", "library"))
    head = found[("liudong_event_log_head", (("source", "library"),))]
    assert found[("liudong_projection_position", shelf)] == head > 0
    assert found[("liudong_projection_lag_seconds", shelf)] == 0
    assert found[("liudong_projection_state", (("projection", "shelf"), ("state", "running")))] == 1
    assert found[("liudong_projection_state", (("projection", "shelf"), ("state", "failed")))] == 0
    assert found[("liudong_projection_failures", (("projection", "shelf"),))] == 0
    assert found[("liudong_projection_status_up", ())] == 1
    runner_states = {
        labels: v
        for (name, labels), v in found.items()
        if name == "liudong_projection_runner_state" and v == 1
    }
    assert (("projection", "shelf"), ("state", "running")) in runner_states


def test_readyz_reports_lag(live_server: LiveServer) -> None:
    with live_server.client() as http:
        ready = http.get("/readyz", headers=OPERATOR)
    assert ready.status_code == 200, ready.text
    shelf = ready.json()["checks"]["projections"]["shelf"]
    lag = shelf["lag"]["library"]
    assert set(lag) == {"position", "head", "lag_events", "lag_seconds"}
    assert lag["lag_events"] == lag["head"] - lag["position"] >= 0
    assert shelf["db_state"] in ("running", "failed")
