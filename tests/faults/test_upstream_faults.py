"""Upstream faults: 30% of attempts fail as a 500, a 429 with ``Retry-After``, a
timeout, a dropped connection or a slow answer, and every line is still accounted
for exactly once; the lines the upstream rejects for good (400) fail at once, and
every other line succeeds after retries."""

from __future__ import annotations

import pytest

from harness import StartBatchd, by_custom_id, chat_line, results, run_batch
from upstream_server import Faults, UpstreamServer

N = 600
REJECT = "REJECT-ME"


@pytest.mark.slow
def test_thirty_percent_faults_every_line_accounted_for(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    upstream.reset(
        Faults(
            error_rate=0.3,
            error_kinds=("500", "429", "timeout", "drop", "slow"),
            slow_seconds=0.2,  # slow, but inside the client's timeout: a success
            timeout_seconds=5.0,  # far past it: the client gives up and retries
            retry_after=0.05,
            reject_marker=REJECT,
        )
    )
    server = start_batchd(
        upstream=upstream.base_url,
        env={
            "BATCHD_UPSTREAM_CONCURRENCY": "48",
            "BATCHD_UPSTREAM_TIMEOUT": "0.5",
            # 0.3**12 ~ 5e-7: no line may honestly run out of tries.
            "BATCHD_MAX_ATTEMPTS": "12",
        },
    )
    rejected = {f"r{i}" for i in range(0, N, 20)}
    lines = [chat_line(i, text=f"{REJECT} {i}" if f"r{i}" in rejected else None) for i in range(N)]
    done = run_batch(server.client, lines, timeout=120)
    assert done.status == "completed", done
    assert done.request_counts.model_dump() == {
        "total": N,
        "completed": N - len(rejected),
        "failed": len(rejected),
    }
    out, err = results(server.client, done)
    ok, failed = by_custom_id(out), by_custom_id(err)
    assert not set(ok) & set(failed), "a line in both files"
    assert set(ok) | set(failed) == {f"r{i}" for i in range(N)}, "a line lost"
    assert set(failed) == rejected
    for line in failed.values():
        assert line["response"]["status_code"] == 400
        assert line["response"]["body"]["error"]["code"] == "content_rejected"
    for cid, line in ok.items():
        assert line["response"]["status_code"] == 200
        i = int(cid[1:])
        assert line["response"]["body"]["choices"][0]["message"]["content"] == f"echo: hello {i}"
    stats = upstream.stats
    # A 400 is final: each rejected line was sent once.
    assert all(stats.attempts[f"{REJECT} {cid[1:]}"] == 1 for cid in rejected)
    # The faults really happened: about 30% of the ~N / 0.7 attempts failed.
    assert stats.total >= N * 1.25, stats.total
    print(f"faults: {stats.total} attempts for {N} lines")
