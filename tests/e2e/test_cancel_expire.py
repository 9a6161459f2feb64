"""Stopping a batch early: cancel (``cancelling`` -> ``cancelled``) and window expiry.

A cancel on a server without a worker, seen by the worker of a restarted process, runs
through real ``batchd serve`` processes; the rest against the app in this process
(tests/inproc.py).
"""

from __future__ import annotations

import time
from typing import Any

from harness import (
    StartBatchd,
    by_custom_id,
    chat_line,
    create_batch,
    results,
    wait_batch,
    wait_for,
)
from inproc import StartApi
from upstream_server import Faults, UpstreamServer

N = 40


def _check_partial(client: Any, b: Any, code: str) -> tuple[set[str], set[str]]:
    """Every line exactly once; unrun lines carry ``code``; counts match the files."""
    out, err = results(client, b)
    done = by_custom_id(out)
    failed = by_custom_id(err)
    assert not set(done) & set(failed)
    assert set(done) | set(failed) == {f"r{i}" for i in range(N)}
    unrun = {cid for cid, line in failed.items() if line["error"] is not None}
    for cid in unrun:
        line = failed[cid]
        assert line["response"] is None
        assert line["error"]["code"] == code
        assert line["id"].startswith("batch_req_")
    assert b.request_counts.total == N
    assert b.request_counts.completed == len(done)
    assert b.request_counts.failed == len(failed)
    return set(done), unrun


def test_cancel_delivers_finished_results(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.3))
    server = start_api(
        upstream=upstream.base_url,
        env={"BATCHD_UPSTREAM_CONCURRENCY": "2", "BATCHD_CANCEL_GRACE": "5"},
    )
    c = server.client
    b = create_batch(c, [chat_line(i) for i in range(N)])
    wait_for(
        lambda: c.batches.retrieve(b.id).request_counts.completed >= 4,
        timeout=20,
        what="some results",
    )
    cancelling = c.batches.cancel(b.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    # Cancelling again is harmless.
    assert c.batches.cancel(b.id).status in ("cancelling", "cancelled")
    final = wait_batch(c, b.id, timeout=30)
    assert final.status == "cancelled"
    assert final.cancelled_at is not None and final.cancelled_at >= final.cancelling_at
    assert final.completed_at is None and final.finalizing_at is None
    done, unrun = _check_partial(c, final, "batch_cancelled")
    assert len(done) >= 4
    assert len(unrun) >= N // 2
    # Unrun lines were never sent; nothing was sent twice.
    assert all(upstream.stats.attempts[f"hello {cid[1:]}"] == 0 for cid in unrun)
    assert max(upstream.stats.attempts.values()) == 1
    # Nothing is sent after the batch is cancelled. Not slept on: a later batch runs
    # from start to end on the same worker and upstream meanwhile, so a shard of the
    # cancelled one still sending would have sent by the time it is done.
    sent = upstream.stats.total
    later = wait_batch(c, create_batch(c, [chat_line(f"later {i}") for i in range(4)]).id)
    assert later.status == "completed"
    assert upstream.stats.total == sent + 4
    assert all(upstream.stats.attempts[f"hello {cid[1:]}"] == 0 for cid in unrun)


def test_cancel_while_validating(start_batchd: StartBatchd, upstream: UpstreamServer) -> None:
    # A worker-less server: the batch stays in validating until a worker exists.
    server = start_batchd(upstream=upstream.base_url, args=["--no-worker"])
    c = server.client
    b = create_batch(c, [chat_line(i) for i in range(N)])
    assert c.batches.cancel(b.id).status == "cancelling"
    server.terminate()
    server.args = []
    server.restart()
    final = wait_batch(server.client, b.id)
    assert final.status == "cancelled"
    done, unrun = _check_partial(server.client, final, "batch_cancelled")
    assert done == set() and len(unrun) == N
    assert upstream.stats.total == 0


def test_expiry_delivers_partial_results(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.4))
    server = start_api(
        upstream=upstream.base_url,
        env={
            "BATCHD_COMPLETION_WINDOWS": "24h,2s",
            "BATCHD_UPSTREAM_CONCURRENCY": "2",
            "BATCHD_CANCEL_GRACE": "1",
        },
    )
    c = server.client
    b = create_batch(c, [chat_line(i) for i in range(N)], window="2s")
    assert b.completion_window == "2s"
    assert b.expires_at == b.created_at + 2
    final = wait_batch(c, b.id, timeout=30)
    assert final.status == "expired"
    assert final.expired_at is not None and final.expired_at >= final.expires_at
    assert final.completed_at is None
    done, unrun = _check_partial(c, final, "batch_expired")
    assert done, "finished results are delivered"
    assert len(unrun) >= N // 2
    # Sending stops when the window ends, not at the next sweep (which runs once a second).
    to_wall = time.time() - time.monotonic()
    last_sent = max(t for ts in upstream.stats.times.values() for t in ts) + to_wall
    assert last_sent < final.expires_at + 0.5


def test_window_ending_during_the_last_requests_completes(
    start_api: StartApi, upstream: UpstreamServer
) -> None:
    # Every line is in flight when the 2 s window ends (each takes 2.5 s) and finishes
    # within the grace: nothing was cut short, so the batch is completed, not expired.
    upstream.reset(Faults(delay=2.5))
    server = start_api(
        upstream=upstream.base_url,
        env={"BATCHD_COMPLETION_WINDOWS": "24h,2s", "BATCHD_CANCEL_GRACE": "10"},
    )
    c = server.client
    b = create_batch(c, [chat_line(i) for i in range(4)], window="2s")
    final = wait_batch(c, b.id, timeout=30)
    assert final.status == "completed"
    assert final.completed_at is not None and final.completed_at >= final.expires_at
    assert final.expired_at is None and final.error_file_id is None
    out, _ = results(c, final)
    assert set(by_custom_id(out)) == {f"r{i}" for i in range(4)}
    assert final.request_counts.completed == 4
