"""Dispatch benchmark: does batchd fill a model server at its best rate, untuned?

End to end, as a user runs it: a ``batchd serve`` process with ``--upstream`` pointing at
a simulated continuous-batching server (tests/dispatch/sim_server.py, its own process:
each step admits waiting requests up to ``cap`` running sequences, gives each one token
and lasts a + b*running ms), the official ``openai`` SDK uploading the input and creating
the batch, timed from ``batches.create`` to ``completed``. Every ratio is measured in
this one run against a baseline from the same run:

- big server (cap 256, 10 + 0.05n ms), 2000 x 50 tokens: batchd defaults vs the best
  fixed concurrency of a sweep (``BATCHD_ADAPTIVE_CONCURRENCY=false``,
  ``--upstream-concurrency N``);
- small server (cap 4, 30 + 20n ms), 80 x 20 tokens: the same, plus the mean time a
  request waits in the server's queue;
- shared server (cap 32, 10 + 0.3n ms) with an online client sending one request
  (20 tokens) every 0.25 s: its p99 alone, with batchd's defaults, and with
  ``--upstream-background``; the batch's share of the capacity the online client leaves
  free (cap / (a + b*cap) tokens/s minus the online client's tokens/s);
- rate-limited provider (429 beyond 16 in flight): defaults vs exactly 16 in flight,
  and the share of tries refused;
- vLLM /metrics: the big server publishing vllm:num_requests_running/waiting; the mean
  running and waiting over the run.

    .venv/bin/python bench/bench_dispatch.py            # about 4 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import openai

ROOT = Path(__file__).resolve().parent.parent
SIM = ROOT / "tests" / "dispatch" / "sim_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


class Sim:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(SIM), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{self.port}/v1/models")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self, **config: Any) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/sim/reset",
            data=json.dumps(config).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=5).read()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/sim/stats", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


SERVE_ARGS: list[str] = []
"""Extra ``batchd serve`` arguments for every run (``--serve-arg``)."""


def start_batchd(
    upstream: str, env: dict[str, str], args: list[str]
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    child_env.update({"BATCHD_LOCAL_ENABLED": "false", "BATCHD_LOG_LEVEL": "WARNING", **env})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchd",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--upstream",
            upstream,
            *args,
            *SERVE_ARGS,
        ],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, port, data


def input_file(n: int, tokens: int) -> bytes:
    lines = []
    for i in range(n):
        body = {
            "model": "sim",
            "messages": [
                {"role": "system", "content": "You label support tickets."},
                {"role": "user", "content": f"ticket {i}"},
            ],
            "max_tokens": tokens,
        }
        lines.append(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def run_batch(
    sim: Sim,
    n: int,
    tokens: int,
    *,
    env: dict[str, str] | None = None,
    args: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """One batch through a fresh batchd; returns seconds, tokens/s and the sim's stats."""
    proc, port, _ = start_batchd(sim.base_url, env or {}, list(args))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        f = client.files.create(file=("in.jsonl", input_file(n, tokens)), purpose="batch")
        stats0 = sim.stats()
        sim_reset_counters(sim)
        t0 = time.monotonic()
        b = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while b.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.1)
            b = client.batches.retrieve(b.id)
        took = time.monotonic() - t0
        assert b.status == "completed", b
        assert b.request_counts is not None and b.request_counts.completed == n, b.request_counts
        stats = sim.stats()
        del stats0
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)
    done = max(1, stats["completed"])
    busy = stats["busy_seconds"] or 1.0
    return {
        "seconds": took,
        "tok_s": n * tokens / took,
        "queue_wait": stats["queue_wait_sum"] / done,
        "running": stats["running_area"] / busy,
        "waiting": stats["waiting_area"] / busy,
        "tries": stats["requests"],
        "refused": stats["refused"],
    }


_CONFIG: dict[str, Any] = {}


def configure(sim: Sim, **config: Any) -> None:
    _CONFIG.clear()
    _CONFIG.update(config)
    sim.reset(**config)


def sim_reset_counters(sim: Sim) -> None:
    sim.reset(**_CONFIG)


def fixed(n: int) -> dict[str, Any]:
    return {
        "env": {"BATCHD_ADAPTIVE_CONCURRENCY": "false"},
        "args": ["--upstream-concurrency", str(n)],
    }


def sweep(sim: Sim, n: int, tokens: int, levels: list[int]) -> tuple[int, dict[str, Any]]:
    runs = {c: run_batch(sim, n, tokens, **fixed(c)) for c in levels}
    for c, r in runs.items():
        print(
            f"    fixed {c:5d}: {r['seconds']:6.2f} s  {r['tok_s']:8.0f} tok/s  "
            f"queue wait {r['queue_wait']:.2f} s"
        )
    best = min(runs, key=lambda c: runs[c]["seconds"])
    return best, runs[best]


# ---------------------------------------------------------------- online client


class Online:
    """Sends one request every ``interval`` seconds (open loop) and records latencies."""

    def __init__(self, url: str, interval: float = 0.25, tokens: int = 20) -> None:
        self.url, self.interval, self.tokens = url + "/chat/completions", interval, tokens
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Online:
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(30)
        return self.latencies

    async def _run(self) -> None:
        body = {
            "model": "sim",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": self.tokens,
        }
        async with aiohttp.ClientSession() as session:
            tasks = set()

            async def one() -> None:
                t0 = time.monotonic()
                async with session.post(self.url, json=body) as resp:
                    await resp.read()
                self.latencies.append(time.monotonic() - t0)

            nxt = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                nxt += self.interval
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks)


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98] if len(xs) >= 20 else max(xs)


# ------------------------------------------------------------------------ main


def case_big(sim: Sim, rows: list[tuple[str, str, str, str]]) -> None:
    print("big server: cap 256, step 10 + 0.05n ms, 2000 x 50 tokens")
    configure(sim, cap=256, a=0.010, b=0.00005)
    best_c, best = sweep(sim, 2000, 50, [128, 256, 384, 512, 1024])
    dflt = run_batch(sim, 2000, 50)
    print(
        f"    defaults  : {dflt['seconds']:6.2f} s  {dflt['tok_s']:8.0f} tok/s  "
        f"queue wait {dflt['queue_wait']:.2f} s"
    )
    rows.append(
        (
            "big server (cap 256)",
            f"{dflt['tok_s'] / best['tok_s']:.2f}x",
            f"best fixed {best_c}",
            ">= 0.95x",
        )
    )


def case_small(sim: Sim, rows: list[tuple[str, str, str, str]]) -> None:
    print("small server: cap 4, step 30 + 20n ms, 80 x 20 tokens")
    configure(sim, cap=4, a=0.030, b=0.020)
    best_c, best = sweep(sim, 80, 20, [2, 4, 8])
    dflt = run_batch(sim, 80, 20)
    print(
        f"    defaults  : {dflt['seconds']:6.2f} s  {dflt['tok_s']:8.0f} tok/s  "
        f"queue wait {dflt['queue_wait']:.2f} s"
    )
    rows.append(
        (
            "small server (cap 4)",
            f"{dflt['tok_s'] / best['tok_s']:.2f}x",
            f"best fixed {best_c}",
            ">= 0.95x",
        )
    )
    rows.append(("small server: mean queue wait", f"{dflt['queue_wait']:.2f} s", "", "<= 1 s"))


def case_shared(sim: Sim, rows: list[tuple[str, str, str, str]]) -> None:
    print("shared server: cap 32, step 10 + 0.3n ms, online client 1 req / 0.25 s")
    cap, a, b, online_tokens = 32, 0.010, 0.0003, 20
    configure(sim, cap=cap, a=a, b=b)
    online = Online(sim.base_url).start()
    time.sleep(15)
    alone = online.stop()
    free = cap / (a + b * cap) - online_tokens / 0.25
    results = {}
    for name, extra in (("defaults", {}), ("background", {"args": ["--upstream-background"]})):
        online = Online(sim.base_url).start()
        results[name] = run_batch(sim, 600, 20, **extra)  # type: ignore[arg-type]
        results[name]["online"] = online.stop()
    print(f"    online alone: p99 {p99(alone) * 1000:.0f} ms ({len(alone)} requests)")
    for name, r in results.items():
        print(
            f"    {name:10s}: online p99 {p99(r['online']) * 1000:.0f} ms, "
            f"batch {r['tok_s']:.0f} tok/s "
            f"({r['tok_s'] / free:.0%} of the {free:.0f} tok/s left free)"
        )
    bg = results["background"]
    rows.append(
        (
            "shared: online p99 / alone, defaults",
            f"{p99(results['defaults']['online']) / p99(alone):.2f}x",
            "",
            "(today 8.9x)",
        )
    )
    rows.append(
        (
            "shared: online p99 / alone, background",
            f"{p99(bg['online']) / p99(alone):.2f}x",
            "",
            "<= 1.5x",
        )
    )
    rows.append(("shared: batch share of free capacity", f"{bg['tok_s'] / free:.0%}", "", ">= 40%"))


def case_rate(sim: Sim, rows: list[tuple[str, str, str, str]]) -> None:
    print("rate-limited provider: 429 beyond 16 in flight, 2000 x 10 tokens")
    configure(sim, cap=1000, a=0.010, b=0.0, reject_above=16, retry_after=0.05)
    at_n = run_batch(sim, 2000, 10, **fixed(16))
    dflt = run_batch(sim, 2000, 10)
    print(
        f"    fixed 16  : {at_n['seconds']:6.2f} s   defaults: {dflt['seconds']:6.2f} s, "
        f"{dflt['refused']} of {dflt['tries']} tries refused"
    )
    rows.append(
        (
            "rate-limited: vs 16 in flight",
            f"{dflt['tok_s'] / at_n['tok_s']:.2f}x",
            "",
            ">= 0.9x",
        )
    )
    rows.append(
        (
            "rate-limited: tries refused",
            f"{dflt['refused'] / max(1, dflt['tries']):.1%}",
            "",
            "<= 2%",
        )
    )


def case_vllm(sim: Sim, rows: list[tuple[str, str, str, str]]) -> None:
    print("vLLM /metrics: big server publishing its gauges, 2000 x 50 tokens")
    configure(sim, cap=256, a=0.010, b=0.00005, metrics=True)
    vllm = run_batch(sim, 2000, 50)
    print(
        f"    defaults  : {vllm['seconds']:6.2f} s, mean running {vllm['running']:.0f}, "
        f"mean waiting {vllm['waiting']:.1f}"
    )
    rows.append(("vLLM metrics: mean running (cap 256)", f"{vllm['running']:.0f}", "", "near 256"))
    rows.append(("vLLM metrics: mean waiting", f"{vllm['waiting']:.1f}", "", "near 0"))


CASES = {"big": case_big, "small": case_small, "shared": case_shared, "rate": case_rate,
         "vllm": case_vllm}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an extra `batchd serve` argument for every run (repeatable), e.g. "
        "--serve-arg=--engine-processes=1",
    )
    options = parser.parse_args()
    SERVE_ARGS.extend(options.serve_arg)
    wanted = options.cases.split(",")
    sim = Sim()
    rows: list[tuple[str, str, str, str]] = []
    try:
        for name in wanted:
            CASES[name](sim, rows)
    finally:
        sim.stop()
    print("(the machine may be shared: ratios are measured within this one run)")
    print()
    print(f"{'case':42s} {'measured':>10s}  {'baseline':16s} target")
    for case, value, base, target in rows:
        print(f"{case:42s} {value:>10s}  {base:16s} {target}")


if __name__ == "__main__":
    main()
