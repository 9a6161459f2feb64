"""Scale-out: several API servers and workers on one PostgreSQL database and one
S3-compatible store (moto's ThreadedMotoServer), fair scheduling (between batches,
by priority within a key, between keys across workers), adaptive limits."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fairness import ENV, KEYS, key_args, late_key_is_not_stuck
from harness import by_custom_id, chat_line, create_batch, results, wait_batch, wait_for
from upstream_server import Faults, UpstreamServer

CONCURRENCY = 16


@pytest.mark.slow
def test_two_apis_three_workers_one_killed_exactly_once(
    cluster: Any, shared_env: dict[str, str], upstream: UpstreamServer
) -> None:
    n = 2000
    upstream.reset(Faults(delay=0.01))
    env = {
        **shared_env,
        "BATCHD_UPSTREAM_CONCURRENCY": str(CONCURRENCY),
        "BATCHD_SHARD_SIZE": "100",
        "BATCHD_LEASE_SECONDS": "4",
    }
    api1 = cluster("api", upstream=upstream.base_url, env=env)
    api2 = cluster("api", upstream=upstream.base_url, env=env)
    workers = [cluster("worker", upstream=upstream.base_url, env=env) for _ in range(3)]
    b = create_batch(api1.client, [chat_line(i) for i in range(n)])
    # The other API server sees the same batch and file (shared database and bucket).
    assert api2.client.batches.retrieve(b.id).input_file_id == b.input_file_id
    wait_for(lambda: upstream.stats.total >= n // 3, timeout=60, what="a third sent")
    workers[0].kill()
    done = wait_batch(api2.client, b.id, timeout=120)
    assert done.status == "completed", done
    assert done.request_counts.model_dump() == {"total": n, "completed": n, "failed": 0}
    out, err = results(api1.client, done)
    assert err == []
    got = by_custom_id(out)  # raises on a duplicate
    assert set(got) == {f"r{i}" for i in range(n)}
    assert got["r7"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: hello 7"
    # Only requests in flight in the killed worker may have been sent twice.
    resent = sum(count - 1 for count in upstream.stats.attempts.values())
    assert resent <= CONCURRENCY, resent
    outputs = api2.client.files.list(purpose="batch_output").data
    assert [f.id for f in outputs] == [done.output_file_id]  # finalized exactly once


def test_small_batch_is_not_stuck_behind_a_huge_one(
    cluster: Any, shared_env: dict[str, str], upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.02))
    env = {**shared_env, "BATCHD_UPSTREAM_CONCURRENCY": "8", "BATCHD_SHARD_SIZE": "50"}
    server = cluster("serve", upstream=upstream.base_url, env=env)
    c = server.client
    huge = create_batch(c, [chat_line(i) for i in range(3000)])
    wait_batch(c, huge.id, statuses=("in_progress",), timeout=30)
    wait_for(lambda: upstream.stats.total >= 100, timeout=30, what="huge batch running")
    t0 = time.monotonic()
    small = create_batch(c, [chat_line(f"s{i}") for i in range(20)])
    small_done = wait_batch(c, small.id, timeout=60)
    small_took = time.monotonic() - t0
    assert small_done.status == "completed"
    assert small_done.request_counts.completed == 20
    # The huge batch is far from done when the small one has finished.
    huge_now = c.batches.retrieve(huge.id)
    assert huge_now.status == "in_progress", huge_now
    assert huge_now.request_counts.completed < 3000 // 2
    assert small_took < 5, small_took


def test_priority_runs_first(
    cluster: Any, shared_env: dict[str, str], upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.02))
    env = {**shared_env, "BATCHD_UPSTREAM_CONCURRENCY": "4", "BATCHD_SHARD_SIZE": "20"}
    api = cluster("api", upstream=upstream.base_url, env=env)
    c = api.client
    low = create_batch(c, [chat_line(f"low{i}") for i in range(200)])
    high = create_batch(c, [chat_line(f"high{i}") for i in range(200)], metadata={"priority": "5"})
    cluster("worker", upstream=upstream.base_url, env=env)  # starts with both waiting
    high_done = wait_batch(c, high.id, timeout=60)
    assert high_done.status == "completed"
    low_now = c.batches.retrieve(low.id)
    assert low_now.request_counts.completed < 200, low_now
    wait_batch(c, low.id, timeout=60)


def test_a_late_key_gets_its_share_on_every_worker(
    cluster: Any, shared_env: dict[str, str], upstream: UpstreamServer
) -> None:
    # Two workers, each with half of the backend's 8: key B's small batch must be cut
    # into pieces for both, and get half of each worker's share, for B to finish
    # while key A is under half done (on one worker only it would get a quarter).
    env = {**shared_env, **ENV}
    api = cluster("api", upstream=upstream.base_url, env=env, args=key_args(), api_key=KEYS[0])
    for _ in range(2):
        cluster("worker", upstream=upstream.base_url, env=env)
    seen = late_key_is_not_stuck(api.client, api.make_client(api_key=KEYS[1]), upstream)
    print(f"key A: {seen['a_done']} of {seen['total']} lines done when key B's batch finished")
    # Each worker gives B at most half of its 4: more than 2 of B's lines at the
    # upstream at once means B ran on both workers.
    assert seen["b_peak"] > 2, seen


def test_rate_limited_upstream_is_driven_at_its_limit_with_few_429s(
    cluster: Any, shared_env: dict[str, str], upstream: UpstreamServer
) -> None:
    n, allowed = 600, 4
    upstream.reset(Faults(delay=0.02, max_concurrency=allowed, retry_after=0.05))
    env = {**shared_env, "BATCHD_UPSTREAM_CONCURRENCY": "64", "BATCHD_MAX_ATTEMPTS": "20"}
    api = cluster("api", upstream=upstream.base_url, env=env)
    for _ in range(2):
        cluster("worker", upstream=upstream.base_url, env=env)
    t0 = time.monotonic()
    done = wait_batch(api.client, create_batch(api.client, [chat_line(i) for i in range(n)]).id)
    took = time.monotonic() - t0
    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": n, "completed": n, "failed": 0}
    rejected = upstream.stats.rejected_429
    # Without adaptation 64 in flight against 4 allowed would be mostly 429s.
    assert rejected <= n // 20, f"{rejected} 429s for {n} requests"
    # Near the limit: n requests at `allowed` in flight, 0.02 s each, take >= 3 s.
    ideal = n * 0.02 / allowed
    assert took < ideal * 3 + 5, (took, ideal)
    print(f"429s: {rejected}, took {took:.1f}s (ideal {ideal:.1f}s)")
