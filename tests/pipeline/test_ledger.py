"""The ledger's typed states and flags, and ledgers written before they existed.

A ledger is a file in the user's state dir that a later batchd resumes. Ledgers
written before December 2026 stored the run's yes/no flags as ``"1"``/``"0"``;
the chunk and line states were already the strings the types now name.
"""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
from pathlib import Path
from typing import get_args

import openai
import pytest
from openai.types import Batch

from batchd.embedded import EmbeddedServer
from batchd.pipeline.ledger import ChunkRow, ChunkUpdate, Ledger
from batchd.pipeline.remote import TERMINAL
from batchd.pipeline.runner import STEPS
from batchd.pipeline.states import ChunkState, LineStatus
from batchd.states import BatchStatus
from upstream_server import UpstreamServer

from .conftest import FAST, batchd_cli, read_csv, read_jsonl, server_counts, write_csv, write_jsonl

FLAGS = ("planned", "batch_file", "retry_length", "cancelled")


def _meta(state_dir: Path) -> dict[str, str]:
    with sqlite3.connect(state_dir / Ledger.FILENAME) as db:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())


def _make_legacy(state_dir: Path) -> None:
    """Rewrite the flags as ledgers written before December 2026 held them."""
    with sqlite3.connect(state_dir / Ledger.FILENAME) as db:
        for new, old in (("true", "1"), ("false", "0")):
            db.execute(
                f"UPDATE meta SET value = ? WHERE value = ? AND key IN ({','.join('?' * 4)})",
                (old, new, *FLAGS),
            )


def test_every_chunk_state_has_a_step() -> None:
    assert set(STEPS) == set(ChunkState)


def test_chunk_updates_name_chunk_columns() -> None:
    columns = {f.name for f in dataclasses.fields(ChunkRow)}
    assert set(ChunkUpdate.__annotations__) <= columns - {"id", "path", "round", "seq"}


def test_batch_statuses_are_the_sdks() -> None:
    sdk = get_args(Batch.model_fields["status"].annotation)
    assert {s.value for s in BatchStatus} == set(sdk)
    assert set(sdk) > TERMINAL


def test_flags_are_stored_as_words_and_old_digits_still_read(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    try:
        assert not ledger.flag("cancelled")  # never set
        ledger.set_flag("cancelled", True)
        ledger.set_flag("retry_length", False)
        assert ledger.flag("cancelled") and not ledger.flag("retry_length")
    finally:
        ledger.close()
    assert _meta(tmp_path) == {"cancelled": "true", "retry_length": "false"}
    _make_legacy(tmp_path)
    assert _meta(tmp_path) == {"cancelled": "1", "retry_length": "0"}
    ledger = Ledger(tmp_path)
    try:
        assert ledger.flag("cancelled") and not ledger.flag("retry_length")
    finally:
        ledger.close()


def test_states_read_back_as_their_types(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    try:
        ledger.commit_plan(
            [("r0-c00000", tmp_path / "c.jsonl", 1, 10)], {"endpoint": "/v1/x"}, batch_file=False
        )
        chunk = ledger.chunk("r0-c00000")
        assert chunk.state is ChunkState.PLANNED
        ledger.update_chunk(chunk.id, state=ChunkState.SUBMITTED)
        assert ledger.chunks()[0].state is ChunkState.SUBMITTED
    finally:
        ledger.close()
    with sqlite3.connect(tmp_path / Ledger.FILENAME) as db:
        assert db.execute("SELECT state FROM chunks").fetchall() == [("submitted",)]
    assert LineStatus("pending") is LineStatus.PENDING  # the stored words are the values


@pytest.mark.parametrize("point", ["uploaded:2", "created:1"])
def test_ledger_with_old_flags_resumes(
    point: str,
    tmp_path: Path,
    server: EmbeddedServer,
    client: openai.OpenAI,
    upstream: UpstreamServer,
) -> None:
    # The plan must read as complete (or everything is uploaded again) and the input as a
    # ready batch file (or the output comes out as rows).
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {
                "custom_id": f"q{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"say w{i}"}]},
            }
            for i in range(6)
        ],
    )
    out = tmp_path / "out.jsonl"
    args = [
        "run",
        str(src),
        "--base-url",
        server.base_url,
        "--api-key",
        "k",
        "--max-requests-per-batch",
        "2",
        "--output",
        str(out),
        *FAST,
    ]
    killed = batchd_cli(*args, env={"BATCHD_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state_dir = tmp_path / "out.jsonl.batchd"
    meta = _meta(state_dir)
    assert (meta["planned"], meta["batch_file"], meta["retry_length"]) == ("true", "true", "false")
    _make_legacy(state_dir)
    assert (_meta(state_dir)["planned"], _meta(state_dir)["batch_file"]) == ("1", "1")
    done = batchd_cli(*args)
    assert done.returncode == 0, done.stderr + done.stdout
    assert server_counts(client) == (3, 3)  # nothing uploaded or submitted twice
    assert all(upstream.stats.successes[f"say w{i}"] == 1 for i in range(6))
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == [f"q{i}" for i in range(6)]
    assert all(line["response"]["status_code"] == 200 for line in lines)  # batch-shaped output


def test_old_cancelled_flag_keeps_the_run_cancelled(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI
) -> None:
    src = write_csv(tmp_path / "in.csv", [{"word": f"w{i}"} for i in range(3)])
    out = tmp_path / "out.csv"
    args = ["run", str(src), "-m", "m", "--template", "say {word}", "-o", str(out), *FAST]
    args += ["--base-url", server.base_url, "--api-key", "k"]
    killed = batchd_cli(*args, env={"BATCHD_CRASH_AT": "planned"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state_dir = tmp_path / "out.csv.batchd"
    with sqlite3.connect(state_dir / Ledger.FILENAME) as db:
        db.execute("INSERT INTO meta (key, value) VALUES ('cancelled', '1')")
    again = batchd_cli(*args)
    assert again.returncode == 1 and "[cancelled]" in again.stdout, again.stdout + again.stderr
    assert server_counts(client) == (0, 0)
    assert all(r["error"].startswith("run_cancelled") for r in read_csv(out))
