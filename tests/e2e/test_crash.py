"""Durability: SIGKILL the server mid-batch, restart on the same data dir, lose nothing.

Every custom_id must appear exactly once across the output and error files, and
only requests in flight at a kill may be sent again: at most
``concurrency x kills`` re-sends in all.
"""

from __future__ import annotations

import random
import time

import pytest

from harness import (
    BatchdProcess,
    StartBatchd,
    by_custom_id,
    chat_line,
    create_batch,
    results,
    run_batch,
    upload,
    wait_batch,
    wait_for,
)
from upstream_server import Faults, UpstreamServer

CONCURRENCY = 16


def _check_exactly_once(
    server: BatchdProcess, batch_id: str, n: int, upstream: UpstreamServer, bound: int
) -> None:
    c = server.client
    b = wait_batch(c, batch_id, timeout=120)
    assert b.status == "completed", b
    assert b.request_counts.model_dump() == {"total": n, "completed": n, "failed": 0}
    out, err = results(c, b)
    assert err == []
    got = by_custom_id(out)  # raises on a duplicate
    assert set(got) == {f"r{i}" for i in range(n)}
    for i in (0, n // 2, n - 1):
        assert got[f"r{i}"]["response"]["body"]["choices"][0]["message"]["content"] == (
            f"echo: hello {i}"
        )
    attempts = upstream.stats.attempts
    assert all(attempts[f"hello {i}"] >= 1 for i in range(n))
    resent = sum(count - 1 for count in attempts.values())
    assert resent <= bound, f"{resent} re-sends > bound {bound}"


@pytest.mark.slow
def test_sigkill_at_random_moments(start_batchd: StartBatchd, upstream: UpstreamServer) -> None:
    n, kills = 3000, 4
    upstream.reset(Faults(delay=0.02))
    server = start_batchd(
        upstream=upstream.base_url,
        env={"BATCHD_UPSTREAM_CONCURRENCY": str(CONCURRENCY), "BATCHD_SHARD_SIZE": "500"},
    )
    c = server.client
    b = create_batch(c, [chat_line(i) for i in range(n)])
    rng = random.Random(20240601)
    progress = []
    for k in range(kills):
        # Kill at a random point of the run: a little after some progress was made.
        target = (k + 1) * n // (kills + 2) + rng.randrange(0, n // (kills + 2) // 2)
        wait_for(lambda t=target: upstream.stats.total >= t, timeout=60, what=f"{target} requests")
        time.sleep(rng.uniform(0, 0.2))
        server.kill()
        progress.append(upstream.stats.total)
        server.restart()
        # Files and batches survive.
        assert server.client.files.retrieve(b.input_file_id).id == b.input_file_id
        assert server.client.batches.retrieve(b.id).status in (
            "in_progress",
            "finalizing",
            "completed",
        )
    assert progress == sorted(progress)
    _check_exactly_once(server, b.id, n, upstream, CONCURRENCY * kills)


@pytest.mark.slow
def test_sigkill_during_validation_and_finalization(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    """Kills right after creation and right as requests run out still lose nothing."""
    n = 400
    server = start_batchd(
        upstream=upstream.base_url, env={"BATCHD_UPSTREAM_CONCURRENCY": str(CONCURRENCY)}
    )
    c = server.client
    f = upload(c, [chat_line(i) for i in range(n)])
    b = c.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    server.kill()  # most likely still validating
    server.restart()
    wait_for(lambda: upstream.stats.total >= n, timeout=60, what="every request sent")
    server.kill()  # most likely finalizing, or just done
    server.restart()
    _check_exactly_once(server, b.id, n, upstream, CONCURRENCY * 2)
    # The finished batch's files are all there, once.
    done = server.client.batches.retrieve(b.id)
    outputs = [x for x in server.client.files.list(purpose="batch_output").data]
    assert [x.id for x in outputs] == [done.output_file_id]


@pytest.mark.slow
def test_sigterm_is_graceful_and_the_batch_resumes(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    n = 600
    upstream.reset(Faults(delay=0.05))
    server = start_batchd(
        upstream=upstream.base_url,
        env={"BATCHD_UPSTREAM_CONCURRENCY": str(CONCURRENCY), "BATCHD_CANCEL_GRACE": "30"},
    )
    c = server.client
    b = create_batch(c, [chat_line(i) for i in range(n)])
    wait_for(lambda: upstream.stats.total >= n // 4, timeout=60, what="progress")
    t0 = time.monotonic()
    rc = server.terminate(timeout=15)
    took = time.monotonic() - t0
    assert took < 10, f"shutdown took {took:.1f}s"
    # It stopped sending new requests rather than draining the batch...
    assert upstream.stats.total < n
    assert rc in (0, -15), f"exit status {rc} after SIGTERM"
    server.restart()
    # ...and let the requests in flight finish and recorded their answers before it
    # exited: after the restart not one request is sent a second time (a SIGKILL may
    # re-send up to CONCURRENCY; a graceful stop re-sends none).
    _check_exactly_once(server, b.id, n, upstream, 0)


def test_sigterm_exits_zero(start_batchd: StartBatchd, upstream: UpstreamServer) -> None:
    server = start_batchd(upstream=upstream.base_url)
    assert run_batch(server.client, [chat_line(1)]).status == "completed"
    assert server.terminate(timeout=15) == 0
