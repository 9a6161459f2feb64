"""Keys in the database across processes on PostgreSQL: two API servers and two
workers see a key created and revoked with ``batchd keys --database-url`` without a
restart; per-key limits hold in whichever worker validates the batch."""

from __future__ import annotations

import time
from typing import Any

from fairness import ENV, late_key_is_not_stuck
from harness import chat_line, create_batch, wait_batch, wait_for
from tenants.keys_cli import accepts, create_key, keys_cli, list_keys
from upstream_server import Faults, UpstreamServer


def test_keys_on_postgres_reach_every_api_and_worker(
    cluster: Any, shared_env: dict[str, str], upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.3))
    db = {"BATCHD_DATABASE_URL": shared_env["BATCHD_DATABASE_URL"]}
    api1 = cluster("api", upstream=upstream.base_url, env=shared_env)
    api2 = cluster("api", upstream=upstream.base_url, env=shared_env)
    for _ in range(2):
        cluster("worker", upstream=upstream.base_url, env=shared_env)
    small = create_key("small", "--max-enqueued-requests", "8", env=db)
    big = create_key("big", env=db)
    t0 = time.monotonic()
    for api in (api1, api2):
        wait_for(lambda api=api: accepts(api, small) and accepts(api, big), timeout=5,
                 what="keys accepted by every API server")  # fmt: skip
    assert time.monotonic() - t0 < 5

    cs, cb = api1.make_client(api_key=small), api2.make_client(api_key=big)
    first = create_batch(cs, [chat_line(i) for i in range(6)])
    assert wait_batch(cs, first.id, statuses=("in_progress",)).status == "in_progress"
    over = wait_batch(cs, create_batch(cs, [chat_line(i) for i in range(6)]).id)
    assert over.status == "failed" and over.errors is not None
    assert over.errors.data[0].code == "token_limit_exceeded"
    fine = wait_batch(cb, create_batch(cb, [chat_line(i) for i in range(6)]).id)
    assert fine.status == "completed"
    assert wait_batch(cs, first.id).status == "completed"

    keys_cli("revoke", "small", env=db)
    t0 = time.monotonic()
    for api in (api1, api2):
        wait_for(lambda api=api: not accepts(api, small), timeout=5, what="small refused")
    assert time.monotonic() - t0 < 5
    rows = list_keys(env=db)
    assert rows["small"]["status"] == "revoked"
    assert rows["small"]["batches"] == 2 and rows["small"]["requests"] == 6
    assert rows["big"]["requests"] == 6


def test_keys_made_with_the_cli_share_fairly_on_two_workers(
    cluster: Any, shared_env: dict[str, str], upstream: UpstreamServer
) -> None:
    env = {**shared_env, **ENV}
    db = {"BATCHD_DATABASE_URL": shared_env["BATCHD_DATABASE_URL"]}
    early, late = create_key("early", env=db), create_key("late", env=db)
    api = cluster("api", upstream=upstream.base_url, env=env, api_key=early)
    for _ in range(2):
        cluster("worker", upstream=upstream.base_url, env=env)
    seen = late_key_is_not_stuck(api.client, api.make_client(api_key=late), upstream)
    print(f"key A: {seen['a_done']} of {seen['total']} lines done when key B's batch finished")
    assert seen["b_peak"] > 2, seen  # the late key ran on both workers
