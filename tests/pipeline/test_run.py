"""End to end: ``batchd run`` against a real batchd server and the test upstream."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pyarrow as pa
import pyarrow.parquet as pq

from batchd import run_batch
from batchd.embedded import EmbeddedServer
from upstream_server import Faults, UpstreamServer

from .conftest import FAST, batchd_cli, read_csv, read_jsonl, server_counts, write_csv, write_jsonl


def test_csv_multi_chunk_with_final_failures(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(reject_marker="BAD"))
    rows = [
        {"sku": f"s{i}", "text": f"item {i}" + (" BAD" if i in (3, 17) else "")} for i in range(30)
    ]
    src = write_csv(tmp_path / "items.csv", rows)
    out = tmp_path / "out.csv"
    proc = batchd_cli(
        "run",
        str(src),
        "--model",
        "gpt-4o-mini",
        "--template",
        "Describe: {text}",
        "--id-column",
        "sku",
        "--base-url",
        server.base_url,
        "--api-key",
        "k",
        "--max-requests-per-batch",
        "7",
        "--max-retry-rounds",
        "1",
        "--output",
        str(out),
        "--temperature",
        "0.2",
        "--max-tokens",
        "50",
        *FAST,
    )
    assert proc.returncode == 1, proc.stderr  # two lines never succeed
    result = read_csv(out)
    assert [r["sku"] for r in result] == [f"s{i}" for i in range(30)]  # input order
    assert list(result[0]) == ["sku", "text", "custom_id", "response", "error"]
    assert result[0]["response"] == "echo: Describe: item 0"
    assert result[3]["error"].startswith("content_rejected") and result[3]["response"] == ""
    assert "28/30 succeeded" in proc.stdout and "failed s3" in proc.stdout
    # 5 first-round chunks + 1 retry batch for the 2 rejected lines; nothing else.
    assert server_counts(client) == (6, 6)
    assert upstream.stats.successes["Describe: item 0"] == 1
    summary = json.loads((tmp_path / "out.csv.batchd" / "summary.json").read_text())
    assert summary["failed"] == 2 and summary["rounds"] == 1
    body = json.loads(
        (tmp_path / "out.csv.batchd" / "chunks" / "r0-c00000.jsonl").read_text().splitlines()[0]
    )
    assert body["body"]["temperature"] == 0.2 and body["body"]["max_tokens"] == 50


def test_retry_rounds_converge(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    # Every request is refused once with a 400 (never retried inside the server), then works.
    upstream.reset(Faults(fail_first=1, fail_status=400))
    src = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"p{i}"} for i in range(12)])
    summary = run_batch(
        src,
        model="m",
        base_url=server.base_url,
        api_key="k",
        max_requests_per_batch=5,
        poll_interval=0.05,
        poll_max=0.3,
    )
    assert summary.ok and summary.rounds == 1 and summary.succeeded == 12
    out = read_jsonl(summary.output)
    assert [r["prompt"] for r in out] == [f"p{i}" for i in range(12)]
    assert all(r["error"] is None and r["response"] == f"echo: {r['prompt']}" for r in out)
    assert server_counts(client) == (6, 6)  # 3 chunks, then the 12 lines again in 3


def test_ready_batch_file_and_embeddings(
    tmp_path: Path, server: EmbeddedServer, upstream: UpstreamServer
) -> None:
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "emb", "input": f"text {i}"},
        }
        for i in range(5)
    ]
    src = write_jsonl(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "batch.out.jsonl"
    proc = batchd_cli("run", str(src), "--base-url", server.base_url, "--output", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    got = read_jsonl(out)
    assert [g["custom_id"] for g in got] == [f"e{i}" for i in range(5)]
    assert got[0]["response"]["status_code"] == 200
    # Embeddings mode from rows: the row text becomes `input`.
    src2 = write_jsonl(tmp_path / "texts.jsonl", [{"text": "a b"}, {"text": "c"}])
    summary = run_batch(
        src2,
        model="emb",
        endpoint="/v1/embeddings",
        base_url=server.base_url,
        api_key="k",
        poll_interval=0.05,
    )
    rows = read_jsonl(summary.output)
    assert len(rows[0]["response"]) == 8 and rows[1]["error"] is None
    assert upstream.stats.paths["/v1/embeddings"] == 7


def test_parquet_in_and_out(tmp_path: Path, server: EmbeddedServer) -> None:
    src = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"q": ["x", "y", "z"], "n": [1, 2, 3]}), src)
    summary = run_batch(
        src,
        model="m",
        template="{q}-{n}",
        base_url=server.base_url,
        api_key="k",
        poll_interval=0.05,
    )
    table = pq.read_table(summary.output).to_pylist()
    assert [r["response"] for r in table] == ["echo: x-1", "echo: y-2", "echo: z-3"]
    assert [r["n"] for r in table] == [1, 2, 3]


def test_bytes_limit_splits_chunks(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI
) -> None:
    src = write_jsonl(tmp_path / "rows.jsonl", [{"text": "x" * 200} for _ in range(10)])
    summary = run_batch(
        src,
        model="m",
        base_url=server.base_url,
        api_key="k",
        max_bytes_per_batch=1000,
        poll_interval=0.05,
    )
    assert summary.ok
    sizes = [p.stat().st_size for p in sorted((summary.state_dir / "chunks").glob("*.jsonl"))]
    assert len(sizes) >= 3 and all(s <= 1000 for s in sizes)
    assert server_counts(client)[1] == len(sizes)
