"""Killing ``batchd run`` (SIGKILL) and running the same command again.

The server runs in this process; the CLI runs as a child that kills itself at a
named point (``BATCHD_CRASH_AT``: right after an API call succeeded and before
the ledger recorded it), or at a random moment. Counting files and batches on
the server proves nothing was uploaded or submitted twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from batchd.embedded import EmbeddedServer
from upstream_server import Faults, UpstreamServer

from .conftest import FAST, batchd_cli, read_csv, server_counts, write_csv

ROWS = 12


def _command(src: Path, out: Path, base_url: str) -> list[str]:
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
        "--max-requests-per-batch",
        "5",
        "--output",
        str(out),
        *FAST,
    ]


@pytest.mark.parametrize(
    "point", ["planned", "uploaded:2", "created:1", "created:4", "downloaded:2", "round:1"]
)
def test_killed_at_a_point_then_resumed(
    point: str,
    tmp_path: Path,
    server: EmbeddedServer,
    client: openai.OpenAI,
    upstream: UpstreamServer,
) -> None:
    # Every line fails once with a 400, so a retry round (3 more batches) always happens.
    upstream.reset(Faults(fail_first=1, fail_status=400))
    src = write_csv(tmp_path / "in.csv", [{"word": f"w{i}"} for i in range(ROWS)])
    out = tmp_path / "out.csv"
    args = _command(src, out, server.base_url)
    killed = batchd_cli(*args, env={"BATCHD_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = batchd_cli(*args)
    assert done.returncode == 0, done.stderr + done.stdout
    assert server_counts(client) == (6, 6)
    assert all(upstream.stats.successes[f"say w{i}"] == 1 for i in range(ROWS))
    assert [r["response"] for r in read_csv(out)] == [f"echo: say w{i}" for i in range(ROWS)]


def test_killed_at_random_moments(
    tmp_path: Path, server: EmbeddedServer, client: openai.OpenAI, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.02))
    src = write_csv(tmp_path / "in.csv", [{"word": f"w{i}"} for i in range(ROWS)])
    out = tmp_path / "out.csv"
    args = _command(src, out, server.base_url)
    for delay in (0.3, 0.6, 0.9, 1.2):
        proc = subprocess.Popen(
            [sys.executable, "-c", "from batchd.cli import main; main()", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = batchd_cli(*args)
    assert done.returncode == 0, done.stderr
    assert server_counts(client) == (3, 3)
    assert all(upstream.stats.successes[f"say w{i}"] == 1 for i in range(ROWS))
    # A finished run, run again, does nothing new.
    again = batchd_cli(*args)
    assert again.returncode == 0 and server_counts(client) == (3, 3)
    status = batchd_cli("status", str(out))
    assert "finished" in status.stdout and "12 ok" in status.stdout
