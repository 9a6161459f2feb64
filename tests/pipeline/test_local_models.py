"""``batchd run`` without ``--base-url`` or a key: the in-process server, embedded models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import require

from .conftest import read_csv, write_csv

pytestmark = pytest.mark.local


@pytest.fixture(autouse=True)
def _models_installed() -> None:
    # Checked up front: a run that then fails to reach the models fails the test.
    require.embedded_models()


def _run_local(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL") and not k.startswith("BATCHD_")
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from batchd.cli import main; main()",
            "run",
            *args,
            "--poll-interval",
            "0.2",
            "--poll-max",
            "1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def test_chat_on_embedded_model(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "rows.csv", [{"text": t} for t in ("hello", "2+2?", "a color")])
    out = tmp_path / "out.csv"
    proc = _run_local(
        str(src),
        "--model",
        "smollm2-135m-instruct",
        "--input-column",
        "text",
        "--max-tokens",
        "8",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    # 8 tokens cut most answers off: kept as answers (no --retry-length), so exit 0.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3/3 succeeded" in proc.stdout
    rows = read_csv(out)
    assert [r["custom_id"] for r in rows] == ["row-1", "row-2", "row-3"]
    assert all(r["response"].strip() and r["error"] == "" for r in rows)
    state = tmp_path / "out.csv.batchd"
    assert (state / "server").is_dir()  # the in-process server kept its data in the state dir
    summary = json.loads((state / "summary.json").read_text())
    assert summary["succeeded"] == 3 and summary["cost"]["output_tokens"] > 0


def test_embeddings_on_embedded_model(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "rows.csv", [{"text": t} for t in ("hello", "world", "batch")])
    out = tmp_path / "out.csv"
    proc = _run_local(
        str(src),
        "--model",
        "all-minilm-l6-v2",
        "--endpoint",
        "/v1/embeddings",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_csv(out)
    vectors = [json.loads(r["response"]) for r in rows]
    assert [len(v) for v in vectors] == [384, 384, 384] and vectors[0] != vectors[1]
    assert all(r["error"] == "" for r in rows)
