"""Keys in the database, end to end: ``batchd keys`` against a running ``batchd serve``,
the official SDK as the client, the real test upstream."""

from __future__ import annotations

import re
import time
import urllib.request

import openai
import pytest

from harness import BatchdProcess, StartBatchd, chat_line, create_batch, wait_batch, wait_for
from tenants.keys_cli import accepts, create_key, keys_cli, list_keys
from upstream_server import Faults, UpstreamServer

SEEN_WITHIN = 5.0  # the bound for a new or revoked key to take effect


def refused(proc: BatchdProcess, key: str | None) -> bool:
    status, _headers, _body = proc.http(
        "GET", "/v1/files", auth=key is not None, headers={"Authorization": f"Bearer {key}"}
        if key else None,
    )  # fmt: skip
    return status == 401


def test_keys_created_while_the_server_runs_are_tenants_and_revocation_is_seen(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    proc = start_batchd(upstream=upstream.base_url)  # no key yet: an open server
    assert not refused(proc, None)
    a = create_key("team-a", data_dir=proc.data_dir)
    t0 = time.monotonic()
    # Once a key exists, every request needs one.
    wait_for(lambda: refused(proc, None), timeout=SEEN_WITHIN, what="the open server closed")
    wait_for(lambda: accepts(proc, a), timeout=SEEN_WITHIN, what="team-a accepted")
    assert time.monotonic() - t0 < SEEN_WITHIN
    b = create_key("team-b", data_dir=proc.data_dir)
    wait_for(lambda: accepts(proc, b), timeout=SEEN_WITHIN, what="team-b accepted")
    assert refused(proc, "sk-batchd-not-a-key")

    ca, cb = proc.make_client(api_key=a), proc.make_client(api_key=b)
    done = wait_batch(ca, create_batch(ca, [chat_line(i) for i in range(5)]).id)
    assert done.status == "completed"
    # Isolation: team-b sees none of team-a's batches or files.
    assert [x.id for x in cb.batches.list().data] == []
    assert [f.id for f in cb.files.list().data] == []
    with pytest.raises(openai.NotFoundError):
        cb.batches.retrieve(done.id)
    with pytest.raises(openai.NotFoundError):
        cb.files.content(done.output_file_id)
    assert [x.id for x in ca.batches.list().data] == [done.id]

    keys_cli("revoke", "team-a", data_dir=proc.data_dir)
    t0 = time.monotonic()
    wait_for(lambda: refused(proc, a), timeout=SEEN_WITHIN, what="team-a refused")
    assert time.monotonic() - t0 < SEEN_WITHIN
    with pytest.raises(openai.AuthenticationError) as err:
        ca.batches.list()
    assert "revoked" in str(err.value)
    assert accepts(proc, b)  # the other key is untouched


def test_static_keys_keep_working_beside_database_keys(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    proc = start_batchd(upstream=upstream.base_url, env={"BATCHD_API_KEYS": "test-key"})
    assert refused(proc, None)
    k = create_key("ci", data_dir=proc.data_dir)
    wait_for(lambda: accepts(proc, k), timeout=SEEN_WITHIN, what="ci key accepted")
    assert accepts(proc, "test-key")
    # Each is its own tenant.
    static, db = proc.make_client(api_key="test-key"), proc.make_client(api_key=k)
    f = static.files.create(file=("a.jsonl", b'{"x": 1}\n'), purpose="user_data")
    assert [x.id for x in db.files.list().data] == []
    assert [x.id for x in static.files.list().data] == [f.id]


@pytest.mark.parametrize(
    ("flag", "unit", "limit"),
    [("--max-enqueued-requests=15", "requests", "15"),
     ("--max-enqueued-tokens=1500", "tokens", "1,500")],
)  # fmt: skip
def test_limits_per_key_override_the_server_wide_ones(
    start_batchd: StartBatchd, upstream: UpstreamServer, flag: str, unit: str, limit: str
) -> None:
    upstream.reset(Faults(delay=0.5))  # the first batch stays in progress a while
    # Server-wide: generous limits; the small key's own are tighter.
    proc = start_batchd(
        upstream=upstream.base_url,
        env={"BATCHD_MAX_ENQUEUED_REQUESTS": "1000", "BATCHD_MAX_ENQUEUED_TOKENS": "100000"},
    )
    small = create_key("small", flag, data_dir=proc.data_dir)
    big = create_key("big", data_dir=proc.data_dir)
    wait_for(lambda: accepts(proc, small) and accepts(proc, big), timeout=SEEN_WITHIN,
             what="keys accepted")  # fmt: skip
    lines = [chat_line(i, text="x" * 400) for i in range(10)]  # 100 tokens each (chars/4)
    cs, cb = proc.make_client(api_key=small), proc.make_client(api_key=big)
    first = create_batch(cs, lines)
    assert wait_batch(cs, first.id, statuses=("in_progress",)).status == "in_progress"
    refused_batch = wait_batch(cs, create_batch(cs, lines).id)
    assert refused_batch.status == "failed"
    assert refused_batch.errors is not None
    (error,) = refused_batch.errors.data
    assert error.code == "token_limit_exceeded"
    assert f"Limit: {limit} enqueued {unit}." in error.message
    # The other key is under the server-wide limits only: two such batches fit.
    b1, b2 = create_batch(cb, lines), create_batch(cb, lines)
    for b in (b1, b2):
        assert wait_batch(cb, b.id).status == "completed"
    assert wait_batch(cs, first.id).status == "completed"


def metrics_text(proc: BatchdProcess) -> str:
    with urllib.request.urlopen(proc.root_url + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def metric(text: str, name: str, key: str) -> float | None:
    m = re.search(rf'^{name}\{{key="{re.escape(key)}"\}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else None


def test_usage_per_key_in_the_cli_metrics_and_dashboard(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    proc = start_batchd(upstream=upstream.base_url)
    a = create_key("team-a", "--weight", "3", data_dir=proc.data_dir)
    b = create_key("team-b", data_dir=proc.data_dir)
    wait_for(lambda: accepts(proc, a) and accepts(proc, b), timeout=SEEN_WITHIN,
             what="keys accepted")  # fmt: skip
    ca, cb = proc.make_client(api_key=a), proc.make_client(api_key=b)
    da = [wait_batch(ca, create_batch(ca, [chat_line(i) for i in range(n)]).id) for n in (7, 5)]
    db = wait_batch(cb, create_batch(cb, [chat_line(i) for i in range(3)]).id)
    assert all(x.status == "completed" for x in (*da, db))
    expect_in = sum(x.usage.input_tokens for x in da)
    expect_out = sum(x.usage.output_tokens for x in da)
    assert expect_in > 0 and expect_out > 0

    def listed() -> dict[str, dict[str, object]]:
        return list_keys(data_dir=proc.data_dir)

    # Last use is written back with the next refresh.
    wait_for(lambda: listed()["team-a"]["last_used_at"] is not None, timeout=SEEN_WITHIN,
             what="last use recorded")  # fmt: skip
    rows = listed()
    assert rows["team-a"]["batches"] == 2 and rows["team-a"]["requests"] == 12
    assert rows["team-a"]["input_tokens"] == expect_in
    assert rows["team-a"]["output_tokens"] == expect_out
    assert rows["team-a"]["weight"] == 3.0 and rows["team-a"]["status"] == "active"
    assert rows["team-b"]["batches"] == 1 and rows["team-b"]["requests"] == 3
    assert abs(int(rows["team-a"]["last_used_at"]) - time.time()) < 60  # type: ignore[call-overload]
    table = keys_cli("list", data_dir=proc.data_dir).stdout
    assert re.search(r"^team-a\s+active\s+3\s", table, re.MULTILINE), table

    text = metrics_text(proc)
    assert metric(text, "batchd_key_requests_total", "team-a") == 12
    assert metric(text, "batchd_key_batches_total", "team-a") == 2
    assert metric(text, "batchd_key_input_tokens_total", "team-a") == expect_in
    assert metric(text, "batchd_key_output_tokens_total", "team-a") == expect_out
    assert metric(text, "batchd_key_requests_total", "team-b") == 3
    for secret in (a, b):
        assert secret not in text and secret not in proc.logs()

    # The dashboard shows the signed-in key's own usage, nobody else's.
    status, _h, body = proc.http("GET", "/ui/api/usage", headers={"Authorization": f"Bearer {b}"})
    assert status == 200
    import json

    view = json.loads(body)
    assert view["key"] == "team-b" and view["requests"] == 3 and view["batches"] == 1
    assert view["weight"] == 1.0
