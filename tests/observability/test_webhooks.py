"""Webhooks from batchd to a real receiver: signed events, retries, dead receivers.

Every terminal status and a stuck receiver at shutdown go through real ``batchd
serve`` processes; retries and a dead receiver run against the app in this process
(tests/inproc.py), whose dispatcher posts to the receiver over real HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from harness import (
    BatchdProcess,
    StartBatchd,
    chat_line,
    create_batch,
    free_port,
    run_batch,
    wait_batch,
    wait_for,
)
from inproc import StartApi
from observability.prom import scrape, value
from observability.receiver import Delivery, Receiver
from upstream_server import Faults, UpstreamServer

KEY = b"batchd-test-webhook-key-0123456"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def webhook_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "BATCHD_WEBHOOK_URL": url,
        "BATCHD_WEBHOOK_SECRET": SECRET,
        "BATCHD_WEBHOOK_RETRY_BASE": "0.05",
        "BATCHD_WEBHOOK_RETRY_CAP": "0.2",
        **extra,
    }


def check_signed(d: Delivery) -> dict[str, object]:
    """Verify a delivery the way a receiver would, without batchd's own code."""
    msg_id, stamp = d.headers["webhook-id"], d.headers["webhook-timestamp"]
    signed = f"{msg_id}.{stamp}.".encode() + d.body
    expected = "v1," + base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(d.headers["webhook-signature"], expected)
    assert abs(time.time() - int(stamp)) < 60
    assert d.headers["content-type"] == "application/json"
    event: dict[str, object] = json.loads(d.body)
    assert event["id"] == msg_id
    return event


def test_signed_events_for_every_terminal_status(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    receiver = Receiver().start()
    try:
        upstream.reset(Faults(delay=0.1))
        server = start_batchd(
            upstream=upstream.base_url,
            env=webhook_env(
                receiver.url,
                BATCHD_COMPLETION_WINDOWS="24h,2s",
                BATCHD_UPSTREAM_CONCURRENCY="2",
                BATCHD_CANCEL_GRACE="1",
            ),
        )
        c = server.client
        completed = create_batch(c, [chat_line(i) for i in range(2)])
        failed = create_batch(c, [b"{not json"])
        cancelled = create_batch(c, [chat_line(f"c{i}") for i in range(60)])
        expired = create_batch(c, [chat_line(f"e{i}") for i in range(60)], window="2s")
        wait_batch(c, cancelled.id, statuses=["in_progress"], timeout=15)
        c.batches.cancel(cancelled.id)
        want = {
            completed.id: "completed",
            failed.id: "failed",
            cancelled.id: "cancelled",
            expired.id: "expired",
        }
        for batch_id, status in want.items():
            assert wait_batch(c, batch_id, timeout=30).status == status

        events = [check_signed(d) for d in receiver.wait_events(4)]
        got = {e["data"]["id"]: e["type"] for e in events}  # type: ignore[index]
        assert got == {batch_id: f"batch.{status}" for batch_id, status in want.items()}
        for e in events:
            assert e["object"] == "event"
            assert str(e["id"]).startswith("evt_")
            assert isinstance(e["created_at"], int)
            assert set(e) == {"object", "id", "type", "created_at", "data"}
        # Each event is delivered once. Not slept on: a fifth batch's event, queued
        # after the four, arrives; a second delivery of any of them would be there too.
        fifth = wait_batch(c, create_batch(c, [chat_line("fifth")]).id, timeout=30)
        [*_, last] = receiver.wait_events(5)
        assert check_signed(last)["data"] == {"id": fifth.id}
        assert len(receiver.deliveries) == 5, "each event is delivered once"
        assert len({d.headers["webhook-id"] for d in receiver.deliveries}) == 5
    finally:
        receiver.stop()


def test_a_receiver_failing_twice_gets_the_event_on_the_third_try(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    receiver = Receiver(fail_first=2).start()
    try:
        server = start_api(upstream=upstream.base_url, env=webhook_env(receiver.url))
        b = run_batch(server.client, [chat_line(i) for i in range(3)])
        assert b.status == "completed"
        [ok] = receiver.wait_events(1)
        event = check_signed(ok)
        assert event["type"] == "batch.completed" and event["data"] == {"id": b.id}
        assert [d.status for d in receiver.deliveries] == [500, 500, 204]
        # Every try carries the same webhook-id (receivers de-duplicate on it), freshly signed.
        assert {d.headers["webhook-id"] for d in receiver.deliveries} == {event["id"]}
        for d in receiver.deliveries:
            check_signed(d)
        m = scrape(server)
        assert value(m, "batchd_webhook_deliveries_total", result="retry") == 2
        assert value(m, "batchd_webhook_deliveries_total", result="delivered") == 1
    finally:
        receiver.stop()


def test_a_dead_receiver_never_fails_a_batch(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/hooks"  # nothing listens there
    server = start_api(
        upstream=upstream.base_url, env=webhook_env(nobody, BATCHD_WEBHOOK_MAX_ATTEMPTS="3")
    )
    for n in range(3):
        b = run_batch(server.client, [chat_line(f"{n}-{i}") for i in range(5)], timeout=20)
        assert b.status == "completed"
        assert b.request_counts is not None and b.request_counts.completed == 5

    def gave_up() -> bool:
        return value(scrape(server), "batchd_webhook_deliveries_total", result="gave_up") == 3

    wait_for(gave_up, timeout=15, what="three webhook events given up")
    assert value(scrape(server), "batchd_webhook_deliveries_total", result="delivered") == 0


def test_a_stuck_receiver_never_blocks_batches_or_shutdown(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    receiver = Receiver(hang=30).start()
    try:
        server: BatchdProcess = start_batchd(
            upstream=upstream.base_url, env=webhook_env(receiver.url, BATCHD_WEBHOOK_TIMEOUT="60")
        )
        started = time.monotonic()
        for n in range(3):
            b = run_batch(server.client, [chat_line(f"{n}-{i}") for i in range(5)], timeout=20)
            assert b.status == "completed"
        assert time.monotonic() - started < 15
        assert receiver.deliveries == [], "the receiver has not answered anything"
        # Deliveries are still hanging; shutting down must not wait for them for long.
        t0 = time.monotonic()
        server.terminate(timeout=20)
        assert time.monotonic() - t0 < 15
        assert "webhook event(s) undelivered" in server.logs()
    finally:
        receiver.stop()
