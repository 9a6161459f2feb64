"""validate, --dry-run/estimate, cost and structured output."""

from __future__ import annotations

import json
from pathlib import Path

import openai
from pydantic import BaseModel

from batchd import RequestSpec, RunConfig, estimate, run_batch, validate_file
from batchd.embedded import EmbeddedServer
from upstream_server import Faults, UpstreamServer

from .conftest import FAST, batchd_cli, read_csv, read_jsonl, server_counts, write_csv, write_jsonl


def _line(cid: str, model: str = "m") -> dict[str, object]:
    return {
        "custom_id": cid,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    }


def test_validate_reports_line_numbers(tmp_path: Path) -> None:
    src = tmp_path / "b.jsonl"
    src.write_text(
        json.dumps(_line("a"))
        + "\n\n"
        + json.dumps(_line("a"))
        + "\nnot json\n"
        + json.dumps(_line("c", model="other"))
        + "\n"
    )
    proc = batchd_cli("validate", str(src))
    assert proc.returncode == 1
    assert "line 3: [duplicate_custom_id]" in proc.stdout
    assert "line 4: [invalid_json_line]" in proc.stdout
    assert "line 5: [model_mismatch]" in proc.stdout
    ok = write_jsonl(tmp_path / "ok.jsonl", [_line("a"), _line("b")])
    assert batchd_cli("validate", str(ok)).returncode == 0
    assert validate_file(ok).ok


def test_invalid_rows_upload_nothing(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI
) -> None:
    src = write_csv(
        tmp_path / "in.csv", [{"id": "x", "t": "a"}, {"id": "x", "t": "b"}, {"id": "", "t": "c"}]
    )
    proc = batchd_cli(
        "run",
        str(src),
        "--model",
        "m",
        "--template",
        "{t}",
        "--id-column",
        "id",
        "--base-url",
        server.base_url,
        *FAST,
    )
    assert proc.returncode == 2
    assert "line 3: [duplicate_custom_id]" in proc.stdout and "line 4: [missing_id]" in proc.stdout
    assert server_counts(client) == (0, 0)


def test_dry_run_plan_and_cost(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "rows.jsonl", [{"text": "abcd" * 25} for _ in range(10)])
    proc = batchd_cli(
        "run",
        str(src),
        "--model",
        "gpt-4o-mini",
        "--max-tokens",
        "100",
        "--max-requests-per-batch",
        "4",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    assert "10 requests, 3 batch(es)" in proc.stdout
    assert "estimate (characters / 4)" in proc.stdout and "genai-prices" in proc.stdout
    assert not (tmp_path / "rows.results.jsonl.batchd").exists()
    est = estimate(
        RunConfig(input=src, price_input=1.0, price_output=2.0),
        RequestSpec(model="own-model", params={"max_tokens": 100}),
    )
    assert est.requests == 10 and est.input_tokens == 250
    assert est.max_cost is not None and est.max_cost.batch_usd is not None
    assert float(est.max_cost.batch_usd) == (250 * 1.0 + 1000 * 2.0) / 1e6
    unknown = estimate(RunConfig(input=src), RequestSpec(model="own-model"))
    assert unknown.input_cost.batch_usd is None and "no known price" in (
        unknown.input_cost.note or ""
    )


def test_cost_from_usage(tmp_path: Path, server: EmbeddedServer) -> None:
    src = write_jsonl(tmp_path / "rows.jsonl", [{"text": "one two three"} for _ in range(4)])
    # The test upstream bills 3 prompt + 4 completion tokens per line.
    own = run_batch(
        src,
        model="own",
        base_url=server.base_url,
        api_key="k",
        poll_interval=0.05,
        price_input=2.0,
        price_output=10.0,
        output=tmp_path / "a.jsonl",
    )
    assert (own.cost.input_tokens, own.cost.output_tokens) == (12, 16)
    assert float(own.cost.batch_usd or 0) == (12 * 2 + 16 * 10) / 1e6
    known = run_batch(
        src,
        model="gpt-4o-mini",
        base_url=server.base_url,
        api_key="k",
        poll_interval=0.05,
        output=tmp_path / "b.jsonl",
    )
    assert known.cost.batch_usd is not None and known.cost.sync_usd is not None
    assert known.cost.batch_usd * 2 == known.cost.sync_usd  # OpenAI's batch discount
    unknown = run_batch(
        src,
        model="own",
        base_url=server.base_url,
        api_key="k",
        poll_interval=0.05,
        output=tmp_path / "c.jsonl",
    )
    assert unknown.cost.batch_usd is None and "unknown" in unknown.cost.describe()


class Verdict(BaseModel):
    label: str
    score: int


def test_structured_output(
    tmp_path: Path, server: EmbeddedServer, upstream: UpstreamServer
) -> None:
    def answer(text: str) -> str:
        if "good" in text:
            return '{"label": "pos", "score": 5}'
        if "odd" in text:
            return '{"label": "pos"}'
        return "not json"

    upstream.reset(Faults(answer=answer))
    src = write_csv(tmp_path / "in.csv", [{"t": "good"}, {"t": "odd"}, {"t": "bad"}])
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"label": {"type": "string"}, "score": {"type": "integer"}},
                "required": ["label", "score"],
                "additionalProperties": False,
            }
        )
    )
    out = tmp_path / "out.csv"
    proc = batchd_cli(
        "run",
        str(src),
        "--model",
        "m",
        "--template",
        "{t}",
        "--json-schema",
        str(schema),
        "--base-url",
        server.base_url,
        "--output",
        str(out),
        "--max-retry-rounds",
        "0",
        *FAST,
    )
    assert proc.returncode == 1
    rows = read_csv(out)
    assert json.loads(rows[0]["response"]) == {"label": "pos", "score": 5}
    assert "invalid_structured_output" in rows[1]["error"] and "score" in rows[1]["error"]
    assert "not JSON" in rows[2]["error"]
    sent = json.loads(
        (tmp_path / "out.csv.batchd/chunks/r0-c00000.jsonl").read_text().splitlines()[0]
    )
    fmt = sent["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    # The Python API takes a pydantic model.
    summary = run_batch(
        src,
        model="m",
        template="{t}",
        json_schema=Verdict,
        base_url=server.base_url,
        api_key="k",
        poll_interval=0.05,
        max_retry_rounds=0,
        output=tmp_path / "o.jsonl",
    )
    got = read_jsonl(summary.output)
    assert got[0]["response"] == {"label": "pos", "score": 5} and summary.failed == 2
