"""Weights, end to end: ``batchd keys create --weight`` gives a key that share of a
backend against other keys with work there. Counting, not timing: the test upstream
answers every request after the same delay, so the lines each key has done say how
the backend was divided."""

from __future__ import annotations

import pytest

from fairness import ENV, late_key_is_not_stuck
from harness import StartBatchd, chat_line, create_batch, wait_batch, wait_for
from tenants.keys_cli import accepted, create_key
from upstream_server import Faults, UpstreamServer


@pytest.mark.parametrize("engines", ["1", "2"])
def test_a_key_with_weight_3_gets_three_times_the_share(
    start_batchd: StartBatchd, upstream: UpstreamServer, engines: str
) -> None:
    # With two engine processes each holds shards of either key or both: the backend's
    # limit is split between them by their keys' weights (engine/limits.py), or the
    # light key took most of an engine that held only its shards.
    env = {"BATCHD_UPSTREAM_CONCURRENCY": "8", "BATCHD_ENGINE_PROCESSES": engines}
    proc = start_batchd(upstream=upstream.base_url, env=env)
    heavy = proc.make_client(api_key=create_key("heavy", "--weight", "3", data_dir=proc.data_dir))
    light = proc.make_client(api_key=create_key("light", data_dir=proc.data_dir))
    wait_for(lambda: accepted(heavy) and accepted(light), timeout=5, what="keys accepted")
    upstream.reset(Faults(delay=0.25))
    # The light key starts first: any head start is on its side.
    slow = create_batch(light, [chat_line(f"l{i}", model="model-l") for i in range(160)])
    wait_batch(light, slow.id, statuses=("in_progress",), timeout=60)
    wait_for(lambda: upstream.stats.total >= 8, timeout=60, what="light key's lines sent")
    fast = create_batch(heavy, [chat_line(f"h{i}", model="model-h") for i in range(120)])
    done = wait_batch(heavy, fast.id, timeout=120)
    assert done.status == "completed"
    light_done = light.batches.retrieve(slow.id).request_counts.completed
    # Equal shares would leave the light key at least 120 lines done (its head start plus
    # as many as the heavy key's 120); three to one leaves it about 40 plus its start.
    print(f"{engines} engine(s): light key at {light_done} of 160 when the heavy key finished")
    assert light_done < 100, f"light key had {light_done} lines done when heavy finished"
    assert wait_batch(light, slow.id, timeout=120).status == "completed"


def test_keys_made_with_the_cli_share_fairly(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    # The fair-share scenario (tests/fairness.py) with database keys instead of static ones.
    proc = start_batchd(upstream=upstream.base_url, env=ENV)
    a = proc.make_client(api_key=create_key("early", data_dir=proc.data_dir))
    b = proc.make_client(api_key=create_key("late", data_dir=proc.data_dir))
    wait_for(lambda: accepted(a) and accepted(b), timeout=5, what="keys accepted")
    seen = late_key_is_not_stuck(a, b, upstream)
    print(f"key A: {seen['a_done']} of {seen['total']} lines done when key B's batch finished")
