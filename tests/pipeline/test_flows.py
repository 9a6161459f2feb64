"""Cut-off answers, cancel, status/results, expiry, token limits and bad input, end to end."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import Batch
from openai.types.batch import Errors
from openai.types.batch_error import BatchError

from batchd import RunConfig, make_spec, run_status
from batchd.embedded import EmbeddedServer
from batchd.pipeline.remote import TERMINAL, Remote
from batchd.pipeline.runner import BatchRunner
from batchd.settings import Settings
from upstream_server import Faults, UpstreamServer

from .conftest import FAST, batchd_cli, read_csv, server_counts, write_csv


def _server(upstream: UpstreamServer, tmp_path: Path, **overrides: Any) -> EmbeddedServer:
    settings = Settings(
        upstream=upstream.base_url,
        local_enabled=False,
        data_dir=tmp_path / "server",
        poll_interval=0.05,
        retry_base=0.02,
        retry_cap=0.1,
        max_attempts=2,
        **overrides,
    )
    return EmbeddedServer(settings, private=False)


@pytest.fixture
def slow_server(upstream: UpstreamServer, tmp_path: Path) -> Iterator[EmbeddedServer]:
    """Accepts a 2-second completion window, sends one request upstream at a time and
    lets in-flight requests of a cancelled batch run for at most 0.2 s."""
    with _server(
        upstream,
        tmp_path,
        completion_windows=["24h", "2s"],
        upstream_concurrency=1,
        cancel_grace=0.2,
    ) as srv:
        yield srv


def _run_args(src: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "run",
        str(src),
        "--model",
        "m",
        "--template",
        "say {word}",
        "--base-url",
        base_url,
        "--api-key",
        "k",
        "--output",
        str(out),
        *extra,
        *FAST,
    ]


# ---------------------------------------------------------------- --retry-length, status, results


def test_length_kept_without_flag_then_status_and_results(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(length_marker="LONG"))
    words = ["a", "b LONG", "c", "d LONG"]
    src = write_csv(tmp_path / "in.csv", [{"word": w} for w in words])
    out = tmp_path / "out.csv"
    args = _run_args(src, out, server.base_url, "--price-input", "1000", "--price-output", "10000")
    proc = batchd_cli(*args)
    # Without --retry-length a cut-off answer is an answer: kept, not an error, exit 0.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4/4 succeeded" in proc.stdout and "2 answer(s) cut off" in proc.stdout
    rows = read_csv(out)
    assert [r["response"] for r in rows] == [f"echo: say {w}" for w in words]
    assert all(r["error"] == "" for r in rows)
    assert server_counts(client) == (1, 1)  # nothing resubmitted
    # status: counts, tokens (2 + 3 + 2 + 3 prompt words, one more each answered) and cost.
    status = batchd_cli("status", str(out))
    assert status.returncode == 0, status.stderr
    assert "finished: 2 ok, 0 failed, 2 cut off (kept as answers), 0 pending of 4" in status.stdout
    assert "10 input / 14 output tokens" in status.stdout
    assert "cost: 10 input + 14 output tokens; $0.1500 at batch rates" in status.stdout
    refreshed = batchd_cli("status", str(out), "--refresh", "--base-url", server.base_url)
    assert refreshed.returncode == 0 and "finished: 2 ok" in refreshed.stdout
    assert "completed" in refreshed.stdout
    # results -o re-writes the merged output from the ledger, identical to the run's.
    again = tmp_path / "again.csv"
    res = batchd_cli("results", str(out), "-o", str(again))
    assert res.returncode == 0 and f"4 rows written to {again}" in res.stdout
    assert again.read_text() == out.read_text()
    state = batchd_cli("results", str(tmp_path / "out.csv.batchd"), "-o", str(tmp_path / "s.csv"))
    assert state.returncode == 0 and (tmp_path / "s.csv").read_text() == out.read_text()


def test_retry_length_resubmits_same_custom_ids(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(length_marker="LONG"))
    words = ["a", "b LONG", "c", "d LONG"]
    src = write_csv(tmp_path / "in.csv", [{"word": w} for w in words])
    out = tmp_path / "out.csv"
    args = _run_args(src, out, server.base_url, "--retry-length", "--max-retry-rounds", "2")
    proc = batchd_cli(*args)
    # Still cut off after the last round: failed lines, exit 1, the text kept in `response`.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2/4 succeeded, 2 failed after 2 retry round(s)" in proc.stdout
    assert "failed row-2: length" in proc.stdout
    rows = read_csv(out)
    assert [r["error"].split(":")[0] for r in rows] == ["", "length", "", "length"]
    assert rows[1]["response"] == "echo: say b LONG"
    assert server_counts(client) == (3, 3)  # first pass + 2 rounds of the 2 cut-off lines
    chunks = tmp_path / "out.csv.batchd" / "chunks"
    for round_ in (1, 2):
        sent = [line for line in (chunks / f"r{round_}-c00000.jsonl").read_text().splitlines()]
        assert [s.split('"custom_id":')[1][:8] for s in sent] == ['"row-2",', '"row-4",']
    assert upstream.stats.successes["say b LONG"] == 3 and upstream.stats.successes["say a"] == 1
    status = batchd_cli("status", str(out))
    assert "0 failed, 2 cut off, 0 pending of 4" in status.stdout  # no "(kept as answers)"


# ---------------------------------------------------------------- cancel


def test_cancel_running_run(
    tmp_path: Path, slow_server: EmbeddedServer, upstream: UpstreamServer
) -> None:
    # A 2-line batch needs 16 s: still running at the cancel, after two CLI commands
    # that each take seconds to start on a loaded 2-core machine (at 2 s a line, the
    # first batch once finished first, and the run uploaded its third chunk).
    upstream.reset(Faults(delay=8.0))
    client = openai.OpenAI(base_url=slow_server.base_url, api_key="k", max_retries=2)
    src = write_csv(tmp_path / "in.csv", [{"word": f"w{i}"} for i in range(6)])
    out = tmp_path / "out.csv"
    args = _run_args(
        src, out, slow_server.base_url, "--max-requests-per-batch", "2", "--max-in-flight", "2"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", "from batchd.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "the run never had 2 batches in flight"
            if (tmp_path / "out.csv.batchd" / "ledger.sqlite").exists():
                st = run_status(out)
                if sum(c.state == "submitted" for c in st.chunks) == 2:
                    break
            time.sleep(0.05)
        live = batchd_cli("status", str(out), "--refresh", "--base-url", slow_server.base_url)
        assert live.returncode == 0, live.stderr
        assert "in progress: 0 ok" in live.stdout and "pending of 6" in live.stdout
        assert "in_progress" in live.stdout or "validating" in live.stdout
        cancel = batchd_cli("cancel", str(out), "--base-url", slow_server.base_url)
        assert cancel.returncode == 0, cancel.stderr
        assert "cancelled 2 batch(es)" in cancel.stdout
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, stdout + stderr
    assert "[cancelled]" in stdout and "running it again submits nothing" in stdout
    batches = list(client.batches.list())
    assert len(batches) == 2 and {b.status for b in batches} == {"cancelled"}
    assert server_counts(client) == (2, 2)  # the third chunk was never uploaded
    rows = read_csv(out)
    assert rows[5]["error"].startswith("run_cancelled")
    # Lines of the cancelled batches: answered before the cancel, or batch_cancelled.
    assert all(r["response"] or r["error"].startswith("batch_cancelled") for r in rows[:4])
    assert any(r["error"].startswith("batch_cancelled") for r in rows[:4])
    # The same command again: the run stays cancelled and submits nothing.
    again = batchd_cli(*args)
    assert again.returncode == 1 and "[cancelled]" in again.stdout
    assert server_counts(client) == (2, 2)
    status = batchd_cli("status", str(out))
    assert "cancelled: " in status.stdout and "of 6" in status.stdout


# ---------------------------------------------------------------- expiry


def test_expired_lines_are_resubmitted(
    tmp_path: Path, slow_server: EmbeddedServer, upstream: UpstreamServer
) -> None:
    # One request at a time, 0.5 s each: a 2 s window answers a few lines per batch, the
    # rest expire and go into the next round until every line is answered.
    upstream.reset(Faults(delay=0.5))
    client = openai.OpenAI(base_url=slow_server.base_url, api_key="k", max_retries=2)
    src = write_csv(tmp_path / "in.csv", [{"word": f"w{i}"} for i in range(6)])
    out = tmp_path / "out.csv"
    args = _run_args(
        src, out, slow_server.base_url, "--completion-window", "2s", "--max-retry-rounds", "10"
    )
    proc = batchd_cli(*args, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["response"] for r in read_csv(out)] == [f"echo: say w{i}" for i in range(6)]
    batches = list(client.batches.list())
    assert {b.completion_window for b in batches} == {"2s"}
    statuses = [b.status for b in batches]
    assert len(batches) >= 2 and "expired" in statuses and "completed" in statuses
    assert all(upstream.stats.successes[f"say w{i}"] >= 1 for i in range(6))


def test_default_completion_window_is_24h(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI
) -> None:
    src = write_csv(tmp_path / "in.csv", [{"word": "x"}])
    proc = batchd_cli(*_run_args(src, tmp_path / "o.csv", server.base_url))
    assert proc.returncode == 0, proc.stderr
    assert [b.completion_window for b in client.batches.list()] == ["24h"]
    # A window the server does not accept refuses the chunk with the server's reason.
    bad = batchd_cli(
        *_run_args(src, tmp_path / "p.csv", server.base_url, "--completion-window", "1h")
    )
    assert bad.returncode == 1 and "completion_window" in bad.stdout


# ---------------------------------------------------------------- token_limit_exceeded


class _TokenLimitOnce(Remote):
    """The real API, except the first finished batch reads as refused for the token limit
    (what OpenAI reports when the enqueued-token quota is full)."""

    refused: list[str] = []

    def retrieve(self, batch_id: str) -> Batch:
        batch = super().retrieve(batch_id)
        if batch.status in TERMINAL and not self.refused:
            self.refused.append(batch_id)
            error = BatchError(code="token_limit_exceeded", message="Enqueued token limit reached")
            return batch.model_copy(
                update={
                    "status": "failed",
                    "errors": Errors(data=[error], object="list"),
                    "output_file_id": None,
                    "error_file_id": None,
                }
            )
        return batch


def test_token_limit_waits_and_resubmits_same_file(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI
) -> None:
    src = write_csv(tmp_path / "in.csv", [{"word": f"w{i}"} for i in range(3)])
    config = RunConfig(
        input=src,
        base_url=server.base_url,
        api_key="k",
        poll_interval=0.05,
        poll_max=0.2,
        token_limit_wait=0.5,
    )
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    _TokenLimitOnce.refused = []
    runner = BatchRunner(
        config,
        make_spec(model="m", template="say {word}"),
        quiet=True,
        sleep=sleep,
        remote=_TokenLimitOnce,
    )
    started = time.monotonic()
    summary = runner.run()
    assert summary.ok and summary.succeeded == 3 and summary.rounds == 0
    assert len(_TokenLimitOnce.refused) == 1
    # One upload, two batches of that same file; the second waited for token_limit_wait.
    assert server_counts(client) == (1, 2)
    first, second = sorted(client.batches.list(), key=lambda b: b.created_at)[:2]
    assert first.id == _TokenLimitOnce.refused[0] or second.id == _TokenLimitOnce.refused[0]
    assert first.input_file_id == second.input_file_id
    attempts = sorted((b.metadata or {}).get("batchd_attempt", "") for b in (first, second))
    assert attempts == ["0", "1"]
    assert time.monotonic() - started >= 0.5 and sum(slept) >= 0.4
    assert read_csv(summary.output)[0]["response"] == "echo: say w0"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("rows", "extra", "needle"),
    [
        (None, ["--template", "{text}"], "no request lines"),
        ([{"text": "a"}, {"text": "b"}], ["--input-column", "question"], "question"),
        ([{"text": "a"}, {"text": "b"}], ["--template", "Q: {question} ({text})"], "question"),
    ],
    ids=["header-only", "missing-input-column", "template-unknown-column"],
)
def test_bad_input_refused_before_upload(
    rows: list[dict[str, str]] | None,
    extra: list[str],
    needle: str,
    tmp_path: Path,
    server: EmbeddedServer,
    client: openai.OpenAI,
) -> None:
    src = tmp_path / "in.csv"
    if rows is None:
        src.write_text("id,text\n")
    else:
        write_csv(src, rows)
    out = tmp_path / "out.csv"
    base = ["run", str(src), "-m", "m", "--base-url", server.base_url, "-o", str(out), *FAST]
    proc = batchd_cli(*base, *extra)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stdout and "nothing was uploaded" in proc.stderr
    assert server_counts(client) == (0, 0)
    if rows is not None:
        # The corrected command is not refused by the state the refused one left behind.
        fixed = batchd_cli(*base, "--template", "{text}")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert [r["response"] for r in read_csv(out)] == ["echo: a", "echo: b"]
