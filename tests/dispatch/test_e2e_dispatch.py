"""Dispatch through the real batchd server (official SDK) against simulated
continuous-batching servers (tests/dispatch/sim_server.py, real HTTP).

Bounds are generous (the machine is shared) but each fails when its feature is off:
the numbers in comments are what the old fixed window (64 in flight) gave.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import BatchdProcess, StartBatchd, chat_line, results, run_batch

from .sim_server import SimConfig, SimServer


@pytest.fixture
def sim() -> Iterator[SimServer]:
    server = SimServer(SimConfig()).start()
    yield server
    server.stop()


def lines(n: int, *, model: str = "sim", tokens: int = 10, system: str | None = None) -> list[Any]:
    out = []
    for i in range(n):
        line = chat_line(i, model=model)
        if system is not None:
            line["body"]["messages"].insert(0, {"role": "system", "content": system})
        line["body"]["max_tokens"] = tokens
        out.append(line)
    return out


def scrape(server: BatchdProcess) -> str:
    with urllib.request.urlopen(server.root_url + "/metrics", timeout=5) as resp:
        return resp.read().decode()


def gauge(text: str, name: str, backend: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'{name}{{backend="{backend}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_small_server_queue_stays_short(start_batchd: StartBatchd, sim: SimServer) -> None:
    # 4 slots, 30 + 20n ms per step: one request of 10 tokens takes 1.1 s at the knee.
    sim.reset(SimConfig(cap=4, a=0.03, b=0.02))
    server = start_batchd(upstream=sim.base_url)
    batch = run_batch(server.client, lines(40), timeout=120)
    assert batch.status == "completed" and batch.request_counts.completed == 40
    stats = sim.snapshot()
    mean_wait = stats["queue_wait_sum"] / stats["completed"]
    # All 40 at once (the old default) waits ~5 s on average; at the knee, well under 1.
    assert mean_wait <= 1.0, stats
    assert stats["max_in_server"] <= 12


def test_server_metrics_are_discovered_and_used(start_batchd: StartBatchd, sim: SimServer) -> None:
    sim.reset(SimConfig(cap=16, a=0.02, b=0.001, metrics=True))
    server = start_batchd(upstream=sim.base_url)
    seen: list[tuple[float | None, float | None]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            text = scrape(server)
            seen.append(
                (
                    gauge(text, "batchd_backend_server_running", "upstream"),
                    gauge(text, "batchd_backend_concurrency_limit", "upstream"),
                )
            )
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        batch = run_batch(server.client, lines(400, tokens=8), timeout=120)
    finally:
        stop.set()
        watcher.join(5)
    assert batch.status == "completed"
    # The server's own gauge reached batchd (so the limit was steered by it) ...
    assert any(running is not None and running > 0 for running, _ in seen), seen[-5:]
    stats = sim.snapshot()
    busy = stats["busy_seconds"] or 1.0
    # ... and its queue stayed near empty while its slots were full.
    assert stats["waiting_area"] / busy <= 4, stats
    assert stats["running_area"] / busy >= 0.6 * 16, stats


def test_priority_is_sent_only_where_configured(start_batchd: StartBatchd, tmp_path: Path) -> None:
    prio, plain = SimServer().start(), SimServer().start()
    try:
        config = tmp_path / "batchd.toml"
        config.write_text(
            f"""
[[backends]]
name = "shared-gpu"
base_url = "{prio.base_url}"
models = ["m-batch"]
request_priority = 10

[[backends]]
name = "own-gpu"
base_url = "{plain.base_url}"
models = ["m-plain"]
"""
        )
        server = start_batchd(args=["--config", str(config)])
        a = run_batch(server.client, lines(12, model="m-batch"), timeout=60)
        b = run_batch(server.client, lines(12, model="m-plain"), timeout=60)
        assert a.status == b.status == "completed"
        assert prio.snapshot()["priorities"] == {"10": 12}
        assert plain.snapshot()["priorities"] == {"absent": 12}
        out, errors = results(server.client, a)
        assert len(out) == 12 and not errors
    finally:
        prio.stop()
        plain.stop()


def test_background_flag_and_dashboard_panel(start_batchd: StartBatchd, sim: SimServer) -> None:
    sim.reset(SimConfig(cap=8, a=0.02, b=0.002))
    server = start_batchd(upstream=sim.base_url, env={"BATCHD_UPSTREAM_BACKGROUND": "true"})
    batch = server.client.batches.create(
        input_file_id=server.client.files.create(
            file=(
                "in.jsonl",
                "\n".join(json.dumps(x) for x in lines(60)).encode(),
                "application/jsonl",
            ),
            purpose="batch",
        ).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    panel: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, body = server.http("GET", "/ui/api/backends")
        assert status == 200
        panel = json.loads(body)["data"]
        if panel and panel[0]["in_flight"] > 0:
            break
        time.sleep(0.1)
    assert panel and panel[0]["name"] == "upstream" and panel[0]["phase"] == "background"
    assert panel[0]["limit"] >= 1 and panel[0]["ceiling"] == 1024
    assert gauge(scrape(server), "batchd_backend_concurrency_limit", "upstream") is not None
    done = server.client.batches.retrieve(batch.id)
    while done.status not in ("completed", "failed"):
        time.sleep(0.2)
        done = server.client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 60


def test_lines_sharing_a_prefix_hit_the_servers_prefix_cache(
    start_batchd: StartBatchd, sim: SimServer
) -> None:
    # Four system prompts interleaved line by line, a cache that holds two: sent in
    # file order every request would evict the prefix the next one needs.
    sim.reset(SimConfig(cap=8, a=0.005, b=0.0005, prefix_cache=2))
    server = start_batchd(upstream=sim.base_url)
    systems = [f"You label tickets, style {k}. " + "Example: ... " * 40 for k in range(4)]
    batch_lines = []
    for i in range(80):
        line = chat_line(i, model="sim")
        line["body"]["messages"].insert(0, {"role": "system", "content": systems[i % 4]})
        line["body"]["max_tokens"] = 4
        batch_lines.append(line)
    batch = run_batch(server.client, batch_lines, timeout=120)
    assert batch.status == "completed" and batch.request_counts.completed == 80
    stats = sim.snapshot()
    assert stats["prefix_hits"] + stats["prefix_misses"] == 80
    assert stats["prefix_hits"] >= 60, stats  # in file order: 0 hits
