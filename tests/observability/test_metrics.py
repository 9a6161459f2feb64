"""``/metrics``: Prometheus text after real batches against a real upstream.

Against the app in this process (tests/inproc.py); the webhook tests read the same
metrics from real server processes.
"""

from __future__ import annotations

from harness import chat_line, create_batch, run_batch, wait_for
from inproc import InProcessBatchd, StartApi
from observability.prom import Samples, scrape, total, value
from upstream_server import Faults, UpstreamServer


def test_metrics_count_a_batch_with_429s_retries_and_failures(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    # Keys are on: /metrics must still answer without one.
    server = start_api(upstream=upstream.base_url, api_keys=["k1"], api_key="k1")
    before = scrape(server)
    assert value(before, "batchd_lines_processed_total") == 0
    assert value(before, "batchd_queue_depth") == 0

    # Every good line is rate limited once, then answered; two lines are rejected (400).
    upstream.reset(Faults(fail_first=1, fail_status=429, retry_after=0.01, reject_marker="BAD"))
    lines = [chat_line(i) for i in range(8)] + [chat_line(i, text=f"BAD {i}") for i in (8, 9)]
    b = run_batch(server.client, lines)
    assert b.status == "completed"
    assert b.request_counts is not None and b.request_counts.failed == 2

    m = scrape(server)
    assert value(m, "batchd_lines_processed_total") == 10
    assert value(m, "batchd_lines_failed_total") == 2
    ep = "/v1/chat/completions"
    backend = "upstream"
    for status, n in (("429", 8), ("200", 8), ("400", 2)):
        got = value(m, "batchd_backend_requests_total", backend=backend, endpoint=ep, status=status)
        assert got == n, status
    assert value(m, "batchd_backend_rate_limited_total", backend=backend) == 8
    assert value(m, "batchd_backend_retries_total", backend=backend, status="429") == 8
    assert total(m, "batchd_backend_retries_total") == 8
    assert (
        value(m, "batchd_backend_request_duration_seconds_count", backend=backend, endpoint=ep)
        == 18
    )
    assert value(m, "batchd_batches_finished_total", status="completed") == 1
    assert value(m, "batchd_batches", status="completed") == 1
    assert value(m, "batchd_batches", status="in_progress") == 0
    assert value(m, "batchd_queue_depth") == 0

    # A second batch makes the counters grow.
    run_batch(server.client, [chat_line(f"x{i}") for i in range(5)])
    again = scrape(server)
    assert value(again, "batchd_lines_processed_total") == 15
    assert value(again, "batchd_batches", status="completed") == 2


def test_http_metrics_use_route_templates(api: InProcessBatchd) -> None:
    b = run_batch(api.client, [chat_line(i) for i in range(3)])
    api.client.files.content(b.output_file_id)
    assert api.http("GET", "/v1/batches/batch_doesnotexist0")[0] == 404
    assert api.http("GET", "/no/such/route/12345")[0] == 404

    m = scrape(api)
    routes = {dict(lab).get("route") for (n, lab) in m if n == "batchd_http_requests_total"}
    assert "/v1/batches/{batch_id}" in routes
    assert "/v1/files/{file_id}/content" in routes
    assert "/v1/files" in routes and "/v1/batches" in routes
    assert "unmatched" in routes
    # No raw path (with an id in it) ever becomes a label.
    assert not any(r and (b.id in r or "doesnotexist" in r or "12345" in r) for r in routes)
    assert (
        value(
            m,
            "batchd_http_requests_total",
            method="GET",
            route="/v1/batches/{batch_id}",
            status="404",
        )
        == 1
    )
    assert (
        value(m, "batchd_http_requests_total", method="POST", route="/v1/batches", status="200")
        == 1
    )
    assert (
        value(m, "batchd_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    )
    assert total(m, "batchd_http_request_duration_seconds_count", route="/v1/files") >= 1


def test_queue_depth_and_status_gauges_while_running(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.2))
    server = start_api(upstream=upstream.base_url, env={"BATCHD_UPSTREAM_CONCURRENCY": "1"})
    b = create_batch(server.client, [chat_line(i) for i in range(30)])

    def running() -> Samples | None:
        m = scrape(server)
        return m if value(m, "batchd_batches", status="in_progress") == 1 else None

    m = wait_for(running, timeout=15, what="a batch in progress")
    assert 0 < value(m, "batchd_queue_depth") <= 30

    def draining() -> Samples | None:
        m = scrape(server)
        return m if value(m, "batchd_queue_depth") < 28 else None

    later = wait_for(draining, timeout=15, what="the queue to drain")
    assert value(later, "batchd_lines_processed_total") >= 1
    server.client.batches.cancel(b.id)
    wait_for(
        lambda: value(scrape(server), "batchd_batches", status="cancelled") == 1,
        timeout=20,
        what="the batch to be cancelled",
    )
    m = scrape(server)
    assert value(m, "batchd_queue_depth") == 0
    assert value(m, "batchd_batches_finished_total", status="cancelled") == 1


def test_metrics_can_be_switched_off(start_api: StartApi, upstream: UpstreamServer) -> None:
    server = start_api(upstream=upstream.base_url, env={"BATCHD_METRICS_ENABLED": "false"})
    assert server.http("GET", "/metrics")[0] == 404
    assert server.http("GET", "/v1/batches")[0] == 200
