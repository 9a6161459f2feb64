"""The dashboard's numbers: progress, ETA and cost, as ``batchd status``/``run`` show them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batchd.pipeline.cost import Pricing, cost_report
from batchd.pipeline.display import _eta as pipeline_eta
from batchd.server.ui.errors import line_code
from batchd.server.ui.views import cost, duration_text, find_price, progress
from batchd.settings import ModelPrice, Settings
from batchd.store.records import BatchRecord, Usage


def batch(**kw: object) -> BatchRecord:
    base: dict[str, object] = {
        "id": "batch_x",
        "tenant": "t",
        "input_file_id": "file-x",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "status": "in_progress",
        "created_at": 1000,
        "expires_at": 1000 + 86400,
        "in_progress_at": 1000,
        "model": "gpt-4o-mini",
        "total": 100,
        "completed": 30,
        "failed": 10,
    }
    base.update(kw)
    return BatchRecord(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [None, 0, 5, 59, 61, 3599, 3600, 3725.9, 90000])
def test_durations_read_like_the_pipeline(seconds: float | None) -> None:
    assert duration_text(seconds) == pipeline_eta(seconds)


def test_progress_and_eta_of_a_running_batch() -> None:
    p = progress(batch(), now=1020)
    assert (p.done, p.total, p.percent) == (40, 100, 40.0)
    assert p.elapsed_seconds == 20 and p.rate == 2.0
    # The pipeline's formula: remaining / (done / elapsed).
    assert p.eta_seconds == 30.0 and p.eta == "0m30s"


def test_progress_of_finished_and_waiting_batches() -> None:
    done = progress(batch(status="completed", completed=90, failed=10, completed_at=1100), now=5000)
    assert done.percent == 100.0 and done.eta_seconds is None and done.eta == ""
    assert done.elapsed_seconds == 100 and done.elapsed == "1m40s"
    waiting = progress(batch(status="validating", in_progress_at=None, total=0), now=5000)
    assert waiting.percent == 0 and waiting.elapsed == "" and waiting.eta == "?"
    stalled = progress(batch(completed=0, failed=0), now=1000)
    assert stalled.eta_seconds is None and stalled.eta == "?"


def test_cost_matches_the_pipeline_and_says_when_unknown() -> None:
    usage = Usage(input_tokens=123_456, output_tokens=7_890, cached_tokens=100)
    prices = {"gpt-4o-*": ModelPrice(input=0.075, output=0.3)}
    c = cost(batch(usage=usage), prices)
    p = Pricing("flags", *(Decimal("0.075"), Decimal("0.3")) * 2, True)
    expected = cost_report("gpt-4o-mini", p, 123_456, 7_890).batch_usd
    assert expected is not None
    assert c.usd == f"{expected:.6f}" and c.text == f"${expected:.4f}"
    unknown = cost(batch(usage=usage, model="llama"), prices)
    assert unknown.usd is None and unknown.text == "cost unknown"
    assert unknown.input_tokens == 123_456 and unknown.output_tokens == 7_890


def test_exact_model_prices_win_over_patterns() -> None:
    exact, pattern = ModelPrice(input=1, output=2), ModelPrice(input=3, output=4)
    prices = {"gpt-*": pattern, "gpt-4o": exact}
    assert find_price("gpt-4o", prices) is exact
    assert find_price("gpt-4.1", prices) is pattern
    assert find_price(None, prices) is None


def test_prices_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHD_PRICES", '{"m": {"input": 1.5, "output": 6}}')
    assert Settings().prices == {"m": ModelPrice(input=1.5, output=6.0)}


def test_error_codes_of_error_file_lines() -> None:
    assert line_code(b'{"response": null, "error": {"code": "batch_expired"}}') == "batch_expired"
    assert line_code(b'{"response": {"status_code": 400, "body": {}}, "error": null}') == "http_400"
    assert line_code(b"not json") == "unreadable_line"
