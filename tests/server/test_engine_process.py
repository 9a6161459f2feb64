"""The engine in a child process of ``batchd serve`` (server/engine_process.py).

Real processes throughout: the child must die with a SIGKILLed server, be started
again when it dies alone, drain with the server on SIGTERM, be woken at once when a
batch is created, and its events must reach the server's metrics.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import psutil
import pytest

from harness import BatchdProcess, StartBatchd, chat_line, results, run_batch, wait_for
from upstream_server import Faults, UpstreamServer


def engine_child(server: BatchdProcess, *, other_than: int = 0) -> psutil.Process:
    assert server.proc is not None
    parent = psutil.Process(server.proc.pid)

    def find() -> psutil.Process | None:
        for child in parent.children():
            if child.pid == other_than or gone(child):
                continue
            if "batchd.server.engine_child" in " ".join(child.cmdline()):
                return child
        return None

    found: psutil.Process = wait_for(find, timeout=10, what="the engine process")
    return found


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def metric(server: BatchdProcess, name: str) -> float:
    with urllib.request.urlopen(server.root_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_batch_runs_in_the_child_and_its_events_reach_the_metrics(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    # A long poll interval: only the wake-up pipe can start the batch quickly.
    server = start_batchd(upstream=upstream.base_url, env={"BATCHD_POLL_INTERVAL": "30"})
    child = engine_child(server)
    started = time.monotonic()
    b = run_batch(server.client, [chat_line(i) for i in range(50)], timeout=20)
    assert time.monotonic() - started < 15
    assert b.status == "completed"
    out, err = results(server.client, b)
    assert len(out) == 50 and err == []
    # The engine's counters are kept in the API process, fed by the child's events.
    wait_for(lambda: metric(server, "batchd_lines_processed_total") == 50, timeout=5)
    assert metric(server, "batchd_batches_finished_total") == 1
    assert child.is_running()
    # The engine yields the CPU to the API where they compete (engine_nice, 10).
    assert server.proc is not None
    parent = psutil.Process(server.proc.pid)
    assert child.nice() == min(19, parent.nice() + 10)


def test_sigkill_of_the_server_kills_the_engine(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.05))
    server = start_batchd(upstream=upstream.base_url)
    child = engine_child(server)
    server.client.batches.create(
        input_file_id=server.client.files.create(
            file=("in.jsonl", b"".join(_jsonl(i) for i in range(2000))), purpose="batch"
        ).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    wait_for(lambda: upstream.stats.total > 0, timeout=10, what="requests to start")
    server.kill()
    wait_for(lambda: gone(child), timeout=5, what="the engine to die with the server")
    sent = upstream.stats.total
    time.sleep(0.5)
    assert upstream.stats.total == sent  # nothing sends for a dead server


def test_a_dead_engine_is_started_again(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(upstream=upstream.base_url, env={"BATCHD_ENGINE_RESTART_DELAY": "0.2"})
    first = engine_child(server)
    first.send_signal(signal.SIGKILL)
    wait_for(lambda: gone(first), timeout=5)
    second = engine_child(server, other_than=first.pid)
    assert second.is_running()
    b = run_batch(server.client, [chat_line(i) for i in range(20)], timeout=30)
    assert b.status == "completed" and b.request_counts.completed == 20
    assert "engine process exited" in server.logs()


def test_sigterm_drains_both_and_exits_zero(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(upstream=upstream.base_url)
    child = engine_child(server)
    run_batch(server.client, [chat_line(i) for i in range(5)])
    assert server.terminate() == 0
    assert gone(child)
    assert "worker shutting down" in server.logs()  # the child drained, not killed


def test_sigterm_while_a_dead_engine_waits_to_restart(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(upstream=upstream.base_url, env={"BATCHD_ENGINE_RESTART_DELAY": "60"})
    child = engine_child(server)
    child.send_signal(signal.SIGKILL)
    wait_for(lambda: "engine process exited" in server.logs(), timeout=10)
    started = time.monotonic()
    assert server.terminate(timeout=30) == 0
    assert time.monotonic() - started < 20  # not held up by the restart delay


def test_two_engine_processes_run_one_batch_exactly_once(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(upstream=upstream.base_url, args=["--engine-processes", "2"])
    assert server.proc is not None
    parent = psutil.Process(server.proc.pid)
    wait_for(lambda: len(parent.children()) == 2, timeout=10)
    n = 3000  # three shards at least, so both children can claim work
    b = run_batch(server.client, [chat_line(i) for i in range(n)], timeout=120)
    assert b.status == "completed"
    assert b.request_counts.model_dump() == {"total": n, "completed": n, "failed": 0}
    out, err = results(server.client, b)
    assert err == [] and sorted(line["custom_id"] for line in out) == sorted(
        f"r{i}" for i in range(n)
    )
    # Each line was sent once; two children sharing SQLite never ran one line twice.
    assert sum(upstream.stats.attempts.values()) == n


def test_engine_processes_0_starts_one_per_core_at_most_two(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(upstream=upstream.base_url, args=["--engine-processes", "0"])
    assert server.proc is not None
    parent = psutil.Process(server.proc.pid)
    want = min(2, len(os.sched_getaffinity(0)))
    wait_for(lambda: len(parent.children()) == want, timeout=10)
    b = run_batch(server.client, [chat_line(i) for i in range(10)])
    assert b.status == "completed" and b.request_counts.completed == 10
    assert len(parent.children()) == want


def test_a_concurrency_of_one_stays_one_with_two_engine_processes(
    start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    # Four shards, and each engine runs one at a time: only the first may run them;
    # the second would need a request of its own, and there is only one.
    upstream.reset(Faults(delay=0.05))
    server = start_batchd(
        upstream=upstream.base_url,
        args=["--engine-processes", "2"],
        env={
            "BATCHD_UPSTREAM_CONCURRENCY": "1",
            "BATCHD_MAX_SHARDS": "1",
            "BATCHD_SHARD_SIZE": "20",
            "BATCHD_POLL_INTERVAL": "0.05",
        },
    )
    assert server.proc is not None
    parent = psutil.Process(server.proc.pid)
    wait_for(lambda: len(parent.children()) == 2, timeout=10)
    n = 80
    b = run_batch(server.client, [chat_line(i) for i in range(n)], timeout=120)
    assert b.status == "completed" and b.request_counts.completed == n
    assert upstream.stats.total == n
    assert upstream.stats.peak_inflight == 1


@pytest.mark.parametrize("how", [["--no-engine-process"], []])
def test_one_process_mode_stays_available(
    start_batchd: StartBatchd, upstream: UpstreamServer, how: list[str]
) -> None:
    env = {} if how else {"BATCHD_ENGINE_PROCESS": "false"}
    server = start_batchd(upstream=upstream.base_url, args=how, env=env)
    assert server.proc is not None
    b = run_batch(server.client, [chat_line(i) for i in range(10)])
    assert b.status == "completed" and b.request_counts.completed == 10
    assert psutil.Process(server.proc.pid).children() == []


def _jsonl(i: int) -> bytes:
    import json

    return json.dumps(chat_line(i)).encode() + b"\n"
