"""Queue limits through the official SDK: BATCHD_MAX_ENQUEUED_TOKENS / _REQUESTS bound
what one API key's unfinished batches hold; a batch beyond them fails validation with
``token_limit_exceeded``; once earlier batches finish, new ones pass again."""

from __future__ import annotations

import pytest

from harness import StartBatchd, chat_line, create_batch, wait_batch
from upstream_server import Faults, UpstreamServer

KEYS = {"BATCHD_API_KEYS": "test-key,other-key"}


def lines(n: int, chars: int = 400) -> list[dict[str, object]]:
    # chars / 4 tokens per line (no tokenizer is on disk here: the estimate applies).
    return [chat_line(i, text="x" * chars) for i in range(n)]


@pytest.mark.parametrize(
    ("env", "unit", "limit"),
    [({"BATCHD_MAX_ENQUEUED_TOKENS": "1500"}, "tokens", "1,500"),
     ({"BATCHD_MAX_ENQUEUED_REQUESTS": "15"}, "requests", "15")],
)  # fmt: skip
def test_limit_refuses_then_admits_once_earlier_batches_finish(
    start_batchd: StartBatchd, upstream: UpstreamServer, env: dict[str, str], unit: str,
    limit: str,
) -> None:
    upstream.reset(Faults(delay=0.5))  # the first batch stays in progress a while
    proc = start_batchd(upstream=upstream.base_url, env={**KEYS, **env})
    c = proc.client
    first = create_batch(c, lines(10))  # 1000 tokens, 10 requests: fits
    assert wait_batch(c, first.id, statuses=("in_progress",)).status == "in_progress"
    refused = wait_batch(c, create_batch(c, lines(10)).id)
    assert refused.status == "failed"
    assert refused.errors is not None
    (error,) = refused.errors.data
    assert error.code == "token_limit_exceeded"
    assert error.message == (
        f"Enqueued {unit[:-1]} limit reached for test-model in this API key. Limit: {limit} "
        f"enqueued {unit}. Please try again once some in_progress batches have been completed."
    )
    # Another API key has a queue of its own.
    other = proc.make_client(api_key="other-key")
    mine = wait_batch(other, create_batch(other, lines(10)).id, statuses=("in_progress",
                                                                         "completed"))  # fmt: skip
    assert mine.status in ("in_progress", "completed")
    # A small batch still fits beside the first.
    small = wait_batch(c, create_batch(c, lines(2)).id)
    assert small.status == "completed", small
    assert wait_batch(c, first.id).status == "completed"
    again = wait_batch(c, create_batch(c, lines(10)).id)
    assert again.status == "completed", again


def test_no_limit_by_default(start_batchd: StartBatchd, upstream: UpstreamServer) -> None:
    upstream.reset(Faults(delay=0.3))
    proc = start_batchd(upstream=upstream.base_url)
    c = proc.client
    batches = [create_batch(c, lines(20, chars=4000)) for _ in range(3)]
    assert [wait_batch(c, b.id).status for b in batches] == ["completed"] * 3
