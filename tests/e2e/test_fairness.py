"""Fair share between API keys, end to end (one ``batchd serve``, SQLite): a key with
one batch is not stuck behind another key's queue (tests/fairness.py). Weights are
checked at the gate (tests/unit/test_fair_gate.py) and the claim order
(tests/store/test_claim_order.py); across workers on PostgreSQL in tests/scale."""

from __future__ import annotations

from fairness import ENV, KEYS, key_args, late_key_is_not_stuck
from harness import StartBatchd
from upstream_server import UpstreamServer


def test_a_late_keys_batch_finishes_while_an_early_keys_queue_is_under_half_done(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(upstream=upstream.base_url, args=key_args(), env=ENV, api_key=KEYS[0])
    seen = late_key_is_not_stuck(server.client, server.make_client(api_key=KEYS[1]), upstream)
    print(f"key A: {seen['a_done']} of {seen['total']} lines done when key B's batch finished")


def test_a_late_key_gets_a_place_when_an_early_keys_batches_fill_every_shard_place(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    # Two shard places (and the two newcomer places after them): key A's six batches
    # fill all four before B comes; B's batch must still start at once, not after one
    # of A's (without the new-tenant places A had 185 of 240 lines done then).
    env = {**ENV, "BATCHD_MAX_SHARDS": "2"}
    server = start_batchd(upstream=upstream.base_url, args=key_args(), env=env, api_key=KEYS[0])
    seen = late_key_is_not_stuck(server.client, server.make_client(api_key=KEYS[1]), upstream)
    print(f"key A: {seen['a_done']} of {seen['total']} lines done when key B's batch finished")
