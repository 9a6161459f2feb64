"""The fair-share scenario of issue 13, shared by the one-worker (SQLite) and the
two-worker (PostgreSQL) tests: key A queues six 40-line batches, key B one 40-line
batch once A's are running; B's batch must finish while A has less than half of its
240 lines done.

Counting, not timing: with the test upstream answering every request after the same
delay, a FIFO share of the backend finishes B's lines after all of A's 240; a fair
one gives B half the backend from its arrival, so A completes about as many lines
as B meanwhile (plus what it did before B came).
"""

from __future__ import annotations

from typing import Any

import openai

from harness import chat_line, create_batch, wait_batch, wait_for
from upstream_server import Faults, UpstreamServer

KEYS = ("key-a-secret", "key-b-secret")
ENV = {"BATCHD_UPSTREAM_CONCURRENCY": "8"}
"""One backend at concurrency 8 (divided among the workers sending to it)."""
DELAY = 1.0
"""Seconds the upstream takes per answer: A's 240 lines take 30 s at 8 in flight, so
the overheads of a loaded machine (validating and claiming B's batch) stay small
beside them: at 0.5 s, a few seconds of those once let A pass half its lines."""
A_BATCHES, LINES = 6, 40


def key_args() -> list[str]:
    return [arg for key in KEYS for arg in ("--api-key", key)]


def late_key_is_not_stuck(
    a: openai.OpenAI, b: openai.OpenAI, upstream: UpstreamServer
) -> dict[str, Any]:
    """Run the scenario; returns what the test may report."""
    upstream.reset(Faults(delay=DELAY))
    early = [
        create_batch(a, [chat_line(f"a{n}-{i}", model="model-a") for i in range(LINES)])
        for n in range(A_BATCHES)
    ]
    # B comes once A's work is at the upstream (all six validated and queued).
    for batch in early:
        wait_batch(a, batch.id, statuses=("in_progress",), timeout=60)
    wait_for(lambda: upstream.stats.total >= 8, timeout=60, what="key A's lines sent")
    late = create_batch(b, [chat_line(f"b{i}", model="model-b") for i in range(LINES)])
    done = wait_batch(b, late.id, timeout=120)
    a_done = sum(a.batches.retrieve(x.id).request_counts.completed for x in early)
    assert done.status == "completed", done
    assert done.request_counts.completed == LINES
    total = A_BATCHES * LINES
    assert a_done < total // 2, f"key A had {a_done} of {total} lines done when B finished"
    # How many of B's lines the upstream saw at once (each key's model is its own).
    return {"a_done": a_done, "total": total, "b_peak": upstream.stats.peak_by_model["model-b"]}
